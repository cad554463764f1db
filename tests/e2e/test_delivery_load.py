"""Delivery under load, through the running daemon.

A burst of 500 notifications to a channel paced at one a second holds back
neither another channel, nor the rules engine, nor the API; a channel's
concurrency holds when the receiver is slow and the queue long; and a
``Retry-After`` of a day holds back only what is behind that notification in
order (the later notifications of the same alert), not the channel.
"""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from tests.e2e.daemon import DAEMON_HEAD, WAIT, DaemonProcess
from tests.e2e.test_lifecycle import sender
from tests.standins.webhook import Reply, WebhookStandin
from tocsin.client import Client

BURST = 500
#: Notifications to the channel whose concurrency is watched.
CROWD = 30
CONCURRENCY = 3
DAY = 86400

CHANNELS = ("paced", "other", "wide", "limited")

CONFIG = (
    DAEMON_HEAD
    + """
[[channels]]
name = "paced"
type = "webhook"
url_env = "TOCSIN_TEST_LOAD_PACED"
rate_limit = 1
rate_period = "1s"

[[channels]]
name = "other"
type = "webhook"
url_env = "TOCSIN_TEST_LOAD_OTHER"

[[channels]]
name = "wide"
type = "webhook"
url_env = "TOCSIN_TEST_LOAD_WIDE"
concurrency = {concurrency}

[[channels]]
name = "limited"
type = "webhook"
url_env = "TOCSIN_TEST_LOAD_LIMITED"
"""
    + "".join(
        f"""
[[rules]]
name = "{name}"
metric = "model.{name}"
group_by = ["model"]
aggregation = "last"
window = "1h"
threshold = 100
channels = ["{name}"]
"""
        for name in CHANNELS
    )
)


@pytest.fixture
async def hooks():
    async with (
        WebhookStandin() as paced,
        WebhookStandin() as other,
        WebhookStandin(Reply(200, delay=0.1)) as wide,
        WebhookStandin() as limited,
    ):
        yield {"paced": paced, "other": other, "wide": wide, "limited": limited}


@pytest.fixture
async def daemon(tmp_path, hooks):
    env = {f"TOCSIN_TEST_LOAD_{name.upper()}": hooks[name].url for name in CHANNELS}
    text = CONFIG.format(dir=tmp_path, concurrency=CONCURRENCY)
    process = DaemonProcess(tmp_path, text, env)
    await process.start()
    yield process
    await process.close()


@pytest.fixture
def client(tmp_path):
    with Client(socket=str(tmp_path / "state" / "api.sock")) as connected:
        yield connected


async def call(function, *args):
    return await asyncio.to_thread(function, *args)


async def test_a_burst_to_a_paced_channel_holds_back_nothing_else(
    tmp_path, daemon, hooks, client
):
    metrics = sender(tmp_path)
    for index in range(BURST):
        metrics.gauge("model.paced", 250, tags=[f"model:m{index}"])
    await daemon.wait_for_log("alert fired", BURST, rule="paced")

    # The API answers, and says the burst waits its turn.
    status = await call(client.status)
    # The rules engine still decides, and the other channel still delivers.
    metrics.gauge("model.other", 250, tags=["model:x"])
    [other] = await hooks["other"].wait_for(1)
    after = await call(client.status)

    assert other.json["alert"]["rule"] == "other"
    assert status["alerts"]["triggered"] == BURST
    # Paced at one a second, the burst has barely begun: nearly all of it
    # is still queued, neither dropped nor failed.
    assert after["pending_notifications"] >= BURST - 60
    assert len(hooks["paced"].requests) <= 60
    assert {r.status for r in hooks["paced"].requests} == {200}


async def test_a_channels_concurrency_holds_with_a_long_queue_and_a_slow_receiver(
    tmp_path, daemon, hooks
):
    metrics = sender(tmp_path)
    for index in range(CROWD):
        metrics.gauge("model.wide", 250, tags=[f"model:m{index}"])

    requests = await hooks["wide"].wait_for(CROWD, timeout=WAIT)

    assert len({r.headers["Idempotency-Key"] for r in requests}) == CROWD
    assert hooks["wide"].most_in_flight == CONCURRENCY


async def test_a_retry_after_of_a_day_holds_back_only_that_alerts_notifications(
    tmp_path, daemon, hooks, client
):
    hook = hooks["limited"]
    hook.reply(429, headers={"Retry-After": str(DAY)})
    metrics = sender(tmp_path)
    metrics.gauge("model.limited", 250, tags=["model:first"])
    [refused] = await hook.wait_for(1)

    # Other alerts of the channel go out at once.
    for model in ("second", "third"):
        metrics.gauge("model.limited", 250, tags=[f"model:{model}"])
    await hook.wait_for(3)
    # The first alert recovers: its resolve waits behind its trigger.
    metrics.gauge("model.limited", 10, tags=["model:first"])
    await daemon.wait_for_log("alert resolved", rule="limited")

    # The resolve is queued just after the decision is logged, and the
    # other alerts' deliveries are recorded just after their requests came:
    # wait until the outbox settles on what is left to send.
    def waiting() -> list[tuple[str, float]]:
        with sqlite3.connect(tmp_path / "state" / "tocsin.db") as connection:
            return connection.execute(
                "SELECT event, next_attempt_at - created_at FROM outbox"
                " WHERE state = 'pending' ORDER BY id"
            ).fetchall()

    async with asyncio.timeout(WAIT):
        while [event for event, _ in waiting()] != ["trigger", "resolve"]:
            await asyncio.sleep(0.05)
    left = waiting()
    status = await call(client.status)

    assert [r.status for r in hook.requests] == [429, 200, 200]
    assert sorted(r.json["alert"]["labels"]["model"] for r in hook.requests) == [
        "first",
        "second",
        "third",
    ]
    assert status["pending_notifications"] == 2
    # The trigger waits out the day it was told to; its resolve waits behind it.
    assert left[0][1] >= DAY
    assert refused.headers["Idempotency-Key"] not in {
        r.headers["Idempotency-Key"] for r in hook.requests[1:]
    }
