"""Every attempt ends: one that outlasts its channel's timeout for each request
it may make is cut, recorded as a timeout and retried, and its channel's other
notifications go out meanwhile."""

from __future__ import annotations

import asyncio
import random

import msgspec
import pytest

from tests.channels.test_delivery_limits import fire
from tests.state.test_alerts import T0
from tocsin.channels.attempt import GRACE, attempt_limit, bounded_send
from tocsin.channels.delivery import Dispatcher
from tocsin.channels.sample import sample_notification
from tocsin.errors import DeliveryError


class Stuck:
    """A channel whose first ``stuck`` sends never return."""

    send_resolved = True
    max_attempts = 5
    max_age = 0.0
    backoff = 1.0
    max_backoff = 10.0
    concurrency = 1
    rate_limit = 0
    rate_period = 1.0
    #: Short, so that the cut comes soon after :data:`GRACE`.
    timeout = 0.05

    def __init__(self, stuck: int) -> None:
        self.name = "ops"
        self.stuck = stuck
        self.calls = 0

    async def send(self, notification) -> int:
        self.calls += 1
        if self.calls <= self.stuck:
            await asyncio.Event().wait()
        return 200

    async def close(self) -> None:
        pass


def test_the_limit_allows_the_timeout_of_each_request_the_attempt_may_make():
    channel = Stuck(0)
    single = sample_notification("ops", T0)
    grouped = msgspec.structs.replace(single, alerts=[single.alert] * 3)

    assert attempt_limit(channel, single) == channel.timeout + GRACE
    assert attempt_limit(channel, grouped) == 3 * channel.timeout + GRACE


async def test_an_attempt_that_never_ends_is_cut_as_a_retryable_timeout():
    channel = Stuck(1)

    with pytest.raises(DeliveryError) as raised:
        async with asyncio.timeout(10):
            await bounded_send(channel, sample_notification("ops", T0))
    failure = raised.value
    limit = channel.timeout + GRACE

    assert (failure.reason, failure.retryable) == ("timeout", True)
    assert str(failure) == f"channel ops: attempt not finished within {limit:g}s"


async def test_a_stuck_attempt_is_recorded_and_retried_and_holds_nothing_back(
    clock, db, store, outbox
):
    channel = Stuck(1)
    dispatcher = Dispatcher(outbox, {"ops": channel}, clock, rng=random.Random(1))
    await fire(store, 2, ["ops"])

    # One at a time: the first hangs until cut, the second goes out after it.
    # (The outer timeout only turns a hang into a failure.)
    async with asyncio.timeout(10):
        assert await dispatcher.run_once(T0) == 2

    rows = await db.fetchall("SELECT id, state, attempts FROM outbox ORDER BY id")
    assert [(state, attempts) for _, state, attempts in rows] == [
        ("pending", 1),
        ("delivered", 1),
    ]
    [cut] = await outbox.attempts(rows[0][0])
    assert (cut.outcome, cut.reason, cut.status) == ("retry", "timeout", None)

    clock.set(await outbox.next_due("ops"))
    await dispatcher.run_once(clock.time())
    assert (await outbox.attempts(rows[0][0]))[-1].outcome == "delivered"
    assert channel.calls == 3
