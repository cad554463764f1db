"""Each integration's delivery figures, read from a real state database."""

from __future__ import annotations

import pytest

from tests.state.test_alerts import T0, make_spec
from tocsin.state.alerts import AlertStore
from tocsin.state.health import HORIZON, DeliveryFigures, DeliveryHealth
from tocsin.state.outbox import Outbox

WINDOW = 600.0


@pytest.fixture
def store(db, clock):
    return AlertStore(db, clock)


@pytest.fixture
def outbox(db, clock):
    return Outbox(db, clock)


async def attempt(outbox, notification, outcome, *, at, duration_ms=10.0):
    """Record one attempt's outcome at ``at``."""
    if outcome == "delivered":
        await outbox.delivered(notification, status=200, duration_ms=duration_ms, at=at)
        return
    failure = {
        "status": 503,
        "reason": "server_error",
        "error": "webhook ops: HTTP 503",
        "duration_ms": duration_ms,
        "at": at,
    }
    if outcome == "dead":
        await outbox.dead(notification, **failure)
    else:
        await outbox.retry(notification, next_attempt_at=at + 1, **failure)


async def queued(store, outbox, series, channel="ops"):
    await store.fire(make_spec(series=series), [channel])
    [notification] = [
        n
        for n in await outbox.due(channel, T0 + HORIZON * 3, limit=100)
        if n.alert.spec.series == series
    ]
    return notification


async def test_figures_count_failures_read_the_last_error_and_the_backlog(
    db, store, outbox, clock
):
    first = await queued(store, outbox, "model=a")
    await attempt(outbox, first, "retry", at=T0 + 1, duration_ms=30.0)
    [first] = await outbox.due("ops", T0 + 10, limit=1)
    await attempt(outbox, first, "delivered", at=T0 + 2, duration_ms=10.0)
    second = await queued(store, outbox, "model=b")
    await attempt(outbox, second, "retry", at=T0 + 3, duration_ms=20.0)
    await queued(store, outbox, "model=c", channel="log")

    found = await DeliveryHealth(db).figures(["ops", "log", "idle"], T0 + 5, WINDOW)

    assert found["ops"] == DeliveryFigures(
        recent_outcomes=("retry", "delivered", "retry"),
        recent_durations_ms=(20.0, 10.0, 30.0),
        last_success_at=T0 + 2,
        last_error_at=T0 + 3,
        last_error_reason="server_error",
        last_error_status=503,
        failures_24h=2,
        failures_window=2,
        backlog=1,
        oldest_pending_at=T0,
    )
    assert found["log"] == DeliveryFigures(backlog=1, oldest_pending_at=T0)
    assert found["idle"] == DeliveryFigures()


async def test_only_the_last_day_counts_and_the_window_is_its_own(
    db, store, outbox, clock
):
    old = await queued(store, outbox, "model=a")
    await attempt(outbox, old, "retry", at=T0 + 1)
    [old] = await outbox.due("ops", T0 + HORIZON, limit=1)
    await attempt(outbox, old, "retry", at=T0 + HORIZON - 1000)
    [old] = await outbox.due("ops", T0 + HORIZON * 2, limit=1)
    await attempt(outbox, old, "dead", at=T0 + HORIZON + 10)
    now = T0 + HORIZON + 20

    [found] = (await DeliveryHealth(db).figures(["ops"], now, WINDOW)).values()

    # The first attempt is more than a day old; the second is in the day,
    # not in the window; the last is in both.
    assert (found.failures_24h, found.failures_window) == (2, 1)
    assert found.dead_letters_24h == 1
    assert found.recent_outcomes == ("dead", "retry")
    assert (found.backlog, found.last_error_at) == (0, T0 + HORIZON + 10)


async def test_an_empty_audit_has_no_figures(db):
    found = await DeliveryHealth(db).figures(["ops"], T0, WINDOW)

    assert found == {"ops": DeliveryFigures()}
