"""The audit log's retention: what is older than ``audit.retention`` goes.

Pruning deletes in small batches, each its own short transaction, and yields
to the event loop between them, so the engine's and delivery's writes wait
for one batch at most, never for the whole prune. What goes:

- the attempts of a finished notification (delivered, dead or skipped) of
  an alert that is no longer open; a pending one keeps every attempt, which
  its backoff counts;
- finished notifications of an alert that is no longer open, once their
  attempts are gone (their transition is then free to go);
- the transitions of an alert that is no longer open, except those a
  notification still refers to;
- silence and config events.

An open alert keeps its whole history, deliveries included, however old.
The alerts themselves stay: a resolved or closed alert is what a reopened
one, and the history of a series, are looked up by.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec

from tocsin.clock import Clock
from tocsin.state.db import Database
from tocsin.state.models import OPEN_STATES

log = logging.getLogger(__name__)

#: Rows deleted per transaction.
BATCH = 500

_OPEN = ", ".join(f"'{state}'" for state in OPEN_STATES)

#: One statement per table, each deleting at most one batch older than ?1.
_PRUNES = {
    "delivery_attempts": (
        "DELETE FROM delivery_attempts WHERE id IN ("
        " SELECT d.id FROM delivery_attempts AS d"
        " JOIN outbox AS o ON o.id = d.outbox_id"
        " JOIN alerts AS a ON a.id = o.alert_id"
        " WHERE d.at < ?1 AND o.state <> 'pending'"
        f" AND a.state NOT IN ({_OPEN}) LIMIT ?2)"
    ),
    "outbox": (
        "DELETE FROM outbox WHERE id IN ("
        " SELECT o.id FROM outbox AS o JOIN alerts AS a ON a.id = o.alert_id"
        " WHERE o.created_at < ?1 AND o.state <> 'pending'"
        f" AND a.state NOT IN ({_OPEN})"
        " AND NOT EXISTS (SELECT 1 FROM delivery_attempts AS d"
        "  WHERE d.outbox_id = o.id) LIMIT ?2)"
    ),
    "transitions": (
        "DELETE FROM transitions WHERE id IN ("
        " SELECT t.id FROM transitions AS t JOIN alerts AS a ON a.id = t.alert_id"
        f" WHERE t.at < ?1 AND a.state NOT IN ({_OPEN})"
        " AND NOT EXISTS (SELECT 1 FROM outbox AS o WHERE o.transition_id = t.id)"
        " LIMIT ?2)"
    ),
    "audit_events": (
        "DELETE FROM audit_events WHERE id IN ("
        " SELECT id FROM audit_events WHERE at < ?1 LIMIT ?2)"
    ),
}


class Pruned(msgspec.Struct, kw_only=True):
    """How many rows one prune deleted, by table, and in how many batches."""

    delivery_attempts: int = 0
    outbox: int = 0
    transitions: int = 0
    audit_events: int = 0
    batches: int = 0

    @property
    def total(self) -> int:
        """Return how many rows were deleted in all."""
        return (
            self.delivery_attempts + self.outbox + self.transitions + self.audit_events
        )


async def prune(db: Database, before: float, *, batch: int = BATCH) -> Pruned:
    """Delete what the audit keeps from before ``before``; see the module.

    :param batch: most rows deleted per transaction.
    :raises StateError: if a batch fails; the batches before it stay done.
    """
    pruned = Pruned()
    for table, sql in _PRUNES.items():
        while True:
            async with db.transaction() as tx:
                deleted = await tx.execute(sql, (before, batch))
            pruned.batches += 1
            setattr(pruned, table, getattr(pruned, table) + deleted)
            if deleted < batch:
                break
            # Let the engine's and delivery's writes in between batches.
            await asyncio.sleep(0)

    return pruned


class Retention:
    """Prunes the audit log by the daemon's clock.

    :param retention: seconds entries are kept; ``0`` keeps everything.
    """

    def __init__(
        self, db: Database, clock: Clock, retention: float, *, batch: int = BATCH
    ) -> None:
        self.retention = retention
        self._db = db
        self._clock = clock
        self._batch = batch

    async def prune_once(self) -> Pruned:
        """Prune what is older than the retention now; nothing if it is 0."""
        if self.retention <= 0:
            return Pruned()
        before = self._clock.time() - self.retention
        pruned = await prune(self._db, before, batch=self._batch)
        if pruned.total:
            log.info(
                "audit log pruned",
                extra={
                    "count": pruned.total,
                    "detail": msgspec.structs.asdict(pruned),
                },
            )

        return pruned
