"""Windows against a brute-force reference that keeps every sample."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tocsin.config import Duration, RuleConfig
from tocsin.rules.conditions import COMPARISONS, condition
from tocsin.rules.engine import RuleEngine
from tocsin.rules.windows import AGGREGATIONS, BINS, SKETCH_ACCURACY, Window

START = 1_750_000_000.0


class Reference:
    """Every accepted sample, and the window's definition applied to them."""

    def __init__(self, width: float, bins: int) -> None:
        self.width = width
        self.bins = bins
        self.head = math.floor(START / width)
        self.samples: list[tuple[float, float, int]] = []
        self.arrivals = 0

    def bin(self, timestamp: float) -> int:
        return math.floor(timestamp / self.width)

    def add(self, value: float, timestamp: float) -> bool:
        self.arrivals += 1
        at = self.bin(timestamp)
        if not math.isfinite(value) or not self.head - self.bins < at <= self.head:
            return False
        self.samples.append((value, timestamp, self.arrivals))
        return True

    def advance(self, head: int) -> None:
        self.head = max(self.head, head)

    def window(self) -> list[tuple[float, float, int]]:
        low = self.head - self.bins
        return [s for s in self.samples if low < self.bin(s[1]) <= self.head]


def check(window: Window, reference: Reference) -> None:
    inside = reference.window()
    values = [value for value, _, _ in inside]
    assert window.count == len(values)
    if not values:
        assert window.measure("avg") is None
        assert window.measure("last") is None
        return

    exact = math.fsum(values)
    tolerance = 1e-9 * math.fsum(abs(v) for v in values) + 1e-12
    assert abs(window.measure("sum") - exact) <= tolerance
    assert abs(window.measure("avg") - exact / len(values)) <= tolerance / len(values)
    assert window.measure("count") == len(values)
    assert window.measure("min") == min(values)
    assert window.measure("max") == max(values)
    # The newest timestamp wins; among equal ones, the later arrival.
    newest = max(inside, key=lambda s: (s[1], s[2]))
    assert window.measure("last") == newest[0]
    # The earliest timestamp wins; among equal ones, the earlier arrival.
    earliest = min(inside, key=lambda s: (s[1], s[2]))
    assert window.measure("delta") == newest[0] - earliest[0]
    if newest[1] > earliest[1]:
        rate = (newest[0] - earliest[0]) / (newest[1] - earliest[1])
        assert window.measure("rate") == pytest.approx(rate, rel=1e-12)
    else:
        assert window.measure("rate") is None
    mean = exact / len(values)
    spread = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
    scale = max(abs(v) for v in values)
    assert window.measure("stddev") == pytest.approx(spread, rel=1e-9, abs=1e-9 * scale)

    ordered = sorted(values)
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99)):
        expected = ordered[math.floor(q * (len(ordered) - 1))]
        got = window.measure(name)
        assert abs(got - expected) <= SKETCH_ACCURACY * abs(expected) + 1e-9, name


# Values either 0 or of magnitude 1e-3..1e6: the sketches' stated accuracy holds
# while their buckets are not collapsed, which this range guarantees.
values = st.one_of(
    st.just(0.0),
    st.integers(-50, 50).map(float),
    st.floats(1e-3, 1e6),
    st.floats(-1e6, -1e-3),
)
# Multiples of 1/8 s keep every bin edge exact, so the test checks the window's
# definition rather than rounding at an edge; a small pool makes duplicates.
offsets = st.one_of(
    st.sampled_from([0.0, -0.125, -1.0, -5.0]),
    st.integers(-1600 * 8, 160 * 8).map(lambda n: n / 8),
)
# "again" repeats the previous sample's timestamp with another value.
operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), values, offsets),
        st.tuples(st.just("again"), values),
        st.tuples(st.just("advance"), st.integers(0, 2 * BINS + 2)),
        st.tuples(st.just("add"), st.sampled_from([math.nan, math.inf]), offsets),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(window=st.sampled_from([12.0, 60.0, 300.0, 1200.0]), ops=operations)
def test_every_aggregation_matches_the_reference(window, ops):
    width = window / BINS
    win = Window(width, BINS, sketches=True, spread=True, trend=True)
    win.advance(math.floor(START / width))
    reference = Reference(width, BINS)
    now = timestamp = START
    for op in ops:
        if op[0] in ("add", "again"):
            value = op[1]
            if op[0] == "add":
                # Offsets are in seconds of a 300s window; scaled to this one.
                timestamp = now + op[2] * window / 300.0
            taken = win.put(value, timestamp)
            assert taken == reference.add(value, timestamp)
        else:
            now += op[1] * width
            win.advance(math.floor(now / width))
            reference.advance(math.floor(now / width))
        check(win, reference)


