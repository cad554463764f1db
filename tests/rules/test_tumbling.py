"""Tumbling rules: whole bins aligned to UTC, judged once after their delay."""

from __future__ import annotations

import pytest

from tests.rules.engine_cases import MIDNIGHT, actions, rule, series_of
from tocsin.config import Duration
from tocsin.rules.engine import RuleEngine

HOUR = 3600.0
DAY = 86400.0


def hourly(**fields):
    settings = {
        "tumbling": True,
        "window": Duration(HOUR),
        "aggregation": "avg",
        "threshold": 0.5,
    }
    settings.update(fields)
    return rule(**settings)


def started(config, at: float = MIDNIGHT) -> RuleEngine:
    engine = RuleEngine([config])
    assert engine.tick(at) == []
    return engine


def add(engine, value, at, model="a"):
    series_of(engine, model).add(value, at)


def test_an_hourly_bin_is_a_utc_hour_judged_once_at_its_end():
    engine = started(hourly())
    add(engine, 0.4, MIDNIGHT + 10.0)
    add(engine, 0.8, MIDNIGHT + HOUR - 1.0)
    # The bin is open: nothing is judged, even when its samples breach.
    assert engine.evaluate_dirty(MIDNIGHT + HOUR - 1.0) == []
    assert engine.tick(MIDNIGHT + HOUR - 0.5) == []
    (fire,) = engine.tick(MIDNIGHT + HOUR)
    assert (fire.action, fire.value, fire.samples, fire.at) == (
        "fire",
        pytest.approx(0.6),
        2,
        MIDNIGHT + HOUR,
    )
    assert fire.reason == (
        "avg(model.drift.psi) per 1h bin 2025-06-16 00:00–01:00 UTC = 0.6 > 0.5"
    )
    # Judged once: later ticks in the next bin change nothing.
    assert engine.tick(MIDNIGHT + HOUR + 60.0) == []
    assert series_of(engine).state == "firing"
    # The next bin is empty: its end resolves the alert.
    assert actions(engine.tick(MIDNIGHT + 2 * HOUR)) == [("resolve", "model=a")]


def test_a_daily_bin_runs_from_utc_midnight_to_midnight():
    engine = started(hourly(window=Duration(DAY)), at=MIDNIGHT - DAY)
    add(engine, 0.9, MIDNIGHT - 1.0)
    add(engine, 0.1, MIDNIGHT)
    add(engine, 0.1, MIDNIGHT + 1.0)
    # The first evaluation past midnight seals the day, tick or not.
    (fire,) = engine.evaluate_dirty(MIDNIGHT + 1.0)
    assert engine.tick(MIDNIGHT + 2.0) == []
    assert (fire.value, fire.samples, fire.at) == (0.9, 1, MIDNIGHT)
    (resolve,) = engine.tick(MIDNIGHT + DAY)
    assert (resolve.action, resolve.value, resolve.samples) == (
        "resolve",
        pytest.approx(0.1),
        2,
    )


def test_a_late_sample_within_the_delay_counts_and_one_after_the_seal_is_dropped():
    engine = started(hourly(delay=Duration(300.0)))
    add(engine, 0.4, MIDNIGHT + 10.0)
    assert engine.tick(MIDNIGHT + HOUR) == []
    # Stamped in the first hour, arriving within the delay: it counts.
    add(engine, 1.0, MIDNIGHT + HOUR - 5.0)
    assert engine.evaluate_dirty(MIDNIGHT + HOUR + 200.0) == []
    assert engine.tick(MIDNIGHT + HOUR + 299.0) == []
    (fire,) = engine.tick(MIDNIGHT + HOUR + 300.0)
    assert (fire.value, fire.samples) == (pytest.approx(0.7), 2)
    # After the seal the bin takes nothing more.
    add(engine, 5.0, MIDNIGHT + 20.0)
    assert engine.stats.late_samples == 1
    assert engine.evaluate_dirty(MIDNIGHT + HOUR + 301.0) == []


def test_a_sample_ahead_of_the_clock_waits_for_it():
    engine = started(hourly())
    add(engine, 0.9, MIDNIGHT + HOUR + 10.0)
    assert engine.parked_samples == 1
    # The first hour is judged without it.
    assert engine.tick(MIDNIGHT + HOUR) == []
    assert engine.parked_samples == 0
    (fire,) = engine.tick(MIDNIGHT + 2 * HOUR)
    assert (fire.value, fire.samples) == (0.9, 1)


