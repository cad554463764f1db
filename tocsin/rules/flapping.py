"""Flap detection: when an alert changes level too often to be worth sending.

Each series remembers whether its level changed between the last ``history``
evaluations as a bitmask of ``history - 1`` *pairs* (bit 0 is the newest pair)
and whether it is flapping now; a rule's :class:`FlapDetector` turns that
state into the next one with pure functions, so a series costs two ints and a
bool.

The share of changes weighs recent pairs more: with ``n = history - 1`` pairs
numbered ``i = 0`` (oldest) to ``n - 1`` (newest), pair ``i`` weighs
``0.8 + 0.4 * i / (n - 1)``, and the share is the sum of the weights of the
pairs that changed divided by ``n``. The weights average 1.0, so a series that
changed at every pair has a share of exactly 1.0. With a single pair
(``history == 2``) the weight is 1.0 and the share is 0.0 or 1.0.
"""

from __future__ import annotations

from fractions import Fraction
from math import ceil, floor

#: Bounds of ``history``: the pairs must fit a 63-bit mask.
MIN_HISTORY = 2
MAX_HISTORY = 64


class FlapDetector:
    """A rule's flap detection: ``history`` evaluations, hysteresis ``low``/``high``.

    An alert starts flapping once the share of changes rises above ``high``
    and settles once it falls below ``low``; in between it stays as it was.
    With ``low == 0`` a flapping alert never settles, and with ``high == 1`` an
    alert never starts flapping.

    The share is held as an integer over a common denominator, so the
    comparisons with ``low`` and ``high`` are exact rather than subject to
    rounding: a share of exactly ``high`` never starts flapping, and one of
    exactly ``low`` never settles.

    :raises ValueError: if ``history`` is outside 2..64 or unless
        ``0 <= low < high <= 1``.
    """

    __slots__ = (
        "history",
        "low",
        "high",
        "_mask",
        "_base",
        "_denominator",
        "_start_above",
        "_settle_below",
    )

    def __init__(self, history: int = 21, low: float = 0.25, high: float = 0.5):
        if not MIN_HISTORY <= history <= MAX_HISTORY:
            raise ValueError(
                f"flapping history must be {MIN_HISTORY}..{MAX_HISTORY}, not {history}"
            )
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(
                f"flapping needs 0 <= low < high <= 1, not low={low} high={high}"
            )
        self.history = history
        self.low = low
        self.high = high
        pairs = history - 1
        self._mask = (1 << pairs) - 1
        # Pair i (oldest first) weighs 0.8 + 0.4 * i / (n - 1), which is
        # (4 (n - 1) + 2 i) / (5 (n - 1)); over n pairs the share is the sum
        # of the integer numerators over 5 n (n - 1). Bit b is pair
        # i = n - 1 - b, so its numerator is 6 (n - 1) - 2 b.
        if pairs == 1:
            self._base = 1
            self._denominator = 1
        else:
            self._base = 6 * (pairs - 1)
            self._denominator = 5 * pairs * (pairs - 1)
        # share > high  <=>  numerator > floor(high * denominator), and
        # share < low  <=>  numerator < ceil(low * denominator). The bounds are
        # taken as the decimals the configuration wrote (0.6 is 3/5, not the
        # binary float just below it), so a share that equals a bound on
        # paper does not cross it.
        self._start_above = floor(Fraction(repr(high)) * self._denominator)
        self._settle_below = ceil(Fraction(repr(low)) * self._denominator)

    @property
    def weights(self) -> tuple[float, ...]:
        """Return the weight of each pair, oldest first (not a hot path)."""
        pairs = self.history - 1
        bits = range(pairs - 1, -1, -1)
        return tuple((self._base - 2 * bit) * pairs / self._denominator for bit in bits)

    def push(self, flips: int, changed: bool) -> int:
        """Return ``flips`` with ``changed`` as the newest pair, the oldest dropped.

        :param flips: the series' mask, bit 0 the newest pair.
        :param changed: whether the level of this evaluation differs from
            the previous one.
        """
        return ((flips << 1) | changed) & self._mask

    def share(self, flips: int) -> float:
        """Return the weighted share of pairs in ``flips`` that changed, 0..1."""
        return self._weighed(flips) / self._denominator

    def flapping(self, flips: int, was_flapping: bool) -> bool:
        """Return whether a series with the mask ``flips`` is flapping now.

        :param was_flapping: whether it was flapping after the last evaluation;
            kept while the share lies between ``low`` and ``high``.
        """
        weighed = self._weighed(flips)
        if weighed > self._start_above:
            return True
        if weighed < self._settle_below:
            return False
        return was_flapping

    def _weighed(self, flips: int) -> int:
        """Return the share's numerator: the weights of the set bits."""
        flips &= self._mask
        total = 0
        while flips:
            lowest = flips & -flips
            total += self._base - 2 * (lowest.bit_length() - 1)
            flips ^= lowest
        return total
