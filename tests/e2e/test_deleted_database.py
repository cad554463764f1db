"""The state database deleted, or replaced, under the running daemon.

SQLite keeps writing to a deleted file it has open, so nothing fails: the
daemon looks healthy while everything it records goes to a file that vanishes
at the next restart, and an alert still firing then fires again as a new
alert, sent again under a new key. Tocsin writes the database back from the
copy it has open instead, says so, and loses nothing; a file put in its place
by someone else is not overwritten, and writes are refused until a restart.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3

import pytest

from tests.e2e.daemon import DAEMON_HEAD, DaemonProcess
from tests.e2e.test_lifecycle import sender
from tests.standins.webhook import WebhookStandin
from tocsin.client import Client

HOOK_ENV = "TOCSIN_TEST_DELETED_DB_HOOK"

CONFIG = (
    DAEMON_HEAD
    + """
[[channels]]
name = "hook"
type = "webhook"
url_env = "{hook_env}"

[[rules]]
name = "latency"
metric = "model.latency"
group_by = ["model"]
aggregation = "max"
window = "1h"
threshold = 100
channels = ["hook"]
"""
)


@pytest.fixture
async def hook():
    async with WebhookStandin() as standin:
        yield standin


@pytest.fixture
async def daemon(tmp_path, hook):
    text = CONFIG.format(dir=tmp_path, hook_env=HOOK_ENV)
    process = DaemonProcess(tmp_path, text, {HOOK_ENV: hook.url})
    await process.start()
    yield process
    await process.close()


async def call(function, *args):
    return await asyncio.to_thread(function, *args)


def database_files(tmp_path) -> list:
    return sorted((tmp_path / "state").glob("tocsin.db*"))


@pytest.mark.parametrize("deleted", ["the database", "the database and its log"])
async def test_a_database_deleted_under_the_daemon_is_written_back_whole(
    tmp_path, daemon, hook, deleted
):
    metrics = sender(tmp_path)
    metrics.gauge("model.latency", 250, tags=["model:a"])
    [first] = await hook.wait_for(1)

    database = tmp_path / "state" / "tocsin.db"
    doomed = [database] if deleted == "the database" else database_files(tmp_path)
    for path in doomed:
        path.unlink()
    # The next write finds out, and what comes after it is kept as well.
    metrics.gauge("model.latency", 300, tags=["model:b"])
    await hook.wait_for(2)
    [restored] = await daemon.wait_for_log("state database written back")

    assert restored["level"] == "error"
    assert database.stat().st_mode & 0o777 == 0o600
    # Restarted, then fed the same breaches: the same two alerts, still open,
    # and no trigger sent again under a new key.
    assert await daemon.stop() == 0
    await daemon.start()
    metrics.gauge("model.latency", 260, tags=["model:a"])
    metrics.gauge("model.latency", 310, tags=["model:b"])
    with Client(socket=str(tmp_path / "state" / "api.sock")) as client:
        # A status round trip after the samples: they have been taken in.
        await call(client.status)
        alerts = await call(client.list_alerts)
    assert sorted(a["spec"]["series"] for a in alerts) == ["model=a", "model=b"]
    assert {a["state"] for a in alerts} == {"triggered"}
    assert await daemon.stop() == 0
    keys = [r.headers["Idempotency-Key"] for r in hook.requests]
    assert len(keys) == 2
    assert keys[0] == first.headers["Idempotency-Key"]
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT state FROM outbox ORDER BY id").fetchall()
    assert rows == [("delivered",), ("delivered",)]


async def test_a_database_replaced_under_the_daemon_is_left_alone(
    tmp_path, daemon, hook
):
    metrics = sender(tmp_path)
    metrics.gauge("model.latency", 250, tags=["model:a"])
    await hook.wait_for(1)

    # Someone puts another database in its place (a restore from a backup).
    database = tmp_path / "state" / "tocsin.db"
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE mine (x)")
    connection.close()
    for path in database_files(tmp_path):
        path.unlink()
    shutil.copy(other, database)
    metrics.gauge("model.latency", 300, tags=["model:b"])
    [refused] = await daemon.wait_for_log("cannot record an alert decision; retrying")

    assert "was replaced by another file" in refused["error"]
    with sqlite3.connect(database) as connection:
        tables = connection.execute("SELECT name FROM sqlite_master").fetchall()
    assert tables == [("mine",)]
    # Still serving, and saying why it records nothing.
    with Client(socket=str(tmp_path / "state" / "api.sock")) as client:
        status = await call(client.status)
    assert status["state_database"]["errors"] > 0
    assert len(hook.requests) == 1
