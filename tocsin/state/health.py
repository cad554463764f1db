"""What the state database tells of each integration's deliveries.

Every query reads only the attempts of the last :data:`HORIZON`, found by the
audit's index on the time an attempt ended (``delivery_attempts_at``),
however long the audit.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from tocsin.state.db import Database

#: How far back an integration's failures, last success and last error are
#: looked for, in seconds.
HORIZON = 86400.0
#: How many of an integration's latest attempts its latency is taken from.
RECENT = 100

_SINCE = """
SELECT o.channel,
       SUM(d.outcome != 'delivered'),
       SUM(d.outcome != 'delivered' AND d.at >= :window),
       SUM(d.outcome = 'dead'),
       MAX(CASE WHEN d.outcome = 'delivered' THEN d.at END)
FROM delivery_attempts AS d JOIN outbox AS o ON o.id = d.outbox_id
WHERE d.at >= :since
GROUP BY o.channel
"""
_LAST_ERROR = """
SELECT d.at, d.reason, d.status
FROM delivery_attempts AS d JOIN outbox AS o ON o.id = d.outbox_id
WHERE d.at >= :since AND o.channel = :channel AND d.outcome != 'delivered'
ORDER BY d.at DESC, d.id DESC LIMIT 1
"""
_RECENT = """
SELECT d.outcome, d.duration_ms
FROM delivery_attempts AS d JOIN outbox AS o ON o.id = d.outbox_id
WHERE d.at >= :since AND o.channel = :channel
ORDER BY d.at DESC, d.id DESC LIMIT :limit
"""
# On the index of pending rows (outbox_due): never more than the backlog.
_BACKLOG = """
SELECT channel, COUNT(*), MIN(created_at) FROM outbox
WHERE state = 'pending' GROUP BY channel
"""


class DeliveryFigures(msgspec.Struct, frozen=True, kw_only=True):
    """What the state database tells of one integration's deliveries."""

    #: Outcomes of its latest attempts (``delivered``, ``retry``, ``dead``),
    #: newest first, at most :data:`RECENT`.
    recent_outcomes: tuple[str, ...] = ()
    #: Durations of those attempts, in milliseconds.
    recent_durations_ms: tuple[float, ...] = ()
    #: Within :data:`HORIZON`, like the last error.
    last_success_at: float | None = None
    last_error_at: float | None = None
    #: The last failure's reason (``server_error``, ``timeout``...): the
    #: channels' words, which never hold a secret.
    last_error_reason: str | None = None
    last_error_status: int | None = None
    #: Failed attempts within :data:`HORIZON`.
    failures_24h: int = 0
    #: Of those, the ones within the window asked for.
    failures_window: int = 0
    #: Notifications given up on after an attempt within :data:`HORIZON`
    #: (expired ones, given up on unsent, are listed with the dead letters).
    dead_letters_24h: int = 0
    #: Pending notifications, and when the oldest was queued.
    backlog: int = 0
    oldest_pending_at: float | None = None


class DeliveryHealth:
    """Reads each integration's :class:`DeliveryFigures`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def figures(
        self, channels: Iterable[str], now: float, window: float
    ) -> dict[str, DeliveryFigures]:
        """Return the figures of each of ``channels`` at ``now``.

        :param window: how far back ``failures_window`` counts, in seconds.
        """
        names = list(channels)
        since = now - HORIZON
        counts = {
            row[0]: row[1:]
            for row in await self._db.fetchall(
                _SINCE, {"since": since, "window": now - window}
            )
        }
        backlog = {row[0]: row[1:] for row in await self._db.fetchall(_BACKLOG)}
        found: dict[str, DeliveryFigures] = {}
        for name in names:
            failures, in_window, dead, success = counts.get(name, (0, 0, 0, None))
            pending, oldest = backlog.get(name, (0, None))
            recent = await self._db.fetchall(
                _RECENT, {"since": since, "channel": name, "limit": RECENT}
            )
            error = await self._db.fetchone(
                _LAST_ERROR, {"since": since, "channel": name}
            )
            found[name] = DeliveryFigures(
                recent_outcomes=tuple(row[0] for row in recent),
                recent_durations_ms=tuple(row[1] for row in recent),
                last_success_at=success,
                last_error_at=None if error is None else error[0],
                last_error_reason=None if error is None else error[1],
                last_error_status=None if error is None else error[2],
                failures_24h=failures or 0,
                failures_window=in_window or 0,
                dead_letters_24h=dead or 0,
                backlog=pending,
                oldest_pending_at=oldest,
            )

        return found
