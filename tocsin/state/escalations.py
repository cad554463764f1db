"""The escalation store: the steps of an alert's escalation policy, over time.

When an alert with a policy fires, every step of the policy is stored with the
time it is due. Reaching a step is one transaction: the step is marked
reached, an alert nobody acknowledged moves to ``escalated``, and the step's
channels get one notification each about that transition. A step whose alert
someone already owns is cancelled instead; moves that give an alert an owner
cancel its pending steps themselves (see :mod:`tocsin.state.alerts`), so this
is the path of a step read just before such a move.

Steps are never deleted: reached and cancelled ones are part of the alert's
history.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import msgspec.structs

from tocsin.clock import Clock
from tocsin.schema import Duration
from tocsin.state.alerts import _queue, alert_from_row
from tocsin.state.db import Database
from tocsin.state.lifecycle import write_transition
from tocsin.state.models import Alert, AlertState, EscalationStep

#: The actor of the transitions the escalation timer makes.
ESCALATION = "escalation"

#: The states in which an alert still escalates: nobody has taken it yet, or
#: it already escalated and later steps page more people.
_ESCALATING: frozenset[AlertState] = frozenset({"triggered", "escalated"})

_COLUMNS = (
    "s.id, s.alert_id, s.policy, s.step, s.due_at, s.channels, s.state,"
    " s.reached_at, s.cancelled_at"
)
_ALERT_COLUMNS = "a.id, a.uid, a.state, a.spec, a.value, a.resolved_at, a.closed_at"
_PENDING_OF_OPEN = "s.state = 'pending' AND a.state NOT IN ('resolved', 'closed')"


def _encode_channels(channels: list[str]) -> str:
    return msgspec.json.encode(channels).decode()


_decode_channels = msgspec.json.Decoder(list[str]).decode


class Reached(msgspec.Struct, frozen=True, kw_only=True):
    """What reaching one step did."""

    #: The step as it is now: ``reached``, or ``cancelled`` when its alert
    #: was no longer escalating.
    step: EscalationStep
    #: The alert after the step.
    alert: Alert
    #: Whether the step moved the alert to ``escalated``.
    escalated: bool
    #: The channels a notification was queued for; empty when cancelled.
    channels: list[str]


def _step(row: Sequence[Any]) -> EscalationStep:
    id_, alert_id, policy, step, due_at, channels, state, reached, cancelled = row
    return EscalationStep(
        id=id_,
        alert_id=alert_id,
        policy=policy,
        step=step,
        due_at=due_at,
        channels=_decode_channels(channels),
        state=state,
        reached_at=reached,
        cancelled_at=cancelled,
    )


def step_reason(step: EscalationStep, alert: Alert) -> str:
    """Word why a step was reached, as its transition's reason says it.

    Steps are numbered from 1 for people, as a policy lists them.
    """
    reason = f"escalation policy {step.policy} step {step.step + 1} reached"
    waited = step.due_at - alert.spec.fired_at
    if waited > 0:
        reason += f": not acknowledged within {Duration.format(waited)}"
    return reason


class EscalationStore:
    """Schedules, reaches and lists escalation steps."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def schedule(
        self,
        alert_id: int,
        policy: str,
        steps: Sequence[tuple[float, Sequence[str]]],
    ) -> bool:
        """Store an alert's steps, each as (due time, channels), in order.

        An alert escalates once: a reopened alert, or an alert seen again
        after a restart, keeps the steps it has.

        :param policy: the policy's name, kept for the history.
        :return: whether the steps were stored; ``False`` if the alert
            already had steps (nothing is written then).
        :raises StateError: if the write fails.
        """
        async with self._db.transaction() as tx:
            existing = await tx.fetchone(
                "SELECT 1 FROM escalation_steps WHERE alert_id = ? LIMIT 1",
                (alert_id,),
            )
            if existing is not None:
                return False
            rows = [
                (alert_id, policy, index, due_at, _encode_channels(list(channels)))
                for index, (due_at, channels) in enumerate(steps)
            ]
            await tx.executemany(
                "INSERT INTO escalation_steps (alert_id, policy, step, due_at,"
                " channels) VALUES (?, ?, ?, ?, ?)",
                rows,
            )

        return bool(rows)

    async def due(self, now: float, limit: int = 100) -> list[EscalationStep]:
        """Return pending steps of open alerts due at ``now``, oldest first."""
        rows = await self._db.fetchall(
            f"SELECT {_COLUMNS} FROM escalation_steps AS s"
            " JOIN alerts AS a ON a.id = s.alert_id"
            f" WHERE {_PENDING_OF_OPEN} AND s.due_at <= ?"
            " ORDER BY s.due_at, s.id LIMIT ?",
            (now, limit),
        )
        return [_step(row) for row in rows]

    async def next_due(self) -> float | None:
        """Return when the next pending step of an open alert is due, or
        ``None`` when there is none."""
        row = await self._db.fetchone(
            "SELECT MIN(s.due_at) FROM escalation_steps AS s"
            f" JOIN alerts AS a ON a.id = s.alert_id WHERE {_PENDING_OF_OPEN}"
        )
        return None if row is None else row[0]

    async def reach(self, step_id: int, *, at: float) -> Reached | None:
        """Reach one step, in one transaction.

        The step is marked reached and a transition is written: an alert
        still ``triggered`` moves to ``escalated`` at any step after the
        first; otherwise the transition keeps the alert's state and records
        the step. Each of the step's channels gets one notification about
        that transition. If the alert is no longer ``triggered`` or
        ``escalated``, the step is cancelled instead and nothing is queued.

        :param at: when the step is reached, for the transition.
        :return: what was done, or ``None`` if the step is unknown or no
            longer pending (nothing is written then).
        :raises StateError: if the write fails; nothing is written then.
        """
        now = self._clock.time()
        async with self._db.transaction() as tx:
            row = await tx.fetchone(
                f"SELECT {_COLUMNS}, {_ALERT_COLUMNS} FROM escalation_steps AS s"
                " JOIN alerts AS a ON a.id = s.alert_id"
                " WHERE s.id = ? AND s.state = 'pending'",
                (step_id,),
            )
            if row is None:
                return None
            step, alert = _step(row[:9]), alert_from_row(row[9:])
            if alert.state not in _ESCALATING:
                await tx.execute(
                    "UPDATE escalation_steps SET state = 'cancelled',"
                    " cancelled_at = ? WHERE id = ?",
                    (at, step.id),
                )
                step = msgspec.structs.replace(step, state="cancelled", cancelled_at=at)
                return Reached(step=step, alert=alert, escalated=False, channels=[])

            escalates = step.step > 0 and alert.state == "triggered"
            from_state = alert.state
            if escalates:
                alert.state = "escalated"
                await tx.execute(
                    "UPDATE alerts SET state = 'escalated', updated_at = ?"
                    " WHERE id = ?",
                    (now, alert.id),
                )
            transition = await write_transition(
                tx,
                alert.id,
                from_state,
                alert.state,
                at,
                step_reason(step, alert),
                actor=ESCALATION,
            )
            await tx.execute(
                "UPDATE escalation_steps SET state = 'reached', reached_at = ?"
                " WHERE id = ?",
                (at, step.id),
            )
            # TODO: say "escalation step N" as the notification's own reason
            # once outbox rows carry one; until then only the transition does.
            await _queue(tx, alert, transition, "trigger", step.channels, now)

        step = msgspec.structs.replace(step, state="reached", reached_at=at)
        channels = list(dict.fromkeys(step.channels))
        return Reached(step=step, alert=alert, escalated=escalates, channels=channels)

    async def steps(self, alert_id: int) -> list[EscalationStep]:
        """Return every step of an alert, in policy order, whatever its state."""
        rows = await self._db.fetchall(
            f"SELECT {_COLUMNS} FROM escalation_steps AS s"
            " WHERE s.alert_id = ? ORDER BY s.step",
            (alert_id,),
        )
        return [_step(row) for row in rows]
