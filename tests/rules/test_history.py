"""A series' past against a plain list, and comparisons with it."""

from __future__ import annotations

import math
import statistics
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tocsin.rules.history import EXACT_BASELINE, History, Relative

_values = st.one_of(
    st.none(),
    st.floats(min_value=-1e6, max_value=1e6),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 1.0]),
)


@settings(max_examples=300, deadline=None)
@given(size=st.integers(1, 40), pushes=st.lists(_values, max_size=120))
def test_the_history_agrees_with_a_plain_list(size, pushes):
    history = History(size, baseline=True)
    kept: list[float | None] = []
    for value in pushes:
        history.push(value)
        kept.append(value if value is not None and math.isfinite(value) else None)

        for steps in range(0, size + 3):
            expected = kept[-steps] if 0 < steps <= min(size, len(kept)) else None
            assert history.ago(steps) == expected
        present = [v for v in kept[-size:] if v is not None]
        if not present:
            assert history.baseline is None
            continue
        mean, deviation, count = history.baseline
        assert count == len(present)
        assert mean == pytest.approx(statistics.mean(present), rel=1e-12, abs=1e-9)
        expected_deviation = statistics.pstdev(present)
        assert deviation >= 0.0
        assert deviation == pytest.approx(expected_deviation, rel=1e-9, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(
    size=st.integers(EXACT_BASELINE + 1, 200),
    pushes=st.lists(_values, max_size=600),
)
def test_a_long_history_keeps_its_baseline_close_to_the_exact_one(size, pushes):
    # Past EXACT_BASELINE steps the moments run, rebuilt exactly every size
    # pushes; about a reference near the mean they stay close to exact.
    history = History(size, baseline=True)
    kept: list[float] = []
    for value in pushes:
        history.push(value)
        kept.append(value if value is not None and math.isfinite(value) else math.nan)
        present = [v for v in kept[-size:] if v == v]
        if not present:
            assert history.baseline is None
            continue
        mean, deviation, count = history.baseline
        assert count == len(present)
        spread = max(present) - min(present)
        assert mean == pytest.approx(statistics.mean(present), abs=1e-9 + 1e-9 * spread)
        expected = statistics.pstdev(present)
        assert deviation == pytest.approx(expected, rel=1e-6, abs=1e-6 * spread + 1e-12)


@pytest.mark.parametrize("size", [3, EXACT_BASELINE + 10])
def test_a_gap_leaves_the_baseline_of_what_remains(size):
    history = History(size, baseline=True)
    for value in (1.0, 2.0, 3.0):
        history.push(value)
    history.skip(size - 1)
    assert history.baseline == (3.0, 0.0, 1)
    assert not history.is_empty
    history.skip(1)
    assert history.baseline is None
    assert history.is_empty


@settings(max_examples=200, deadline=None)
@given(
    value=st.floats(allow_nan=False, allow_infinity=False),
    count=st.integers(1, 30),
)
def test_a_flat_history_has_exactly_its_value_as_mean_and_no_deviation(value, count):
    history = History(count, baseline=True)
    for _ in range(count):
        history.push(value)

    assert history.baseline == (value, 0.0, count)


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(
        st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=20
    )
)
def test_the_baseline_of_huge_values_neither_overflows_nor_fails(values):
    history = History(len(values), baseline=True)
    for value in values:
        history.push(value)

    mean, deviation, count = history.baseline
    # Rounding errors scale with the largest value, not with the mean.
    error = 1e-15 * max(map(abs, values))
    assert count == len(values)
    assert mean == pytest.approx(statistics.mean(values), rel=1e-9, abs=error)
    expected = statistics.pstdev(values)
    assert deviation == pytest.approx(expected, rel=1e-9, abs=error)


def test_a_history_without_baseline_never_computes_one():
    history = History(3)
    history.push(1.0)
    history.push(2.0)

    assert history.baseline is None
    assert history.ago(1) == 2.0


def test_a_history_costs_8_bytes_a_step():
    small, large = History(10), History(10_010)

    grown = sys.getsizeof(large._values) - sys.getsizeof(small._values)
    assert grown == 8 * 10_000


def test_a_history_needs_a_step():
    with pytest.raises(ValueError, match="at least 1 step, not 0"):
        History(0)


def history_of(relative: Relative, values: list[float | None]) -> History:
    history = relative.new_history()
    for value in values:
        history.push(value)
    return history


@pytest.mark.parametrize(
    ("kind", "steps", "past", "value", "compared"),
    [
        ("change", 1, [5.0], 7.0, 2.0),
        ("change", 1, [5.0], 3.0, -2.0),
        ("change", 3, [10.0, 20.0, 30.0], 15.0, 5.0),  # vs 10, 3 steps back
        ("change", 3, [1.0, 10.0, 20.0, 30.0], 15.0, 5.0),  # 1 has left the ring
        ("change", 3, [20.0, 30.0], 15.0, None),  # not yet 3 steps of past
        ("change", 2, [None, 4.0], 15.0, None),  # that step had no value
        ("change", 2, [0.0, 4.0], 15.0, 15.0),
        ("percent", 1, [50.0], 75.0, 50.0),
        ("percent", 1, [50.0], 25.0, -50.0),
        ("percent", 1, [-50.0], -25.0, 50.0),  # relative to |past|
        ("percent", 1, [-50.0], -75.0, -50.0),
        ("percent", 1, [0.0], 5.0, None),  # no percent of zero
        ("percent", 1, [None], 5.0, None),
        ("percent", 2, [5.0], 5.0, None),
        ("percent", 2, [4.0, None], 5.0, 25.0),
    ],
)
def test_change_and_percent_compare_with_the_step_that_many_steps_ago(
    kind, steps, past, value, compared
):
    relative = Relative(kind, steps)
    history = history_of(relative, past)

    assert relative.compare(value, history) == compared


