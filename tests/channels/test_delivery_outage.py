"""A receiver that is slow, then down for ten minutes, then back: every attempt
carries the same idempotency key, attempts back off exponentially, and the
outage costs a small number of attempts, each in the audit log (case F12).

The slow receiver answers after 0.7 s to a client that waits 0.5 s: the field
case's 7 s and 5 s scaled down by ten, so the test takes under a second. The
outage is driven by a manual clock and :meth:`Dispatcher.run_once`, never by
real time.
"""

from __future__ import annotations

import random

import msgspec
import pytest

from tests.channels.test_delivery import SEED, reference_delays, settle, webhook
from tests.standins.webhook import Reply
from tests.state.test_alerts import T0, make_spec
from tocsin.channels.delivery import JITTER, Dispatcher
from tocsin.channels.health import (
    INTEGRATION_FAILING_RULE,
    DeliveryWatch,
    integration_health,
)
from tocsin.daemon.meta_alerts import IntegrationWatcher
from tocsin.schema import HealthConfig
from tocsin.state.health import DeliveryHealth

#: The receiver's answer time and the client's timeout, both scaled by 0.1.
SLOW_ANSWER = 0.7
CLIENT_TIMEOUT = 0.5
OUTAGE = 600.0
BACKOFF = 1.0
MAX_BACKOFF = 300.0


def attempts_to_outlast(outage: float, share: float) -> int:
    """Return how many attempts the backoff schedule makes before one lands at
    or after ``outage`` seconds, every pause being ``share`` of its backoff.

    The first attempt is at 0; pause ``k`` (from 1) is
    ``min(BACKOFF * 2**(k-1), MAX_BACKOFF) * share``.
    """
    at, attempts = 0.0, 1
    while at < outage:
        at += min(BACKOFF * 2 ** (attempts - 1), MAX_BACKOFF) * share
        attempts += 1

    return attempts


def test_the_schedule_outlasts_ten_minutes_in_the_same_number_of_attempts():
    # Whatever the jitter draws, the count is the same: the assertion below
    # on the count is the schedule's, not the seed's.
    assert attempts_to_outlast(OUTAGE, 1 - JITTER) == attempts_to_outlast(OUTAGE, 1)


async def test_a_receiver_slower_than_the_timeout_gets_the_same_message_again(
    hook, session, clock, db, store, outbox
):
    hook.reply(200, delay=SLOW_ANSWER)
    channel = webhook("ops", hook, session, clock, timeout=CLIENT_TIMEOUT)
    dispatcher = Dispatcher(outbox, {"ops": channel}, clock, rng=random.Random(SEED))
    await store.fire(make_spec(), ["ops"])

    await dispatcher.run_once(T0)
    retry_at = await outbox.next_due("ops")
    clock.set(retry_at)
    await dispatcher.run_once(retry_at)

    # The receiver got the message twice, the same bytes under the same key,
    # so it can tell the second one for the repeat it is.
    slow, again = await hook.wait_for(2)
    assert again.headers["Idempotency-Key"] == slow.headers["Idempotency-Key"]
    assert again.body == slow.body
    assert retry_at - T0 == pytest.approx(reference_delays(1, BACKOFF, MAX_BACKOFF)[0])
    [row] = await db.fetchall("SELECT id, state FROM outbox")
    assert row[1] == "delivered"
    audit = await outbox.attempts(row[0])
    assert [(a.outcome, a.reason, a.status) for a in audit] == [
        ("retry", "timeout", None),
        ("delivered", None, 200),
    ]
    assert audit[0].error == "channel ops: no response within 0.5s"


