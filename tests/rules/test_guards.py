"""Rate guards through the engine: cooldowns, daily caps and window caps.

A fire a guard holds back goes out as soon as the guard allows it if the
condition still holds, and is dropped silently if it stopped holding; each
held episode is counted once. Fires restored after a restart count towards
every guard.
"""

from __future__ import annotations

import pytest

from tests.rules.engine_cases import MIDNIGHT, actions, feed, rule, series_of
from tocsin.config import Duration
from tocsin.rules.engine import RuleEngine

HOUR = 3600.0
DAY = 86400.0
#: The first fire of every scenario, ten minutes before a UTC midnight.
FIRST = MIDNIGHT - 600.0
#: When the held series starts to breach.
BREACH = MIDNIGHT - 300.0

# Per guard: the rule's settings, the series it holds back after model=a
# fired at FIRST, and when that series' fire is allowed again. Each window is
# at least as long as the hold, so one breaching sample could carry it; the
# tests feed one every hour anyway.
GUARDS = [
    pytest.param(
        {"cooldown": Duration(HOUR), "window": Duration(2 * HOUR)},
        "a",
        FIRST + HOUR,
        id="cooldown",
    ),
    pytest.param(
        {"daily_cap": 1, "window": Duration(HOUR)},
        "b",
        MIDNIGHT,
        id="daily_cap-utc_day",
    ),
    pytest.param(
        {
            "daily_cap": 1,
            "daily_cap_period": "rolling_24h",
            "window": Duration(2 * DAY),
        },
        "b",
        FIRST + DAY,
        id="daily_cap-rolling_24h",
    ),
    pytest.param(
        {"window_cap": 1, "window": Duration(6 * HOUR)},
        "b",
        FIRST + 6 * HOUR,
        id="window_cap",
    ),
]


def first_fire(settings: dict, restored: bool) -> RuleEngine:
    """Return an engine whose rule fired for model=a at FIRST, live or restored.

    A live fire resolves right after, so that the cooldown, not an open
    alert, is what stands between model=a and its next fire.
    """
    engine = RuleEngine([rule(**settings)])
    if restored:
        engine.restore_fires("drift", [FIRST], series=["model=a"])
    else:
        assert actions(feed(engine, 0.5, FIRST)) == [("fire", "model=a")]
        assert actions(feed(engine, 0.1, FIRST + 60.0)) == [("resolve", "model=a")]
    return engine


def breach_until(engine: RuleEngine, model: str, until: float) -> None:
    """Keep ``model`` breaching from BREACH until just before ``until``."""
    at = BREACH
    while at < until:
        assert feed(engine, 0.5, at, model) == []
        assert engine.tick(at + 1.0) == []
        at += HOUR
    assert engine.tick(until - 0.125) == []


@pytest.mark.parametrize("restored", [False, True], ids=["live", "restored"])
@pytest.mark.parametrize(("settings", "model", "allowed"), GUARDS)
def test_a_held_fire_goes_out_once_allowed_if_still_breaching(
    settings, model, allowed, restored
):
    engine = first_fire(settings, restored)
    breach_until(engine, model, allowed)
    assert series_of(engine, model).state == "held"
    # However many evaluations it waited through, one episode is one count.
    assert engine.stats.held_fires == 1

    (fire,) = engine.tick(allowed)
    assert (fire.action, fire.series, fire.since, fire.at) == (
        "fire",
        f"model={model}",
        BREACH,
        allowed,
    )
    assert series_of(engine, model).state == "firing"
    assert engine.stats.held_fires == 1


@pytest.mark.parametrize("restored", [False, True], ids=["live", "restored"])
@pytest.mark.parametrize(("settings", "model", "allowed"), GUARDS)
def test_a_held_fire_is_dropped_silently_once_the_condition_clears(
    settings, model, allowed, restored
):
    engine = first_fire(settings, restored)
    assert feed(engine, 0.5, BREACH, model) == []
    assert feed(engine, 0.1, BREACH + 60.0, model) == []
    assert series_of(engine, model).state == "inactive"
    assert engine.tick(allowed) == []
    assert engine.tick(allowed + HOUR) == []
    # A new breach once the guard allows it fires at once, with its own since.
    (fire,) = feed(engine, 0.5, allowed + HOUR, model)
    assert (fire.action, fire.since) == ("fire", allowed + HOUR)
    assert engine.stats.held_fires == 1


