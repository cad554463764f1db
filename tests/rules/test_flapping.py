"""Flap detection against a reference that keeps the list of levels."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tocsin.rules.flapping import FlapDetector


class Reference:
    """The last ``history`` levels, and the share of changes from its definition."""

    def __init__(self, history: int, low: float, high: float) -> None:
        self.history = history
        self.low = Fraction(repr(low))
        self.high = Fraction(repr(high))
        self.levels: list[str] = []
        self.flapping = False

    def share(self) -> Fraction:
        pairs = self.history - 1
        levels = self.levels[-self.history :]
        # Pairs before the first level remembered count as unchanged.
        changes = [False] * (self.history - len(levels))
        changes += [a != b for a, b in zip(levels, levels[1:], strict=False)]
        changes = changes[-pairs:]
        if pairs == 1:
            weights = [Fraction(1)]
        else:
            weights = [
                Fraction(4, 5) + Fraction(2, 5) * i / (pairs - 1) for i in range(pairs)
            ]
        return sum((w for w, c in zip(weights, changes, strict=True) if c), Fraction(0))

    def observe(self, level: str) -> None:
        self.levels.append(level)
        share = self.share() / (self.history - 1)
        if share > self.high:
            self.flapping = True
        elif share < self.low:
            self.flapping = False


@pytest.mark.parametrize(
    ("history", "weights"),
    [
        (2, [1.0]),
        (3, [0.8, 1.2]),
        (5, [0.8, 0.8 + 0.4 / 3, 0.8 + 0.8 / 3, 1.2]),
        (21, [0.8 + 0.4 * i / 19 for i in range(20)]),
    ],
)
def test_weights_rise_from_the_oldest_pair_to_the_newest(history, weights):
    assert FlapDetector(history).weights == pytest.approx(weights, rel=1e-12)


@pytest.mark.parametrize("history", [2, 3, 4, 21, 63, 64])
def test_a_series_that_changed_at_every_pair_has_a_share_of_exactly_one(history):
    detector = FlapDetector(history)
    flips = 0
    for _ in range(history - 1):
        flips = detector.push(flips, True)

    assert flips == (1 << (history - 1)) - 1
    assert detector.share(flips) == 1.0
    assert sum(detector.weights) / (history - 1) == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize(
    ("pushes", "mask"),
    [
        ([], 0),
        ([True], 0b1),
        ([True, False], 0b10),
        ([True, False, True], 0b101),
        ([True, True, True, True], 0b1111),
        # The fifth push drops the oldest pair of a history of 5 (4 pairs).
        ([True, False, False, False, False], 0b0000),
        ([True, True, False, False, True], 0b1001),
    ],
)
def test_push_shifts_the_newest_pair_in_and_drops_the_oldest(pushes, mask):
    detector = FlapDetector(history=5)
    flips = 0
    for changed in pushes:
        flips = detector.push(flips, changed)

    assert flips == mask


@pytest.mark.parametrize(
    ("flips", "share"),
    [
        (0b00, 0.0),
        (0b01, 0.6),  # newest pair only: 1.2 / 2
        (0b10, 0.4),  # oldest pair only: 0.8 / 2
        (0b11, 1.0),
    ],
)
def test_share_weighs_the_newest_pair_more(flips, share):
    assert FlapDetector(history=3).share(flips) == pytest.approx(share, rel=1e-12)


# History 5 (4 pairs, oldest first weighing 0.8, 0.9333, 1.0667, 1.2):
# the shares of the masks below are 0.2 (0b1000), 0.2667 (0b0010), 0.3
# (0b0001), 0.4667 (0b1010), 0.5 (0b1001), 0.5333 (0b0101), 0.5667 (0b0011).
@pytest.mark.parametrize(
    ("mask", "was_flapping", "flapping"),
    [
        (0b0000, False, False),
        (0b0000, True, False),
        (0b1000, True, False),  # below low: settles
        (0b0010, True, False),
        (0b0001, True, True),  # exactly low: stays
        (0b0001, False, False),
        (0b1010, True, True),  # between: keeps what it was
        (0b1010, False, False),
        (0b1001, False, False),  # exactly high: does not start
        (0b1001, True, True),
        (0b0101, False, True),  # above high: starts
        (0b0011, False, True),
        (0b1111, False, True),
        (0b1111, True, True),
    ],
)
def test_flapping_starts_above_high_and_settles_below_low(mask, was_flapping, flapping):
    detector = FlapDetector(history=5, low=0.3, high=0.5)

    assert detector.flapping(mask, was_flapping) is flapping


@pytest.mark.parametrize(
    ("low", "high", "mask", "was_flapping", "flapping"),
    [
        # 0.6 and 0.4 as written, not as the binary floats next to them.
        (0.4, 0.6, 0b01, False, False),
        (0.4, 0.6, 0b10, True, True),
        (0.39, 0.59, 0b01, False, True),
        (0.41, 0.61, 0b10, True, False),
    ],
)
def test_a_share_equal_to_a_bound_as_written_does_not_cross_it(
    low, high, mask, was_flapping, flapping
):
    # History 3: the shares are 0.4 (oldest pair) and 0.6 (newest pair).
    detector = FlapDetector(history=3, low=low, high=high)

    assert detector.flapping(mask, was_flapping) is flapping


def test_a_history_of_two_flaps_on_every_change_and_settles_on_none():
    detector = FlapDetector(history=2, low=0.25, high=0.5)
    changed = detector.push(0, True)
    unchanged = detector.push(changed, False)

    assert (changed, unchanged) == (1, 0)
    assert detector.weights == (1.0,)
    assert detector.share(changed) == 1.0
    assert detector.flapping(changed, False) is True
    assert detector.flapping(unchanged, True) is False


@pytest.mark.parametrize(
    ("settings_", "message"),
    [
        ({"history": 1}, "history must be 2..64, not 1"),
        ({"history": 65}, "history must be 2..64, not 65"),
        ({"low": 0.5, "high": 0.5}, "0 <= low < high <= 1"),
        ({"low": 0.6, "high": 0.5}, "0 <= low < high <= 1"),
        ({"low": -0.1}, "0 <= low < high <= 1"),
        ({"high": 1.5}, "0 <= low < high <= 1"),
        ({"low": float("nan")}, "0 <= low < high <= 1"),
    ],
)
def test_bad_settings_are_refused(settings_, message):
    with pytest.raises(ValueError, match=message):
        FlapDetector(**settings_)


def test_a_high_of_one_never_starts_flapping():
    detector = FlapDetector(history=64, low=0.5, high=1.0)
    every_pair = (1 << 63) - 1

    assert detector.share(every_pair) == 1.0
    assert detector.flapping(every_pair, False) is False


def test_share_ignores_bits_beyond_the_history():
    detector = FlapDetector(history=3)

    assert detector.share(0b111) == detector.share(0b11) == 1.0


@settings(max_examples=300, deadline=None)
@given(
    history=st.integers(min_value=2, max_value=64),
    bounds=st.tuples(
        st.floats(min_value=0.0, max_value=1.0), st.floats(min_value=0.0, max_value=1.0)
    ).filter(lambda pair: pair[0] < pair[1]),
    levels=st.lists(st.sampled_from(["ok", "warning", "critical"]), max_size=150),
)
def test_the_detector_agrees_with_the_list_of_levels(history, bounds, levels):
    low, high = bounds
    detector = FlapDetector(history, low, high)
    reference = Reference(history, low, high)
    flips, flapping, previous = 0, False, None
    for level in levels:
        # The first level has no pair; every later one closes a pair.
        if previous is not None:
            flips = detector.push(flips, level != previous)
            flapping = detector.flapping(flips, flapping)
        previous = level
        reference.observe(level)

        assert detector.share(flips) == float(reference.share() / (history - 1))
        assert flapping is reference.flapping
