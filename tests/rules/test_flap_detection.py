"""Flap detection through the engine: a flapping alert stays open and quiet."""

from __future__ import annotations

import pytest

from tests.rules.engine_cases import T0, actions, feed, rule, series_of
from tocsin.rules.engine import RuleEngine
from tocsin.schema import FlappingConfig, LevelConfig

#: Four pairs weighing 0.8, 0.93, 1.07 and 1.2: the two newest pairs changed
#: make 0.57 (above high), the oldest alone 0.2 (below low).
FLAPPING = FlappingConfig(history=5, low=0.25, high=0.5)
#: One bin of the 5m window: an evaluation in the next one is a step.
STEP = 25.0


def flappy(**fields):
    return rule(flapping=FLAPPING, **fields)


def toggle(engine, count: int, start: float = T0, first: float = 0.5):
    """Feed values alternating across the threshold, one second apart."""
    decisions = []
    value = first
    for index in range(count):
        decisions += feed(engine, value, start + index)
        value = 0.1 if value == 0.5 else 0.5
    return decisions


def test_a_toggling_series_fires_once_then_stays_open_while_flapping():
    engine = RuleEngine([flappy()])
    decisions = toggle(engine, 12)
    assert [d.action for d in decisions] == ["fire", "flapping"]
    flapping = decisions[1]
    assert (flapping.series, flapping.at) == ("model=a", T0 + 1.0)
    assert flapping.reason == "flapping: notifications pause"
    series = series_of(engine)
    assert (series.state, series.is_flapping) == ("firing", True)


def test_a_flapping_alert_changes_no_severity():
    engine = RuleEngine(
        [
            flappy(
                threshold=None,
                warning=LevelConfig(threshold=0.2),
                critical=LevelConfig(threshold=0.6),
            )
        ]
    )
    decisions = feed(engine, 0.3, T0)
    for index, value in enumerate((0.9, 0.3, 0.9, 0.3, 0.9, 0.1, 0.9)):
        decisions += feed(engine, value, T0 + 1.0 + index)
    # Rising to critical is the second change in a row: flapping at once,
    # and every later change of level is swallowed.
    assert [d.action for d in decisions] == ["fire", "flapping"]
    assert (decisions[1].severity, series_of(engine).severity) == (
        "warning",
        "warning",
    )


@pytest.mark.parametrize(
    ("last", "outcome", "reason"),
    [
        (
            0.1,
            "resolve",
            "last(model.drift.psi) over 5m = 0.1, no longer > 0.2"
            " (settled after flapping)",
        ),
        (0.5, "settled", "settled after flapping"),
    ],
)
def test_once_settled_the_current_condition_decides(last, outcome, reason):
    engine = RuleEngine([flappy()])
    toggle(engine, 6)
    assert series_of(engine).is_flapping
    decisions = []
    # Steady values, one per step, until only the oldest pair changed: a
    # share of 0.2, below low (the toggles ended at 0.1, so a steady 0.5
    # first changes once more).
    for step in range(1, 7):
        decisions += feed(engine, last, T0 + step * STEP)
    assert [(d.action, d.reason) for d in decisions] == [(outcome, reason)]
    assert decisions[0].at == T0 + (3 if last == 0.1 else 4) * STEP
    assert not series_of(engine).is_flapping
    assert series_of(engine).state == ("firing" if last == 0.5 else "inactive")


def test_a_settled_series_that_toggles_again_reopens_once_and_stays_open():
    engine = RuleEngine([flappy()])
    toggle(engine, 6)
    for step in range(1, 7):
        feed(engine, 0.5, T0 + step * STEP)
    assert not series_of(engine).is_flapping
    decisions = toggle(engine, 8, start=T0 + 7 * STEP, first=0.1)
    # One change resolves; the next starts flapping, so the new alert says
    # so, and it then stays open through the toggling.
    assert [d.action for d in decisions] == ["resolve", "fire"]
    assert decisions[1].reason.endswith(" (flapping)")
    assert series_of(engine).state == "firing"


@pytest.mark.parametrize("value", [0.5, 0.1])
def test_a_steady_series_never_flaps(value):
    engine = RuleEngine([flappy()])
    decisions = []
    for step in range(40):
        decisions += feed(engine, value, T0 + step * STEP / 2)
    assert actions(decisions) == ([("fire", "model=a")] if value == 0.5 else [])
    assert not series_of(engine).is_flapping


def test_a_single_breach_and_recovery_does_not_flap():
    # Two changes in 20 pairs is a share of about 0.12: no flapping. (In a
    # history of 5, the same two changes would be half of it.)
    engine = RuleEngine([rule(flapping=FlappingConfig())])
    decisions = feed(engine, 0.5, T0)
    for step in range(1, 10):
        decisions += feed(engine, 0.1, T0 + step * STEP)
    assert [d.action for d in decisions] == ["fire", "resolve"]
