"""The rules engine against brute-force references, on random streams.

Samples arrive late, twice and out of order, between evaluations and ticks at
random times (some given a ``now`` behind the clock). Each reference keeps
every sample it accepts in a plain list and recomputes everything from it;
timestamps are multiples of 1/8 s, so every bin edge is exact and the tests
check the engine's definitions rather than rounding at an edge.
"""

from __future__ import annotations

import math
from itertools import count

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.rules.engine_cases import MIDNIGHT
from tocsin.config import Duration, RuleConfig
from tocsin.rules.engine import RuleEngine
from tocsin.rules.windows import AGGREGATIONS, BINS, SKETCH_ACCURACY
from tocsin.schema import LevelConfig, NoDataConfig

#: Aligned to every bin width below.
START = MIDNIGHT

Sample = tuple[float, float, int]  # value, timestamp, order of arrival in its bin


def brute(aggregation: str, samples: list[Sample]) -> float | None:
    """Return ``aggregation`` of ``samples`` by its definition, the slow way."""
    values = [value for value, _, _ in samples]
    if not values:
        return None
    # The newest timestamp is the last sample, the later arrival among equals;
    # the earliest is the first, the earlier arrival among equals.
    newest = max(samples, key=lambda s: (s[1], s[2]))
    earliest = min(samples, key=lambda s: (s[1], s[2]))
    mean = math.fsum(values) / len(values)
    if aggregation == "rate":
        seconds = newest[1] - earliest[1]
        return (newest[0] - earliest[0]) / seconds if seconds else None
    if aggregation.startswith("p"):
        rank = math.floor(int(aggregation[1:]) / 100 * (len(values) - 1))
        return sorted(values)[rank]
    return {
        "avg": mean,
        "min": min(values),
        "max": max(values),
        "sum": math.fsum(values),
        "count": float(len(values)),
        "last": newest[0],
        "delta": newest[0] - earliest[0],
        "stddev": math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values)),
    }[aggregation]


def assert_close(aggregation: str, got: float | None, samples: list[Sample]) -> None:
    want = brute(aggregation, samples)
    if want is None:
        assert got is None, aggregation
        return
    assert got is not None, aggregation
    values = [value for value, _, _ in samples]
    if aggregation.startswith("p"):
        # DDSketch's guarantee: within 1 % of the true sample at that rank.
        assert abs(got - want) <= SKETCH_ACCURACY * abs(want) + 1e-9, aggregation
    else:
        scale = max(abs(v) for v in values)
        assert got == pytest.approx(want, rel=1e-9, abs=1e-9 * scale), aggregation


# -- tumbling bins ------------------------------------------------------------

TUMBLING_WIDTH = 60.0


class TumblingReference:
    """The tumbling acceptance policy over one series, the slow way.

    A sample for bin ``b`` is taken while ``b`` is neither sealed (the clock
    has passed ``(b + 1) * width + delay``) nor ahead of the clock's bin; one
    ahead waits until the clock reaches its bin, one for a sealed bin is late.
    Bins seal as the clock passes them, before the samples the clock reached
    are handed over.
    """

    def __init__(self, delay: float, now: float) -> None:
        self.delay = delay
        self.now = now
        self.bins: dict[int, list[Sample]] = {}
        self.parked: list[tuple[int, int, float, float]] = []
        self.late = 0
        #: ``(bin, samples)`` of each sealed bin that held any, in order.
        self.measured: list[tuple[int, list[Sample]]] = []
        #: The samples of each sealed bin.
        self.closed: dict[int, list[Sample]] = {}
        self._arrivals = count()

    def bin(self, timestamp: float) -> int:
        return math.floor(timestamp / TUMBLING_WIDTH)

    def sealed(self) -> int:
        return self.bin(self.now - self.delay) - 1

    def add(self, value: float, timestamp: float) -> None:
        at = self.bin(timestamp)
        if at <= self.sealed():
            self.late += 1
        elif at > self.bin(self.now):
            self.parked.append((at, next(self._arrivals), value, timestamp))
        else:
            self.bins.setdefault(at, []).append(
                (value, timestamp, next(self._arrivals))
            )

    def advance(self, now: float) -> None:
        if now <= self.now:
            return
        self.now = now
        sealed = self.sealed()
        for at in sorted(at for at in self.bins if at <= sealed):
            self.closed[at] = self.bins.pop(at)
            self.measured.append((at, self.closed[at]))
        head = self.bin(now)
        due = sorted(entry for entry in self.parked if entry[0] <= head)
        self.parked = [entry for entry in self.parked if entry[0] > head]
        for _, _, value, timestamp in due:
            self.add(value, timestamp)


