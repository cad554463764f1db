"""Composite rules: conditions on several metrics, joined per series key."""

from __future__ import annotations

import pytest

from tests.rules.engine_cases import T0, actions, rule
from tocsin.config import Duration
from tocsin.rules.engine import RuleEngine
from tocsin.schema import ConditionConfig

ERRORS = "model.errors"
LATENCY = "model.latency"


def side(metric, op=">", threshold=1.0, **fields):
    return ConditionConfig(
        metric=metric,
        aggregation=fields.pop("aggregation", "last"),
        window=Duration(300.0),
        op=op,
        threshold=threshold,
        **fields,
    )


def composite(*sides, join="all", **fields):
    return rule(
        name="combo",
        metric="",
        threshold=None,
        conditions=list(sides),
        join=join,
        **fields,
    )


def send(engine, metric, value, at, model="a"):
    for target in engine.targets(metric, {"model": model}):
        target.add(value, at)
    return engine.evaluate_dirty(at)


@pytest.mark.parametrize(
    ("join", "errors", "latency", "fires"),
    [
        ("all", 2.0, 2.0, True),
        ("all", 2.0, 0.5, False),
        ("all", 0.5, 2.0, False),
        ("any", 2.0, 0.5, True),
        ("any", 0.5, 2.0, True),
        ("any", 0.5, 0.5, False),
    ],
)
def test_and_and_or_over_two_metrics(join, errors, latency, fires):
    engine = RuleEngine([composite(side(ERRORS), side(LATENCY), join=join)])
    engine.tick(T0)
    decisions = send(engine, ERRORS, errors, T0)
    decisions += send(engine, LATENCY, latency, T0 + 1.0)
    assert actions(decisions) == ([("fire", "model=a")] if fires else [])


@pytest.mark.parametrize("op", ["<", "!=", "<="])
@pytest.mark.parametrize("join", ["all", "any"])
def test_a_side_without_samples_is_false_whatever_its_comparison(op, join):
    engine = RuleEngine(
        [composite(side(ERRORS, op=op, threshold=5.0), side(LATENCY), join=join)]
    )
    engine.tick(T0)
    # The errors side would hold for any value; it has none.
    decisions = send(engine, LATENCY, 2.0 if join == "all" else 0.5, T0)
    assert decisions == []
    assert engine.tick(T0 + 10.0) == []


def test_different_series_keys_never_combine():
    engine = RuleEngine([composite(side(ERRORS), side(LATENCY))])
    engine.tick(T0)
    assert send(engine, ERRORS, 2.0, T0, model="a") == []
    assert send(engine, LATENCY, 2.0, T0, model="b") == []
    assert engine.series_count == 2
    assert actions(send(engine, LATENCY, 2.0, T0 + 1.0, model="a")) == [
        ("fire", "model=a")
    ]


def test_each_side_keeps_its_own_hysteresis():
    engine = RuleEngine(
        [
            composite(
                side(ERRORS, threshold=1.0, recover=0.5),
                side(LATENCY, threshold=10.0, recover=8.0),
            )
        ]
    )
    engine.tick(T0)
    send(engine, ERRORS, 2.0, T0)
    assert actions(send(engine, LATENCY, 11.0, T0)) == [("fire", "model=a")]
    # Both sides below their thresholds but above their recovers: it stays.
    assert send(engine, ERRORS, 0.8, T0 + 1.0) == []
    assert send(engine, LATENCY, 9.0, T0 + 2.0) == []
    # One side past its recover clears the AND.
    (resolve,) = send(engine, LATENCY, 8.0, T0 + 3.0)
    assert resolve.action == "resolve"
    # Not firing any more: the thresholds apply again, not the recovers.
    assert send(engine, LATENCY, 9.0, T0 + 4.0) == []


def test_two_sides_on_one_metric_both_get_each_sample():
    engine = RuleEngine(
        [
            composite(
                side(LATENCY, aggregation="avg", threshold=100.0),
                side(LATENCY, aggregation="p95", threshold=400.0),
            )
        ]
    )
    engine.tick(T0)
    targets = engine.targets(LATENCY, {"model": "a"})
    assert len(targets) == 2
    assert targets[0] is not targets[1]
    decisions = []
    for index, value in enumerate([50.0] * 18 + [500.0, 900.0]):
        decisions += send(engine, LATENCY, value, T0 + index)
    (fire,) = decisions
    assert fire.at == T0 + 19
    first, second = fire.reason.split(", and ")
    assert first == "avg(model.latency) over 5m = 115 (> 100)"
    # The sketch's value is within 1 % of the true 95th percentile, 500.
    measured = float(second.split(" = ")[1].split(" ")[0])
    assert second.startswith("p95(model.latency) over 5m = ")
    assert measured == pytest.approx(500.0, rel=0.01)


def test_reasons_describe_every_side():
    engine = RuleEngine([composite(side(ERRORS), side(LATENCY), join="any")])
    engine.tick(T0)
    (fire,) = send(engine, ERRORS, 2.0, T0)
    assert fire.reason == (
        "last(model.errors) over 5m = 2 (> 1),"
        " or last(model.latency) over 5m: 0 samples"
    )
    assert (fire.value, fire.threshold) == (None, None)
    (resolve,) = send(engine, ERRORS, 0.5, T0 + 1.0)
    assert resolve.reason == (
        "no longer: last(model.errors) over 5m = 0.5 (> 1),"
        " or last(model.latency) over 5m: 0 samples"
    )


def test_a_composite_with_for_says_how_long_it_held():
    engine = RuleEngine([composite(side(ERRORS), side(LATENCY), for_=Duration(30.0))])
    engine.tick(T0)
    send(engine, ERRORS, 2.0, T0)
    assert send(engine, LATENCY, 2.0, T0) == []
    (fire,) = engine.tick(T0 + 30.0)
    assert fire.reason.endswith(" for 30s")
    assert fire.since == T0
