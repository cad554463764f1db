"""The daemon's audit parts: reloads recorded with their actor, and the
retention's prunes driven by the daemon's clock."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from types import SimpleNamespace

import pytest

from tocsin import config
from tocsin.clock import ManualClock
from tocsin.daemon import audit_parts
from tocsin.daemon.audit_parts import AuditParts
from tocsin.daemon.reload import ReloadOutcome
from tocsin.state.audit import AuditQuery
from tocsin.state.db import Database

NOW = 1_750_000_000.0


class Parts(AuditParts):
    """The audit parts alone, over a real database and a manual clock."""

    def __init__(self, text: str) -> None:
        self.config = config.parse(text, "tocsin.toml")
        self.config_path = "/etc/tocsin/tocsin.toml"
        self.clock = ManualClock(NOW)
        self.parts = SimpleNamespace()


@pytest.fixture
async def database(tmp_path):
    db = await Database.open(tmp_path / "tocsin.db", clock=ManualClock(NOW))
    yield db
    await db.close()


async def test_reloads_are_recorded_with_their_actor(database):
    parts = Parts("")
    async with AsyncExitStack() as stack:
        await parts._start_audit(stack, database)
        await parts._record_reload("SIGHUP", ReloadOutcome(error="bad: rules: x"))
        await parts._record_reload("api", ReloadOutcome(kept=("drift",), config="f"))
        page = await parts.parts.audit.query(AuditQuery(kind="config"))

    assert [(e.action, e.actor, e.detail) for e in page.entries] == [
        (
            "reloaded",
            "api",
            {"kept": ["drift"], "added": [], "changed": [], "removed": []},
        ),
        ("reload_refused", "sighup", {"error": "bad: rules: x"}),
    ]
    assert {e.subject for e in page.entries} == {"/etc/tocsin/tocsin.toml"}


class SignallingRetention:
    """Stands in for the retention: says when a prune ran."""

    def __init__(self) -> None:
        self.pruned = asyncio.Event()

    async def prune_once(self):
        self.pruned.set()


async def test_prunes_follow_the_daemons_clock(database):
    parts = Parts('[daemon]\ntick = "10ms"\n')
    retention = SignallingRetention()
    task = asyncio.create_task(parts._prune(retention))
    try:
        # The first prune runs at start.
        await asyncio.wait_for(retention.pruned.wait(), 10)
        retention.pruned.clear()
        # The next once the daemon's clock has moved on by PRUNE_EVERY.
        parts.clock.advance(audit_parts.PRUNE_EVERY)
        await asyncio.wait_for(retention.pruned.wait(), 10)
    finally:
        task.cancel()


async def test_a_retention_of_0_starts_no_pruning(database):
    parts = Parts('[audit]\nretention = "0s"\n')
    async with AsyncExitStack() as stack:
        await parts._start_audit(stack, database)

        assert [
            t for t in asyncio.all_tasks() if t.get_name() == "audit-retention"
        ] == []
