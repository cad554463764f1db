"""Sliding windows over one series: a ring of time bins with running totals.

Time is cut into bins of ``width = window / bins`` seconds aligned to the POSIX
epoch: bin ``b`` holds the samples stamped in ``[b * width, (b + 1) * width)``,
that is ``b = floor(timestamp / width)``. A window whose head is bin ``h``
covers the ``bins`` bins ``h - bins + 1 .. h``, the interval
``[(h - bins + 1) * width, (h + 1) * width)``.

Evaluated at ``now``, the head is ``floor(now / width)``: the window is
``(now - window, now]`` quantized to the bin width. Its start is the start of
a bin, at least ``window - width`` and less than ``window`` seconds before
``now``; its end is the end of the bin holding ``now`` (a sample stamped later
in that bin counts too). With the default 12 bins, a 5m window starts 275 to
300 seconds back.

The head only moves forward, and only when the owner says so
(:meth:`Window.advance`); a sample never moves it. A sample stamped in a bin
older than the window's first is *late*, one stamped after the head's bin is
*ahead*; the window takes neither and hands them to :meth:`Window._add_slow`,
which the owner overrides (the rules engine counts late ones and holds ahead
ones until its clock reaches them).

Each bin holds count, sum, min and max. The head bin lives in attributes (nearly
every sample lands there, and an attribute is far cheaper than an array item);
the older bins live in one flat array. The window also keeps the totals of the
older bins and its newest sample (``last``), so adding a sample is O(1). When
the head moves, the old head bin joins the array and the bins that leave are
emptied; the sum is then recomputed from the bins (a large value leaving must
not leave its rounding error behind), and min and max only when the bin that
left held one of them: O(bins), at most once per bin width. ``last`` needs no
bin of its own: the newest sample lives in the newest non-empty bin, which
only leaves once the whole window is empty.

Percentile windows also keep a DDSketch (1% relative accuracy, from the
``ddsketch`` library) per non-empty bin and one for the whole window, which
takes every sample and is rebuilt by merging the bins' sketches when a bin
leaves. Standard-deviation windows keep, per bin, the sum of squared
deviations from the bin's mean (Welford's update), and combine the bins when
measured, which stays exact where a sum of squares would cancel. Trend windows
(``delta``, ``rate``) keep the earliest sample of each bin. Memory per window
is bounded by the bin count, never by the sample rate.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from functools import partial
from math import floor, fsum, inf, sqrt

from ddsketch import LogCollapsingLowestDenseDDSketch

#: Bins per window; a window's start is quantized to ``window / BINS``.
BINS = 12
#: Relative accuracy of percentile sketches (DDSketch's alpha).
SKETCH_ACCURACY = 0.01
#: Head of a window that has not been placed on a clock yet: every sample is
#: ahead of it.
UNPLACED = -(2**62)

# Per bin: count, sum, min, max. A new statistic (a sum of squares for a
# standard deviation) is one more slot here and in _recount.
_STRIDE = 4
_EMPTY_BIN = array("d", (0.0, 0.0, inf, -inf))
_NO_FIRSTS = array("d", (inf, 0.0))


def new_sketch() -> LogCollapsingLowestDenseDDSketch:
    """Return an empty sketch; collapsing the lowest buckets bounds its size."""
    return LogCollapsingLowestDenseDDSketch(relative_accuracy=SKETCH_ACCURACY)


class Window:
    """Samples of one series over a sliding window of ``bins`` time bins.

    :param width: bin width in seconds (the window length divided by ``bins``).
    :param extremes: keep min and max exact as bins leave (only min and max
        need them; recomputing them costs O(bins) whenever an extreme leaves).
    :param sketches: keep percentile sketches (only percentile rules need
        them); implies ``extremes``.
    :param spread: keep what the standard deviation needs.
    :param trend: keep the earliest sample of each bin (``delta``, ``rate``).
    """

    # The head bin is kept in attributes rather than in the ring: nearly every
    # sample lands in it, and an attribute costs a fraction of an array item.
    # The ring's slot for the head stays empty until the head moves on.
    __slots__ = (
        "_width",
        "_bins",
        "_head",
        "_data",
        "_count",
        "_sum",
        "_min",
        "_max",
        "_head_count",
        "_head_sum",
        "_head_min",
        "_head_max",
        "_last",
        "_last_at",
        "_extremes",
        "_sketches",
        "_spread",
        "_firsts",
        "_extras",
    )

    def __init__(
        self,
        width: float,
        bins: int = BINS,
        *,
        extremes: bool = True,
        sketches: bool = False,
        spread: bool = False,
        trend: bool = False,
    ) -> None:
        if not width > 0:
            raise ValueError(f"bin width must be positive, not {width!r}")
        if bins < 1:
            raise ValueError(f"a window needs at least one bin, not {bins!r}")
        self._width = width
        self._bins = bins
        self._head = UNPLACED
        self._data = _EMPTY_BIN * bins
        # Totals of the bins before the head, then of the head bin.
        self._count = 0
        self._sum = 0.0
        self._min = inf
        self._max = -inf
        self._head_count = 0
        self._head_sum = 0.0
        self._head_min = inf
        self._head_max = -inf
        self._last = 0.0
        self._last_at = -inf
        # Clamping quantiles to the extremes needs them exact.
        self._extremes = extremes or sketches
        self._sketches: list | None = None
        if sketches:
            self._sketches = [None] * bins + [new_sketch()]
        # Per bin: the sum of squared deviations from the bin's mean.
        self._spread = array("d", bytes(8 * bins)) if spread else None
        # Per bin: timestamp and value of its earliest sample.
        self._firsts = _NO_FIRSTS * bins if trend else None
        #: Whether a sample has more to update than the bin totals; one test
        #: on the hot path instead of one per kind of statistic.
        self._extras = sketches or spread or trend

    @property
    def head(self) -> int:
        """Return the newest bin the window covers."""
        return self._head

    @property
    def count(self) -> int:
        """Return the number of samples in the window."""
        return self._count + self._head_count

    def put(self, value: float, timestamp: float) -> bool:
        """Record one sample and return whether the window took it; O(1).

        A non-finite value, or a sample outside the window's bins, goes to
        :meth:`_add_slow` instead.
        """
        at = floor(timestamp / self._width)
        # value - value is 0.0 for a finite value and NaN for NaN or infinity.
        if at != self._head or value - value:
            return self._put_elsewhere(value, timestamp, at)

        if self._extras:
            self._add_extras(
                value, timestamp, at % self._bins, self._head_count, self._head_sum
            )
        self._head_count += 1
        self._head_sum += value
        if value < self._head_min:
            self._head_min = value
        if value > self._head_max:
            self._head_max = value
        # Ties go to the sample that arrived later.
        if timestamp >= self._last_at:
            self._last = value
            self._last_at = timestamp
        return True

    def _put_elsewhere(self, value: float, timestamp: float, at: int) -> bool:
        """Record a sample stamped before the head bin, straight into the ring."""
        head = self._head
        if at > head or at <= head - self._bins or value - value:
            return self._add_slow(value, timestamp, at)

        data = self._data
        slot = at % self._bins
        i = slot * _STRIDE
        if self._extras:
            self._add_extras(value, timestamp, slot, data[i], data[i + 1])
        data[i] += 1.0
        data[i + 1] += value
        if value < data[i + 2]:
            data[i + 2] = value
        if value > data[i + 3]:
            data[i + 3] = value
        self._count += 1
        self._sum += value
        if value < self._min:
            self._min = value
        if value > self._max:
            self._max = value
        if timestamp >= self._last_at:
            self._last = value
            self._last_at = timestamp
        return True

    def _add_slow(self, value: float, timestamp: float, at: int) -> bool:
        """Handle a sample :meth:`put` cannot take; the base window drops it.

        :param at: the sample's bin.
        """
        return False

    def advance(self, head: int) -> None:
        """Move the head forward to bin ``head``, emptying the bins that leave."""
        old = self._head
        if head <= old:
            return
        self._head = head
        if not (self._count or self._head_count):
            return
        bins = self._bins
        if head - old >= bins:
            self._data = _EMPTY_BIN * bins
            if self._sketches is not None:
                self._sketches = [None] * bins + [new_sketch()]
            if self._spread is not None:
                self._spread = array("d", bytes(8 * bins))
            if self._firsts is not None:
                self._firsts = _NO_FIRSTS * bins
            self._count = 0
            self._recount()
            return

        # Close the old head bin into the ring.
        data = self._data
        count = self._count
        head_count = self._head_count
        if head_count:
            low = self._head_min
            high = self._head_max
            i = (old % bins) * _STRIDE
            data[i] = head_count
            data[i + 1] = self._head_sum
            data[i + 2] = low
            data[i + 3] = high
            count += head_count
            self._sum += self._head_sum
            if low < self._min:
                self._min = low
            if high > self._max:
                self._max = high
            self._head_count = 0
            self._head_sum = 0.0
            self._head_min = inf
            self._head_max = -inf

        # Empty the bins that leave, which share their slots with the new ones.
        extremes = self._extremes
        sketches = self._sketches
        spread = self._spread
        firsts = self._firsts
        left = False
        extreme_left = False
        for at in range(old + 1, head + 1):
            slot = at % bins
            i = slot * _STRIDE
            leaving = data[i]
            if leaving:
                count -= int(leaving)
                left = True
                if extremes and (data[i + 2] <= self._min or data[i + 3] >= self._max):
                    extreme_left = True
                data[i : i + _STRIDE] = _EMPTY_BIN
                if sketches is not None:
                    sketches[slot] = None
            # The new head's slot may hold its extras already (the head bin's
            # totals live in attributes, its extras in the ring): only bins
            # that are about to be reused are emptied here, before any
            # sample of theirs can have arrived.
            if spread is not None:
                spread[slot] = 0.0
            if firsts is not None:
                firsts[2 * slot] = inf
        self._count = count
        if left:
            self._recount(extremes=extreme_left)

    def _recount(self, *, extremes: bool = True) -> None:
        """Recompute the sum (and ``extremes``) of the bins before the head.

        The sum is recomputed rather than decremented so that a large value
        leaving cannot leave its rounding error behind.
        """
        data = self._data
        if not self._count:
            self._sum = 0.0
            self._min = inf
            self._max = -inf
            self._head_count = 0
            self._head_sum = 0.0
            self._head_min = inf
            self._head_max = -inf
            self._last = 0.0
            self._last_at = -inf
        else:
            self._sum = fsum(data[1::_STRIDE])
            if extremes and self._extremes:
                self._min = min(data[2::_STRIDE])
                self._max = max(data[3::_STRIDE])
        if self._sketches is not None:
            merged = new_sketch()
            for sketch in self._sketches[:-1]:
                if sketch is not None:
                    merged.merge(sketch)
            self._sketches[-1] = merged

    def _add_extras(
        self, value: float, timestamp: float, slot: int, count: float, total: float
    ) -> None:
        """Update the statistics beyond the bin totals for one sample.

        :param count: the bin's sample count before this sample.
        :param total: the bin's sum before this sample.
        """
        sketches = self._sketches
        if sketches is not None:
            sketch = sketches[slot]
            if sketch is None:
                sketch = sketches[slot] = new_sketch()
            sketch.add(value)
            sketches[-1].add(value)
        spread = self._spread
        if spread is not None and count:
            before = total / count
            after = (total + value) / (count + 1)
            spread[slot] += (value - before) * (value - after)
        firsts = self._firsts
        # Ties go to the sample that arrived first.
        if firsts is not None and timestamp < firsts[2 * slot]:
            firsts[2 * slot] = timestamp
            firsts[2 * slot + 1] = value

    # The measures below assume a non-empty window; measure() checks for it.

    def avg(self) -> float:
        return (self._sum + self._head_sum) / (self._count + self._head_count)

    def total(self) -> float:
        return self._sum + self._head_sum

    def samples(self) -> float:
        return float(self._count + self._head_count)

    def lowest(self) -> float:
        if not self._extremes:
            raise ValueError("this window keeps no exact extremes")
        low = self._min
        return low if low < self._head_min else self._head_min

    def highest(self) -> float:
        if not self._extremes:
            raise ValueError("this window keeps no exact extremes")
        high = self._max
        return high if high > self._head_max else self._head_max

    def last(self) -> float:
        return self._last

    def stddev(self) -> float:
        """Return the population standard deviation of the window's samples."""
        spread = self._spread
        if spread is None:
            raise ValueError("this window keeps no spread")
        count = self._count + self._head_count
        mean = (self._sum + self._head_sum) / count
        data = self._data
        squares = 0.0
        # Chan's combination of per-bin deviations; the head bin's totals are
        # in attributes and its ring slot holds zero samples.
        for slot in range(self._bins):
            i = slot * _STRIDE
            if data[i]:
                offset = data[i + 1] / data[i] - mean
                squares += spread[slot] + data[i] * offset * offset
        if self._head_count:
            offset = self._head_sum / self._head_count - mean
            squares += spread[self._head % self._bins]
            squares += self._head_count * offset * offset
        return sqrt(max(squares, 0.0) / count)

    def first(self) -> tuple[float, float]:
        """Return ``(timestamp, value)`` of the window's earliest sample."""
        firsts = self._firsts
        if firsts is None:
            raise ValueError("this window keeps no earliest samples")
        earliest = min(range(0, 2 * self._bins, 2), key=firsts.__getitem__)
        return firsts[earliest], firsts[earliest + 1]

    def delta(self) -> float:
        """Return the newest sample's value less the earliest one's."""
        return self._last - self.first()[1]

    def rate(self) -> float | None:
        """Return :meth:`delta` per second, or ``None`` if no time passed."""
        since, value = self.first()
        seconds = self._last_at - since
        return (self._last - value) / seconds if seconds > 0 else None

    def quantile(self, q: float) -> float:
        """Return the ``q`` quantile (0..1) within the sketch's relative accuracy.

        It estimates the sample of rank ``floor(q * (count - 1))`` in sorted order.
        """
        if self._sketches is None:
            raise ValueError("this window keeps no sketches")
        estimate = self._sketches[-1].get_quantile_value(q)
        # The true quantile lies between min and max, which are exact; this
        # also turns the plain 0 (an int) of the sketch's zero bucket to a float.
        return min(max(float(estimate), self.lowest()), self.highest())

    def measure(self, aggregation: str) -> float | None:
        """Return the window's ``aggregation``, or ``None`` if it is empty
        (or, for ``rate``, if its samples all share one timestamp).

        :raises KeyError: if ``aggregation`` is not one of :data:`AGGREGATIONS`.
        """
        function = AGGREGATIONS[aggregation]
        return function(self) if self._count or self._head_count else None


#: Aggregation names of the configuration, each with the function that
#: measures a non-empty window.
AGGREGATIONS: dict[str, Callable[[Window], float]] = {
    "avg": Window.avg,
    "min": Window.lowest,
    "max": Window.highest,
    "sum": Window.total,
    "count": Window.samples,
    "last": Window.last,
    "stddev": Window.stddev,
    "delta": Window.delta,
    "rate": Window.rate,
    "p50": partial(Window.quantile, q=0.50),
    "p90": partial(Window.quantile, q=0.90),
    "p95": partial(Window.quantile, q=0.95),
    "p99": partial(Window.quantile, q=0.99),
}

#: Aggregations that need sketches.
QUANTILES = frozenset(name for name in AGGREGATIONS if name.startswith("p"))
