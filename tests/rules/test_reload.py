"""Reloading the rules in a running engine."""

from __future__ import annotations

from tests.rules.engine_cases import METRIC, T0, actions, feed, rule, series_of
from tocsin.config import Duration
from tocsin.rules.engine import RuleEngine


def reload(engine, *rules, at):
    return engine.reload(list(rules), at, max_series=1_000_000)


def test_the_result_lists_kept_added_changed_and_removed_rules():
    engine = RuleEngine([rule(name="same"), rule(name="edit"), rule(name="gone")])
    result = reload(
        engine,
        rule(name="same"),
        rule(name="edit", threshold=0.3),
        rule(name="new"),
        at=T0,
    )
    assert (result.kept, result.added, result.changed, result.removed) == (
        ["same"],
        ["new"],
        ["edit"],
        ["gone"],
    )


def test_an_unchanged_rule_keeps_its_window_and_pending_state():
    engine = RuleEngine([rule(aggregation="count", threshold=1.5, for_=Duration(60.0))])
    feed(engine, 1.0, T0)
    feed(engine, 1.0, T0 + 1.0)
    assert series_of(engine).state == "pending"
    result = reload(
        engine,
        rule(aggregation="count", threshold=1.5, for_=Duration(60.0)),
        at=T0 + 2.0,
    )
    assert result.decisions == []
    feed(engine, 1.0, T0 + 3.0)
    assert series_of(engine).value == 3.0
    assert engine.tick(T0 + 60.0) == []
    (fire,) = engine.tick(T0 + 61.0)
    assert (fire.action, fire.since) == ("fire", T0 + 1.0)


def test_an_unchanged_rule_keeps_its_cooldown_and_daily_cap():
    config = rule(cooldown=Duration(3600.0), daily_cap=1)
    engine = RuleEngine([config])
    feed(engine, 0.5, T0)
    feed(engine, 0.1, T0 + 1.0)
    reload(engine, config, at=T0 + 2.0)
    assert feed(engine, 0.5, T0 + 3.0) == []
    assert series_of(engine).state == "held"
    assert feed(engine, 0.5, T0 + 3.0, model="b") == []


def test_a_changed_rule_keeps_its_alert_open_then_resolves_once_clear():
    engine = RuleEngine([rule()])
    (fire,) = feed(engine, 0.5, T0)
    result = reload(engine, rule(threshold=0.4), at=T0 + 10.0)
    assert result.decisions == []
    assert series_of(engine).state == "firing"
    # Still breaching the new definition: no new fire.
    assert feed(engine, 0.45, T0 + 20.0) == []
    (resolve,) = feed(engine, 0.3, T0 + 30.0)
    assert (resolve.action, resolve.series, resolve.since) == (
        "resolve",
        "model=a",
        fire.since,
    )


def test_a_changed_rule_resolves_a_silent_alert_after_a_window_of_grace():
    engine = RuleEngine([rule()])
    feed(engine, 0.5, T0)
    reload(engine, rule(threshold=0.4), at=T0 + 10.0)
    assert engine.tick(T0 + 309.0) == []
    assert series_of(engine).state == "firing"
    assert actions(engine.tick(T0 + 310.0)) == [("resolve", "model=a")]


def test_a_removed_rule_resolves_its_firing_series_saying_so():
    engine = RuleEngine([rule(), rule(name="other", metric="other.metric")])
    feed(engine, 0.5, T0)
    feed(engine, 0.1, T0, model="b")
    engine.targets("other.metric", {"model": "a"})[0].add(0.9, T0)
    engine.evaluate_dirty(T0)
    result = reload(engine, rule(name="other", metric="other.metric"), at=T0 + 1.0)
    (resolve,) = [d for d in result.decisions if d.rule == "drift"]
    assert (resolve.action, resolve.series) == ("resolve", "model=a")
    assert resolve.reason == "rule 'drift' removed from the configuration"
    assert all(d.action == "resolve" for d in result.decisions)


def test_a_reload_never_fires():
    engine = RuleEngine([rule(for_=Duration(30.0))])
    feed(engine, 0.5, T0)
    result = reload(engine, rule(for_=Duration(10.0)), rule(name="new"), at=T0 + 20.0)
    assert [d for d in result.decisions if d.action == "fire"] == []


def test_a_cached_series_of_a_removed_rule_swallows_samples():
    engine = RuleEngine([rule(), rule(name="other")])
    cached = engine.targets(METRIC, {"model": "a"})
    reload(engine, rule(name="other"), at=T0)
    for series in cached:
        series.add(0.9, T0 + 1.0)
    decisions = engine.evaluate_dirty(T0 + 1.0) + engine.tick(T0 + 2.0)
    assert all(d.rule != "drift" for d in decisions)
    assert [s.rule for s in engine.targets(METRIC, {"model": "a"})] == ["other"]
