"""Requests other services sent Tocsin, remembered by their ids.

PagerDuty delivers each webhook at least once, with the same ``X-Webhook-Id``
on every retry; a Standard Webhooks sender does the same with ``webhook-id``.
:meth:`InboundLog.first_time` tells the first delivery of an id from a repeat,
so that an acknowledgement retried by its sender is applied once.
"""

from __future__ import annotations

from tocsin.clock import Clock
from tocsin.state.db import Database

#: How long an id is remembered: PagerDuty retries a webhook for up to 48 h.
KEEP_FOR = 72 * 3600.0


class InboundLog:
    """The ids of inbound requests seen within :data:`KEEP_FOR`."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def first_time(self, source: str, event_id: str) -> bool:
        """Record ``event_id`` from ``source``; return whether it is new.

        Ids older than :data:`KEEP_FOR` are forgotten on the way.

        :raises StateError: if the database cannot be written.
        """
        now = self._clock.time()
        async with self._db.transaction() as tx:
            await tx.execute(
                "DELETE FROM inbound_events WHERE received_at < ?", (now - KEEP_FOR,)
            )
            added = await tx.execute(
                "INSERT OR IGNORE INTO inbound_events (source, event_id, received_at)"
                " VALUES (?, ?, ?)",
                (source, event_id, now),
            )

        return added > 0

    async def forget(self, source: str, event_id: str) -> None:
        """Forget ``event_id`` from ``source``, whose handling failed, so that
        its sender's retry is taken as new.

        :raises StateError: if the database cannot be written.
        """
        async with self._db.transaction() as tx:
            await tx.execute(
                "DELETE FROM inbound_events WHERE source = ? AND event_id = ?",
                (source, event_id),
            )
