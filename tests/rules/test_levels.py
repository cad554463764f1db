"""Warning and critical levels in one rule, through the engine and alone."""

from __future__ import annotations

import pytest

from tests.rules.engine_cases import T0, actions, feed, rule, series_of
from tocsin.config import Duration
from tocsin.rules.engine import RuleEngine
from tocsin.rules.levels import Levels
from tocsin.rules.windows import AGGREGATIONS
from tocsin.schema import LevelConfig

WARNING = LevelConfig(threshold=0.2, recover=0.15)
CRITICAL = LevelConfig(threshold=0.5, recover=0.4)


def leveled(**fields):
    settings = {"threshold": None, "warning": WARNING, "critical": CRITICAL}
    settings.update(fields)
    return rule(**settings)


@pytest.mark.parametrize(
    ("value", "severity", "threshold"),
    [(0.3, "warning", 0.2), (0.5, "warning", 0.2), (0.51, "critical", 0.5)],
)
def test_a_rule_fires_at_the_level_reached(value, severity, threshold):
    engine = RuleEngine([leveled()])
    (fire,) = feed(engine, value, T0)
    assert (fire.action, fire.severity, fire.threshold) == ("fire", severity, threshold)
    assert series_of(engine).severity == severity


def test_nothing_fires_below_the_lowest_level():
    engine = RuleEngine([leveled()])
    assert feed(engine, 0.2, T0) == []
    assert series_of(engine).state == "inactive"


def test_rising_to_critical_is_one_severity_decision_on_the_same_alert():
    engine = RuleEngine([leveled()])
    (fire,) = feed(engine, 0.3, T0)
    (raised,) = feed(engine, 0.7, T0 + 1.0)
    assert raised.action == "severity"
    assert raised.series == fire.series == "model=a"
    assert (raised.severity, raised.threshold, raised.value) == ("critical", 0.5, 0.7)
    assert raised.since == fire.since == T0
    assert "severity raised from warning to critical" in raised.reason
    assert feed(engine, 0.8, T0 + 2.0) == []


def test_a_critical_alert_falls_back_only_past_its_recover_then_resolves():
    engine = RuleEngine([leveled()])
    feed(engine, 0.7, T0)
    # Between critical's recover (0.4) and its threshold: still critical.
    assert feed(engine, 0.45, T0 + 1.0) == []
    assert series_of(engine).severity == "critical"
    (lowered,) = feed(engine, 0.4, T0 + 2.0)
    assert (lowered.action, lowered.severity) == ("severity", "warning")
    assert "severity lowered from critical to warning" in lowered.reason
    # Below warning's threshold but above its recover: still warning.
    assert feed(engine, 0.18, T0 + 3.0) == []
    (resolve,) = feed(engine, 0.15, T0 + 4.0)
    assert (resolve.action, resolve.series, resolve.severity) == (
        "resolve",
        "model=a",
        "",
    )
    assert feed(engine, 0.1, T0 + 5.0) == []


def test_a_critical_alert_below_both_recovers_resolves_at_once():
    engine = RuleEngine([leveled()])
    feed(engine, 0.7, T0)
    assert actions(feed(engine, 0.1, T0 + 1.0)) == [("resolve", "model=a")]


def test_a_critical_alert_lands_on_warning_when_it_still_breaches_warning():
    engine = RuleEngine([leveled()])
    feed(engine, 0.7, T0)
    (lowered,) = feed(engine, 0.3, T0 + 1.0)
    assert (lowered.action, lowered.severity, lowered.threshold) == (
        "severity",
        "warning",
        0.2,
    )


def test_for_applies_before_the_first_fire_only():
    engine = RuleEngine([leveled(for_=Duration(30.0))])
    assert feed(engine, 0.3, T0) == []
    assert feed(engine, 0.7, T0 + 10.0) == []
    assert series_of(engine).state == "pending"
    (fire,) = engine.tick(T0 + 30.0)
    assert (fire.action, fire.severity, fire.since) == ("fire", "critical", T0)
    # Once firing, a change of level needs no pending period.
    engine2 = RuleEngine([leveled(for_=Duration(30.0))])
    feed(engine2, 0.3, T0)
    assert actions(engine2.tick(T0 + 30.0)) == [("fire", "model=a")]
    (raised,) = feed(engine2, 0.7, T0 + 31.0)
    assert raised.action == "severity"


