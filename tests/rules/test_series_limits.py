"""The cardinality caps: per rule and over every rule, with Tocsin's own alert."""

from __future__ import annotations

import logging

from tests.rules.engine_cases import METRIC, T0, rule, series_of
from tocsin.config import Duration
from tocsin.rules.decisions import SERIES_LIMIT_RULE
from tocsin.rules.engine import RuleEngine
from tocsin.rules.runtime import LIMIT_QUIET


def limit_alerts(decisions):
    return [(d.action, d.series) for d in decisions if d.rule == SERIES_LIMIT_RULE]


def test_new_series_beyond_the_limit_are_refused_counted_and_logged_once(caplog):
    engine = RuleEngine([rule(max_series=2)])
    engine.evaluate_dirty(T0)
    series_of(engine, "a")
    series_of(engine, "b")
    with caplog.at_level(logging.WARNING, logger="tocsin.rules"):
        assert engine.targets(METRIC, {"model": "c"}) == []
        assert engine.targets(METRIC, {"model": "d"}) == []
    assert engine.series_count == 2
    assert engine.refused_series == {"drift": 2}
    assert engine.stats.refused_series == 2
    (record,) = caplog.records
    assert (record.rule, record.count) == ("drift", 1)

    # Idle series are forgotten, which makes room again.
    engine.tick(T0 + 1.0)
    assert engine.series_count == 0
    assert len(engine.targets(METRIC, {"model": "c"})) == 1


def test_a_rule_at_its_limit_raises_one_alert_that_resolves_once_quiet():
    engine = RuleEngine([rule(max_series=1)])
    engine.evaluate_dirty(T0)
    series_of(engine, "a").add(0.1, T0)
    for model in "bcd":
        assert engine.targets(METRIC, {"model": model}) == []
    decisions = engine.evaluate_dirty(T0)
    assert limit_alerts(decisions) == [("fire", "rule=drift")]
    (fire,) = [d for d in decisions if d.rule == SERIES_LIMIT_RULE]
    assert (fire.value, fire.threshold, fire.labels) == (1.0, 1.0, {"rule": "drift"})

    # Refusing goes on: no second alert.
    assert engine.targets(METRIC, {"model": "e"}) == []
    assert limit_alerts(engine.tick(T0 + 1.0)) == []
    # Once the rule has room again and has refused nothing for a while.
    assert limit_alerts(engine.tick(T0 + LIMIT_QUIET - 1)) == []
    assert limit_alerts(engine.tick(T0 + LIMIT_QUIET + 30)) == [
        ("resolve", "rule=drift")
    ]


def test_the_engine_wide_limit_spans_every_rule():
    engine = RuleEngine(
        [rule(name="one"), rule(name="two", metric="other")], max_series=3
    )
    engine.evaluate_dirty(T0)
    assert len(engine.targets(METRIC, {"model": "a"})) == 1
    assert len(engine.targets(METRIC, {"model": "b"})) == 1
    assert len(engine.targets("other", {"model": "a"})) == 1
    assert engine.targets("other", {"model": "b"}) == []
    assert engine.series_count == 3
    assert limit_alerts(engine.evaluate_dirty(T0)) == [("fire", "scope=all")]


def test_memory_stays_bounded_under_a_flood_of_new_label_values():
    engine = RuleEngine([rule(max_series=100)], max_series=150)
    engine.evaluate_dirty(T0)
    for n in range(10_000):
        for series in engine.targets(METRIC, {"model": f"m{n}"}):
            series.add(0.1, T0)
    assert engine.series_count == 100
    assert engine.refused_series == {"drift": 9_900}


def test_a_restored_limit_alert_resolves_once_the_rule_is_quiet():
    engine = RuleEngine([rule(max_series=5)])
    labels = {"rule": "drift"}
    engine.restore(SERIES_LIMIT_RULE, "rule=drift", labels, since=T0, fired_at=T0)
    assert limit_alerts(engine.tick(T0 + 10)) == []
    assert limit_alerts(engine.tick(T0 + LIMIT_QUIET + 1)) == [
        ("resolve", "rule=drift")
    ]


def test_a_restored_limit_alert_of_a_removed_rule_resolves_at_once():
    engine = RuleEngine([rule()])
    labels = {"rule": "gone"}
    engine.restore(SERIES_LIMIT_RULE, "rule=gone", labels, since=T0, fired_at=T0)
    assert limit_alerts(engine.evaluate_dirty(T0 + 1)) == [("resolve", "rule=gone")]


def test_a_tumbling_rules_limit_alert_resolves_once_quiet_not_at_its_next_bin():
    # A daily rule seals a bin once a day; its quiet limit alert must not wait
    # for that.
    engine = RuleEngine([rule(max_series=5, tumbling=True, window=Duration(86400.0))])
    labels = {"rule": "drift"}
    engine.restore(SERIES_LIMIT_RULE, "rule=drift", labels, since=T0, fired_at=T0)
    assert limit_alerts(engine.tick(T0 + 10)) == []
    assert limit_alerts(engine.tick(T0 + LIMIT_QUIET + 1)) == [
        ("resolve", "rule=drift")
    ]
