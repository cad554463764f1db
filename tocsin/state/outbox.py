"""The outbox: notifications waiting for delivery, and every attempt made.

A row is written by :class:`~tocsin.state.alerts.AlertStore` in the transaction
of its alert's transition and leaves the ``pending`` state only through
:meth:`Outbox.delivered`, :meth:`Outbox.dead` or :meth:`Outbox.skipped`. Each
outcome of an attempt is written together with its ``delivery_attempts`` row,
so the audit log holds exactly the attempts that were made; a skipped row was
never attempted and has none.

Notifications of one alert reach one channel in order: a row is not due while an
older row of the same alert and channel is still pending, so a resolve never
overtakes the trigger it follows. A grouped row (one message about the alerts
of an aggregation group, see :func:`queue_group`) waits for the older rows of
its group and channel instead.

A notification describes the alert as it was at its transition, kept in the
row when it was written, not as it is now: a trigger retried after its alert
resolved still says the alert fired, a warning retried after its alert became
critical still says warning, and every attempt carries the same message under
the same idempotency key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal, get_args

import msgspec
import msgspec.structs

from tocsin.clock import Clock
from tocsin.state.alerts import alert_from_row, transition_from_row
from tocsin.state.db import Database, Transaction
from tocsin.state.models import OPEN_STATES, Alert, Notification, NotificationEvent

Outcome = Literal["delivered", "retry", "dead"]
#: How a delivery attempt may end.
OUTCOMES: tuple[str, ...] = get_args(Outcome)

_decode_range = msgspec.json.Decoder(list[float]).decode
_encode_json = msgspec.json.Encoder().encode
_decode_alerts = msgspec.json.Decoder(list[Alert]).decode
_decode_labels = msgspec.json.Decoder(dict[str, str]).decode

# The ordering rule above, as SQL: no older pending row for this alert and
# channel, or for this group and channel when the row is a grouped one. One
# test per kind of row, each on its own index: a single test choosing the
# column with CASE can use neither index, and reads every pending row of the
# channel for every due row, which stalls the drain of a long backlog.
_FIRST_IN_LINE = (
    "NOT EXISTS (SELECT 1 FROM outbox AS o2 WHERE o.group_key IS NULL"
    " AND o2.alert_id = o.alert_id AND o2.channel = o.channel"
    " AND o2.state = 'pending' AND o2.id < o.id)"
    " AND NOT EXISTS (SELECT 1 FROM outbox AS o5 WHERE o.group_key IS NOT NULL"
    " AND o5.group_key = o.group_key AND o5.channel = o.channel"
    " AND o5.state = 'pending' AND o5.id < o.id)"
)
# Whether the channel knows of the alert: a trigger announces it, and a resolve
# follows an announcement only if the trigger reached this channel. When a
# resolve is due its trigger is no longer pending (the rule above). A grouped
# resolve follows a delivered trigger of the same group: the notifier only puts
# alerts it announced to the channel in it, and this check adds that the
# announcement did arrive.
_ANNOUNCED = (
    "o.event = 'trigger' OR (o.group_key IS NULL AND EXISTS (SELECT 1"
    " FROM outbox AS o3 WHERE o3.alert_id = o.alert_id AND o3.channel = o.channel"
    " AND o3.event = 'trigger' AND o3.state = 'delivered')) OR"
    " (o.group_key IS NOT NULL AND EXISTS (SELECT 1 FROM outbox AS o4"
    " WHERE o4.group_key = o.group_key AND o4.channel = o.channel"
    " AND o4.event = 'trigger' AND o4.state = 'delivered' AND o4.id < o.id))"
)
# The alert's identity and spec from its row, its state, value and level from
# the outbox row (the level replaces the spec's, see _at_transition); closing
# notifies nobody, so closed_at is NULL.
_DUE = f"""
SELECT o.id, o.key, o.channel, o.event, o.attempts, o.created_at,
       a.id, a.uid, o.alert_state, a.spec, o.alert_value, o.alert_resolved_at, NULL,
       t.id, t.alert_id, t.from_state, t.to_state, t.at, t.actor, t.reason, t.comment,
       ({_ANNOUNCED}), o.alert_severity, o.alert_threshold, o.alert_range,
       o.alert_summary, o.alert_description,
       o.group_key, o.group_labels, o.reason, o.alerts