@settings(max_examples=60, deadline=None)
@given(ops=operations)
def test_a_window_without_extremes_agrees_on_the_rest(ops):
    width = 25.0
    lean = Window(width, BINS, extremes=False)
    full = Window(width, BINS)
    lean.advance(math.floor(START / width))
    full.advance(math.floor(START / width))
    now = timestamp = START
    for op in ops:
        if op[0] in ("add", "again"):
            if op[0] == "add":
                timestamp = now + op[2]
            assert lean.put(op[1], timestamp) == full.put(op[1], timestamp)
        else:
            now += op[1] * width
            lean.advance(math.floor(now / width))
            full.advance(math.floor(now / width))
        for name in ("avg", "sum", "count", "last"):
            assert lean.measure(name) == full.measure(name)


def test_the_window_covers_whole_bins_back_from_the_head():
    width = 25.0
    window = Window(width, BINS)
    head = math.floor(START / width)
    window.advance(head)
    # The oldest bin of the window starts 11 bins before the head's.
    first = (head - BINS + 1) * width
    assert window.put(1.0, first)
    assert not window.put(2.0, first - 0.125)
    assert window.put(4.0, (head + 1) * width - 0.125)
    assert not window.put(8.0, (head + 1) * width)
    assert window.measure("sum") == 5.0

    window.advance(head + 1)
    assert window.measure("sum") == 4.0
    window.advance(head + BINS)
    assert window.measure("sum") is None
    assert window.count == 0


def test_a_large_value_leaving_leaves_no_rounding_behind():
    width = 1.0
    window = Window(width, BINS)
    window.advance(100)
    assert window.put(1e16, 90.0)
    assert window.put(0.1, 95.0)
    assert window.put(0.2, 100.0)
    window.advance(102)
    assert window.measure("sum") == pytest.approx(0.3, abs=1e-12)
    assert window.measure("min") == 0.1
    assert window.measure("max") == 0.2


def test_the_head_never_moves_back():
    window = Window(10.0, BINS)
    window.advance(50)
    window.advance(40)
    assert window.head == 50
    assert window.put(3.0, 505.0)
    assert window.measure("last") == 3.0


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [
        ("avg", 2.0),
        ("min", 1.0),
        ("max", 3.0),
        ("sum", 6.0),
        ("count", 3.0),
        ("last", 2.0),
    ],
)
def test_measures_of_a_small_window(aggregation, expected):
    window = Window(10.0, BINS)
    window.advance(100)
    for value, timestamp in ((3.0, 1000.0), (2.0, 1009.0), (1.0, 1001.0)):
        assert window.put(value, timestamp)
    assert window.measure(aggregation) == expected


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [("stddev", math.sqrt(2 / 3)), ("delta", -1.0), ("rate", -1 / 9)],
)
def test_spread_and_trend_of_a_small_window(aggregation, expected):
    window = Window(10.0, BINS, spread=True, trend=True)
    window.advance(100)
    for value, timestamp in ((3.0, 1000.0), (2.0, 1009.0), (1.0, 1001.0)):
        assert window.put(value, timestamp)
    assert window.measure(aggregation) == pytest.approx(expected)


def test_stddev_stays_exact_far_from_zero():
    # A sum of squares would cancel to noise here; the per-bin deviations do not.
    window = Window(10.0, BINS, spread=True)
    window.advance(100)
    for index, value in enumerate((1e9 + 1, 1e9 + 2, 1e9 + 3)):
        window.put(value, 1000.0 - 15 * index)
    assert window.measure("stddev") == pytest.approx(math.sqrt(2 / 3), rel=1e-6)


def test_a_rate_needs_time_between_its_samples():
    window = Window(10.0, BINS, trend=True)
    window.advance(100)
    window.put(1.0, 1000.0)
    window.put(5.0, 1000.0)
    assert window.measure("delta") == 4.0
    assert window.measure("rate") is None


def test_quantiles_need_sketches():
    window = Window(10.0, BINS)
    window.advance(100)
    window.put(1.0, 1000.0)
    with pytest.raises(ValueError, match="no sketches"):
        window.measure("p99")


@pytest.mark.parametrize(("width", "bins"), [(0.0, 12), (-1.0, 12), (1.0, 0)])
def test_a_window_needs_a_positive_width_and_bins(width, bins):
    with pytest.raises(ValueError):
        Window(width, bins)


@settings(max_examples=150, deadline=None)
@given(
    samples=st.lists(values, min_size=1, max_size=40),
    op=st.sampled_from(sorted(COMPARISONS)),
    aggregation=st.sampled_from(["p50", "p90", "p95", "p99"]),
    pick=st.integers(0, 39),
    shift=st.sampled_from([-1.0, 0.0, 1e-9, 1.0]),
)
def test_a_quantile_condition_agrees_with_the_value_it_reports(
    samples, op, aggregation, pick, shift
):
    window = Window(25.0, BINS, sketches=True)
    window.advance(100)
    for index, value in enumerate(samples):
        window.put(value, 2500.0 - index % 30)
    threshold = samples[pick % len(samples)] + shift
    holds = condition(op, threshold, AGGREGATIONS[aggregation], quantile=True)
    reported = window.measure(aggregation)
    assert min(samples) <= reported <= max(samples)
    assert holds(window) == COMPARISONS[op](reported, threshold)