def test_each_held_episode_counts_once():
    engine = first_fire({"cooldown": Duration(HOUR)}, restored=False)
    for start in (BREACH, BREACH + 600.0):
        for at in range(3):
            assert feed(engine, 0.5, start + at, "a") == []
        assert feed(engine, 0.1, start + 60.0, "a") == []
    assert engine.stats.held_fires == 2


@pytest.mark.parametrize(
    ("period", "second"),
    [("utc_day", [("fire", "model=b")]), ("rolling_24h", [])],
)
def test_only_the_utc_day_cap_starts_afresh_at_midnight(period, second):
    engine = RuleEngine([rule(daily_cap=1, daily_cap_period=period)])
    assert actions(feed(engine, 0.5, MIDNIGHT - 1.0)) == [("fire", "model=a")]
    assert actions(feed(engine, 0.5, MIDNIGHT, "b")) == second
    # Whichever the period, the new day's one fire is spent now.
    assert feed(engine, 0.5, MIDNIGHT + 1.0, "c") == []
    assert series_of(engine, "c").state == "held"


@pytest.mark.parametrize("period", ["utc_day", "rolling_24h"])
def test_the_daily_cap_allows_cap_fires_per_day(period):
    engine = RuleEngine(
        [rule(daily_cap=3, daily_cap_period=period, window=Duration(DAY))]
    )
    fired = [
        feed(engine, 0.5, MIDNIGHT + 100.0 * index, model)
        for index, model in enumerate("abcd")
    ]
    assert [actions(found) for found in fired] == [
        [("fire", "model=a")],
        [("fire", "model=b")],
        [("fire", "model=c")],
        [],
    ]


def test_the_window_cap_allows_at_most_n_fires_in_any_window():
    # At most two fires in any hour: fires at 0 and 100 hold the third until
    # 3600, and the fires at 100 and 3600 hold the fourth until 3700.
    engine = RuleEngine([rule(window=Duration(HOUR), window_cap=2)])
    assert actions(feed(engine, 0.5, MIDNIGHT, "a")) == [("fire", "model=a")]
    assert actions(feed(engine, 0.5, MIDNIGHT + 100.0, "b")) == [("fire", "model=b")]
    assert feed(engine, 0.5, MIDNIGHT + 200.0, "c") == []
    assert feed(engine, 0.5, MIDNIGHT + 3000.0, "c") == []
    assert engine.tick(MIDNIGHT + 3599.875) == []
    # The first two samples leave the window as the first fire leaves the span.
    assert actions(engine.tick(MIDNIGHT + 3600.0)) == [
        ("resolve", "model=a"),
        ("resolve", "model=b"),
        ("fire", "model=c"),
    ]

    assert feed(engine, 0.5, MIDNIGHT + 3650.0, "d") == []
    assert engine.tick(MIDNIGHT + 3699.875) == []
    (fire,) = engine.tick(MIDNIGHT + 3700.0)
    assert (fire.action, fire.series, fire.since) == (
        "fire",
        "model=d",
        MIDNIGHT + 3650.0,
    )
    assert engine.stats.held_fires == 2


def test_a_cooldown_holds_only_its_own_series():
    engine = first_fire({"cooldown": Duration(HOUR)}, restored=False)
    assert feed(engine, 0.5, BREACH, "a") == []
    assert actions(feed(engine, 0.5, BREACH, "b")) == [("fire", "model=b")]
    assert (series_of(engine, "a").state, series_of(engine, "b").state) == (
        "held",
        "firing",
    )


def test_a_restored_fire_without_its_series_counts_for_the_caps_only():
    settings = {"cooldown": Duration(HOUR), "window_cap": 1, "window": Duration(HOUR)}
    engine = RuleEngine([rule(**settings)])
    engine.restore_fires("drift", [FIRST])
    assert feed(engine, 0.5, BREACH, "a") == []
    assert engine.tick(FIRST + HOUR - 0.125) == []
    # Only the window cap held it: the unknown series started no cooldown.
    assert actions(engine.tick(FIRST + HOUR)) == [("fire", "model=a")]


def test_restored_fires_older_than_the_span_hold_nothing():
    settings = {"daily_cap": 1, "daily_cap_period": "rolling_24h", "window_cap": 1}
    engine = RuleEngine([rule(**settings)])
    engine.restore_fires("drift", [MIDNIGHT - DAY], series=["model=a"])
    assert actions(feed(engine, 0.5, MIDNIGHT, "a")) == [("fire", "model=a")]