FROM outbox AS o
JOIN alerts AS a ON a.id = o.alert_id
JOIN transitions AS t ON t.id = o.transition_id
WHERE o.channel = ? AND o.state = 'pending' AND o.next_attempt_at <= ?
  AND {_FIRST_IN_LINE}
ORDER BY o.id
LIMIT ?
"""


class DeliveryAttempt(msgspec.Struct, frozen=True, kw_only=True):
    """One attempt to deliver one notification, as audited."""

    outbox_id: int
    #: 1 for the first attempt.
    attempt: int
    at: float
    outcome: Outcome
    status: int | None
    #: The channel's failure reason (``timeout``, ``server_error``, ...).
    reason: str | None
    error: str | None
    duration_ms: float


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """A notification that was given up on."""

    id: int
    key: str
    channel: str
    event: str
    alert_uid: str
    rule: str
    series: str
    attempts: int
    last_status: int | None
    last_error: str | None
    created_at: float
    #: When it was given up on: its last attempt, or its expiry.
    dead_at: float | None
    #: Why: the last attempt's failure (``server_error``, ``auth``...), or
    #: ``expired`` for one that waited longer than its channel's ``max_age``.
    reason: str | None


def _at_transition(alert: Alert, level: tuple) -> Alert:
    """Give ``alert`` the level (severity, threshold, range, summary and
    description) an outbox row kept.

    A row queued before rows kept a level has none: its alert's spec has never
    changed, so the spec's level is the one of its transition.
    """
    severity, threshold, range_, summary, description = level
    if severity is None:
        return alert
    alert.spec = msgspec.structs.replace(
        alert.spec,
        severity=severity,
        threshold=threshold,
        range=_decode_range(range_) if range_ else [],
        summary=alert.spec.summary if summary is None else summary,
        description=alert.spec.description if description is None else description,
    )

    return alert


def _notification(row: tuple) -> Notification:
    id_, key, channel, event, attempts, created_at = row[:6]
    group_key, labels, reason, alerts_json = row[27:31]
    alerts = _decode_alerts(alerts_json) if alerts_json else []
    # A grouped row kept every alert whole, its state included (the alert_*
    # columns only tell triggered from resolved).
    alert = (
        alerts[0] if alerts else _at_transition(alert_from_row(row[6:13]), row[22:27])
    )
    return Notification(
        id=id_,
        key=key,
        channel=channel,
        event=event,
        alert=alert,
        transition=transition_from_row(row[13:21]),
        attempts=attempts,
        created_at=created_at,
        announced=bool(row[21]),
        group_key=group_key or "",
        group_labels=_decode_labels(labels) if labels else {},
        reason=reason or "",
        alerts=alerts,
    )


def group_notification_key(group_key: str, flush: int, channel: str) -> str:
    """Return the idempotency key of one grouped message to one channel.

    :param flush: the number of the group's flush (unique across groups, see
        :meth:`tocsin.state.groups.GroupStore.flush`), so a group that was
        emptied and came back never reuses a key.
    """
    digest = hashlib.sha1(group_key.encode(), usedforsecurity=False).hexdigest()
    return f"tocsin-g-{digest[:16]}-{flush}-{channel}"


async def queue_group(
    tx: Transaction,
    *,
    group_key: str,
    group_labels: Mapping[str, str],
    reason: str,
    channel: str,
    event: NotificationEvent,
    alerts: Sequence[Alert],
    flush: int,
    now: float,
) -> int:
    """Write one grouped message to one channel, due at once; return its id.

    The row's ``alert_id`` and ``transition_id`` are the first alert's and
    that alert's latest transition; ``alerts`` is kept whole, as it is now, so
    every attempt sends the same message.

    :param alerts: the alerts of the message, firing ones first; not empty.
    :param flush: the flush number that makes the idempotency key unique.
    :raises ValueError: if ``alerts`` is empty.
    """
    if not alerts:
        raise ValueError("a grouped message needs at least one alert")
    first = alerts[0]
    row = await tx.fetchone(
        "SELECT MAX(id) FROM transitions WHERE alert_id = ?", (first.id,)
    )
    spec = first.spec
    return await tx.insert(
        "INSERT INTO outbox (alert_id, transition_id, channel, event, key,"
        " next_attempt_at, created_at, alert_state, alert_value, alert_resolved_at,"
        " alert_severity, alert_threshold, alert_range, alert_summary,"
        " alert_description, group_key, group_labels, reason, alerts)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            first.id,
            row[0],
            channel,
            event,
            group_notification_key(group_key, flush, channel),
            now,
            now,
            "triggered" if first.state in OPEN_STATES else "resolved",
            first.value,
            first.resolved_at,
            spec.severity,
            spec.threshold,
            _encode_json(spec.range).decode(),
            spec.summary,
            spec.description,
            group_key,
            _encode_json(dict(group_labels)).decode(),
            reason,
            _encode_json(list(alerts)).decode(),
        ),
    )


class Outbox:
    """Hands due notifications to delivery and records how each attempt ended."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def due(self, channel: str, now: float, limit: int) -> list[Notification]:
        """Return up to ``limit`` pending notifications of ``channel`` due at
        ``now``, oldest first."""
        rows = await self._db.fetchall(_DUE, (channel, now, limit))
        return [_notification(row) for row in rows]

    async def next_due(self, channel: str) -> float | None:
        """Return when the next notification of ``channel`` is due, or ``None``."""
        row = await self._db.fetchone(
            "SELECT MIN(o.next_attempt_at) FROM outbox AS o"
            f" WHERE o.channel = ? AND o.state = 'pending' AND {_FIRST_IN_LINE}",
            (channel,),
        )
        return None if row is None else row[0]

    async def delivered(
        self,
        notification: Notification,
        *,
        status: int | None,
        duration_ms: float,
        at: float | None = None,
    ) -> None:
        """Record a successful attempt and take the notification out of the queue.

        :param at: when the attempt ended; now if not given.
        """
        await self._record(
            notification,
            "delivered",
            status=status,
            reason=None,
            error=None,
            duration_ms=duration_ms,
            next_attempt_at=None,
            at=at,
        )

    async def retry(
        self,
        notification: Notification,
        *,
        next_attempt_at: float,
        status: int | None,
        reason: str,
        error: str,
        duration_ms: float,
        at: float | None = None,
    ) -> None:
        """Record a failed attempt and schedule the next one.

        :param at: when the attempt ended; now if not given.
        """
        await self._record(
            notification,
            "retry",
            status=status,
            reason=reason,
            error=error,
            duration_ms=duration_ms,
            next_attempt_at=next_attempt_at,
            at=at,
        )

    async def dead(
        self,
        notification: Notification,
        *,
        status: int | None,
        reason: str,
        error: str,
        duration_ms: float,
        at: float | None = None,
    ) -> None:
        """Record a failed attempt and give up on the notification.

        :param at: when the attempt ended; now if not given.
        """
        await self._record(
            notification,
            "dead",
            status=status,
            reason=reason,
            error=error,
            duration_ms=duration_ms,
            next_attempt_at=None,
            at=at,
        )

    async def expired(
        self, notification: Notification, *, reason: str, at: float | None = None
    ) -> None:
        """Give up on a notification without attempting it again.

        No ``delivery_attempts`` row is written: none was attempted. The row
        keeps its attempt count and last error, and says when and why.

        :param reason: why, in a word (``expired``).
        :param at: when; now if not given.
        """
        now = self._clock.time() if at is None else at
        async with self._db.transaction() as tx:
            # From the attempt count it was read with, like every record.
            await tx.execute(
                "UPDATE outbox SET state = 'dead', dead_at = ?, dead_reason = ?"
                " WHERE id = ? AND state = 'pending' AND attempts = ?",
                (now, reason, notification.id, notification.attempts),
            )

    async def skipped(self, notification: Notification, *, reason: str) -> None:
        """Take the notification out of the queue without sending it.

        :param reason: why, in a word (``trigger_not_delivered``).
        """
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE outbox SET state = 'skipped', skipped_at = ?, skip_reason = ?"
                " WHERE id = ? AND state = 'pending'",
                (self._clock.time(), reason, notification.id),
            )

    async def pending_count(self) -> int:
        """Return how many notifications wait for delivery, on every channel."""
        row = await self._db.fetchone(
            "SELECT COUNT(*) FROM outbox WHERE state = 'pending'"
        )
        return 0 if row is None else row[0]

    async def pending_channels(self) -> dict[str, int]:
        """Return how many notifications wait, by channel name."""
        rows = await self._db.fetchall(
            "SELECT channel, COUNT(*) FROM outbox WHERE state = 'pending'"
            " GROUP BY channel ORDER BY channel"
        )
        return dict(rows)

    async def dead_letters(
        self, limit: int = 100, *, channel: str | None = None
    ) -> list[DeadLetter]:
        """Return up to ``limit`` dead notifications, the last given up on first.

        :param channel: only those of this channel, when given.
        """
        # Rows given up on before rows kept when and why take both from
        # their last attempt.
        last_attempt = (
            "SELECT {} FROM delivery_attempts AS d WHERE d.outbox_id = o.id"
            " ORDER BY d.attempt DESC LIMIT 1"
        )
        rows = await self._db.fetchall(
            "SELECT o.id, o.key, o.channel, o.event, a.uid, a.rule, a.series,"
            " o.attempts, o.last_status, o.last_error, o.created_at,"
            f" COALESCE(o.dead_at, ({last_attempt.format('d.at')})) AS dead_at,"
            f" COALESCE(o.dead_reason, ({last_attempt.format('d.reason')}))"
            " FROM outbox AS o JOIN alerts AS a ON a.id = o.alert_id"
            " WHERE o.state = 'dead' AND (?1 IS NULL OR o.channel = ?1)"
            " ORDER BY dead_at DESC, o.id DESC LIMIT ?2",
            (channel, limit),
        )
        fields = DeadLetter.__struct_fields__
        return [DeadLetter(**dict(zip(fields, row, strict=True))) for row in rows]

    async def attempts(self, outbox_id: int) -> list[DeliveryAttempt]:
        """Return every attempt made for one notification, in order."""
        rows = await self._db.fetchall(
            "SELECT outbox_id, attempt, at, outcome, status, reason, error,"
            " duration_ms FROM delivery_attempts WHERE outbox_id = ? ORDER BY attempt",
            (outbox_id,),
        )
        fields = DeliveryAttempt.__struct_fields__
        return [DeliveryAttempt(**dict(zip(fields, row, strict=True))) for row in rows]

    async def record_all(
        self, attempts: Iterable[tuple[Notification, Outcome, dict]]
    ) -> None:
        """Record several attempts' outcomes in one transaction.

        Each is ``(notification, outcome, fields)``, ``fields`` being the
        keyword arguments :meth:`delivered`, :meth:`retry` or :meth:`dead`
        take. One commit (one flush to disk) for a whole batch of deliveries
        is what lets a destination that answers fast be sent to fast.
        """
        async with self._db.transaction() as tx:
            for notification, outcome, fields in attempts:
                await self._write(tx, notification, outcome, **fields)

    async def _record(
        self, notification: Notification, outcome: Outcome, **fields: object
    ) -> None:
        async with self._db.transaction() as tx:
            await self._write(tx, notification, outcome, **fields)

    async def _write(
        self,
        tx: Transaction,
        notification: Notification,
        outcome: Outcome,
        *,
        status: int | None,
        duration_ms: float,
        reason: str | None = None,
        error: str | None = None,
        next_attempt_at: float | None = None,
        at: float | None = None,
        payload: str | None = None,
    ) -> None:
        now = self._clock.time() if at is None else at
        attempt = notification.attempts + 1
        state = "pending" if outcome == "retry" else outcome
        # Only from the attempt count the notification was read with: a
        # record repeated after a commit that failed late (and yet took
        # effect) changes nothing, where it would otherwise fail for ever
        # on the attempt's unique row. COALESCE keeps the due time of a
        # finished row: it is never read again, but a NOT NULL column
        # needs a value.
        changed = await tx.execute(
            "UPDATE outbox SET state = ?, attempts = ?, last_status = ?,"
            " last_error = ?, next_attempt_at = COALESCE(?, next_attempt_at),"
            " delivered_at = ?, dead_at = ?, dead_reason = ?"
            " WHERE id = ? AND attempts = ?",
            (
                state,
                attempt,
                status,
                error,
                next_attempt_at,
                now if outcome == "delivered" else None,
                now if outcome == "dead" else None,
                reason if outcome == "dead" else None,
                notification.id,
                notification.attempts,
            ),
        )
        if not changed:
            return
        await tx.execute(
            "INSERT INTO delivery_attempts (outbox_id, attempt, at, outcome,"
            " status, reason, error, duration_ms, payload)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                notification.id,
                attempt,
                now,
                outcome,
                status,
                reason,
                error,
                duration_ms,
                payload,
            ),
        )
