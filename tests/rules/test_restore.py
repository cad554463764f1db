"""The rules engine after a restart: restored alerts, cooldowns and caps."""

from __future__ import annotations

import logging

from tests.rules.engine_cases import MIDNIGHT, T0, actions, feed, rule, series_of
from tocsin.config import Duration
from tocsin.rules.engine import RuleEngine


def test_a_restored_series_does_not_fire_again_and_resolves():
    engine = RuleEngine([rule()])
    engine.restore(
        "drift", "model=a", {"model": "a"}, since=T0 - 100.0, fired_at=T0 - 90.0
    )
    assert engine.series_count == 1
    assert feed(engine, 0.5, T0) == []
    assert series_of(engine).state == "firing"
    (decision,) = feed(engine, 0.1, T0 + 1.0)
    assert (decision.action, decision.series) == ("resolve", "model=a")
    assert decision.since == T0 - 100.0


def test_a_restored_series_waits_a_window_before_resolving_for_no_samples():
    engine = RuleEngine([rule()])
    engine.restore("drift", "model=a", {"model": "a"}, since=T0 - 100.0, fired_at=T0)
    # The engine starts at T0 + 1: the window could be full from T0 + 301.
    assert engine.tick(T0 + 1.0) == []
    assert engine.tick(T0 + 300.0) == []
    (decision,) = engine.tick(T0 + 301.0)
    assert (decision.action, decision.value) == ("resolve", None)


def test_a_restored_alert_keeps_its_key_when_the_grouping_changed():
    engine = RuleEngine([rule(group_by=["model", "env"])])
    engine.restore("drift", "model=a", {"model": "a"}, since=T0, fired_at=T0)
    assert engine.tick(T0) == []
    (decision,) = engine.tick(T0 + 300.0)
    assert (decision.series, decision.labels) == ("model=a", {"model": "a"})


def test_a_restored_fire_starts_the_cooldown():
    engine = RuleEngine([rule(cooldown=Duration(600.0))])
    engine.restore("drift", "model=a", {"model": "a"}, since=T0, fired_at=T0)
    assert actions(feed(engine, 0.1, T0 + 1.0)) == [("resolve", "model=a")]
    assert feed(engine, 0.5, T0 + 2.0) == []
    assert engine.stats.held_fires == 1
    assert feed(engine, 0.5, T0 + 590.0) == []
    assert actions(engine.tick(T0 + 600.0)) == [("fire", "model=a")]


def test_restored_fires_count_towards_the_daily_cap_and_cooldowns():
    settings = {"window": Duration(3600.0), "cooldown": Duration(600.0)}
    engine = RuleEngine([rule(daily_cap=2, **settings)])
    fires = [MIDNIGHT - 7200.0, MIDNIGHT - 300.0]
    engine.restore_fires("drift", fires, series=["model=a", "model=b"])
    engine.restore_fires("drift", [MIDNIGHT - 90000.0])
    assert engine.stats.held_fires == 0
    assert feed(engine, 0.5, MIDNIGHT - 60.0, model="c") == []
    assert engine.stats.held_fires == 1
    assert actions(engine.tick(MIDNIGHT)) == [("fire", "model=c")]
    # model=b fired at MIDNIGHT - 300 (restored): its cooldown still runs.
    assert feed(engine, 0.5, MIDNIGHT + 1.0, model="b") == []
    assert engine.tick(MIDNIGHT + 299.0) == []
    assert actions(engine.tick(MIDNIGHT + 300.0)) == [("fire", "model=b")]


def test_restoring_an_unknown_rule_is_logged_and_ignored(caplog):
    engine = RuleEngine([rule()])
    with caplog.at_level(logging.WARNING, logger="tocsin.rules"):
        engine.restore("gone", "model=a", {"model": "a"}, since=T0, fired_at=T0)
        engine.restore_fires("gone", [T0])
    assert engine.series_count == 0
    assert [r.rule for r in caplog.records] == ["gone"]
