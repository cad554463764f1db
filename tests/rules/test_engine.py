"""The rules engine: targets, evaluation, alert states, time, caps and limits."""

from __future__ import annotations

import logging
import math

import pytest

from tests.rules.engine_cases import (
    METRIC,
    MIDNIGHT,
    T0,
    actions,
    feed,
    rule,
    series_of,
)
from tocsin.config import Duration
from tocsin.rules.engine import RuleEngine

# Targets


def test_a_metric_no_rule_uses_has_no_targets():
    engine = RuleEngine([rule()])
    assert engine.targets("other.metric", {"model": "a"}) == []
    assert engine.series_count == 0


@pytest.mark.parametrize(
    ("labels", "matched"),
    [
        ({"model": "a", "env": "prod"}, True),
        ({"model": "a", "env": "prod", "zone": "x"}, True),
        ({"model": "a", "env": "dev"}, False),
        ({"model": "a"}, False),
        ({"env": "prod", "region": "eu"}, False),
    ],
)
def test_every_matcher_must_equal_a_label(labels, matched):
    engine = RuleEngine([rule(match={"env": "prod", "model": "a"})])
    assert len(engine.targets(METRIC, labels)) == int(matched)


def test_a_missing_group_by_label_counts_as_empty():
    engine = RuleEngine([rule(group_by=["model", "env"])])
    (series,) = engine.targets(METRIC, {"env": "prod"})
    assert series.key == "model=,env=prod"
    assert series.labels == {"model": "", "env": "prod"}


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"model": "x,env=y", "env": ""}, {"model": "x", "env": "y,env="}),
        ({"model": "a=b", "env": "c"}, {"model": "a", "env": "b=c"}),
        ({"model": "a\\", "env": ",b"}, {"model": "a\\,", "env": "b"}),
    ],
)
def test_different_labels_never_share_a_series_key(first, second):
    engine = RuleEngine([rule(group_by=["model", "env"])])
    (one,) = engine.targets(METRIC, first)
    (two,) = engine.targets(METRIC, second)
    assert one.key != two.key


def test_series_keys_escape_their_delimiters():
    engine = RuleEngine([rule(group_by=["model", "env"])])
    (series,) = engine.targets(METRIC, {"model": "a,b", "env": "k=v\\"})
    assert series.key == "model=a\\,b,env=k\\=v\\\\"


def test_samples_differing_outside_group_by_share_a_series():
    engine = RuleEngine([rule()])
    first = engine.targets(METRIC, {"model": "a", "host": "1"})
    second = engine.targets(METRIC, {"model": "a", "host": "2"})
    assert first[0] is second[0]
    assert engine.series_count == 1


def test_each_rule_on_a_metric_gets_its_own_series():
    engine = RuleEngine([rule(name="one"), rule(name="two", group_by=[])])
    found = engine.targets(METRIC, {"model": "a"})
    assert [(s.rule, s.key) for s in found] == [("one", "model=a"), ("two", "")]


# Evaluation


@pytest.mark.parametrize(
    ("op", "value", "fires"),
    [
        (">", 0.3, True),
        (">", 0.2, False),
        (">=", 0.2, True),
        (">=", 0.1, False),
        ("<", 0.1, True),
        ("<", 0.2, False),
        ("<=", 0.2, True),
        ("<=", 0.3, False),
        ("==", 0.2, True),
        ("==", 0.3, False),
        ("!=", 0.3, True),
        ("!=", 0.2, False),
    ],
)
def test_each_comparison(op, value, fires):
    engine = RuleEngine([rule(op=op, threshold=0.2)])
    decisions = feed(engine, value, T0)
    assert actions(decisions) == ([("fire", "model=a")] if fires else [])


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [
        ("avg", 2.0),
        ("min", 1.0),
        ("max", 3.0),
        ("sum", 6.0),
        ("count", 3.0),
        ("last", 2.0),
        ("p50", 2.0),
        # DDSketch estimates the sample of rank floor(q * (n - 1)).
        ("p99", 2.0),
    ],
)
def test_each_aggregation_decides(aggregation, expected):
    engine = RuleEngine([rule(aggregation=aggregation, threshold=0.5)])
    series = series_of(engine)
    for value, offset in ((3.0, 0.0), (1.0, 1.0), (2.0, 2.0)):
        series.add(value, T0 + offset)
    (decision,) = engine.evaluate_dirty(T0 + 2.0)
    assert decision.value == pytest.approx(expected, rel=0.01)
    assert decision.samples == 3


