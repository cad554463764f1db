"""A receiver down for hours, then back.

The outage itself is driven in-process on a manual clock, on the state
database a daemon then opens: the dispatcher makes a bounded number of
attempts (``max_attempts`` on one channel, ``max_age`` on the other) and
dead-letters each notification with its reason. The real daemon, started on
that database once the receiver is back, lists them through
``GET /api/v1/deadletters`` and ``tocsin deadletters``, sends none of them
again, and delivers new notifications normally.
"""

from __future__ import annotations

import json
import random

import aiohttp
import pytest

from tests.channels.test_delivery import webhook
from tests.e2e.daemon import DAEMON_HEAD, DaemonProcess
from tests.e2e.test_lifecycle import sender, tocsin
from tests.standins.webhook import Reply, WebhookStandin
from tests.state.test_alerts import T0, make_spec
from tocsin.channels.delivery import Dispatcher
from tocsin.clock import ManualClock
from tocsin.state.alerts import AlertStore
from tocsin.state.db import Database
from tocsin.state.outbox import Outbox

#: The variable holding each channel's URL: the stand-in's, with a path of
#: the channel's own, so the stand-in tells them apart.
HOOK_ENV = "TOCSIN_TEST_OUTAGE_{}"
MAX_ATTEMPTS = 6
#: The other channel gives up after an hour, whatever attempts remain.
MAX_AGE = 3600.0
MAX_BACKOFF = 600.0

CONFIG = (
    DAEMON_HEAD
    + """
[[channels]]
name = "counted"
type = "webhook"
url_env = "TOCSIN_TEST_OUTAGE_COUNTED"
max_attempts = {max_attempts}

[[channels]]
name = "aged"
type = "webhook"
url_env = "TOCSIN_TEST_OUTAGE_AGED"
max_age = "1h"
max_backoff = "10m"
max_attempts = 1000

[[rules]]
name = "latency"
metric = "model.latency"
aggregation = "max"
window = "1h"
threshold = 100
channels = ["counted", "aged"]
"""
)


def attempts_within(age: float) -> int:
    """Return the most attempts the backoff schedule can make before ``age``:
    every pause at its shortest (the jitter's lower end), from 1 s doubling
    up to :data:`MAX_BACKOFF`."""
    at, attempts = 0.0, 1
    while True:
        at += min(2.0 ** (attempts - 1), MAX_BACKOFF) * 0.75
        if at >= age:
            return attempts
        attempts += 1


async def live_through_the_outage(state_dir, hook) -> dict[str, int]:
    """Queue one trigger per channel and retry it on a manual clock until
    both are given up on; return the requests each channel made."""
    clock = ManualClock(T0)
    database = await Database.open(state_dir / "tocsin.db", clock=clock)
    try:
        store, outbox = AlertStore(database, clock), Outbox(database, clock)
        async with aiohttp.ClientSession() as session:
            channels = {
                "counted": webhook(
                    "counted",
                    At(hook, "counted"),
                    session,
                    clock,
                    max_attempts=MAX_ATTEMPTS,
                ),
                "aged": webhook(
                    "aged",
                    At(hook, "aged"),
                    session,
                    clock,
                    max_age=MAX_AGE,
                    max_backoff=MAX_BACKOFF,
                    max_attempts=1000,
                ),
            }
            dispatcher = Dispatcher(outbox, channels, clock, rng=random.Random(3))
            await store.fire(make_spec(), list(channels))
            await dispatcher.run_once(clock.time())
            while due := [d for c in channels if (d := await outbox.next_due(c))]:
                clock.set(min(due))
                await dispatcher.run_once(clock.time())
    finally:
        await database.close()

    return {
        name: sum(1 for r in hook.requests if r.path.endswith(f"/{name}"))
        for name in ("counted", "aged")
    }


@pytest.fixture
async def hook():
    async with WebhookStandin(Reply(503)) as standin:
        yield standin


async def test_a_long_outage_ends_in_dead_letters_then_delivery_resumes(tmp_path, hook):
    made = await live_through_the_outage(tmp_path / "state", hook)

    # Bounded: every attempt max_attempts allows, and no more than the
    # schedule fits in max_age.
    assert made["counted"] == MAX_ATTEMPTS
    assert 1 < made["aged"] <= attempts_within(MAX_AGE)

    # The receiver is back; the daemon opens the database the outage left.
    hook.default = Reply(200)
    before = len(hook.requests)
    text = CONFIG.format(dir=tmp_path, max_attempts=MAX_ATTEMPTS)
    env = {
        HOOK_ENV.format(name.upper()): At(hook, name).url
        for name in ("counted", "aged")
    }
    daemon = DaemonProcess(tmp_path, text, env)
    await daemon.start()
    try:
        code, table, _ = await tocsin(daemon, "deadletters")
        _, listed, _ = await tocsin(daemon, "deadletters", "--json")
        letters = {letter["channel"]: letter for letter in json.loads(listed)}

        sender(tmp_path).gauge("model.latency", 250)
        await hook.wait_for(before + 2)
        await daemon.stop()
    finally:
        await daemon.close()

    assert code == 0
    assert sorted(line.split()[1] for line in table.splitlines()[1:]) == [
        "aged",
        "counted",
    ]
    counted, aged = letters["counted"], letters["aged"]
    assert (counted["attempts"], counted["reason"]) == (MAX_ATTEMPTS, "server_error")
    assert counted["last_status"] == 503
    assert (aged["attempts"], aged["reason"]) == (made["aged"], "expired")
    assert aged["dead_at"] - aged["created_at"] >= MAX_AGE
    # Only the new alert's triggers: no dead letter sent again, and no resolve
    # of the old alert (its rule is gone) to channels that never had it.
    fresh = hook.requests[before:]
    assert sorted(r.json["alert"]["rule"] for r in fresh) == ["latency", "latency"]
    assert {r.json["event"] for r in fresh} == {"trigger"}
    assert {r.status for r in fresh} == {200}


class At:
    """The stand-in as one channel sees it: at a path of the channel's own."""

    def __init__(self, hook: WebhookStandin, name: str) -> None:
        self.url = f"{hook.url}/{name}"
