"""Another process holds the state database's write lock for 8 s while metrics
keep arriving and one series crosses its threshold (case F11).

The real alert goes out once, the lock itself sends nothing, every audit row
lands once, and the contention shows in Tocsin's status answer and its log. A
second, shorter lock then covers the record of the trigger's delivery: the
receiver's answer is kept until it can be written, and nothing is sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
import time
from datetime import datetime

import pytest

from tests.e2e.daemon import DAEMON_HEAD, WAIT, DaemonProcess
from tests.e2e.test_lifecycle import sender
from tests.standins.webhook import WebhookStandin
from tocsin.client import Client

HOOK_ENV = "TOCSIN_TEST_LOCKED_HOOK"
#: How long the other process holds the lock: longer than Tocsin's 5 s wait
#: for a lock, so at least one write is refused outright.
HOLD = 8.0
#: The second hold, over the record of the trigger's delivery; just as sure
#: to outlast Tocsin's wait, and shorter, to keep the test short.
RECORD_HOLD = 6.0

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

#: Holds ``BEGIN IMMEDIATE`` on the database given as argv[1] for argv[2]
#: seconds, saying ``locked`` once it has the lock.
LOCKER = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
connection.execute("ROLLBACK")
connection.close()
"""


@pytest.fixture
async def hook():
    async with WebhookStandin() as standin:
        yield standin


@contextlib.asynccontextmanager
async def write_lock(database, seconds: float):
    """Hold the database's write lock from another process for ``seconds``;
    the body runs while it is held, and the exit waits for its release."""
    locker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        LOCKER,
        str(database),
        str(seconds),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        line = await asyncio.wait_for(locker.stdout.readline(), WAIT)
        assert line == b"locked\n"
        yield locker
        assert await asyncio.wait_for(locker.wait(), WAIT) == 0
    finally:
        if locker.returncode is None:
            locker.kill()
            await locker.wait()


async def call(function, *args):
    return await asyncio.to_thread(function, *args)


async def test_f11_a_locked_database_sends_the_real_alert_once_and_nothing_else(
    tmp_path, hook
):
    config = CONFIG.format(dir=tmp_path, hook_env=HOOK_ENV)
    daemon = DaemonProcess(tmp_path, config, {HOOK_ENV: hook.url})
    await daemon.start()
    database = tmp_path / "state" / "tocsin.db"
    client = Client(socket=str(tmp_path / "state" / "api.sock"))
    metrics = sender(tmp_path)
    # The receiver holds its answer to the trigger until the test lets it go.
    hook.reply(200, hold=True)
    during = None
    try:
        for model in ("a", "b"):
            metrics.gauge("model.latency", 50, tags=[f"model:{model}"])
        before = (await call(client.status))["state_database"]

        async with write_lock(database, HOLD) as locker:
            # Metrics keep arriving the whole time; model=b crosses once.
            metrics.gauge("model.latency", 250, tags=["model:b"])
            crossed = time.time()
            while locker.returncode is None:
                metrics.gauge("model.latency", 40, tags=["model:a"])
                metrics.gauge("model.latency", 60, tags=["model:b"])
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(locker.wait(), 0.25)
                # Tocsin tells while it happens, not only afterwards.
                refused = daemon.find("cannot record an alert decision; retrying")
                if refused and during is None:
                    during = await call(client.status)

        # Locked again while the trigger's outcome waits to be recorded: the
        # receiver's answer is not lost, nor the trigger sent again.
        [trigger] = await hook.wait_for(1)
        async with write_lock(database, RECORD_HOLD):
            hook.release()
            await daemon.wait_for_log("cannot read or record deliveries; retrying")
        await daemon.wait_for_log("delivery records written again", channel="hook")
        after = await call(client.status)
    finally:
        client.disconnect()
    # A clean stop drains every delivery still queued: a duplicate would go out.
    assert await daemon.stop() == 0
    await daemon.close()

    # The real alert, once, with the time it really fired; the lock itself
    # sent nothing.
    assert [r.json["event"] for r in hook.requests] == ["trigger"]
    alert = trigger.json["alert"]
    assert (alert["labels"]["model"], alert["value"]) == ("b", 250)
    # Stamped when the engine decided, not when the write finally went in.
    fired_at = datetime.fromisoformat(alert["fired_at"]).timestamp()
    assert fired_at < crossed + HOLD / 2

    # Every row once: one alert, one transition, one notification, and one
    # audited attempt for the one request the receiver saw.
    with sqlite3.connect(database) as connection:
        alerts = connection.execute("SELECT rule, series, state FROM alerts").fetchall()
        transitions = connection.execute("SELECT COUNT(*) FROM transitions").fetchone()
        outbox = connection.execute("SELECT key, state, attempts FROM outbox")
        outbox = outbox.fetchall()
        attempts = connection.execute(
            "SELECT attempt, outcome, status FROM delivery_attempts"
        ).fetchall()
    assert alerts == [("latency", "model=b", "triggered")]
    assert transitions == (1,)
    assert outbox == [(trigger.headers["Idempotency-Key"], "delivered", 1)]
    assert attempts == [(1, "delivered", 200)]

    # The contention shows in Tocsin's own signals: the status answer while
    # it lasts and after, and a WARNING (not an error) per kind of write.
    assert during is not None
    assert during["state_database"]["locked"] > before["locked"]
    assert after["state_database"]["locked"] > during["state_database"]["locked"]
    assert after["pending_notifications"] == 0
    for message in (
        "cannot record an alert decision; retrying",
        "cannot read or record deliveries; retrying",
    ):
        [first, *_] = daemon.find(message)
        assert first["level"] == "warning"
        assert "database is locked" in first["error"]
    assert not [line for line in daemon.logs if line["level"] == "error"]