def test_a_fire_says_what_and_why():
    engine = RuleEngine([rule(aggregation="avg", for_=Duration(30.0))])
    assert feed(engine, 0.31, T0) == []
    (decision,) = engine.tick(T0 + 30.0)
    assert decision.action == "fire"
    assert decision.rule == "drift"
    assert decision.series == "model=a"
    assert decision.labels == {"model": "a"}
    assert decision.value == 0.31
    assert decision.threshold == 0.2
    assert decision.samples == 1
    assert decision.at == T0 + 30.0
    assert decision.since == T0
    assert decision.reason == "avg(model.drift.psi) over 5m = 0.31 > 0.2 for 30s"


@pytest.mark.parametrize(
    ("window", "pending", "threshold", "value", "reason"),
    [
        (300.0, 0.0, 0.2, 0.31, "over 5m = 0.31 > 0.2"),
        (3600.0, 90.0, 5.0, 7, "over 1h = 7 > 5 for 90s"),
        (90.0, 0.25, 1e-7, 2.5e-6, "over 90s = 2.5e-06 > 1e-07 for 250ms"),
        (86400.0, 1.5, 1e6, 1234567.891, "over 1d = 1.23457e+06 > 1000000 for 1500ms"),
    ],
)
def test_reasons_write_durations_and_numbers_briefly(
    window, pending, threshold, value, reason
):
    engine = RuleEngine(
        [rule(window=Duration(window), for_=Duration(pending), threshold=threshold)]
    )
    (decision,) = feed(engine, value, T0) + engine.tick(T0 + pending)
    assert decision.reason == f"last({METRIC}) {reason}"


def test_an_empty_window_never_fires():
    engine = RuleEngine([rule(op="<", threshold=1.0)])
    series_of(engine)
    assert engine.evaluate_dirty(T0) == []
    assert engine.tick(T0 + 1.0) == []


@pytest.mark.parametrize(
    ("op", "value", "fires"),
    [
        ("inside", 0.1, True),
        ("inside", 0.5, True),
        ("inside", 0.9, True),
        ("inside", 0.95, False),
        ("outside", 0.05, True),
        ("outside", 0.1, False),
        ("outside", 0.9, False),
        ("outside", 0.95, True),
    ],
)
def test_each_range(op, value, fires):
    engine = RuleEngine([rule(op=op, threshold=None, range=[0.1, 0.9])])
    assert bool(feed(engine, value, T0)) == fires


def test_a_range_says_so_in_its_reasons():
    engine = RuleEngine([rule(op="outside", threshold=None, range=[0.1, 0.9])])
    (fire,) = feed(engine, 0.95, T0)
    (resolve,) = feed(engine, 0.5, T0 + 1.0)
    assert fire.threshold is None
    assert fire.reason == "last(model.drift.psi) over 5m = 0.95 outside [0.1, 0.9]"
    assert resolve.reason == (
        "last(model.drift.psi) over 5m = 0.5, no longer outside [0.1, 0.9]"
    )


def test_a_value_hovering_at_the_threshold_does_not_flap_past_recover():
    engine = RuleEngine([rule(threshold=0.2, recover=0.15)])
    assert actions(feed(engine, 0.21, T0)) == [("fire", "model=a")]
    for step, value in enumerate((0.19, 0.21, 0.16, 0.2, 0.151)):
        assert feed(engine, value, T0 + 1.0 + step) == []
    (resolve,) = feed(engine, 0.15, T0 + 10.0)
    assert resolve.reason == "last(model.drift.psi) over 5m = 0.15, no longer > 0.15"
    # Below the threshold but above recover: nothing fires again.
    assert feed(engine, 0.18, T0 + 11.0) == []
    assert actions(feed(engine, 0.25, T0 + 12.0)) == [("fire", "model=a")]


