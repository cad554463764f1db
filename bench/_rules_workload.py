"""The workload of the rules benchmark: input series, datagrams and rule mixes.

100,000 distinct (metric, tags) input series over 20 metrics; 50 rules on 10 of
those metrics. Every ruled metric has five rules: four each match one ``env``
(an input series has exactly one) and the fifth matches every series of the
metric, so a sample of a ruled metric feeds two rules and half the samples feed
none. With ``group_by = ["model", "host"]`` that makes about 100,000 live rule
series (fewer for the composite rule, which groups by model).

Values are uniform in [0, 1) and thresholds sit near 1, so, as in a healthy
fleet, about one sample in a hundred or fewer breaches: the figures are those
of the steady state, not of an alert storm.

The mix is what an ML platform team runs: plain sliding rules over several
aggregations (two of them a percentile), a few with warning and critical
levels, a few tumbling hourly rules, one comparison with the past, one
composite rule, one with a no-data policy and one with flap detection.
"""

from __future__ import annotations

import random

import msgspec

from tocsin.config import Duration, RuleConfig
from tocsin.schema import (
    CompareConfig,
    ConditionConfig,
    FlappingConfig,
    LevelConfig,
    NoDataConfig,
)

INPUT_SERIES = 100_000
METRICS = 20
RULED_METRICS = 10
ENVS = ("prod", "staging", "dev", "test")
REGIONS = ("r0", "r1", "r2", "r3", "r4")
DATAGRAM = 25
START = 1_750_000_000.0

#: The kind of each of the 50 rules, by index; the rest are plain sliding.
SPECIAL = {
    2: "p95",
    27: "p95",
    5: "levels",
    16: "levels",
    33: "levels",
    44: "levels",
    7: "tumbling",
    18: "tumbling",
    29: "tumbling",
    40: "tumbling",
    11: "compare",
    22: "composite",
    36: "no_data",
    47: "flapping",
}
PLAIN = ("avg", "max", "min", "sum", "last", "count")
#: Kinds the rules of a mix may have, for the report.
KINDS = ("plain", "p95", "levels", "tumbling", "compare", "composite", "no_data")


def make_rules(window: float | None = None) -> list[RuleConfig]:
    """Return the 50 rules of the mix.

    :param window: if given, every window (and tumbling bin) is this long
        instead of the mix's own 1m, 5m and 1h.
    """
    rules = []
    for index in range(RULED_METRICS * 5):
        metric, j = divmod(index, 5)
        kind = SPECIAL.get(index, "plain")
        settings = {
            "name": f"rule-{index}-{kind}",
            "metric": f"model.metric{metric}",
            "match": {"env": ENVS[j]} if j < 4 else {},
            "group_by": ["model", "host"],
            "aggregation": PLAIN[index % len(PLAIN)],
            "window": Duration(60.0 if j % 2 else 300.0),
            "threshold": 0.999 if index % 6 != 5 else 1e9,
            "for_": Duration(30.0 if j == 1 else 0.0),
            "channels": ["log"],
        }
        settings.update(_special(kind, metric, settings))
        if window is not None:
            _set_window(settings, window)
        rules.append(RuleConfig(**settings))

    return rules


def _special(kind: str, metric: int, settings: dict) -> dict:
    """Return the keys that make a rule of ``kind`` from a plain one."""
    if kind == "p95":
        return {"aggregation": "p95", "threshold": 0.999}
    if kind == "levels":
        return {
            "aggregation": "avg",
            "threshold": None,
            "warning": LevelConfig(threshold=0.99),
            "critical": LevelConfig(threshold=0.999),
        }
    if kind == "tumbling":
        return {"tumbling": True, "window": Duration(3600.0), "for_": Duration(0.0)}
    if kind == "compare":
        # Percent change of the 5m average against the value one window ago.
        compare = CompareConfig(kind="percent", bins=12)
        return {"aggregation": "avg", "compare": compare, "threshold": 5000.0}
    if kind == "composite":
        other = f"model.metric{(metric + 1) % RULED_METRICS}"
        sides = [
            ConditionConfig(metric=settings["metric"], threshold=0.9),
            ConditionConfig(metric=other, aggregation="max", threshold=0.999),
        ]
        return {
            "metric": "",
            "threshold": None,
            "conditions": sides,
            "group_by": ["model"],
        }
    if kind == "no_data":
        return {"no_data": NoDataConfig(after=Duration(600.0), action="resolve")}
    if kind == "flapping":
        return {"flapping": FlappingConfig()}
    return {}


def _set_window(settings: dict, window: float) -> None:
    settings["window"] = Duration(window)
    for side in settings.get("conditions", ()):
        index = settings["conditions"].index(side)
        settings["conditions"][index] = msgspec.structs.replace(
            side, window=Duration(window)
        )


def make_series(rng: random.Random) -> list[tuple[str, dict[str, str]]]:
    """Return the input series as (metric, labels)."""
    series = []
    for i in range(INPUT_SERIES):
        labels = {
            "model": f"model-{i % 2000}",
            "env": ENVS[rng.randrange(len(ENVS))],
            "region": REGIONS[rng.randrange(len(REGIONS))],
            "host": f"host-{i}",
        }
        series.append((f"model.metric{i % METRICS}", labels))
    return series


def make_datagrams(rng: random.Random, count: int) -> list[list[tuple[int, float]]]:
    """Return ``count`` datagrams of (input series index, value)."""
    return [
        [(rng.randrange(INPUT_SERIES), rng.random()) for _ in range(DATAGRAM)]
        for _ in range(count)
    ]


def kind_rules(kind: str) -> list[RuleConfig]:
    """Return one rule of ``kind`` over metric ``m`` grouped by host, alone."""
    settings = {
        "name": kind,
        "metric": "m",
        "group_by": ["host"],
        "aggregation": "avg",
        "window": Duration(300.0),
        "threshold": 1e9,
    }
    if kind == "composite":
        settings.update(_special(kind, 0, settings))
        settings["group_by"] = ["host"]
        sides = settings["conditions"]
        settings["conditions"] = [
            msgspec.structs.replace(side, metric=metric)
            for side, metric in zip(sides, ("m", "n"), strict=True)
        ]
    elif kind != "plain":
        settings.update(_special(kind, 0, settings))
    return [RuleConfig(**settings)]
