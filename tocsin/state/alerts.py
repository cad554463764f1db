"""The alert store: alerts, their transitions and the notifications they queue.

Every change of an alert's state is written in one transaction together with
its transition and one outbox row per channel, so after a crash either all of
them exist or none does: an alert is never recorded without its notifications,
nor a notification queued for a transition that did not happen.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import msgspec
import msgspec.structs

from tocsin.clock import Clock
from tocsin.state.db import Database, Transaction
from tocsin.state.models import Alert, AlertSpec, NotificationEvent, Transition

#: The actor of transitions Tocsin makes on its own.
ENGINE = "engine"

_OPEN = "state NOT IN ('resolved', 'closed')"
_ALERT_COLUMNS = "id, uid, state, spec, value, resolved_at, closed_at"
_TRANSITION_COLUMNS = "id, alert_id, from_state, to_state, at, actor, reason, comment"
_OPEN_OF_SERIES = (
    f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE rule = ? AND series = ? AND {_OPEN}"
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

    async def fire(self, spec: AlertSpec, channels: Sequence[str]) -> Alert | None:
        """Open an alert for ``spec`` and queue its trigger notifications.

        :param channels: the channels to notify; a name listed twice is
            notified once.
        :return: the new alert, or ``None`` (and nothing written) when an alert
            for the same rule and series is already open.
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
            transition = await _transition(
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
        channels: Sequence[str],
    ) -> Alert | None:
        """Resolve the open alert of a series and queue resolve notifications.

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
            transition = await _transition(
                tx, alert.id, alert.state, "resolved", at, reason
            )
            alert.state = "resolved"
            alert.value = value
            alert.resolved_at = at
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
        channels: Sequence[str],
        range: Sequence[float] | None = None,
        texts: tuple[str, str] | None = None,
    ) -> Alert | None:
        """Move the open alert of a series to another level and notify again.

        The alert stays ``triggered`` and keeps its uid, so a destination sees
        the same alert change; the transition (``triggered`` to ``triggered``)
        gets notifications of its own, each under its own idempotency key.

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
            transition = await _transition(
                tx, alert.id, alert.state, alert.state, at, reason
            )
            await _queue(tx, alert, transition, "trigger", channels, now)

        return alert

    async def note(
        self, rule: str, series: str, *, at: float, reason: str
    ) -> Alert | None:
        """Record something that happened to the open alert of a series.

        The transition leaves the alert as it is (``triggered`` to
        ``triggered``) and notifies nobody: it is there for the alert's
        history (flapping started, flapping stopped).

        :return: the alert, or ``None`` when the series has no open alert
            (nothing is written then).
        :raises StateError: if the write fails.
        """
        async with self._db.transaction() as tx:
            alert = await _open_alert(tx, rule, series)
            if alert is None:
                return None
            await _transition(tx, alert.id, alert.state, alert.state, at, reason)

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

    async def get(self, alert_id: int) -> Alert | None:
        """Return the alert with id ``alert_id``, or ``None``."""
        row = await self._db.fetchone(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE id = ?", (alert_id,)
        )
        return None if row is None else alert_from_row(row)

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
        self, state: str | None = None, limit: int = 100
    ) -> list[Alert]:
        """Return up to ``limit`` alerts, newest first, optionally of one state."""
        if state is None:
            rows = await self._db.fetchall(
                f"SELECT {_ALERT_COLUMNS} FROM alerts ORDER BY id DESC LIMIT ?",
                (limit,),
            )
        else:
            rows = await self._db.fetchall(
                f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE state = ?"
                " ORDER BY id DESC LIMIT ?",
                (state, limit),
            )
        return [alert_from_row(row) for row in rows]


async def _open_alert(tx: Transaction, rule: str, series: str) -> Alert | None:
    row = await tx.fetchone(_OPEN_OF_SERIES, (rule, series))
    return None if row is None else alert_from_row(row)


async def _transition(
    tx: Transaction,
    alert_id: int,
    from_state: str | None,
    to_state: str,
    at: float,
    reason: str,
) -> Transition:
    transition_id = await tx.insert(
        "INSERT INTO transitions (alert_id, from_state, to_state, at, actor, reason)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (alert_id, from_state, to_state, at, ENGINE, reason),
    )
    return Transition(
        id=transition_id,
        alert_id=alert_id,
        from_state=from_state,
        to_state=to_state,
        at=at,
        actor=ENGINE,
        reason=reason,
    )


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