def test_keep_firing_for_holds_a_cleared_alert_and_a_breach_keeps_it():
    engine = RuleEngine([rule(keep_firing_for=Duration(60.0))])
    feed(engine, 0.5, T0)
    assert feed(engine, 0.1, T0 + 10.0) == []
    assert engine.tick(T0 + 69.0) == []
    # A breach inside the hold keeps the alert; the hold starts over after it.
    assert feed(engine, 0.5, T0 + 69.5) == []
    assert feed(engine, 0.1, T0 + 80.0) == []
    assert engine.tick(T0 + 139.0) == []
    (resolve,) = engine.tick(T0 + 140.0)
    assert resolve.action == "resolve"
    assert resolve.since == T0
    assert resolve.reason == (
        "last(model.drift.psi) over 5m = 0.1, no longer > 0.2 for 1m"
    )
    assert engine.tick(T0 + 141.0) == []


def test_keep_firing_for_does_not_outlast_the_restart_grace():
    engine = RuleEngine([rule(keep_firing_for=Duration(30.0))])
    engine.restore("drift", "model=a", {"model": "a"}, since=T0, fired_at=T0)
    engine.tick(T0 + 1.0)
    # The window stays empty: the grace ends a window after the first
    # evaluation, and only then does keep_firing_for start.
    assert engine.tick(T0 + 300.0) == []
    assert engine.tick(T0 + 302.0) == []
    assert engine.tick(T0 + 331.0) == []
    assert actions(engine.tick(T0 + 332.0)) == [("resolve", "model=a")]


def test_a_window_short_of_min_samples_never_fires():
    engine = RuleEngine([rule(aggregation="max", min_samples=3)])
    assert feed(engine, 0.9, T0) == []
    assert feed(engine, 0.9, T0 + 1.0) == []
    assert series_of(engine).state == "inactive"
    (decision,) = feed(engine, 0.1, T0 + 2.0)
    assert decision.action == "fire"
    assert decision.reason == (
        "max(model.drift.psi) over 5m = 0.9 > 0.2 (3 samples, min_samples 3)"
    )


def test_a_firing_series_short_of_min_samples_resolves_saying_so():
    engine = RuleEngine([rule(aggregation="max", min_samples=2)])
    feed(engine, 0.9, T0)
    assert actions(feed(engine, 0.9, T0 + 1.0)) == [("fire", "model=a")]
    # Both samples sit in the first bin (25s wide); the next one, in the
    # window's last bin, is all that remains once that bin leaves.
    feed(engine, 0.9, T0 + 299.0)
    (decision,) = engine.tick(T0 + 300.0)
    assert decision.action == "resolve"
    assert decision.samples == 1
    assert decision.reason == (
        "max(model.drift.psi) over 5m: 1 samples in window, fewer than the 2 needed"
    )


def test_pending_fires_once_for_has_held_and_checks_on_tick():
    engine = RuleEngine([rule(for_=Duration(30.0))])
    assert feed(engine, 0.5, T0) == []
    assert series_of(engine).state == "pending"
    assert feed(engine, 0.6, T0 + 10.0) == []
    assert engine.tick(T0 + 29.0) == []
    (decision,) = engine.tick(T0 + 30.0)
    assert (decision.action, decision.since, decision.value) == ("fire", T0, 0.6)
    assert engine.tick(T0 + 31.0) == []
    assert feed(engine, 0.7, T0 + 32.0) == []


def test_pending_clears_silently_when_the_condition_stops():
    engine = RuleEngine([rule(for_=Duration(30.0))])
    assert feed(engine, 0.5, T0) == []
    assert feed(engine, 0.1, T0 + 10.0) == []
    assert series_of(engine).state == "inactive"
    assert engine.tick(T0 + 40.0) == []
    # A new breach starts a new pending period.
    assert feed(engine, 0.5, T0 + 50.0) == []
    assert engine.tick(T0 + 79.0) == []
    assert actions(engine.tick(T0 + 80.0)) == [("fire", "model=a")]


def test_a_firing_series_resolves_once_when_the_condition_clears():
    engine = RuleEngine([rule()])
    (fire,) = feed(engine, 0.5, T0)
    (resolve,) = feed(engine, 0.1, T0 + 5.0)
    assert resolve.action == "resolve"
    assert resolve.value == 0.1
    assert resolve.since == fire.since == T0
    assert resolve.at == T0 + 5.0
    assert resolve.reason == "last(model.drift.psi) over 5m = 0.1, no longer > 0.2"
    assert feed(engine, 0.05, T0 + 6.0) == []
    assert engine.tick(T0 + 7.0) == []


