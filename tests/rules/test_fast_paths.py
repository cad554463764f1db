"""A plain sliding rule's quick ways out of an evaluation change nothing.

``RuleSeries.evaluate`` skips the state machine for a quiet series that does
not breach and for one firing at its top level that has not recovered. The
same rule with the quick ways switched off must decide exactly the same, on
any stream of samples, evaluations and ticks.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.rules.engine_cases import METRIC, MIDNIGHT, rule
from tocsin.config import Duration
from tocsin.rules import windows
from tocsin.rules.engine import RuleEngine
from tocsin.schema import LevelConfig, NoDataConfig

ORDERED = (">", ">=", "<", "<=")
#: Every aggregation a rule may name.
AGGREGATIONS = tuple(windows.AGGREGATIONS)
#: A coarse grid, so values often sit exactly on a threshold.
VALUES = st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0])


@st.composite
def levels(draw, op: str) -> dict:
    """Return the test fields of a rule: one level, or warning and critical."""
    if op in ("inside", "outside"):
        a, b, c, d = sorted(draw(st.lists(VALUES, min_size=4, max_size=4)))
        # critical is the stricter level: within warning's range for inside,
        # containing it for outside.
        warn, crit = ((a, d), (b, c)) if op == "inside" else ((b, c), (a, d))
        if draw(st.booleans()):
            return {"range": list(warn)}
        return {
            "warning": LevelConfig(range=list(warn)),
            "critical": LevelConfig(range=list(crit)),
        }
    low, high = sorted(draw(st.lists(VALUES, min_size=2, max_size=2)))
    # Direction of "worse": up for > and >=, down for < and <=.
    up = op in (">", ">=")
    warn, crit = (low, high) if up else (high, low)

    def recover(threshold: float) -> float | None:
        if op not in ORDERED or not draw(st.booleans()):
            return None
        margin = draw(st.sampled_from([0.0, 0.5, 1.0]))
        return threshold - margin if up else threshold + margin

    if op in ("==", "!=") or draw(st.booleans()):
        return {"threshold": warn, "recover": recover(warn)}
    return {
        "warning": LevelConfig(threshold=warn, recover=recover(warn)),
        "critical": LevelConfig(threshold=crit, recover=recover(crit)),
    }


@st.composite
def configs(draw):
    op = draw(st.sampled_from(ORDERED + ("==", "!=", "inside", "outside")))
    return rule(
        aggregation=draw(st.sampled_from(AGGREGATIONS)),
        window=Duration(60.0),
        op=op,
        min_samples=draw(st.integers(1, 4)),
        keep_firing_for=Duration(draw(st.sampled_from([0.0, 10.0, 45.0]))),
        for_=Duration(draw(st.sampled_from([0.0, 5.0, 20.0]))),
        cooldown=Duration(draw(st.sampled_from([0.0, 30.0]))),
        # A no-data policy of "ignore" leaves the rule plain.
        no_data=draw(st.sampled_from([None, NoDataConfig(Duration(10.0), "ignore")])),
        **draw(levels(op)),
    )


# A step: a sample (value, how far behind the clock it is stamped, model), an
# evaluation of the queued series, or a tick; each after ``gap`` seconds.
STEPS = st.lists(
    st.tuples(
        st.sampled_from(["sample", "sample", "sample", "dirty", "tick"]),
        VALUES,
        st.sampled_from([0.0, 0.0, 2.5, 20.0]),
        st.sampled_from(["a", "b"]),
        st.sampled_from([0.0, 0.0, 1.25, 5.0, 30.0, 90.0]),
    ),
    max_size=80,
)


def run(config, steps, restored: tuple | None, plain: bool) -> list:
    engine = RuleEngine([config])
    runtime = engine.rule(config.name)
    if not plain:
        runtime.plain = False
    now = MIDNIGHT
    if restored is not None:
        model, level = restored
        names = runtime.levels.names
        engine.restore(
            config.name,
            f"model={model}",
            {"model": model},
            since=now - 100.0,
            fired_at=now - 100.0,
            severity=names[min(level, len(names) - 1)],
        )
    decisions = [engine.tick(now)]
    for kind, value, behind, model, gap in steps:
        now += gap
        if kind == "sample":
            engine.targets(METRIC, {"model": model})[0].add(value, now - behind)
            decisions.append(engine.evaluate_dirty(now))
        elif kind == "dirty":
            decisions.append(engine.evaluate_dirty(now))
        else:
            decisions.append(engine.tick(now))
    decisions.append(engine.tick(now + 200.0))
    return decisions


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    configs(),
    STEPS,
    st.one_of(st.none(), st.tuples(st.sampled_from(["a", "c"]), st.integers(0, 1))),
)
def test_quick_ways_out_decide_as_the_state_machine(config, steps, restored):
    assert RuleEngine([config]).rule(config.name).plain
    assert run(config, steps, restored, True) == run(config, steps, restored, False)