def spy_on_bins(engine: RuleEngine, name: str) -> list[tuple]:
    """Return the list that collects ``(bin, count, value)`` of each bin the
    rule ``name`` measures as it seals them (only bins holding samples are)."""
    runtime = engine.rule(name)
    measure = runtime.measure
    seen: list[tuple] = []

    def measure_and_note(window):
        value = measure(window)
        seen.append((window.head, window.count, value))
        return value

    runtime.measure = measure_and_note
    return seen


# Zero, small integers (exact sums, ties, duplicates) or magnitudes where the
# sketches' stated accuracy holds (their buckets never collapse there).
values = st.one_of(
    st.just(0.0),
    st.integers(-50, 50).map(float),
    st.floats(1e-3, 1e6),
    st.floats(-1e6, -1e-3),
)


def eighths(low: float, high: float):
    return st.integers(int(low * 8), int(high * 8)).map(lambda n: n / 8)


def stream(recent, far, value, evaluate, tick, size):
    """Return lists of operations: mostly samples stamped near the clock, some
    far behind or ahead, repeated timestamps, evaluations and ticks."""
    return st.lists(
        st.one_of(
            st.tuples(st.just("add"), value, recent),
            st.tuples(st.just("add"), value, recent),
            st.tuples(st.just("add"), value, far),
            # "again" repeats the previous timestamp with another value.
            st.tuples(st.just("again"), value),
            st.tuples(st.just("evaluate"), evaluate),
            st.tuples(st.just("tick"), tick),
        ),
        min_size=size // 4,
        max_size=size,
    )


tumbling_ops = stream(
    eighths(-TUMBLING_WIDTH, 10),
    # From four bins and a delay behind the clock to two ahead.
    eighths(-4 * TUMBLING_WIDTH - 150, 120),
    values,
    eighths(-30, 60),
    eighths(-30, 120),
    size=80,
)


@settings(max_examples=150, deadline=None)
@given(delay=st.sampled_from([0.0, 7.5, 60.0, 150.0]), ops=tumbling_ops)
# A sample arriving after an evaluation (not a tick) passed its bin's seal.
@example(delay=0.0, ops=[("evaluate", 60.0), ("again", 0.0), ("tick", 0.0)])
# A bin sealed along with two more by a late tick, and one whose slot a newer
# bin took before a tick sealed it.
@example(delay=0.0, ops=[("again", 1.0), ("tick", 180.0)])
@example(
    delay=0.0,
    ops=[("add", 1.0, 1.0), ("evaluate", 120.0), ("add", 2.0, 1.0), ("tick", 1.0)],
)
def test_each_sealed_bin_measures_the_samples_the_policy_took(delay, ops):
    # One rule per aggregation, none of which can fire; a no-data policy that
    # never comes due keeps each series live, so its newest bin stays readable.
    rules = [
        RuleConfig(
            name=name,
            metric="m",
            aggregation=name,
            window=Duration(TUMBLING_WIDTH),
            tumbling=True,
            delay=Duration(delay),
            threshold=1e18,
            no_data=NoDataConfig(after=Duration(30 * 86400.0)),
        )
        for name in AGGREGATIONS
    ]
    engine = RuleEngine(rules)
    now = START
    assert engine.tick(now) == []
    found = engine.targets("m", {})
    seen = {name: spy_on_bins(engine, name) for name in AGGREGATIONS}
    reference = TumblingReference(delay, now)
    timestamp = now
    for op in ops:
        if op[0] in ("add", "again"):
            if op[0] == "add":
                timestamp = now + op[2]
            for series in found:
                series.add(op[1], timestamp)
            reference.add(op[1], timestamp)
            continue
        now += op[1]
        reference.advance(now)
        if op[0] == "evaluate":
            assert engine.evaluate_dirty(now) == []
            continue
        assert engine.tick(now) == []
        sealed = reference.sealed()
        inside = reference.closed.get(sealed, [])
        for series in found:
            assert series.head == sealed
            assert series.count == len(inside)
            assert_close(series.rule, series.value, inside)

    # Every bin sealed on the way, whether a tick saw it as the newest or not.
    assert engine.tick(now) == []
    for name, measured in seen.items():
        assert [(at, n) for at, n, _ in measured] == [
            (at, len(inside)) for at, inside in reference.measured
        ]
        for (_, _, value), (_, inside) in zip(
            measured, reference.measured, strict=True
        ):
            assert_close(name, value, inside)
    assert engine.stats.late_samples == len(found) * reference.late


