"""Delivery: retries, backoff, dead letters, wake-ups, restarts and shutdown."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.standins.webhook import Reply, WebhookStandin
from tests.state.test_alerts import T0, make_spec
from tocsin.channels.base import ChannelContext
from tocsin.channels.delivery import JITTER, Dispatcher
from tocsin.channels.log import LogChannel
from tocsin.channels.webhook import WebhookChannel
from tocsin.clock import ManualClock
from tocsin.config import LogChannelConfig, WebhookChannelConfig
from tocsin.errors import StateError
from tocsin.state.alerts import AlertStore
from tocsin.state.db import Database
from tocsin.state.outbox import Outbox

SEED = 7


def webhook(name, hook, session, clock, **fields) -> WebhookChannel:
    config = WebhookChannelConfig(name=name, url=hook.url, **fields)
    return WebhookChannel(config, {"url": hook.url}, ChannelContext(session, clock))


async def settle(dispatcher, outbox, clock, limit: int = 50) -> list[float]:
    """Run delivery of channel ``ops`` at each due time until nothing is pending.

    :return: the delay chosen after each failed attempt.
    """
    now = T0
    delays = []
    await dispatcher.run_once(now)
    for _ in range(limit):
        due = await outbox.next_due("ops")
        if due is None:
            return delays
        delays.append(due - now)
        clock.set(due)
        now = due
        await dispatcher.run_once(now)
    raise AssertionError("delivery never settled")


def reference_delays(count: int, backoff: float, cap: float) -> list[float]:
    """The backoff the dispatcher must choose with a Random(SEED)."""
    rng = random.Random(SEED)
    return [
        min(backoff * 2 ** (attempt - 1), cap) * rng.uniform(1 - JITTER, 1.0)
        for attempt in range(1, count + 1)
    ]


async def test_dead_letter_after_max_attempts_logs_one_warning_and_one_error(
    hook, session, clock, store, outbox, caplog
):
    caplog.set_level(logging.DEBUG, logger="tocsin.channels.delivery")
    hook.default = Reply(503)
    channel = webhook("ops", hook, session, clock, max_attempts=4)
    dispatcher = Dispatcher(outbox, {"ops": channel}, clock, rng=random.Random(SEED))
    await store.fire(make_spec(), ["ops"])

    await settle(dispatcher, outbox, clock)

    assert len(hook.requests) == 4
    [letter] = await outbox.dead_letters(10)
    assert (letter.attempts, letter.last_status) == (4, 503)
    assert letter.last_error == "channel ops: HTTP 503 Service Unavailable"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in warnings] == ["delivery failed; retrying"]
    assert [r.getMessage() for r in errors] == [
        "notification dead-lettered after 4 attempts"
    ]
    assert errors[0].channel == "ops"
    assert errors[0].reason == "server_error"
    assert (dispatcher.retried, dispatcher.dead_lettered) == (3, 1)


async def test_a_final_error_dead_letters_at_once(
    hook, session, clock, store, outbox, caplog
):
    hook.reply(401)
    channel = webhook("ops", hook, session, clock)
    dispatcher = Dispatcher(outbox, {"ops": channel}, clock)
    await store.fire(make_spec(), ["ops"])

    assert await dispatcher.run_once(T0) == 1

    assert len(hook.requests) == 1
    [letter] = await outbox.dead_letters(10)
    assert (letter.attempts, letter.last_status) == (1, 401)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].reason == "auth"


async def test_one_warning_per_change_of_error_and_a_note_on_recovery(
    hook, session, clock, store, outbox, caplog
):
    caplog.set_level(logging.INFO, logger="tocsin.channels.delivery")
    for status in (503, 503, 503, 429, 429):
        hook.reply(status)
    channel = webhook("ops", hook, session, clock, max_attempts=10)
    dispatcher = Dispatcher(outbox, {"ops": channel}, clock, rng=random.Random(SEED))
    await store.fire(make_spec(), ["ops"])

    await settle(dispatcher, outbox, clock)

    lines = [
        (r.levelname, r.getMessage(), getattr(r, "status", None))
        for r in caplog.records
        if r.name == "tocsin.channels.delivery"
    ]
    assert lines == [
        ("WARNING", "delivery failed; retrying", 503),
        ("WARNING", "delivery failed; retrying", 429),
        ("INFO", "channel delivers again", None),
    ]


async def test_retry_after_is_honoured_even_beyond_max_backoff(
    hook, session, clock, store, outbox
):
    hook.reply(429, headers={"Retry-After": "120"})
    channel = webhook("ops", hook, session, clock, max_backoff=30.0)
    dispatcher = Dispatcher(outbox, {"ops": channel}, clock)
    await store.fire(make_spec(), ["ops"])

    await dispatcher.run_once(T0)

    assert await outbox.next_due("ops") == T0 + 120


@given(
    attempt=st.integers(1, 200),
    backoff=st.floats(0.0, 1000.0),
    cap=st.floats(0.0, 100_000.0),
    retry_after=st.none() | st.floats(0.0, 86400.0),
    seed=st.integers(0, 2**32),
)
def test_retry_delay_matches_the_policy(attempt, backoff, cap, retry_after, seed):
    class Policy:
        pass

    policy = Policy()
    policy.backoff, policy.max_backoff = backoff, cap
    dispatcher = Dispatcher(None, {}, ManualClock(), rng=random.Random(seed))

    delay = dispatcher.retry_delay(policy, attempt, retry_after)

    # Brute force: double `attempt - 1` times, stopping at the cap.
    full = backoff
    for _ in range(attempt - 1):
        full = min(full * 2, cap)
    full = min(full, cap)
    lowest = full * (1 - JITTER)
    if retry_after is not None and retry_after > full:
        assert delay == retry_after
    else:
        assert lowest - 1e-9 <= delay <= full + 1e-9
        if retry_after is not None:
            assert delay >= retry_after


class Exploding:
    """A channel with a bug: every send raises something unexpected."""

    name = "buggy"
    send_resolved = True
    max_attempts = 3
    backoff = 1.0
    max_backoff = 10.0
    max_age = 0.0
    concurrency = 4
    rate_limit = 0
    rate_period = 1.0
    timeout = 10.0

    async def send(self, notification):
        raise ZeroDivisionError("bug")

    async def close(self):
        pass


async def test_an_unexpected_channel_error_is_retried_not_fatal(
    clock, db, store, outbox
):
    dispatcher = Dispatcher(outbox, {"buggy": Exploding()}, clock)
    await store.fire(make_spec(), ["buggy"])

    assert await dispatcher.run_once(T0) == 1

    [row] = await db.fetchall("SELECT id FROM outbox")
    [attempt] = await outbox.attempts(row[0])
    assert (attempt.outcome, attempt.reason) == ("retry", "internal")
    assert attempt.error == "channel buggy: unexpected ZeroDivisionError"


async def test_the_log_channel_writes_one_structured_line(clock, store, outbox, caplog):
    caplog.set_level(logging.INFO, logger="tocsin.channels.log")
    channel = LogChannel(LogChannelConfig(name="audit", level="error"))
    dispatcher = Dispatcher(outbox, {"audit": channel}, clock)
    alert = await store.fire(make_spec(), ["audit"])

    await dispatcher.run_once(T0)

    [record] = [r for r in caplog.records if r.name == "tocsin.channels.log"]
    assert record.levelno == logging.ERROR
    assert record.getMessage() == (
        "alert firing: drift model=a (avg 0.31 > 0.2 for 30s)"
    )
    assert (record.channel, record.alert, record.rule, record.series) == (
        "audit",
        alert.uid,
        "drift",
        "model=a",
    )
    assert (record.status, record.reason) == ("firing", "avg 0.31 > 0.2 for 30s")
    assert await outbox.pending_count() == 0


async def test_a_slow_channel_does_not_delay_another(
    hook, session, clock, db, store, outbox, caplog
):
    async with WebhookStandin() as stuck:
        stuck.reply(200, hold=True)
        slow = webhook("slow", stuck, session, clock, timeout=30.0)
        fast = webhook("fast", hook, session, clock)
        dispatcher = Dispatcher(outbox, {"slow": slow, "fast": fast}, clock)
        await store.fire(make_spec(), ["slow", "fast"])

        dispatcher.start()
        await stuck.wait_for(1)
        await hook.wait_for(1)
        # The slow send is still in flight: shutdown cuts it short.
        await dispatcher.stop(timeout=0.05)

    assert await outbox.pending_channels() == {"slow": 1}
    cut = [r for r in caplog.records if "cut short" in r.getMessage()]
    assert [r.channel for r in cut] == ["slow"]
    [row] = await db.fetchall("SELECT attempts FROM outbox WHERE channel = 'slow'")
    assert row == (0,)


async def test_wake_delivers_rows_written_after_start(
    hook, session, clock, store, outbox
):
    dispatcher = Dispatcher(
        outbox, {"ops": webhook("ops", hook, session, clock)}, clock
    )
    dispatcher.start()

    alert = await store.fire(make_spec(), ["ops"])
    dispatcher.wake()
    [request] = await hook.wait_for(1)
    await dispatcher.stop(timeout=5.0)

    assert request.json["alert"]["uid"] == alert.uid
    assert await outbox.pending_count() == 0
    assert dispatcher.delivered == 1


async def test_pending_rows_are_delivered_after_a_restart(
    tmp_path, hook, session, clock, caplog
):
    path = tmp_path / "restart.db"
    db = await Database.open(path, clock=clock)
    await AlertStore(db, clock).fire(make_spec(), ["ops", "removed"])
    await db.close()

    db = await Database.open(path, clock=clock)
    try:
        outbox = Outbox(db, clock)
        channels = {"ops": webhook("ops", hook, session, clock)}
        dispatcher = Dispatcher(outbox, channels, clock)
        dispatcher.start()
        await hook.wait_for(1)
        await dispatcher.stop(timeout=5.0)
        await dispatcher.stop(timeout=5.0)

        assert await outbox.pending_channels() == {"removed": 1}
    finally:
        await db.close()
    unknown = [r for r in caplog.records if "not configured" in r.getMessage()]
    assert [(r.channel, r.count) for r in unknown] == [("removed", 1)]


async def test_stop_before_start_and_twice_is_harmless(clock, outbox):
    dispatcher = Dispatcher(outbox, {}, clock)

    await dispatcher.stop(timeout=1.0)
    await dispatcher.stop(timeout=1.0)

    assert dispatcher.delivered == 0


async def test_a_trigger_retried_after_the_resolve_still_says_triggered(
    hook, session, clock, store, outbox
):
    hook.reply(503)
    channel = webhook("ops", hook, session, clock)
    dispatcher = Dispatcher(outbox, {"ops": channel}, clock, rng=random.Random(SEED))
    await store.fire(make_spec(), ["ops"])
    await dispatcher.run_once(T0)
    # The alert resolves while its trigger waits for the next attempt.
    await store.resolve(
        "drift", "model=a", at=T0 + 1, value=0.05, reason="ok", channels=["ops"]
    )

    await settle(dispatcher, outbox, clock)

    first, retried, resolve = hook.requests
    assert retried.body == first.body
    assert retried.headers["Idempotency-Key"] == first.headers["Idempotency-Key"]
    assert retried.json["status"] == "firing"
    assert retried.json["alert"]["state"] == "triggered"
    assert retried.json["alert"]["value"] == 0.31
    assert retried.json["alert"]["resolved_at"] is None
    assert resolve.json["status"] == "resolved"
    assert resolve.json["alert"]["state"] == "resolved"
    assert resolve.json["alert"]["value"] == 0.05


class StuckOutbox:
    """An outbox that raises ``error`` on ``failures`` reads, then has nothing due.

    Each failure moves the clock by the worker's pause and wakes the worker, so
    the test covers many seconds of retries without waiting for any of them.
    """

    def __init__(self, clock: ManualClock, failures: int, error: Exception) -> None:
        self.clock = clock
        self.failures = failures
        self.error = error
        self.wake = lambda: None
        self.exhausted = asyncio.Event()

    async def due(self, channel, now, limit):
        if self.failures == 0:
            self.exhausted.set()
            return []
        self.failures -= 1
        self.clock.advance(1.0)
        self.wake()
        raise self.error

    async def next_due(self, channel):
        return None

    async def pending_channels(self):
        return {}


@pytest.mark.parametrize(
    ("error", "level", "message"),
    [
        (
            StateError("state database t.db: query failed: disk I/O error"),
            logging.WARNING,
            "cannot read or record deliveries; retrying",
        ),
        (ZeroDivisionError("bug"), logging.ERROR, "delivery worker failed"),
    ],
)
async def test_a_failing_worker_is_logged_once_per_interval(
    clock, caplog, error, level, message
):
    outbox = StuckOutbox(clock, failures=12, error=error)
    channel = LogChannel(LogChannelConfig(name="audit"))
    dispatcher = Dispatcher(outbox, {"audit": channel}, clock)
    outbox.wake = dispatcher.wake

    dispatcher.start()
    await outbox.exhausted.wait()
    await dispatcher.stop(timeout=5.0)

    # Twelve failures a second apart: the first is logged, the next nine are
    # held back, the eleventh opens a new interval and says how many were.
    lines = [
        (r.getMessage(), r.channel, r.suppressed)
        for r in caplog.records
        if r.levelno == level
    ]
    assert lines == [(message, "audit", 0), (message, "audit", 9)]


async def test_a_resolve_whose_trigger_was_dead_lettered_is_skipped(
    hook, session, clock, db, store, outbox, caplog
):
    hook.reply(401)
    channel = webhook("ops", hook, session, clock)
    dispatcher = Dispatcher(outbox, {"ops": channel}, clock)
    alert = await store.fire(make_spec(), ["ops"])
    await dispatcher.run_once(T0)
    clock.advance(5)
    await store.resolve(
        "drift", "model=a", at=T0 + 5, value=0.05, reason="ok", channels=["ops"]
    )

    assert await dispatcher.run_once(T0 + 5) == 1

    # The destination never heard of the alert: it gets no resolve either.
    assert [r.json["event"] for r in hook.requests] == ["trigger"]
    rows = await db.fetchall(
        "SELECT event, state, attempts, skipped_at, skip_reason FROM outbox ORDER BY id"
    )
    assert rows == [
        ("trigger", "dead", 1, None, None),
        ("resolve", "skipped", 0, T0 + 5, "trigger_not_delivered"),
    ]
    assert await db.fetchall("SELECT outcome FROM delivery_attempts") == [("dead",)]
    assert await outbox.pending_count() == 0
    assert dispatcher.skipped == 1
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.getMessage() == (
        "resolve not sent: the channel never received the alert's trigger"
    )
    assert (warning.channel, warning.alert, warning.reason) == (
        "ops",
        alert.uid,
        "trigger_not_delivered",
    )


async def test_a_resolve_on_a_channel_the_trigger_never_went_to_is_skipped(
    hook, session, clock, db, store, outbox
):
    # The channel was added to the rule between the trigger and the resolve.
    dispatcher = Dispatcher(
        outbox, {"ops": webhook("ops", hook, session, clock)}, clock
    )
    await store.fire(make_spec(), [])
    await store.resolve(
        "drift", "model=a", at=T0 + 5, value=0.05, reason="ok", channels=["ops"]
    )

    await dispatcher.run_once(T0 + 5)

    assert hook.requests == []
    assert await db.fetchall("SELECT event, state FROM outbox") == [
        ("resolve", "skipped")
    ]


async def test_a_resolve_after_a_delivered_trigger_is_sent(
    hook, session, clock, store, outbox
):
    dispatcher = Dispatcher(
        outbox, {"ops": webhook("ops", hook, session, clock)}, clock
    )
    await store.fire(make_spec(), ["ops"])
    await store.resolve(
        "drift", "model=a", at=T0 + 5, value=0.05, reason="ok", channels=["ops"]
    )

    await dispatcher.run_once(T0 + 5)

    assert [r.json["event"] for r in hook.requests] == ["trigger", "resolve"]
    assert dispatcher.skipped == 0