def test_a_quantile_condition_settled_by_min_and_max_skips_the_sketch():
    def unreadable(window):
        raise AssertionError("the sketch was read")

    window = Window(25.0, BINS, sketches=True)
    window.advance(100)
    for value in (1.0, 2.0, 5.0):
        window.put(value, 2500.0)
    assert condition(">", 10.0, unreadable, quantile=True)(window) is False
    assert condition(">", 0.5, unreadable, quantile=True)(window) is True
    assert condition("<=", 5.0, unreadable, quantile=True)(window) is True
    with pytest.raises(AssertionError, match="sketch was read"):
        condition(">", 3.0, unreadable, quantile=True)(window)


# Every aggregation of every series, through the engine's clock and its
# holding area for early samples, against a reference that keeps every sample.

#: Every aggregation but p95, whose sketch p90 and p99 already exercise.
MEASURED = tuple(name for name in AGGREGATIONS if name != "p95")
WIDTH = 300.0 / BINS
T0 = START


class Model:
    """Accepted samples, the clock and the held samples, the slow way."""

    def __init__(self) -> None:
        self.now: float | None = None
        self.accepted: list[tuple[float, float, int]] = []
        self.parked: list[tuple[float, float, int]] = []
        self.arrivals = 0

    def head(self) -> int:
        return math.floor(self.now / WIDTH)

    def add(self, value: float, timestamp: float) -> None:
        self.arrivals += 1
        at = math.floor(timestamp / WIDTH)
        # Ahead of the clock, however far: held until the clock reaches it.
        if self.now is None or at > self.head():
            self.parked.append((value, timestamp, self.arrivals))
        elif self.head() - BINS < at <= self.head():
            self.accepted.append((value, timestamp, self.arrivals))

    def evaluate(self, now: float) -> None:
        self.now = now if self.now is None else max(self.now, now)
        due = [s for s in self.parked if math.floor(s[1] / WIDTH) <= self.head()]
        self.parked = [s for s in self.parked if s not in due]
        for sample in due:
            if math.floor(sample[1] / WIDTH) > self.head() - BINS:
                self.accepted.append(sample)

    def window(self) -> list[tuple[float, float, int]]:
        low = self.head() - BINS
        return [s for s in self.accepted if low < math.floor(s[1] / WIDTH)]


def expected(aggregation: str, inside) -> float | None:
    values = [value for value, _, _ in inside]
    if not values:
        return None
    newest = max(inside, key=lambda s: (s[1], s[2]))
    earliest = min(inside, key=lambda s: (s[1], s[2]))
    if aggregation == "rate":
        seconds = newest[1] - earliest[1]
        return (newest[0] - earliest[0]) / seconds if seconds else None
    mean = math.fsum(values) / len(values)
    simple = {
        "avg": lambda: math.fsum(values) / len(values),
        "min": lambda: min(values),
        "max": lambda: max(values),
        "sum": lambda: math.fsum(values),
        "count": lambda: float(len(values)),
        "last": lambda: newest[0],
        "delta": lambda: newest[0] - earliest[0],
        "stddev": lambda: math.sqrt(
            math.fsum((v - mean) ** 2 for v in values) / len(values)
        ),
    }
    if aggregation in simple:
        return simple[aggregation]()
    q = int(aggregation[1:]) / 100
    return sorted(values)[math.floor(q * (len(values) - 1))]


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(
                st.just("add"),
                st.integers(-1000, 1000).map(float),
                # Eighths of a second keep bin edges exact (see above).
                st.integers(-500 * 8, 400 * 8).map(lambda n: n / 8),
            ),
            st.tuples(st.just("evaluate"), st.integers(-100, 200)),
            st.tuples(st.just("tick"), st.integers(0, 200)),
        ),
        max_size=60,
    )
)
def test_series_values_match_a_reference_through_the_clock(ops):
    rules = [
        RuleConfig(
            name=name,
            metric="m",
            aggregation=name,
            window=Duration(300.0),
            threshold=1e9,
        )
        for name in MEASURED
    ]
    engine = RuleEngine(rules)
    found = engine.targets("m", {})
    model = Model()
    now = T0
    for op in ops:
        if op[0] == "add":
            for series in found:
                series.add(op[1], now + op[2])
            model.add(op[1], now + op[2])
            continue
        now += op[1]
        model.evaluate(now)
        if op[0] == "evaluate":
            engine.evaluate_dirty(now)
            continue
        engine.tick(now)
        inside = model.window()
        for series, aggregation in zip(found, MEASURED, strict=True):
            want = expected(aggregation, inside)
            if want is None:
                assert series.value is None, aggregation
            else:
                got = series.value
                assert got == pytest.approx(want, rel=0.01, abs=1e-9), aggregation