@pytest.mark.parametrize(
    ("steps", "min_history", "past", "value", "compared"),
    [
        # Mean 2, population deviation 1 (values 1 and 3).
        (4, 0, [1.0, 3.0], 5.0, 3.0),
        (4, 0, [1.0, 3.0], 2.0, 0.0),
        (4, 0, [1.0, 3.0], 0.5, -1.5),
        (4, 0, [1.0, None, 3.0, None], 5.0, 3.0),  # steps without values
        (4, 0, [100.0, 1.0, 3.0, None, None], 5.0, 3.0),  # 100 has left
        # Fewer than min_history values (by default half the steps, >= 2).
        (4, 0, [1.0], 5.0, None),
        (4, 0, [None, None, None, 1.0], 5.0, None),
        (10, 0, [1.0, 3.0, 1.0, 3.0], 5.0, None),  # 4 < 10 // 2
        (10, 0, [1.0, 3.0, 1.0, 3.0, 1.0, 3.0], 5.0, 3.0),
        (4, 3, [1.0, 3.0], 5.0, None),
        (4, 3, [1.0, 3.0, 2.0], 2.0, 0.0),
        (4, 1, [], 5.0, None),  # no past at all
        # A flat history: the deviation is floored at 1e-9 * max(1, |mean|).
        (3, 0, [2.0, 2.0, 2.0], 2.0, 0.0),
        (3, 0, [0.5, 0.5], 0.5 + 1e-9, pytest.approx(1.0, rel=1e-6)),
        (3, 0, [1e6, 1e6], 1e6 + 1e-3, pytest.approx(1.0, rel=1e-6)),
        (3, 0, [-1e6, -1e6], -1e6 - 1e-3, pytest.approx(-1.0, rel=1e-6)),
    ],
)
def test_baseline_scores_the_value_against_the_mean_of_the_last_steps(
    steps, min_history, past, value, compared
):
    relative = Relative("baseline", steps, min_history)
    history = history_of(relative, past)

    assert relative.compare(value, history) == compared


@pytest.mark.parametrize(
    ("kind", "steps", "min_history", "expected"),
    [
        ("baseline", 24, 0, 12),
        ("baseline", 3, 0, 2),
        ("baseline", 2, 0, 2),
        ("baseline", 24, 5, 5),
        ("change", 24, 0, 0),
    ],
)
def test_min_history_defaults_to_half_the_baseline(kind, steps, min_history, expected):
    relative = Relative(kind, steps, min_history)

    assert (relative.min_history, relative.size) == (expected, steps)
    assert relative.new_history().size == steps


@pytest.mark.parametrize(
    ("kind", "steps", "min_history", "message"),
    [
        ("ratio", 3, 0, "kind must be change, percent or baseline: ratio"),
        ("change", 0, 0, "at least 1 step, not 0"),
        ("change", 2, -1, "must not be negative"),
        ("baseline", 1, 0, "never has the 2 steps"),
        ("baseline", 4, 5, "never has the 5 steps"),
    ],
)
def test_bad_comparisons_are_refused(kind, steps, min_history, message):
    with pytest.raises(ValueError, match=message):
        Relative(kind, steps, min_history)


@pytest.mark.parametrize(
    ("kind", "steps", "text"),
    [
        ("change", 24, "change vs 24 steps ago"),
        ("change", 1, "change vs 1 step ago"),
        ("percent", 24, "% change vs 24 steps ago"),
        ("baseline", 24, "σ from the mean of the last 24 steps"),
    ],
)
def test_describe_says_what_the_value_is_compared_with(kind, steps, text):
    assert Relative(kind, steps).describe() == text


def test_only_a_baseline_history_keeps_a_baseline():
    values = [1.0, 2.0, 3.0]

    assert history_of(Relative("change", 3), values).baseline is None
    assert history_of(Relative("baseline", 3), values).baseline is not None


@pytest.mark.parametrize("level", [1e6, 1e9, -1e12])
def test_a_long_baseline_stays_exact_after_the_level_moves_far(level):
    # Half the history at 0, then a new level with a small spread: the old
    # steps leave the running moments, which must not keep their rounding.
    size = EXACT_BASELINE * 2
    history = History(size, baseline=True)
    noise = [(-1.0) ** i * (i % 5) * 1e-3 * abs(level) ** 0.5 for i in range(size * 3)]
    pushed: list[float] = []
    for step, wiggle in enumerate(noise):
        value = 0.0 if step < size + size // 2 else level + wiggle
        history.push(value)
        pushed.append(value)
        present = pushed[-size:]
        mean, deviation, _ = history.baseline
        assert mean == pytest.approx(statistics.mean(present), rel=1e-12)
        expected = statistics.pstdev(present)
        assert deviation == pytest.approx(expected, rel=1e-6, abs=1e-9), step
