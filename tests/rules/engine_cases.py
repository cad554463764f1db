"""Rules and helpers shared by the rules engine's tests."""

from __future__ import annotations

from tocsin.config import Duration, RuleConfig
from tocsin.rules.engine import RuleEngine

T0 = 1_750_000_000.0
#: A UTC midnight (20255 * 86400).
MIDNIGHT = 1_750_032_000.0
METRIC = "model.drift.psi"


def rule(**fields) -> RuleConfig:
    settings = {
        "name": "drift",
        "metric": METRIC,
        "group_by": ["model"],
        "aggregation": "last",
        "window": Duration(300.0),
        "op": ">",
        "threshold": 0.2,
    }
    settings.update(fields)
    return RuleConfig(**settings)


def series_of(engine: RuleEngine, model: str = "a", **labels):
    found = engine.targets(METRIC, {"model": model, **labels})
    assert len(found) == 1
    return found[0]


def feed(engine, value, at, model="a"):
    series_of(engine, model).add(value, at)
    return engine.evaluate_dirty(at)


def actions(decisions) -> list[tuple[str, str]]:
    return [(d.action, d.series) for d in decisions]