def test_for_counts_bin_ends():
    engine = started(hourly(for_=Duration(HOUR)))
    for hour in range(3):
        add(engine, 0.9, MIDNIGHT + hour * HOUR + 1.0)
    engine.evaluate_dirty(MIDNIGHT + 2.0)
    assert engine.tick(MIDNIGHT + HOUR) == []
    assert series_of(engine).state == "pending"
    (fire,) = engine.tick(MIDNIGHT + 2 * HOUR)
    assert (fire.action, fire.since, fire.at) == (
        "fire",
        MIDNIGHT + HOUR,
        MIDNIGHT + 2 * HOUR,
    )


def test_a_for_shorter_than_a_bin_waits_for_the_next_bin_end():
    engine = started(hourly(for_=Duration(HOUR / 2)))
    add(engine, 0.9, MIDNIGHT + 1.0)
    add(engine, 0.9, MIDNIGHT + HOUR + 1.0)
    assert engine.tick(MIDNIGHT + HOUR) == []
    # Between bin ends nothing is measured, so nothing can have held longer.
    assert engine.tick(MIDNIGHT + HOUR + HOUR / 2) == []
    assert engine.tick(MIDNIGHT + 2 * HOUR - 1.0) == []
    (fire,) = engine.tick(MIDNIGHT + 2 * HOUR)
    assert (fire.action, fire.at) == ("fire", MIDNIGHT + 2 * HOUR)


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("max", 100.0), ("count", 100.0)],
)
def test_each_bin_measures_its_own_samples(aggregation, expected):
    engine = started(hourly(aggregation=aggregation, threshold=0.0))
    for value in range(1, 101):
        add(engine, float(value), MIDNIGHT + value)
    # A second hour of other values must not mix into the first.
    add(engine, 1000.0, MIDNIGHT + HOUR + 1.0)
    (fire,) = engine.evaluate_dirty(MIDNIGHT + HOUR + 1.0)
    assert fire.value == pytest.approx(expected, rel=0.01)


def test_a_stalled_engine_skips_empty_bins_quickly_and_quietly():
    engine = started(hourly(op="<", threshold=1.0, aggregation="count"))
    add(engine, 5.0, MIDNIGHT + 1.0)
    add(engine, 5.0, MIDNIGHT + 2.0)
    assert engine.tick(MIDNIGHT + HOUR) == []
    # Ten thousand years of hours later: the skipped bins had no samples,
    # and no samples is not a count below 1.
    assert engine.tick(MIDNIGHT + 87_660_000 * HOUR) == []
    assert engine.series_count == 0


def test_a_stalled_engine_resolves_a_firing_series_once():
    engine = started(hourly())
    add(engine, 0.9, MIDNIGHT + 1.0)
    assert actions(engine.tick(MIDNIGHT + HOUR)) == [("fire", "model=a")]
    assert actions(engine.tick(MIDNIGHT + 1_000_000 * HOUR)) == [("resolve", "model=a")]


def test_a_bin_short_of_min_samples_never_fires():
    engine = started(hourly(min_samples=3))
    add(engine, 0.9, MIDNIGHT + 1.0)
    add(engine, 0.9, MIDNIGHT + 2.0)
    assert engine.tick(MIDNIGHT + HOUR) == []
    for second in (1.0, 2.0, 3.0):
        add(engine, 0.9, MIDNIGHT + HOUR + second)
    (fire,) = engine.tick(MIDNIGHT + 2 * HOUR)
    assert (fire.action, fire.samples) == ("fire", 3)
    add(engine, 0.9, MIDNIGHT + 2 * HOUR + 1.0)
    (resolve,) = engine.tick(MIDNIGHT + 3 * HOUR)
    assert resolve.action == "resolve"
    assert "fewer than the 3 needed" in resolve.reason


@pytest.mark.parametrize(
    ("window", "start", "named"),
    [
        (HOUR, MIDNIGHT - HOUR, "per 1h bin 2025-06-15 23:00–00:00 UTC"),
        (6 * HOUR, MIDNIGHT + 6 * HOUR, "per 6h bin 2025-06-16 06:00–12:00 UTC"),
        (DAY, MIDNIGHT, "per 1d bin 2025-06-16"),
        (2 * DAY, MIDNIGHT - DAY, "per 2d bin 2025-06-15–2025-06-16"),
    ],
)
def test_a_tumbling_reason_names_its_bin_in_utc(window, start, named):
    engine = started(hourly(window=Duration(window)), at=start)
    add(engine, 0.9, start + 1.0)
    (fire,) = engine.tick(start + window)
    assert fire.reason == f"avg(model.drift.psi) {named} = 0.9 > 0.5"
