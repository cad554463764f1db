"""No-data policies: what a silent series means for its alert."""

from __future__ import annotations

import pytest

from tests.rules.engine_cases import T0, actions, feed, rule, series_of
from tocsin.config import Duration
from tocsin.rules.engine import RuleEngine
from tocsin.schema import NoDataConfig

AFTER = 600.0
SILENT = "no data for 10m"


def silent_rule(action: str, **fields):
    return rule(no_data=NoDataConfig(after=Duration(AFTER), action=action), **fields)


def timeline(engine: RuleEngine, value: float) -> list[tuple[float, str, str]]:
    """Feed one sample at T0, then tick through 20 silent minutes."""
    seen = [(T0, d.action, d.reason) for d in feed(engine, value, T0)]
    for offset in (60.0, 299.0, 300.0, 599.0, 600.0, 660.0, 1200.0):
        seen += [(T0 + offset, d.action, d.reason) for d in engine.tick(T0 + offset)]
    return seen


FIRED = (T0, "fire", "last(model.drift.psi) over 5m = 0.5 > 0.2")
EMPTIED = (
    T0 + 300.0,
    "resolve",
    "last(model.drift.psi) over 5m: no samples in window",
)


@pytest.mark.parametrize(
    ("action", "value", "expected", "state"),
    [
        # A firing series falls silent.
        ("alert", 0.5, [FIRED], "firing"),
        ("keep_last", 0.5, [FIRED], "firing"),
        ("resolve", 0.5, [FIRED, (T0 + AFTER, "resolve", SILENT)], "inactive"),
        ("ignore", 0.5, [FIRED, EMPTIED], "inactive"),
        # A quiet series falls silent.
        ("alert", 0.1, [(T0 + AFTER, "fire", SILENT)], "firing"),
        ("keep_last", 0.1, [], "inactive"),
        ("resolve", 0.1, [], "inactive"),
        ("ignore", 0.1, [], "inactive"),
    ],
)
def test_each_no_data_action_over_one_timeline(action, value, expected, state):
    engine = RuleEngine([silent_rule(action)])
    engine.tick(T0)
    series = series_of(engine)
    assert timeline(engine, value) == expected
    assert series.state == state


def test_without_a_policy_an_empty_window_resolves():
    engine = RuleEngine([rule()])
    engine.tick(T0)
    assert timeline(engine, 0.5) == [FIRED, EMPTIED]


def test_a_no_data_fire_is_at_the_top_level_with_no_value():
    engine = RuleEngine([silent_rule("alert")])
    engine.tick(T0)
    feed(engine, 0.1, T0)
    (fire,) = engine.tick(T0 + AFTER)
    assert (fire.value, fire.samples, fire.since, fire.severity) == (
        None,
        0,
        T0 + AFTER,
        "medium",
    )


def test_returning_data_resolves_a_no_data_alert_once_the_condition_is_false():
    engine = RuleEngine([silent_rule("alert")])
    engine.tick(T0)
    feed(engine, 0.1, T0)
    assert actions(engine.tick(T0 + AFTER)) == [("fire", "model=a")]
    (resolve,) = feed(engine, 0.1, T0 + AFTER + 30.0)
    assert (resolve.action, resolve.value) == ("resolve", 0.1)
    assert resolve.reason == "last(model.drift.psi) over 5m = 0.1, no longer > 0.2"


def test_returning_data_that_breaches_keeps_a_no_data_alert_open():
    engine = RuleEngine([silent_rule("alert")])
    engine.tick(T0)
    feed(engine, 0.1, T0)
    engine.tick(T0 + AFTER)
    assert feed(engine, 0.9, T0 + AFTER + 30.0) == []
    assert series_of(engine).state == "firing"
    assert actions(feed(engine, 0.1, T0 + AFTER + 40.0)) == [("resolve", "model=a")]


def test_a_series_silent_again_after_a_no_data_alert_fires_again():
    engine = RuleEngine([silent_rule("alert")])
    engine.tick(T0)
    feed(engine, 0.1, T0)
    engine.tick(T0 + AFTER)
    feed(engine, 0.1, T0 + AFTER + 30.0)
    # Silence is looked for ten times per ``after`` (at most every bin).
    assert engine.tick(T0 + 2 * AFTER) == []
    assert actions(engine.tick(T0 + 2 * AFTER + 30.0)) == [("fire", "model=a")]


@pytest.mark.parametrize(
    ("action", "kept"), [("alert", 1), ("keep_last", 0), ("resolve", 0), ("ignore", 0)]
)
def test_only_an_alert_policy_keeps_a_silent_series(action, kept):
    engine = RuleEngine([silent_rule(action)])
    engine.tick(T0)
    feed(engine, 0.1, T0)
    for minute in range(1, 40):
        engine.tick(T0 + 60.0 * minute)
    assert engine.series_count == kept


@pytest.mark.parametrize(
    ("action", "at_after"), [("resolve", [("resolve", "model=a")]), ("alert", [])]
)
def test_a_restored_firing_series_counts_silence_from_the_start(action, at_after):
    engine = RuleEngine([silent_rule(action)])
    engine.restore("drift", "model=a", {"model": "a"}, since=T0 - 5000.0, fired_at=T0)
    engine.tick(T0)
    assert engine.tick(T0 + 300.0) == []
    assert engine.tick(T0 + AFTER - 1.0) == []
    decisions = engine.tick(T0 + AFTER)
    assert actions(decisions) == at_after
    if decisions:
        assert decisions[0].reason == SILENT
    assert series_of(engine).state == ("firing" if action == "alert" else "inactive")