def test_a_firing_series_resolves_on_tick_when_its_window_runs_empty():
    engine = RuleEngine([rule()])
    assert actions(feed(engine, 0.5, T0)) == [("fire", "model=a")]
    # T0 starts a bin; the window keeps that bin until 12 bins later.
    assert engine.tick(T0 + 299.9) == []
    (decision,) = engine.tick(T0 + 300.0)
    assert decision.action == "resolve"
    assert decision.value is None
    assert decision.samples == 0
    assert decision.reason == "last(model.drift.psi) over 5m: no samples in window"
    assert engine.tick(T0 + 301.0) == []


def test_ticks_forget_idle_series_and_a_cached_series_comes_back():
    engine = RuleEngine([rule()])
    cached = series_of(engine)
    cached.add(0.1, T0)
    engine.evaluate_dirty(T0)
    engine.tick(T0 + 100.0)
    assert engine.series_count == 1
    engine.tick(T0 + 400.0)
    assert engine.series_count == 0
    assert engine.stats.forgotten_series == 1

    cached.add(0.5, T0 + 401.0)
    assert engine.series_count == 1
    assert series_of(engine) is cached
    assert actions(engine.evaluate_dirty(T0 + 401.0)) == [("fire", "model=a")]


def test_a_forgotten_series_feeds_the_series_that_replaced_it():
    engine = RuleEngine([rule()])
    stale = series_of(engine)
    engine.tick(T0)
    assert engine.series_count == 0
    fresh = series_of(engine)
    assert fresh is not stale
    stale.add(0.5, T0 + 1.0)
    assert fresh.count == 1
    assert engine.series_count == 1
    assert actions(engine.evaluate_dirty(T0 + 1.0)) == [("fire", "model=a")]


def test_a_series_is_queued_once_and_evaluate_dirty_is_a_no_op_when_clean():
    engine = RuleEngine([rule()])
    engine.evaluate_dirty(T0)
    series = series_of(engine)
    series.add(0.1, T0)
    series.add(0.1, T0)
    assert engine.dirty_count == 1
    assert engine.evaluate_dirty(T0) == []
    assert engine.dirty_count == 0
    assert engine.evaluate_dirty(T0) == []


# Time


def test_samples_before_the_first_evaluation_wait_for_the_clock():
    engine = RuleEngine([rule()])
    series_of(engine).add(0.5, T0)
    assert engine.parked_samples == 1
    assert actions(engine.evaluate_dirty(T0)) == [("fire", "model=a")]
    assert engine.parked_samples == 0


def test_a_future_sample_never_moves_the_clock():
    engine = RuleEngine([rule()])
    feed(engine, 0.5, T0)
    series = series_of(engine)
    # Held back until the clock reaches its bin, however far ahead.
    series.add(0.1, T0 + 100.0)
    series.add(0.3, T0 + 1000.0)
    assert engine.parked_samples == 2
    assert engine.evaluate_dirty(T0 + 1.0) == []
    assert series.value == 0.5
    assert series.head == math.floor(T0 / 25.0)
    assert engine.tick(T0 + 99.0) == []
    (decision,) = engine.tick(T0 + 100.0)
    assert (decision.action, decision.value) == ("resolve", 0.1)
    assert engine.parked_samples == 1
    assert actions(engine.tick(T0 + 1000.0)) == [("fire", "model=a")]
    assert engine.stats.future_samples == 0


def test_a_stale_clock_loses_no_sample():
    engine = RuleEngine([rule()])
    engine.evaluate_dirty(T0)
    # An hour without evaluations, then a datagram stamped with its arrival.
    series_of(engine).add(0.5, T0 + 3600.0)
    assert actions(engine.evaluate_dirty(T0 + 3600.0)) == [("fire", "model=a")]


def test_the_holding_area_for_early_samples_is_bounded(monkeypatch):
    monkeypatch.setattr("tocsin.rules.series.MAX_PARKED", 2)
    engine = RuleEngine([rule()])
    engine.evaluate_dirty(T0)
    series = series_of(engine)
    for offset in (100.0, 200.0, 300.0):
        series.add(0.5, T0 + offset)
    assert engine.parked_samples == 2
    assert engine.stats.future_samples == 1


