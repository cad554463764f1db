"""Reads on a connection of their own: never queued behind a write that waits
for a lock another process holds."""

from __future__ import annotations

import asyncio
import sqlite3

from tocsin.clock import ManualClock
from tocsin.state.db import Database

INSERT = "INSERT INTO api_settings (kind, body, updated_at) VALUES ('dedup', '{}', 0)"
COUNT = "SELECT COUNT(*) FROM api_settings"


async def test_a_read_does_not_wait_behind_a_write_waiting_for_a_lock(tmp_path):
    path = tmp_path / "t.db"
    db = await Database.open(path, clock=ManualClock(), busy_timeout=5.0)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")

    async def write() -> None:
        async with db.transaction() as tx:
            await tx.execute(INSERT)

    writing = asyncio.create_task(write())
    try:
        # The write holds the writer connection, waiting for the other lock.
        while not db._lock.locked():
            await asyncio.sleep(0)

        assert await db.fetchall(COUNT) == [(0,)]
        assert not writing.done()
    finally:
        other.execute("ROLLBACK")
        other.close()
    await writing

    # A read sees what was committed before it began.
    assert await db.fetchall(COUNT) == [(1,)]
    assert db.locked == 0
    await db.close()