def test_a_range_rule_with_levels_fires_outside_the_wider_range_as_critical():
    engine = RuleEngine(
        [
            leveled(
                op="outside",
                warning=LevelConfig(range=[0.2, 0.8]),
                critical=LevelConfig(range=[0.1, 0.9]),
            )
        ]
    )
    assert feed(engine, 0.5, T0) == []
    (fire,) = feed(engine, 0.85, T0 + 1.0)
    assert (fire.severity, fire.threshold) == ("warning", None)
    assert fire.reason.endswith("outside [0.2, 0.8]")
    (raised,) = feed(engine, 0.05, T0 + 2.0)
    assert (raised.action, raised.severity) == ("severity", "critical")
    assert "outside [0.1, 0.9]" in raised.reason
    (lowered,) = feed(engine, 0.15, T0 + 3.0)
    assert (lowered.action, lowered.severity) == ("severity", "warning")
    assert actions(feed(engine, 0.5, T0 + 4.0)) == [("resolve", "model=a")]


def test_a_rule_with_only_critical_fires_at_critical():
    engine = RuleEngine([leveled(warning=None)])
    assert feed(engine, 0.3, T0) == []
    (fire,) = feed(engine, 0.6, T0 + 1.0)
    assert (fire.severity, fire.threshold) == ("critical", 0.5)


# Levels alone: number tests (measure=None), the two levels above.

LEVELS = [("warning", WARNING), ("critical", CRITICAL)]


@pytest.mark.parametrize(
    ("value", "level"),
    [(None, 0), (0.1, 0), (0.2, 0), (0.21, 1), (0.5, 1), (0.51, 2), (9.0, 2)],
)
def test_classify_returns_the_highest_level_breached(value, level):
    assert Levels(">", LEVELS, None).classify(value) == level


@pytest.mark.parametrize(
    ("value", "at", "level"),
    [
        # At warning: rises at once, stays down to its recover.
        (0.6, 1, 2),
        (0.3, 1, 1),
        (0.16, 1, 1),
        (0.15, 1, 0),
        (None, 1, 0),
        # At critical: stays down to its recover, then lands on warning if
        # warning has not recovered.
        (0.9, 2, 2),
        (0.41, 2, 2),
        (0.4, 2, 1),
        (0.16, 2, 1),
        (0.15, 2, 0),
    ],
)
def test_settle_rises_at_once_and_falls_only_past_recover(value, at, level):
    assert Levels(">", LEVELS, None).settle(value, at) == level


@pytest.mark.parametrize(
    ("op", "levels", "value", "level"),
    [
        ("<", [("warning", LevelConfig(threshold=10.0))], 9.0, 1),
        ("<", [("warning", LevelConfig(threshold=10.0))], 10.0, 0),
        (
            "<",
            [
                ("warning", LevelConfig(threshold=10.0)),
                ("critical", LevelConfig(threshold=5.0)),
            ],
            4.0,
            2,
        ),
        ("inside", [("high", LevelConfig(range=[1.0, 2.0]))], 1.0, 1),
        ("inside", [("high", LevelConfig(range=[1.0, 2.0]))], 2.5, 0),
    ],
)
def test_classify_for_other_comparisons(op, levels, value, level):
    assert Levels(op, levels, None).classify(value) == level


def test_levels_name_their_severities_and_thresholds():
    levels = Levels(">", LEVELS, AGGREGATIONS["avg"])
    assert levels.names == ("warning", "critical")
    assert levels.thresholds == (0.2, 0.5)
    assert levels.recoveries == (0.15, 0.4)
    assert (levels.top, levels.name(2), levels.level_of("warning")) == (
        2,
        "critical",
        1,
    )
    assert levels.level_of("unknown") == 1