def test_samples_older_than_the_window_are_dropped_and_counted():
    engine = RuleEngine([rule(op="<", threshold=0.2)])
    feed(engine, 0.5, T0 + 400.0)
    assert feed(engine, 0.1, T0) == []
    assert engine.stats.late_samples == 1
    assert series_of(engine).value == 0.5


def test_the_clock_never_moves_backwards():
    engine = RuleEngine([rule()])
    feed(engine, 0.5, T0)
    assert engine.tick(T0 - 1000.0) == []
    assert engine.now == T0


def test_non_finite_values_never_reach_a_rule():
    engine = RuleEngine([rule(metric="err_ratio", aggregation="min", threshold=0.5)])
    (series,) = engine.targets("err_ratio", {"model": "a"})
    engine.evaluate_dirty(T0)
    for value in (math.nan, math.nan, math.nan, math.inf):
        series.add(value, T0)
        assert engine.evaluate_dirty(T0) == []
    assert engine.tick(T0 + 1.0) == []
    assert engine.stats.non_finite_samples == 4
    assert series.value is None


# Cooldown and daily cap


def test_cooldown_holds_a_second_fire_until_it_has_passed(caplog):
    engine = RuleEngine([rule(window=Duration(3600.0), cooldown=Duration(600.0))])
    assert actions(feed(engine, 0.5, T0)) == [("fire", "model=a")]
    assert actions(feed(engine, 0.1, T0 + 10.0)) == [("resolve", "model=a")]
    with caplog.at_level(logging.WARNING, logger="tocsin.rules"):
        assert feed(engine, 0.5, T0 + 20.0) == []
        assert feed(engine, 0.6, T0 + 30.0) == []
    assert series_of(engine).state == "held"
    assert engine.stats.held_fires == 1
    (record,) = caplog.records
    assert (record.rule, record.series, record.reason) == (
        "drift",
        "model=a",
        "cooldown",
    )

    assert engine.tick(T0 + 599.0) == []
    (decision,) = engine.tick(T0 + 600.0)
    assert (decision.action, decision.since, decision.at) == (
        "fire",
        T0 + 20.0,
        T0 + 600.0,
    )


def test_a_held_fire_is_dropped_when_the_condition_clears():
    engine = RuleEngine([rule(window=Duration(3600.0), cooldown=Duration(600.0))])
    feed(engine, 0.5, T0)
    feed(engine, 0.1, T0 + 10.0)
    feed(engine, 0.5, T0 + 20.0)
    assert feed(engine, 0.1, T0 + 30.0) == []
    assert series_of(engine).state == "inactive"
    assert engine.tick(T0 + 600.0) == []


def test_cooldown_is_per_series():
    engine = RuleEngine([rule(cooldown=Duration(600.0))])
    feed(engine, 0.5, T0)
    assert actions(feed(engine, 0.5, T0 + 1.0, model="b")) == [("fire", "model=b")]


def test_the_daily_cap_counts_fires_per_utc_day(caplog):
    engine = RuleEngine([rule(window=Duration(3600.0), daily_cap=1)])
    assert actions(feed(engine, 0.5, MIDNIGHT - 3000.0)) == [("fire", "model=a")]
    with caplog.at_level(logging.WARNING, logger="tocsin.rules"):
        assert feed(engine, 0.5, MIDNIGHT - 1800.0, model="b") == []
        assert feed(engine, 0.5, MIDNIGHT - 1790.0, model="c") == []
    assert engine.stats.held_fires == 2
    # Two held fires of one rule and cause within a minute: one log line.
    assert [r.reason for r in caplog.records] == ["daily_cap"]

    assert engine.tick(MIDNIGHT - 1.0) == []
    decisions = engine.tick(MIDNIGHT)
    assert len(decisions) == 1
    assert decisions[0].action == "fire"
    assert decisions[0].since in (MIDNIGHT - 1800.0, MIDNIGHT - 1790.0)
    assert engine.tick(MIDNIGHT + 60.0) == []


# Settings


@pytest.mark.parametrize(
    "settings",
    [{"max_series": 0}, {"rules": [rule(), rule()]}],
)
def test_bad_engine_settings_are_refused(settings):
    arguments = {"rules": [rule()], **settings}
    rules = arguments.pop("rules")
    with pytest.raises(ValueError):
        RuleEngine(rules, **arguments)
