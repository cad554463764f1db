"""Each destination's own limits: attempts in flight, attempts per period, and
how long a notification may wait; none of them ever holds another back."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.channels.test_delivery import webhook
from tests.standins.webhook import Reply, WebhookStandin
from tests.state.test_alerts import T0, make_spec
from tocsin.channels.base import DeliverySettings
from tocsin.channels.delivery import Dispatcher
from tocsin.channels.pacing import SlidingWindow
from tocsin.clock import ManualClock, SystemClock
from tocsin.schema import (
    PagerDutyChannelConfig,
    SlackChannelConfig,
    TeamsChannelConfig,
    WebhookChannelConfig,
)
from tocsin.state.alerts import AlertStore
from tocsin.state.outbox import Outbox


class Gated:
    """A channel whose sends all wait for one gate, counting those in flight."""

    send_resolved = True
    max_attempts = 3
    max_age = 0.0
    backoff = 1.0
    max_backoff = 10.0
    rate_limit = 0
    rate_period = 1.0
    timeout = 10.0

    def __init__(self, name: str, concurrency: int) -> None:
        self.name = name
        self.concurrency = concurrency
        self.gate = asyncio.Event()
        self.in_flight = 0
        self.most_in_flight = 0
        self.sent = 0
        self.changed = asyncio.Event()

    async def send(self, notification) -> int:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.changed.set()
        try:
            await self.gate.wait()
        finally:
            self.in_flight -= 1
        self.sent += 1
        self.changed.set()
        return 200

    async def until(self, check) -> None:
        async with asyncio.timeout(10):
            while not check():
                self.changed.clear()
                await self.changed.wait()

    async def close(self) -> None:
        pass


async def fire(store, count: int, channels: list[str]) -> None:
    for index in range(count):
        await store.fire(make_spec(series=f"model={index}"), channels)


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_a_channel_never_has_more_than_its_concurrency_in_flight(
    clock, store, outbox, concurrency
):
    channel = Gated("ops", concurrency)
    dispatcher = Dispatcher(outbox, {"ops": channel}, clock)
    await fire(store, 7, ["ops"])

    dispatcher.start()
    await channel.until(lambda: channel.in_flight == concurrency)
    # The worker had every chance to start more before the gate opens.
    for _ in range(20):
        await asyncio.sleep(0)
    assert channel.in_flight == concurrency
    channel.gate.set()
    await channel.until(lambda: channel.sent == 7)
    await dispatcher.stop(timeout=5.0)

    assert channel.most_in_flight == concurrency
    assert await outbox.pending_count() == 0


async def test_the_rate_limit_holds_attempts_back_without_failing_them(
    hook, session, clock, db, store, outbox
):
    channel = webhook("ops", hook, session, clock, rate_limit=2, rate_period=10.0)
    dispatcher = Dispatcher(outbox, {"ops": channel}, clock)
    await fire(store, 5, ["ops"])

    sent = []
    for step in range(4):
        now = T0 + 10 * step
        clock.set(now)
        await dispatcher.run_once(now)
        # Asking again at the same moment finds no room.
        await dispatcher.run_once(now)
        sent.append(len(hook.requests))

    assert sent == [2, 4, 5, 5]
    # Held back is not failed: one attempt each, none retried or dead.
    rows = await db.fetchall("SELECT state, attempts FROM outbox ORDER BY id")
    assert rows == [("delivered", 1)] * 5
    assert await db.fetchall("SELECT DISTINCT attempt FROM delivery_attempts") == [(1,)]
    assert (dispatcher.retried, dispatcher.dead_lettered) == (0, 0)


async def test_a_running_worker_waits_for_room_instead_of_polling(hook, session, db):
    class Watched(Outbox):
        looks = 0

        async def next_due(self, channel):
            self.looks += 1
            return await super().next_due(channel)

    clock = SystemClock()
    outbox = Watched(db, clock)
    channel = webhook("ops", hook, session, clock, rate_limit=1, rate_period=0.2)
    dispatcher = Dispatcher(outbox, {"ops": channel}, clock)
    await fire(AlertStore(db, clock), 3, ["ops"])

    dispatcher.start()
    await hook.wait_for(3)
    await dispatcher.stop(timeout=5.0)

    # One look per pause for room, and one once all was sent: a worker that
    # spun until the window had room would look thousands of times.
    assert outbox.looks <= 4
    assert await outbox.pending_count() == 0


async def test_a_rate_limited_channel_does_not_hold_back_another(
    hook, session, clock, store, outbox
):
    async with WebhookStandin() as other:
        slow = webhook("slack-like", hook, session, clock, rate_limit=1)
        free = webhook("free", other, session, clock)
        dispatcher = Dispatcher(outbox, {"slack-like": slow, "free": free}, clock)
        await fire(store, 3, ["slack-like", "free"])

        await dispatcher.run_once(T0)

        assert (len(hook.requests), len(other.requests)) == (1, 3)


async def test_a_hung_destination_delays_neither_other_channels_nor_new_alerts(
    session, clock, store, outbox
):
    async with WebhookStandin(Reply(hold=True)) as hung, WebhookStandin() as fine:
        stuck = webhook("stuck", hung, session, clock, timeout=60.0, concurrency=1)
        other = webhook("fine", fine, session, clock)
        dispatcher = Dispatcher(outbox, {"stuck": stuck, "fine": other}, clock)
        await fire(store, 1, ["stuck", "fine"])
        dispatcher.start()
        await hung.wait_for(1)
        await fine.wait_for(1)

        # The hung request is still open: new alerts are still recorded, and
        # the other channel delivers each at once.
        for index in range(1, 4):
            await store.fire(make_spec(series=f"model={index}"), ["stuck", "fine"])
            dispatcher.wake()
            await fine.wait_for(1 + index)
        await dispatcher.stop(timeout=0.05)

    assert len(hung.requests) == 1
    assert len(fine.requests) == 4
    assert await outbox.pending_channels() == {"stuck": 4}


@pytest.mark.parametrize(
    ("config", "limit", "period"),
    [
        (WebhookChannelConfig(name="w"), 0, 1.0),
        (PagerDutyChannelConfig(name="p"), 120, 60.0),
        (SlackChannelConfig(name="s"), 1, 1.0),
        (TeamsChannelConfig(name="t"), 4, 1.0),
    ],
)
def test_each_destination_defaults_to_its_services_published_limit(
    config, limit, period
):
    settings = DeliverySettings(config)

    assert (settings.rate_limit, settings.rate_period) == (limit, period)


@pytest.mark.parametrize(
    ("steps", "room", "wait"),
    [
        # (seconds to advance, attempts to take) before looking.
        ([], 2, 0.0),
        ([(0, 1)], 1, 0.0),
        ([(0, 2)], 0, 10.0),
        ([(0, 1), (4, 1)], 0, 6.0),
        ([(0, 1), (4, 1), (6, 0)], 1, 0.0),
        ([(0, 2), (9.5, 0)], 0, 0.5),
        ([(0, 2), (10, 0)], 2, 0.0),
        ([(0, 2), (10, 2), (3, 0)], 0, 7.0),
    ],
)
def test_the_sliding_window_counts_the_last_period_only(steps, room, wait):
    clock = ManualClock()
    window = SlidingWindow(2, 10.0, clock)
    for seconds, taken in steps:
        clock.advance(seconds)
        window.take(taken)

    assert window.room() == room
    assert window.wait() == pytest.approx(wait)


def test_a_window_without_a_limit_has_room_for_anything():
    window = SlidingWindow(0, 1.0, ManualClock())
    window.take(1000)

    assert (window.is_limited, window.room(), window.wait()) == (False, None, 0.0)


def test_taking_more_than_the_room_is_refused():
    window = SlidingWindow(1, 1.0, ManualClock())
    window.take(1)

    with pytest.raises(ValueError, match="do not fit"):
        window.take(1)


async def test_a_notification_older_than_max_age_is_dead_lettered_on_its_next_turn(
    hook, session, clock, db, store, outbox, caplog
):
    hook.default = Reply(503)
    channel = webhook("ops", hook, session, clock, max_age=60.0, max_attempts=10)
    dispatcher = Dispatcher(outbox, {"ops": channel}, clock)
    alert = await store.fire(make_spec(), ["ops"])
    await dispatcher.run_once(T0)
    # Attempts remain, but the next turn comes after max_age.
    clock.set(T0 + 61)

    assert await dispatcher.run_once(T0 + 61) == 1

    assert len(hook.requests) == 1
    [letter] = await outbox.dead_letters()
    assert (letter.alert_uid, letter.reason, letter.dead_at) == (
        alert.uid,
        "expired",
        T0 + 61,
    )
    assert (letter.attempts, letter.last_status) == (1, 503)
    # The audit holds the one attempt made, and invents none for the expiry.
    [attempt] = await outbox.attempts(letter.id)
    assert (attempt.attempt, attempt.outcome, attempt.status) == (1, "retry", 503)
    assert (dispatcher.expired, dispatcher.dead_lettered) == (1, 1)
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert error.getMessage() == (
        "notification dead-lettered: pending longer than max_age"
    )
    assert (error.channel, error.reason, error.attempt, error.age_s) == (
        "ops",
        "expired",
        1,
        61.0,
    )


async def test_a_notification_never_attempted_expires_without_an_attempt(
    hook, session, clock, db, store, outbox
):
    channel = webhook("ops", hook, session, clock, max_age=30.0)
    dispatcher = Dispatcher(outbox, {"ops": channel}, clock)
    await store.fire(make_spec(), ["ops"])
    clock.set(T0 + 30)

    await dispatcher.run_once(T0 + 30)

    assert hook.requests == []
    assert await db.fetchall("SELECT state, attempts, dead_reason FROM outbox") == [
        ("dead", 0, "expired")
    ]
    assert await db.fetchall("SELECT * FROM delivery_attempts") == []


async def test_a_max_age_of_zero_keeps_a_notification_until_its_attempts_run_out(
    hook, session, clock, store, outbox
):
    channel = webhook("ops", hook, session, clock, max_age=0.0)
    dispatcher = Dispatcher(outbox, {"ops": channel}, clock)
    await store.fire(make_spec(), ["ops"])
    clock.set(T0 + 86400 * 30)

    await dispatcher.run_once(T0 + 86400 * 30)

    assert len(hook.requests) == 1
    assert await outbox.dead_letters() == []
