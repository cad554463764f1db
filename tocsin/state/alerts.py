"""The alert store: alerts, their transitions and the notifications they queue.

Every change of an alert's state is written in one transaction together with
its transition and one outbox row per channel, so after a crash either all of
them exist or none does: an alert is never recorded without its notifications,
nor a notification queued for a transition that did not happen.

A move that gives the alert an owner or ends it (see
:data:`~tocsin.state.lifecycle.ENDS_ESCALATION`) cancels the alert's pending
escalation steps in the same transaction, so no step pages anyone after an
acknowledgement, even across a crash.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

import msgspec
import msgspec.structs

from tocsin.clock import Clock
from tocsin.errors import LifecycleError, UnknownAlertError
from tocsin.state.db import Database, Transaction
from tocsin.state.lifecycle import (
    ENDS_ESCALATION,
    ENGINE,
    MANUAL_MOVES,
    cancel_escalation,
    check_move,
    write_transition,
)
from tocsin.state.models import (
    Alert,
    AlertSpec,
    NotificationEvent,
    Transition,
)

_OPEN = "state NOT IN ('resolved', 'closed')"
_ALERT_COLUMNS = "id, uid, state, spec, value, resolved_at, closed_at"
_TRANSITION_COLUMNS = "id, alert_id, from_state, to_state, at, actor, reason, comment"
_OPEN_OF_SERIES = (
    f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE rule = ? AND series = ? AND {_OPEN}"
)
_LATEST_OF_SERIES = (
    f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE rule = ? AND series = ?"
    " ORDER BY id DESC LIMIT 1"
)

_encode_spec = msgspec.json.Encoder().encode
_decode_spec = msgspec.json.Decoder(AlertSpec).decode
_encode_range = msgspec.json.Encoder().encode


def notification_key(uid: str, transition_id: int, channel: str) -> str:
    """Return the idempotency key of one (transition, channel) notification."""
    return f"tocsin-{uid}-{transition_id}-{channel}"


def alert_from_row(row: Sequence) -> Alert:
    """Build an :class:`Alert` from the columns of ``_ALERT_COLUMNS``."""
    alert_id, uid, state, spec, value, resolved_at, closed_at = row
    return Alert(
        id=alert_id,
        uid=uid,
        state=state,
        spec=_decode_spec(spec),
        value=value,
        resolved_at=resolved_at,
        closed_at=closed_at,
    )


def transition_from_row(row: Sequence) -> Transition:
    """Build a :class:`Transition` from the columns of ``_TRANSITION_COLUMNS``."""
    id_, alert_id, from_state, to_state, at, actor, reason, comment = row
    return Transition(
        id=id_,
        alert_id=alert_id,
        from_state=from_state,
        to_state=to_state,
        at=at,
        actor=actor,
        reason=reason,
        comment=comment,
    )


class AlertStore:
    """Reads and changes alerts; every change is one transaction."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def fire(
        self,
        spec: AlertSpec,
        channels: Sequence[str] = (),
        *,
        reopen_window: float = 0.0,
    ) -> Alert | None:
        """Open an alert for ``spec`` and queue its trigger notifications.

        When the series' latest alert was resolved no longer than
        ``reopen_window`` before ``spec.fired_at``, that alert reopens
        (``resolved`` to ``triggered``) instead: same row and uid, its first
        ``fired_at`` kept, the rest of its spec and its value replaced by
        ``spec``'s. A closed alert never reopens. Whether the alert reopened
        shows in its :meth:`history`: the last transition comes from
        ``resolved``.

        :param channels: the channels to notify; a name listed twice is
            notified once.
        :param reopen_window: seconds; 0 never reopens.
        :return: the new or reopened alert, or ``None`` (and nothing written)
            when an alert for the same rule and series is already open.
        :raises StateError: if the write fails; nothing is written then.
        """
        now = self._clock.time()
        uid = uuid.uuid4().hex
        async with self._db.transaction() as tx:
            existing = await tx.fetchone(
                f"SELECT id FROM alerts WHERE rule = ? AND series = ? AND {_OPEN}",
                (spec.rule, spec.series),
            )
            if existing is not None:
                return None
            if reopen_window > 0:
                reopened = await _reopen(tx, spec, reopen_window, now)
                if reopened is not None:
                    alert, transition = reopened
                    await _queue(tx, alert, transition, "trigger", channels, now)
                    return alert
            alert_id = await tx.insert(
                "INSERT INTO alerts (uid, rule, series, state, spec, value,"
                " fired_at, updated_at) VALUES (?, ?, ?, 'triggered', ?, ?, ?, ?)",
                (
                    uid,
                    spec.rule,
                    spec.series,
                    _encode_spec(spec),
                    spec.value,
                    spec.fired_at,
                    now,
                ),
            )
            transition = await write_transition(
                tx, alert_id, None, "triggered", spec.fired_at, spec.reason
            )
            alert = Alert(
                id=alert_id, uid=uid, state="triggered", spec=spec, value=spec.value
            )
            await _queue(tx, alert, transition, "trigger", channels, now)

        return alert

    async def resolve(
        self,
        rule: str,
        series: str,
        *,
        at: float,
        value: float | None,
        reason: str,
        channels: Sequence[str] = (),
    ) -> Alert | None:
        """Resolve the open alert of a series and queue resolve notifications.

        This is the engine's move: it resolves from any open state, whoever
        owns the alert, and cancels the alert's pending escalation steps.

        :param channels: the channels to notify (those that take resolves).
        :return: the resolved alert, or ``None`` when the series has no open
            alert (nothing is written then).
        :raises StateError: if the write fails; nothing is written then.
        """
        now = self._clock.time()
        async with self._db.transaction() as tx:
            alert = await _open_alert(tx, rule, series)
            if alert is None:
                return None
            await tx.execute(
                "UPDATE alerts SET state = 'resolved', value = ?, resolved_at = ?,"
                " updated_at = ? WHERE id = ?",
                (value, at, now, alert.id),
            )
            transition = await write_transition(
                tx, alert.id, alert.state, "resolved", at, reason
            )
            alert.state = "resolved"
            alert.value = value
            alert.resolved_at = at
            await cancel_escalation(tx, alert.id, at)
            await _queue(tx, alert, transition, "resolve", channels, now)

        return alert

    async def change_severity(
        self,
        rule: str,
        series: str,
        *,
        severity: str,
        at: float,
        value: float | None,
        threshold: float | None,
        reason: str,
        channels: Sequence[str] = (),
        range: Sequence[float] | None = None,
        texts: tuple[str, str] | None = None,
    ) -> Alert | None:
        """Move the open alert of a series to another level and notify again.

        The alert keeps its state and uid, so a destination sees the same
        alert change; the transition (from its state to the same state) gets
        notifications of its own, each under its own idempotency key.

        :param threshold: the new level's threshold (``None`` for a range).
        :param reason: why, as the engine words it; stored as given.
        :param channels: the channels to notify; a name listed twice is
            notified once.
        :param range: the new level's ``[low, high]``; ``None`` keeps the
            alert's range.
        :param texts: the summary and description rendered for the new level;
            ``None`` keeps the alert's.
        :return: the alert after the change, or ``None`` when the series has
            no open alert (nothing is written then).
        :raises StateError: if the write fails; nothing is written then.
        """
        now = self._clock.time()
        async with self._db.transaction() as tx:
            alert = await _open_alert(tx, rule, series)
            if alert is None:
                return None
            changes: dict[str, object] = {"severity": severity, "threshold": threshold}
            if range is not None:
                changes["range"] = list(range)
            if texts is not None:
                changes["summary"], changes["description"] = texts
            alert.spec = msgspec.structs.replace(alert.spec, **changes)
            alert.value = value
            await tx.execute(
                "UPDATE alerts SET spec = ?, value = ?, updated_at = ? WHERE id = ?",
                (_encode_spec(alert.spec), value, now, alert.id),
            )
            transition = await write_transition(
                tx, alert.id, alert.state, alert.state, at, reason
            )
            await _queue(tx, alert, transition, "trigger", channels, now)

        return alert

    async def note(
        self, rule: str, series: str, *, at: float, reason: str
    ) -> Alert | None:
        """Record something that happened to the open alert of a series.

        The transition leaves the alert in its state and notifies nobody: it
        is there for the alert's history (flapping started, flapping stopped).

        :return: the alert, or ``None`` when the series has no open alert
            (nothing is written then).
        :raises StateError: if the write fails.
        """
        async with self._db.transaction() as tx:
            alert = await _open_alert(tx, rule, series)
            if alert is None:
                return None
            await write_transition(tx, alert.id, alert.state, alert.state, at, reason)

        return alert

    async def move(
        self,
        ref: int | str,
        to_state: str,
        *,
        actor: str,
        reason: str = "",
        comment: str = "",
        at: float | None = None,
    ) -> Alert:
        """Move an alert as a person asks (see
        :data:`~tocsin.state.lifecycle.MANUAL_MOVES`); notify nobody.

        Resolving sets ``resolved_at`` and closing ``closed_at`` to ``at``;
        acknowledging, investigating, resolving and closing cancel the alert's
        pending escalation steps in the same transaction.

        :param ref: the alert's id, or its uid.
        :param actor: who moves it (``api:alice``, ``pagerduty``).
        :param reason: why, for the history; defaults to the move and actor.
        :param comment: what the person wrote, if anything.
        :param at: when; defaults to now.
        :return: the alert after the move.
        :raises UnknownAlertError: if no alert has that id or uid.
        :raises ValueError: if ``to_state`` is not a state.
        :raises LifecycleError: if the alert cannot move there from its state;
            nothing is written then.
        :raises StateError: if the write fails; nothing is written then.
        """
        now = self._clock.time()
        at = now if at is None else at
        async with self._db.transaction() as tx:
            alert = await _by_ref(tx, ref)
            if alert is None:
                raise UnknownAlertError(ref)
            check_move(alert.id, alert.state, to_state)
            from_state = alert.state
            alert.state = to_state
            if to_state == "resolved":
                alert.resolved_at = at
            elif to_state == "closed":
                alert.closed_at = at
            await tx.execute(
                "UPDATE alerts SET state = ?, resolved_at = ?, closed_at = ?,"
                " updated_at = ? WHERE id = ?",
                (to_state, alert.resolved_at, alert.closed_at, now, alert.id),
            )
            await write_transition(
                tx,
                alert.id,
                from_state,
                to_state,
                at,
                reason or f"{to_state} by {actor}",
                actor=actor,
                comment=comment,
            )
            if to_state in ENDS_ESCALATION:
                await cancel_escalation(tx, alert.id, at)

        return alert

    async def reopen(
        self, ref: int | str, *, actor: str, comment: str = "", at: float | None = None
    ) -> Alert:
        """Open a resolved alert again because a service says it is not over
        (an incident reopened in PagerDuty); notify nobody.

        Like a breach within the reopen window, it is the same alert: same row
        and uid, ``resolved`` to ``triggered``, ``resolved_at`` cleared, the
        move in its history with ``actor``. People cannot make this move by
        hand (see :data:`~tocsin.state.lifecycle.MANUAL_MOVES`): they fix the
        cause, and a new breach reopens the alert.

        :raises UnknownAlertError: if no alert has that id or uid.
        :raises LifecycleError: if the alert is not resolved, or another alert
            of its series is open; nothing is written then.
        :raises StateError: if the write fails; nothing is written then.
        """
        now = self._clock.time()
        at = now if at is None else at
        async with self._db.transaction() as tx:
            alert = await _by_ref(tx, ref)
            if alert is None:
                raise UnknownAlertError(ref)
            if alert.state != "resolved":
                raise LifecycleError(
                    alert.id, alert.state, "triggered", MANUAL_MOVES[alert.state]
                )
            other = await tx.fetchone(
                f"SELECT id FROM alerts WHERE rule = ? AND series = ? AND {_OPEN}",
                (alert.spec.rule, alert.spec.series),
            )
            if other is not None:
                # The series' one open alert is that other one.
                raise LifecycleError(alert.id, alert.state, "triggered", ("closed",))
            alert.state = "triggered"
            alert.resolved_at = None
            await tx.execute(
                "UPDATE alerts SET state = 'triggered', resolved_at = NULL,"
                " updated_at = ? WHERE id = ?",
                (now, alert.id),
            )
            await write_transition(
                tx,
                alert.id,
                "resolved",
                "triggered",
                at,
                f"reopened by {actor}",
                actor=actor,
                comment=comment,
            )

        return alert

    async def close_resolved(self, resolved_before: float) -> int:
        """Close every alert resolved before ``resolved_before``; notify nobody.

        :return: how many alerts were closed.
        """
        now = self._clock.time()
        async with self._db.transaction() as tx:
            await tx.execute(
                "INSERT INTO transitions (alert_id, from_state, to_state, at, actor,"
                " reason) SELECT id, 'resolved', 'closed', ?, ?, ? FROM alerts"
                " WHERE state = 'resolved' AND resolved_at < ?",
                (now, ENGINE, "resolved long enough", resolved_before),
            )
            closed = await tx.execute(
                "UPDATE alerts SET state = 'closed', closed_at = ?, updated_at = ?"
                " WHERE state = 'resolved' AND resolved_at < ?",
                (now, now, resolved_before),
            )

        return closed

    async def notified_channels(self, alert_id: int) -> list[str]:
        """Return the channels an alert's triggers were queued for, each once,
        in the order they were first queued."""
        rows = await self._db.fetchall(
            "SELECT channel FROM outbox WHERE alert_id = ? AND event = 'trigger'"
            " GROUP BY channel ORDER BY MIN(id)",
            (alert_id,),
        )
        return [row[0] for row in rows]

    async def open_alert(self, rule: str, series: str) -> Alert | None:
        """Return the open alert of a series, or ``None``."""
        row = await self._db.fetchone(_OPEN_OF_SERIES, (rule, series))
        return None if row is None else alert_from_row(row)

    async def open_alerts(self) -> list[Alert]:
        """Return every open alert, oldest first."""
        rows = await self._db.fetchall(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE {_OPEN} ORDER BY id"
        )
        return [alert_from_row(row) for row in rows]

    async def open_count(self) -> int:
        """Return how many alerts are open."""
        row = await self._db.fetchone(f"SELECT COUNT(*) FROM alerts WHERE {_OPEN}")
        return 0 if row is None else row[0]

    async def get(self, alert_id: int) -> Alert | None:
        """Return the alert with id ``alert_id``, or ``None``."""
        row = await self._db.fetchone(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE id = ?", (alert_id,)
        )
        return None if row is None else alert_from_row(row)

    async def get_by_ref(self, ref: int | str) -> Alert | None:
        """Return the alert with id or uid ``ref``, or ``None``.

        A string of digits is an id: uids are 32 hex digits, and never all
        digits in practice.
        """
        return await _by_ref(self._db, ref)

    async def history(self, alert_id: int) -> list[Transition]:
        """Return the transitions of an alert, oldest first."""
        rows = await self._db.fetchall(
            f"SELECT {_TRANSITION_COLUMNS} FROM transitions"
            " WHERE alert_id = ? ORDER BY id",
            (alert_id,),
        )
        return [transition_from_row(row) for row in rows]

    async def fires_since(self, rule: str, since: float) -> list[tuple[str, float]]:
        """Return ``(series, fired_at)`` of every alert of ``rule`` that fired at
        or after ``since``, oldest first."""
        rows = await self._db.fetchall(
            "SELECT series, fired_at FROM alerts WHERE rule = ? AND fired_at >= ?"
            " ORDER BY fired_at",
            (rule, since),
        )
        return [(row[0], row[1]) for row in rows]

    async def list_alerts(
        self,
        *,
        states: Sequence[str] | None = None,
        rule: str | None = None,
        labels: Mapping[str, str] | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[Alert]:
        """Return up to ``limit`` alerts, newest first, that pass every filter.

        :param states: keep alerts in one of these states.
        :param rule: keep alerts of this rule.
        :param labels: keep alerts whose labels hold each of these values.
        :param since: keep alerts that first fired at or after this time.
        """
        where: list[str] = []
        params: list[object] = []
        if states is not None:
            where.append(f"state IN ({', '.join('?' * len(states))})")
            params.extend(states)
        if rule is not None:
            where.append("rule = ?")
            params.append(rule)
        # json_each rather than a JSON path: a label name may hold any
        # character, and a path would have to quote it.
        for name, value in (labels or {}).items():
            where.append(
                "EXISTS (SELECT 1 FROM json_each(alerts.spec, '$.labels')"
                " WHERE key = ? AND value = ?)"
            )
            params.extend((name, value))
        if since is not None:
            where.append("fired_at >= ?")
            params.append(since)
        condition = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._db.fetchall(
            f"SELECT {_ALERT_COLUMNS} FROM alerts {condition} ORDER BY id DESC LIMIT ?",
            (*params, limit),
        )
        return [alert_from_row(row) for row in rows]


async def _open_alert(tx: Transaction, rule: str, series: str) -> Alert | None:
    row = await tx.fetchone(_OPEN_OF_SERIES, (rule, series))
    return None if row is None else alert_from_row(row)


async def _by_ref(source: Database | Transaction, ref: int | str) -> Alert | None:
    if isinstance(ref, int) or ref.isdigit():
        sql = f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE id = ?"
        row = await source.fetchone(sql, (int(ref),))
    else:
        sql = f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE uid = ?"
        row = await source.fetchone(sql, (ref,))
    return None if row is None else alert_from_row(row)


async def _reopen(
    tx: Transaction, spec: AlertSpec, window: float, now: float
) -> tuple[Alert, Transition] | None:
    """Reopen the series' latest alert if it was resolved within ``window``
    before ``spec`` fired; return it and its transition, or ``None``."""
    row = await tx.fetchone(_LATEST_OF_SERIES, (spec.rule, spec.series))
    if row is None:
        return None
    alert = alert_from_row(row)
    if alert.state != "resolved" or alert.resolved_at is None:
        return None
    if alert.resolved_at < spec.fired_at - window:
        return None
    # The alert is the same one to everybody who saw it: it keeps the time it
    # first fired, and takes the rest (level, value, texts) from the breach.
    alert.spec = msgspec.structs.replace(spec, fired_at=alert.spec.fired_at)
    alert.state = "triggered"
    alert.value = spec.value
    alert.resolved_at = None
    await tx.execute(
        "UPDATE alerts SET state = 'triggered', spec = ?, value = ?,"
        " resolved_at = NULL, updated_at = ? WHERE id = ?",
        (_encode_spec(alert.spec), spec.value, now, alert.id),
    )
    reason = f"breached again within the reopen window: {spec.reason}"
    transition = await write_transition(
        tx, alert.id, "resolved", "triggered", spec.fired_at, reason
    )

    return alert, transition


async def _queue(
    tx: Transaction,
    alert: Alert,
    transition: Transition,
    event: NotificationEvent,
    channels: Sequence[str],
    now: float,
) -> None:
    """Write one outbox row per channel, due at once.

    Each row keeps ``alert`` as it is after ``transition`` (its state, value,
    level: severity, threshold, range, and the texts rendered for that level),
    so every attempt of the notification describes the same alert whatever
    happens to it later.
    """
    spec = alert.spec
    level = (
        spec.severity,
        spec.threshold,
        _encode_range(spec.range).decode(),
        spec.summary,
        spec.description,
    )
    rows = [
        (
            alert.id,
            transition.id,
            channel,
            event,
            notification_key(alert.uid, transition.id, channel),
            now,
            now,
            alert.state,
            alert.value,
            alert.resolved_at,
            *level,
        )
        for channel in dict.fromkeys(channels)
    ]
    await tx.executemany(
        "INSERT INTO outbox (alert_id, transition_id, channel, event, key,"
        " next_attempt_at, created_at, alert_state, alert_value, alert_resolved_at,"
        " alert_severity, alert_threshold, alert_range, alert_summary,"
        " alert_description) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
