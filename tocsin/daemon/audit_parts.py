"""The daemon's audit parts: the log the API reads, reloads recorded in it,
and its retention.

:class:`AuditParts` is the part of :class:`~tocsin.daemon.app.Daemon` that
opens the audit log, records each reload and each reload refused (silences
and the API's changes are recorded by their stores, in their own
transactions), and prunes what is older than ``audit.retention`` in the
background, by the daemon's clock.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack

from tocsin.daemon.reload import ReloadOutcome
from tocsin.daemon.tasks import cancel
from tocsin.errors import StateError
from tocsin.state.audit import AuditLog
from tocsin.state.audit_retention import Retention
from tocsin.state.db import Database

log = logging.getLogger(__name__)

#: How often the audit log is pruned; the first prune runs at start.
PRUNE_EVERY = 600.0


class AuditParts:
    """Mixed into the daemon: expects its ``config``, ``config_path``,
    ``clock`` and ``parts``."""

    async def _start_audit(self, stack: AsyncExitStack, database: Database) -> None:
        """Open the audit log, and start pruning it unless it keeps everything."""
        self.parts.audit = AuditLog(database)
        settings = self.config.audit
        retention = Retention(database, self.clock, float(settings.retention))
        if retention.retention <= 0:
            log.info("audit log kept whole", extra={"detail": "retention is 0"})
            return
        task = asyncio.create_task(self._prune(retention), name="audit-retention")
        stack.push_async_callback(cancel, task)

    async def _prune(self, retention: Retention) -> None:
        """Prune now and then every :data:`PRUNE_EVERY` seconds of the
        daemon's clock, looking at it every ``daemon.tick``."""
        interval = float(self.config.daemon.tick)
        next_prune = 0.0
        while True:
            now = self.clock.time()
            if now >= next_prune:
                next_prune = now + PRUNE_EVERY
                try:
                    await retention.prune_once()
                except StateError as error:
                    # A WARNING: the next turn tries again, and nothing is lost
                    # but disk space meanwhile.
                    log.warning(
                        "cannot prune the audit log", extra={"error": str(error)}
                    )
            await asyncio.sleep(interval)

    async def _record_reload(self, source: str, outcome: ReloadOutcome) -> None:
        """Record one reload of the config file, applied or refused.

        A failed record is logged, never raised: the reload itself is done.
        """
        if outcome.is_reloaded:
            action = "reloaded"
            detail = {
                "kept": list(outcome.kept),
                "added": list(outcome.added),
                "changed": list(outcome.changed),
                "removed": list(outcome.removed),
            }
        else:
            action, detail = "reload_refused", {"error": outcome.error}
        try:
            await self.parts.audit.record(
                at=self.clock.time(),
                kind="config",
                action=action,
                actor=source.lower(),
                subject=self.config_path,
                detail=detail,
            )
        except StateError as error:
            log.warning(
                "cannot record a reload in the audit log",
                extra={"reason": source, "error": str(error)},
            )
