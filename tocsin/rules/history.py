"""A series' own past, for rules that compare a value with it.

A rule with ``compare`` measures its value at every *step* and compares it
with an earlier step (``change``, ``percent``) or with the mean and standard
deviation of the last steps (``baseline``). Each series keeps its past in a
:class:`History`, a ring of floats (8 bytes per step); the rule's
:class:`Relative` knows how far back to look and how to compare.

The owner compares first and pushes after: at the time of :meth:`Relative.compare`
the history holds the steps *before* the value being compared.
"""

from __future__ import annotations

from array import array
from math import frexp, fsum, isfinite, ldexp, nan, sqrt

#: How a rule compares with its past.
KINDS = ("change", "percent", "baseline")
#: Histories up to this many steps recompute their baseline exactly at every
#: push. Longer ones keep running sums of the deviations from a reference
#: near their mean, rebuilt exactly every ``size`` pushes: O(1) amortized per
#: step, however long the history.
EXACT_BASELINE = 64
#: How far (2**20) the running variance may fall below the largest mean square
#: since the last rebuild before its rounding could show in a z-score's
#: sixth digit.
_PRECISION = 2.0**20


class History:
    """The last ``size`` values of a series, one per step, newest last.

    A step without a value (``None``, or a value that is not finite) is kept
    as NaN so later steps keep their distance. With ``baseline`` set, every
    push also updates the mean and population standard deviation of the
    values held (see :data:`EXACT_BASELINE`), so that reading
    :attr:`baseline` is O(1).

    :raises ValueError: if ``size`` is less than 1.
    """

    __slots__ = (
        "size",
        "_values",
        "_next",
        "_held",
        "_keeps_baseline",
        "_baseline",
        "_shift",
        "_count",
        "_sum",
        "_squares",
        "_peak",
        "_pushes",
    )

    def __init__(self, size: int, *, baseline: bool = False) -> None:
        if size < 1:
            raise ValueError(f"a history needs at least 1 step, not {size}")
        self.size = size
        self._values = array("d", [nan]) * size
        # Where the next push goes; the newest value is just before it.
        # Steps not yet pushed read as NaN, like steps without a value.
        self._next = 0
        # How many of the steps held have a value.
        self._held = 0
        self._keeps_baseline = baseline
        self._baseline: tuple[float, float, int] | None = None
        # Running moments of long histories: count, sum and sum of squares of
        # the values' deviations from ``_shift``, and pushes since the last
        # exact rebuild.
        self._shift = 0.0
        self._count = 0
        self._sum = 0.0
        self._squares = 0.0
        # The largest sum of squares since the rebuild: the running sums are
        # off by a few ulps of it, whatever has left them since.
        self._peak = 0.0
        self._pushes = 0

    @property
    def baseline(self) -> tuple[float, float, int] | None:
        """Return ``(mean, stddev, count)`` of the values held, as of the last push.

        ``None`` while no value is held, and always without ``baseline``.
        """
        return self._baseline

    @property
    def is_empty(self) -> bool:
        """Return whether no step held has a value (nothing to compare with)."""
        return not self._held

    def push(self, value: float | None) -> None:
        """Add the value of the latest step; O(1), O(size) with ``baseline``."""
        if value is None or not isfinite(value):
            value = nan
        else:
            self._held += 1
        dropped = self._values[self._next]
        if dropped == dropped:
            self._held -= 1
        self._values[self._next] = value
        self._next = (self._next + 1) % self.size
        if not self._keeps_baseline:
            return
        if self.size <= EXACT_BASELINE:
            self._baseline = _mean_and_deviation(self._values)
        else:
            self._slide(dropped, value)

    def _slide(self, dropped: float, value: float) -> None:
        """Move the running moments by one step: ``dropped`` out, ``value`` in."""
        if not self._count and value == value:
            # A reference equal to the values keeps a flat history exact.
            self._shift = value
            self._sum = self._squares = self._peak = 0.0
        shift = self._shift
        if dropped == dropped:
            deviation = dropped - shift
            self._count -= 1
            self._sum -= deviation
            self._squares -= deviation * deviation
        if value == value:
            deviation = value - shift
            self._count += 1
            self._sum += deviation
            self._squares += deviation * deviation
            self._peak = max(self._peak, self._squares)
        self._pushes += 1
        if self._pushes >= self.size or not isfinite(self._squares):
            self._rebuild()
            return
        count = self._count
        if not count:
            self._baseline = None
            return
        mean = self._sum / count
        variance = self._squares / count - mean * mean
        if variance * _PRECISION < self._peak / count:
            # The deviations that made the sums large have left (the level
            # moved far from the reference, or an outlier aged out): what
            # remains is below their rounding, so only an exact pass knows it.
            self._rebuild()
            return
        self._baseline = (shift + mean, sqrt(max(variance, 0.0)), count)

    def _rebuild(self) -> None:
        """Compute the baseline exactly, and restart the running moments
        about its mean, where they lose the least to rounding."""
        self._pushes = 0
        exact = self._baseline = _mean_and_deviation(self._values)
        present = [value for value in self._values if value == value]
        self._count = len(present)
        self._shift = exact[0] if exact is not None else 0.0
        deviations = [value - self._shift for value in present]
        self._sum = fsum(deviations)
        self._squares = fsum([deviation * deviation for deviation in deviations])
        self._peak = self._squares
        if not isfinite(self._squares):
            # Values too large to square: every push rebuilds (exactly).
            self._pushes = self.size

    def skip(self, steps: int) -> None:
        """Add ``steps`` steps without a value, as many pushes of ``None`` would.

        O(min(steps, size)), with the baseline recomputed once rather than
        per step: after a long gap a history of thousands of steps would
        otherwise hold up every other series for seconds.
        """
        if steps <= 0:
            return
        values = self._values
        size = self.size
        for _ in range(min(steps, size)):
            if values[self._next] == values[self._next]:
                self._held -= 1
            values[self._next] = nan
            self._next = (self._next + 1) % size
        if self._keeps_baseline:
            self._rebuild()

    def ago(self, steps: int) -> float | None:
        """Return the value pushed ``steps`` pushes ago (1: the latest).

        :return: ``None`` if that step had no value, was never pushed, or lies
            beyond the history's ``size``.
        """
        if not 0 < steps <= self.size:
            return None
        value = self._values[(self._next - steps) % self.size]
        return None if value != value else value


