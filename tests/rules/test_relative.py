"""Rules that compare a value with its series' past: change, percent, baseline."""

from __future__ import annotations

import pytest

from tests.rules.engine_cases import MIDNIGHT, actions, feed, rule, series_of
from tocsin.config import Duration
from tocsin.rules.engine import RuleEngine
from tocsin.rules.history import History
from tocsin.schema import CompareConfig

HOUR = 3600.0
#: A bin of a sliding 5m window: one step.
STEP = 25.0


def hourly(compare: CompareConfig, **fields):
    return rule(
        tumbling=True,
        window=Duration(HOUR),
        aggregation="avg",
        compare=compare,
        **fields,
    )


def run_hours(engine, values) -> list:
    """Give hour ``i`` the value ``values[i]`` (``None``: no sample)."""
    engine.tick(MIDNIGHT)
    decisions = []
    for hour, value in enumerate(values):
        if value is not None:
            series_of(engine).add(value, MIDNIGHT + hour * HOUR + 1.0)
        decisions += engine.tick(MIDNIGHT + (hour + 1) * HOUR)
    return decisions


@pytest.mark.parametrize(
    ("today", "fires"), [(150.0, True), (149.0, False), (50.0, False)]
)
def test_percent_change_vs_the_same_hour_yesterday(today, fires):
    engine = RuleEngine(
        [hourly(CompareConfig(kind="percent", bins=24), threshold=49.0)]
    )
    decisions = run_hours(engine, [100.0] * 24 + [today])
    assert actions(decisions) == ([("fire", "model=a")] if fires else [])
    if fires:
        assert decisions[0].value == pytest.approx(50.0)
        assert "% change vs 24 steps ago" in decisions[0].reason


def test_percent_by_ago_is_the_same_as_by_bins():
    compare = CompareConfig(kind="percent", ago=Duration(24 * HOUR))
    engine = RuleEngine([hourly(compare, threshold=49.0)])
    assert actions(run_hours(engine, [100.0] * 24 + [150.0])) == [("fire", "model=a")]


@pytest.mark.parametrize(
    ("values", "case"),
    [
        ([150.0], "no past at all"),
        ([None] + [100.0] * 23 + [150.0], "the hour 24 ago had no sample"),
        ([0.0] + [100.0] * 23 + [150.0], "a past of 0 has no percent"),
    ],
)
def test_a_missing_or_zero_past_never_fires(values, case):
    engine = RuleEngine(
        [hourly(CompareConfig(kind="percent", bins=24), threshold=-1e9)]
    )
    assert run_hours(engine, values) == [], case


def test_change_vs_the_previous_hour():
    engine = RuleEngine([hourly(CompareConfig(kind="change", bins=1), threshold=5.0)])
    decisions = run_hours(engine, [10.0, 14.0, 20.0, 21.0])
    assert [(d.action, d.value) for d in decisions] == [
        ("fire", pytest.approx(6.0)),
        ("resolve", pytest.approx(1.0)),
    ]


def test_a_baseline_fires_on_a_departure_after_a_steady_history():
    engine = RuleEngine(
        [hourly(CompareConfig(kind="baseline", bins=24), threshold=3.0)]
    )
    steady = [100.0 + (hour % 3 - 1) for hour in range(24)]
    decisions = run_hours(engine, [*steady, 101.0, 130.0])
    (fire,) = decisions
    assert fire.at == MIDNIGHT + 26 * HOUR
    assert fire.value > 3.0
    assert "σ from the mean of the last 24 steps" in fire.reason


def test_a_baseline_with_too_short_a_history_never_fires():
    engine = RuleEngine(
        [
            hourly(
                CompareConfig(kind="baseline", bins=24, min_history=12),
                threshold=3.0,
            )
        ]
    )
    assert run_hours(engine, [100.0, 101.0, 99.0, 1e6]) == []


def test_a_sliding_rule_compares_with_the_step_n_steps_ago():
    engine = RuleEngine(
        [
            rule(
                aggregation="last",
                compare=CompareConfig(kind="change", bins=2),
                threshold=5.0,
            )
        ]
    )
    start = MIDNIGHT
    engine.tick(start)
    assert feed(engine, 10.0, start) == []
    assert feed(engine, 10.0, start + STEP) == []
    # Two steps on, the value 10 steps back is the past.
    (fire,) = feed(engine, 16.0, start + 2 * STEP)
    assert fire.value == pytest.approx(6.0)
    assert "change vs 2 steps ago" in fire.reason


def test_a_sliding_rule_without_its_past_never_fires():
    engine = RuleEngine(
        [
            rule(
                aggregation="last",
                compare=CompareConfig(kind="change", bins=2),
                threshold=-1e9,
            )
        ]
    )
    engine.tick(MIDNIGHT)
    assert feed(engine, 10.0, MIDNIGHT) == []
    assert feed(engine, 99.0, MIDNIGHT + STEP) == []


def test_a_series_keeps_its_past_until_the_past_is_empty():
    engine = RuleEngine([hourly(CompareConfig(kind="change", bins=2), threshold=5.0)])
    run_hours(engine, [10.0])
    # Its bins are empty, but its past is what the next hours compare with.
    assert engine.series_count == 1
    engine.tick(MIDNIGHT + 2 * HOUR)
    assert engine.series_count == 1
    # Two empty hours push the only value out of a two-step past.
    engine.tick(MIDNIGHT + 3 * HOUR)
    assert engine.series_count == 0


@pytest.mark.parametrize(
    ("pushes", "empty"),
    [
        ([], True),
        ([None], True),
        ([1.0], False),
        ([1.0, None], False),
        ([1.0, None, None], True),
        ([float("nan"), 2.0, None], False),
    ],
)
def test_a_history_knows_when_it_holds_no_value(pushes, empty):
    history = History(2)
    for value in pushes:
        history.push(value)
    assert history.is_empty is empty
