"""The status rule of an integration's health, and the outcomes kept in memory."""

from __future__ import annotations

import pytest

from tocsin.channels.health import (
    DeliveryWatch,
    classify,
    integration_health,
    latency,
)
from tocsin.clock import ManualClock
from tocsin.schema import HealthConfig
from tocsin.state.health import DeliveryFigures

SETTINGS = HealthConfig(failures=3, window=600.0, backlog=10)
NOW = 1_750_000_000.0
FAILED = ("retry", "retry", "dead")


@pytest.mark.parametrize(
    ("figures", "status", "detail"),
    [
        (DeliveryFigures(), "healthy", ""),
        (
            DeliveryFigures(recent_outcomes=("delivered",) * 3, last_success_at=NOW),
            "healthy",
            "",
        ),
        (
            DeliveryFigures(recent_outcomes=FAILED, failures_window=3),
            "failing",
            "last 3 attempts failed",
        ),
        # Two failures in a row are not yet the three asked for.
        (
            DeliveryFigures(
                recent_outcomes=("retry", "retry", "delivered"), failures_window=2
            ),
            "degraded",
            "2 failed attempts lately",
        ),
        # Old failures, outside the window, count no more.
        (
            DeliveryFigures(recent_outcomes=("delivered", "retry"), failures_24h=1),
            "healthy",
            "",
        ),
        (DeliveryFigures(backlog=10, oldest_pending_at=NOW - 5), "degraded", ""),
        # A backlog older than the window with no success in it: stalled.
        (
            DeliveryFigures(
                backlog=1, oldest_pending_at=NOW - 601, last_success_at=NOW - 601
            ),
            "failing",
            "nothing delivered while notifications wait",
        ),
        # The same backlog, still draining: slow, not stopped.
        (
            DeliveryFigures(
                backlog=1, oldest_pending_at=NOW - 601, last_success_at=NOW - 30
            ),
            "degraded",
            "notifications wait longer than the window",
        ),
        (DeliveryFigures(backlog=1, oldest_pending_at=NOW - 600), "healthy", ""),
    ],
)
def test_the_status_rule(figures, status, detail):
    found, why = classify(figures, SETTINGS, NOW)

    assert found == status
    if detail:
        assert why == detail
    if status == "healthy":
        assert why == ""


def test_health_reports_latency_and_how_long_the_backlog_waited():
    figures = DeliveryFigures(
        recent_outcomes=("delivered",) * 4,
        recent_durations_ms=(40.0, 10.0, 30.0, 20.0),
        backlog=2,
        oldest_pending_at=NOW - 12.5,
    )

    health = integration_health(figures, SETTINGS, NOW, in_flight=1)

    assert (health.latency_p50_ms, health.latency_p95_ms) == (25.0, 40.0)
    assert (health.backlog, health.oldest_pending_s, health.in_flight) == (2, 12.5, 1)


@pytest.mark.parametrize(
    ("durations", "expected"),
    [
        ((), (None, None)),
        ((5.0,), (5.0, 5.0)),
        (tuple(float(n) for n in range(1, 101)), (50.5, 95.0)),
    ],
)
def test_latency_is_the_median_and_the_nearest_rank_95th_percentile(
    durations, expected
):
    assert latency(durations) == expected


def test_the_watch_keeps_failures_and_dead_letters_for_one_window():
    clock = ManualClock(NOW)
    watch = DeliveryWatch(window=600.0)
    watch.attempted("ops", "retry", clock.time(), "server_error")
    clock.advance(300)
    watch.attempted("ops", "dead", clock.time(), "timeout")
    watch.expired("ops", clock.time())

    assert watch.failures("ops", clock.time()) == [
        (NOW, "server_error"),
        (NOW + 300, "timeout"),
    ]
    assert watch.dead_letters("ops", clock.time()) == 2
    assert watch.changed.is_set()

    clock.advance(301)
    assert watch.failures("ops", clock.time()) == [(NOW + 300, "timeout")]
    clock.advance(300)
    assert watch.failures("ops", clock.time()) == []
    assert watch.dead_letters("ops", clock.time()) == 0


def test_the_watch_tells_whether_the_last_attempt_succeeded():
    watch = DeliveryWatch()
    assert not watch.is_delivering("ops")

    watch.attempted("ops", "retry", NOW, "server_error")
    assert not watch.is_delivering("ops")
    watch.attempted("ops", "delivered", NOW + 1)
    assert watch.is_delivering("ops")
    watch.attempted("ops", "retry", NOW + 2, "timeout")
    assert not watch.is_delivering("ops")