# -- sliding windows and levels -----------------------------------------------

SLIDING_WINDOW = 120.0
SLIDING_WIDTH = SLIDING_WINDOW / BINS


class SlidingReference:
    """One series of a sliding rule and its alert states, the slow way.

    It keeps the series' own head (the bin it was last moved to), since a
    sample the series takes is what queues it for evaluation, and mirrors
    when the engine evaluates it: after samples, and at ticks.

    :param levels: ``(severity, threshold, recover)`` per level, lowest first,
        for ``op = ">"``.
    """

    def __init__(
        self, aggregation: str, levels: list[tuple], pending: float, now: float
    ) -> None:
        self.aggregation = aggregation
        self.levels = levels
        self.pending = pending
        self.now = now
        #: The series' head; ``None`` once the engine has forgotten it.
        self.head: int | None = self.bin(now)
        #: The rule's bin at its last tick.
        self.ticked = self.bin(now)
        self.samples: list[Sample] = []
        self.parked: list[tuple[int, int, float, float]] = []
        self.dirty = False
        self.state = "inactive"
        self.level = 0
        self.since: float | None = None
        self.decisions: list[tuple] = []
        self._arrivals = count()

    def bin(self, timestamp: float) -> int:
        return math.floor(timestamp / SLIDING_WIDTH)

    # The window.

    def add(self, value: float, timestamp: float) -> None:
        if self.head is None:
            # A forgotten series comes back on the clock's bin.
            self.head = self.bin(self.now)
        at = self.bin(timestamp)
        if at > self.head and at <= self.bin(self.now):
            self.head = self.bin(self.now)
        if at > self.head:
            self.parked.append((at, next(self._arrivals), value, timestamp))
        elif at > self.head - BINS:
            self.samples.append((value, timestamp, next(self._arrivals)))
            self.dirty = True

    def advance(self, now: float) -> None:
        self.now = max(self.now, now)
        head = self.bin(self.now)
        due = sorted(entry for entry in self.parked if entry[0] <= head)
        self.parked = [entry for entry in self.parked if entry[0] > head]
        for _, _, value, timestamp in due:
            self.add(value, timestamp)

    def window(self) -> list[Sample]:
        low = self.bin(self.now) - BINS
        return [s for s in self.samples if self.bin(s[1]) > low]

    # The documented semantics of levels and ``for``.

    def breached(self, value: float | None) -> int:
        """Return the highest level ``value`` breaches, 0 for none."""
        if value is None:
            return 0
        return max(
            (
                i
                for i, (_, threshold, _) in enumerate(self.levels, 1)
                if value > threshold
            ),
            default=0,
        )

    def recovered(self, value: float | None, level: int) -> bool:
        """Return whether ``value`` is back past ``level``'s recover."""
        _, threshold, recover = self.levels[level - 1]
        line = threshold if recover is None else recover
        return value is None or not value > line

    def settled(self, value: float | None) -> int:
        """Return the level a firing alert moves to for ``value``.

        It rises at once to the highest level breached; it leaves its level
        downward only once back past that level's recover, and then lands on
        the highest lower level it has not recovered from.
        """
        breached = self.breached(value)
        if breached >= self.level:
            return breached
        if not self.recovered(value, self.level):
            return self.level
        lower = [i for i in range(1, self.level) if not self.recovered(value, i)]
        return max(lower, default=0)

    def evaluate(self) -> None:
        self.head = self.bin(self.now)
        self.dirty = False
        now = self.now
        value = brute(self.aggregation, self.window())
        if self.state == "firing":
            level = self.settled(value)
            if level == 0:
                self.decisions.append(("resolve", now, ""))
                self.state, self.level, self.since = "inactive", 0, None
            elif level != self.level:
                self.level = level
                self.decisions.append(("severity", now, self.levels[level - 1][0]))
            return
        level = self.breached(value)
        if not level:
            self.state, self.since = "inactive", None
            return
        if self.state == "inactive":
            self.state, self.since = "pending", now
        if now - self.since >= self.pending:
            self.state, self.level = "firing", level
            self.decisions.append(("fire", now, self.levels[level - 1][0]))

    # The engine's entry points.

    def evaluate_dirty(self, now: float) -> None:
        self.advance(now)
        if self.dirty:
            self.evaluate()

    def tick(self, now: float) -> None:
        self.advance(now)
        if self.dirty:
            self.evaluate()
        at = self.bin(self.now)
        if self.head is None:
            return
        # Once per bin every series is visited (and an idle one forgotten);
        # within a bin, only one waiting out its ``for``.
        if at != self.ticked or self.state == "pending":
            self.evaluate()
        if at != self.ticked:
            self.ticked = at
            if self.state == "inactive" and not self.window():
                self.head = None