async def test_f12_slow_then_ten_minutes_of_503_costs_a_bounded_number_of_attempts(
    hook, session, clock, db, store, outbox
):
    # The first request outlasts the client's timeout; from then on the
    # receiver answers 503 until ten minutes have passed, and 200 after.
    hook.reply(200, delay=SLOW_ANSWER)
    outage_ends = T0 + OUTAGE
    hook.responder = lambda: Reply(503 if clock.time() < outage_ends else 200)
    channel = webhook(
        "ops",
        hook,
        session,
        clock,
        timeout=CLIENT_TIMEOUT,
        backoff=BACKOFF,
        max_backoff=MAX_BACKOFF,
        max_attempts=20,
    )
    dispatcher = Dispatcher(outbox, {"ops": channel}, clock, rng=random.Random(SEED))
    alert = await store.fire(make_spec(), ["ops"])

    delays = await settle(dispatcher, outbox, clock)

    # Bounded: exactly as many attempts as the schedule needs to pass the
    # outage, the last one delivered.
    expected = attempts_to_outlast(OUTAGE, 1.0)
    requests = hook.requests
    assert len(requests) == expected
    assert [r.status for r in requests] == [200] + [503] * (expected - 2) + [200]

    # One key, one body, on every attempt.
    key = requests[0].headers["Idempotency-Key"]
    assert key.startswith(f"tocsin-{alert.uid}-")
    assert {r.headers["Idempotency-Key"] for r in requests} == {key}
    assert {r.headers["webhook-id"] for r in requests} == {key}
    assert len({r.body for r in requests}) == 1

    # Exponential: each pause is its backoff less at most the jitter, the
    # backoff doubling up to the cap; exactly what the seeded jitter drew.
    for attempt, delay in enumerate(delays, start=1):
        full = min(BACKOFF * 2 ** (attempt - 1), MAX_BACKOFF)
        assert full * (1 - JITTER) <= delay <= full
    assert delays == pytest.approx(reference_delays(expected - 1, BACKOFF, 300.0))

    # Every attempt is in the audit log, once, in order.
    [(outbox_id, state, attempts)] = await db.fetchall(
        "SELECT id, state, attempts FROM outbox"
    )
    assert (state, attempts) == ("delivered", expected)
    audit = await outbox.attempts(outbox_id)
    assert [a.attempt for a in audit] == list(range(1, expected + 1))
    assert [a.outcome for a in audit] == ["retry"] * (expected - 1) + ["delivered"]
    assert [a.reason for a in audit] == (
        ["timeout"] + ["server_error"] * (expected - 2) + [None]
    )
    assert [a.status for a in audit] == [None] + [503] * (expected - 2) + [200]
    assert audit[-1].at >= outage_ends
    assert all(a.at < outage_ends for a in audit[:-1])
    assert all("secret-token" not in (a.error or "") for a in audit)


@pytest.mark.parametrize("outage", [1, 4, 7])
async def test_a_short_outage_is_retried_until_it_ends(
    hook, session, clock, db, store, outbox, outage
):
    hook.reply(200, hold=True)
    hook.reply(503, times=outage)
    channel = webhook("ops", hook, session, clock, timeout=0.2, max_attempts=10)
    dispatcher = Dispatcher(outbox, {"ops": channel}, clock, rng=random.Random(SEED))
    await store.fire(make_spec(), ["ops"])

    delays = await settle(dispatcher, outbox, clock)

    attempts = outage + 2
    assert len(hook.requests) == attempts
    assert len({r.headers["Idempotency-Key"] for r in hook.requests}) == 1
    assert delays == pytest.approx(reference_delays(attempts - 1, 1.0, 300.0))
    [row] = await db.fetchall("SELECT id FROM outbox")
    audit = await outbox.attempts(row[0])
    assert [a.status for a in audit] == [None] + [503] * outage + [200]
    assert await outbox.pending_count() == 0


async def test_an_hour_down_reads_failing_raises_one_alert_and_recovers(
    hook, session, clock, db, store, outbox
):
    # Down for an hour on the manual clock, then back.
    outage_ends = T0 + 3600.0
    hook.responder = lambda: Reply(503 if clock.time() < outage_ends else 200)
    channel = webhook(
        "ops", hook, session, clock, backoff=BACKOFF, max_backoff=MAX_BACKOFF
    )
    channel.max_attempts = 100
    settings = HealthConfig(failures=5, window=600.0)
    watch = DeliveryWatch(float(settings.window))
    dispatcher = Dispatcher(
        outbox, {"ops": channel}, clock, rng=random.Random(SEED), watch=watch
    )
    watcher = IntegrationWatcher(
        watch,
        settings,
        print,
        clock,
        configured=lambda: ["ops", "pager"],
        internal_channels=lambda: ["ops", "pager"],
    )
    await store.fire(make_spec(), ["ops"])
    reader = DeliveryHealth(db)

    decisions, statuses = [], []
    await dispatcher.run_once(clock.time())
    while (due := await outbox.next_due("ops")) is not None:
        clock.set(due)
        await dispatcher.run_once(due)
        decisions += watcher.evaluate(clock.time())
        [figures] = (await reader.figures(["ops"], clock.time(), 600.0)).values()
        health = integration_health(figures, settings, clock.time())
        statuses.append(health.status)
        # The URL holds the webhook's secret; its health never does.
        assert b"secret-token" not in msgspec.json.encode(health)

    # Bounded: the schedule's attempts through the hour, the last delivered.
    fewest, most = (attempts_to_outlast(3600.0, s) for s in (1.0, 1 - JITTER))
    assert fewest <= len(hook.requests) <= most
    assert hook.requests[-1].status == 200
    # Failing through the outage, and no longer once it delivered.
    assert statuses[3:-1] == ["failing"] * (len(statuses) - 4)
    assert statuses[-1] != "failing"
    [figures] = (await reader.figures(["ops"], clock.time(), 600.0)).values()
    assert figures.backlog == 0
    assert figures.last_success_at >= outage_ends
    # One alert about it, and its resolve when it delivered again.
    assert [(d.action, d.rule, d.labels) for d in decisions] == [
        ("fire", INTEGRATION_FAILING_RULE, {"channel": "ops"}),
        ("resolve", INTEGRATION_FAILING_RULE, {"channel": "ops"}),
    ]