def _mean_and_deviation(values: array) -> tuple[float, float, int] | None:
    """Return the mean, population standard deviation and count of the non-NaN
    ``values``, or ``None`` if there are none."""
    present = [value for value in values if value == value]
    count = len(present)
    if not count:
        return None

    largest = max(map(abs, present))
    if _SMALL <= largest < _LARGE or not largest:
        mean, deviation = _moments(present)
        return mean, deviation, count

    # Squares of values this large overflow, and of values this small
    # underflow; scaled by a power of two (exact) to at most 1 they do
    # neither, and the results scale back.
    exponent = frexp(largest)[1]
    mean, deviation = _moments([ldexp(value, -exponent) for value in present])
    return ldexp(mean, exponent), ldexp(deviation, exponent), count


# Between these magnitudes a sum of squared deviations neither overflows nor
# loses a nonzero deviation to underflow.
_SMALL = 2.0**-400
_LARGE = 2.0**500


def _moments(present: list[float]) -> tuple[float, float]:
    """Return the mean and population standard deviation of ``present``."""
    count = len(present)
    # A flat history is common (a steady metric) and must score its own
    # value as exactly 0, which a rounded mean could miss by an ulp.
    if present.count(present[0]) == count:
        return present[0], 0.0

    # fsum keeps each sum exact until its final rounding, so the mean is
    # within an ulp or so, and the squares are taken about that mean.
    mean = fsum(present) / count
    squares = fsum([(value - mean) ** 2 for value in present])
    return mean, sqrt(squares / count)


class Relative:
    """A rule's comparison of a value with its series' past.

    :param kind: ``change`` (the value less the one ``steps`` steps ago),
        ``percent`` (that change in percent of the earlier value) or
        ``baseline`` (standard deviations from the mean of the last
        ``steps`` steps).
    :param steps: how far back, or how many steps of baseline.
    :param min_history: ``baseline`` only: steps with a value needed before
        there is a comparison; 0 means half of ``steps``, at least 2.
    :raises ValueError: if ``kind`` is unknown, ``steps`` is less than 1, or
        ``min_history`` is negative or more than a baseline's ``steps``.
    """

    __slots__ = ("kind", "steps", "min_history", "size")

    def __init__(self, kind: str, steps: int, min_history: int = 0) -> None:
        if kind not in KINDS:
            raise ValueError(
                f"compare kind must be change, percent or baseline: {kind}"
            )
        if steps < 1:
            raise ValueError(f"compare needs at least 1 step, not {steps}")
        if min_history < 0:
            raise ValueError(f"min_history must not be negative: {min_history}")
        if kind == "baseline":
            min_history = min_history or max(2, steps // 2)
            if min_history > steps:
                raise ValueError(
                    f"a baseline of {steps} steps never has the {min_history}"
                    " steps with a value that min_history asks for"
                )
        self.kind = kind
        self.steps = steps
        self.min_history = min_history
        #: The :class:`History` size this rule's series need.
        self.size = steps

    def new_history(self) -> History:
        """Return an empty history for a new series of the rule."""
        return History(self.size, baseline=self.kind == "baseline")

    def compare(self, value: float, history: History) -> float | None:
        """Return ``value`` compared with ``history``, the steps before it.

        :return: the change, the change in percent, or the z-score; ``None``
            when the past it needs is missing, for ``percent`` when the
            earlier value is 0, and for ``baseline`` with fewer than
            ``min_history`` values.
        """
        if self.kind == "baseline":
            baseline = history.baseline
            if baseline is None:
                return None
            mean, deviation, count = baseline
            if count < self.min_history:
                return None
            # A flat history has no deviation; a floor relative to the mean
            # turns any departure from it into a very large score rather
            # than a division by zero.
            return (value - mean) / max(deviation, 1e-9 * max(1.0, abs(mean)))

        past = history.ago(self.steps)
        if past is None:
            return None
        if self.kind == "change":
            return value - past
        if past == 0:
            return None
        return 100.0 * (value - past) / abs(past)

    def describe(self) -> str:
        """Say what the compared value is, for alert reasons."""
        steps = f"{self.steps} step" if self.steps == 1 else f"{self.steps} steps"
        if self.kind == "change":
            return f"change vs {steps} ago"
        if self.kind == "percent":
            return f"% change vs {steps} ago"
        return f"σ from the mean of the last {steps}"