sliding_ops = stream(
    eighths(-SLIDING_WINDOW / 2, 1),
    eighths(-SLIDING_WINDOW - 20, 2 * SLIDING_WIDTH),
    st.integers(-6, 6).map(float),
    eighths(-5, 10),
    eighths(-5, 30),
    size=100,
)
# Small integers and halves: every sum is exact and every mean or rate the
# same division on both sides, so a value at a threshold is at it in the
# engine and in the reference alike. Percentiles (approximate) and stddev
# (computed another way) would decide differently right at a threshold.
halves = st.integers(-6, 6).map(lambda n: n / 2)
exact = ["avg", "min", "max", "sum", "count", "last", "delta", "rate"]


def run_sliding(config: RuleConfig, reference: SlidingReference, ops) -> list[tuple]:
    """Feed ``ops`` to an engine running ``config`` and to ``reference``;
    return the engine's decisions as ``(action, at, severity)``."""
    engine = RuleEngine([config])
    now = START
    assert engine.tick(now) == []
    (series,) = engine.targets(config.metric, {})
    decisions = []
    timestamp = now
    for op in ops:
        if op[0] in ("add", "again"):
            if op[0] == "add":
                timestamp = now + op[2]
            series.add(op[1], timestamp)
            reference.add(op[1], timestamp)
            continue
        now += op[1]
        if op[0] == "evaluate":
            found = engine.evaluate_dirty(now)
            reference.evaluate_dirty(now)
        else:
            found = engine.tick(now)
            reference.tick(now)
        for decision in found:
            decisions.append((decision.action, decision.at, decision.severity))
            want = brute(config.aggregation, reference.window())
            assert decision.value == pytest.approx(want)
    return decisions


@settings(max_examples=300, deadline=None)
@given(
    aggregation=st.sampled_from(exact),
    threshold=halves,
    hysteresis=st.one_of(st.none(), st.integers(0, 4).map(lambda n: n / 2)),
    pending=st.sampled_from([0.0, 10.0, 25.0]),
    ops=sliding_ops,
)
def test_a_sliding_rule_fires_and_resolves_as_a_plain_state_machine(
    aggregation, threshold, hysteresis, pending, ops
):
    recover = None if hysteresis is None else threshold - hysteresis
    config = RuleConfig(
        name="r",
        metric="m",
        aggregation=aggregation,
        window=Duration(SLIDING_WINDOW),
        threshold=threshold,
        recover=recover,
        for_=Duration(pending),
    )
    reference = SlidingReference(
        aggregation, [("medium", threshold, recover)], pending, START
    )
    assert run_sliding(config, reference, ops) == reference.decisions


@settings(max_examples=300, deadline=None)
@given(
    aggregation=st.sampled_from(exact),
    warning=halves,
    gap=st.integers(0, 6).map(lambda n: n / 2),
    hysteresis=st.tuples(
        st.one_of(st.none(), st.integers(0, 4).map(lambda n: n / 2)),
        st.one_of(st.none(), st.integers(0, 8).map(lambda n: n / 2)),
    ),
    pending=st.sampled_from([0.0, 10.0]),
    ops=sliding_ops,
)
def test_warning_and_critical_follow_the_documented_levels(
    aggregation, warning, gap, hysteresis, pending, ops
):
    critical = warning + gap
    recovers = [
        None if below is None else line - below
        for line, below in zip((warning, critical), hysteresis, strict=True)
    ]
    config = RuleConfig(
        name="r",
        metric="m",
        aggregation=aggregation,
        window=Duration(SLIDING_WINDOW),
        threshold=None,
        warning=LevelConfig(threshold=warning, recover=recovers[0]),
        critical=LevelConfig(threshold=critical, recover=recovers[1]),
        for_=Duration(pending),
    )
    levels = [
        ("warning", warning, recovers[0]),
        ("critical", critical, recovers[1]),
    ]
    reference = SlidingReference(aggregation, levels, pending, START)
    assert run_sliding(config, reference, ops) == reference.decisions
