"""The series of a tumbling rule: whole bins aligned to the clock.

Bin ``b`` of width ``w`` holds the samples stamped in ``[b * w, (b + 1) * w)``;
bins are aligned to the POSIX epoch, so a ``1h`` bin starts on the hour and a
``1d`` bin at UTC midnight. A bin is *open* until ``delay`` after its end, and
takes samples until then; at that moment it is *sealed*: its aggregation is
computed once, compared, and the bin is dropped. A sample for a sealed bin is
late: it is counted and dropped. A sample stamped ahead of the engine's clock
waits for the clock, as for sliding windows.

Each open bin is a one-bin :class:`~tocsin.rules.windows.Window`, so every
aggregation works as it does for sliding windows; a series keeps at most
``2 + ceil(delay / w)`` of them. The alert state steps once per sealed bin,
at the bin's end: ``for`` counts bin ends, and flap detection and no-data see
one evaluation per bin.
"""

from __future__ import annotations

from math import ceil, floor
from typing import TYPE_CHECKING

from tocsin.rules.states import INACTIVE, PENDING, STATE_SLOTS, AlertMachine
from tocsin.rules.windows import UNPLACED, Window

if TYPE_CHECKING:
    from tocsin.rules.decisions import Decision
    from tocsin.rules.runtime import RuleRuntime


#: The newest sealed bin of a series the engine has forgotten: every sample
#: then looks late, and the slow path registers the series again.
FORGOTTEN = 2**62


def open_bins(width: float, delay: float) -> int:
    """Return how many bins a series of a tumbling rule may hold open."""
    return 2 + ceil(delay / width)


class TumblingSeries(AlertMachine):
    """One series of a tumbling rule: its open bins and its alert state."""

    __slots__ = (*STATE_SLOTS, "_history", "_open", "_sealed", "_reading", "_samples")

    def __init__(self, rule: RuleRuntime, values: tuple[str, ...]) -> None:
        self._rule = rule
        self._values = values
        self._init_states()
        relative = rule.relative
        self._history = None if relative is None else relative.new_history()
        self._open: list[Window | None] = [None] * rule.open_bins
        #: The newest sealed bin.
        self._sealed = UNPLACED
        #: What the newest sealed bin measured, and its samples.
        self._reading: float | None = None
        self._samples = 0
        self.place()

    @property
    def value(self) -> float | None:
        """Return what the newest sealed bin measured (compared, if the rule
        compares with the past); ``None`` before the first or for an empty one."""
        return self._reading

    @property
    def count(self) -> int:
        """Return the samples of the newest sealed bin."""
        return self._samples

    @property
    def head(self) -> int:
        """Return the newest sealed bin."""
        return self._sealed

    @property
    def is_idle(self) -> bool:
        # A series comparing with its past keeps that past while it holds a
        # value: forgetting it would start the comparison over.
        history = self._history
        return (
            self._state == INACTIVE
            and not any(self._open)
            and self._rule.forgettable
            and (history is None or history.is_empty)
        )

    def place(self) -> None:
        """Seal every bin the engine's clock has passed, if it has a clock."""
        sealed = self._rule.sealed_bin()
        if sealed is not None:
            self._sealed = sealed

    def detach(self) -> None:
        self._sealed = FORGOTTEN

    def add(self, value: float, timestamp: float) -> None:
        """Put one sample into its bin; O(1)."""
        rule = self._rule
        width = rule.width
        at = floor(timestamp / width)
        if at <= self._sealed or value - value:
            self._add_slow(value, timestamp, at)
            return
        timeline = rule.timeline
        now = timeline.now
        if now is None or at > floor(now / width):
            timeline.park(self, value, timestamp, at * width)
            return
        slots = self._open
        slot = at % len(slots)
        window = slots[slot]
        if window is None or window.head != at:
            window = slots[slot] = rule.new_bin(at)
        window.put(value, timestamp)
        if self._heard is None or timestamp > self._heard:
            self._heard = timestamp

    def add_sampled(self, value: float, rate: float, timestamp: float) -> None:
        """Do :meth:`add` with the signature of an ingest handle's ``add``."""
        self.add(value, timestamp)

    def _add_slow(self, value: float, timestamp: float, at: int) -> None:
        rule = self._rule
        stats = rule.timeline.stats
        if value - value:
            stats.non_finite_samples += 1
        elif self._sealed == FORGOTTEN:
            live = rule.reattach(self)
            if live is not None:
                live.add(value, timestamp)
        else:
            stats.late_samples += 1

    def evaluate(self, now: float, out: list[Decision]) -> None:
        """Seal the bins ``now`` has closed and step the state once per bin."""
        rule = self._rule
        target = rule.sealed_bin(now)
        sealed = self._sealed
        if sealed == UNPLACED:
            # Created before the engine had a clock: bins it has passed are
            # not this series' to judge.
            self._sealed = target
            for slot, window in enumerate(self._open):
                if window is not None and window.head <= target:
                    self._open[slot] = None
            return
        if sealed >= target:
            # No bin closed: time alone may still end a hold or a kept-firing
            # alert, but not a pending period, since ``for`` counts bin ends.
            if self._state == PENDING:
                return
            decision = self._decide(now, self._reading, self._samples, False)
            if decision is not None:
                out.append(decision)
            return

        slots = self._open
        # The newest bin to seal that holds samples; every later one is empty.
        last = max(
            [w.head for w in slots if w is not None and sealed < w.head <= target],
            default=sealed,
        )
        width = rule.width
        while sealed < target:
            skipped = target - sealed - len(slots)
            if sealed > last and skipped > 0:
                # A long run of empty bins (the engine stalled) is cut to its
                # last few, once the first of them has been judged: only the
                # history needs each of the others.
                if self._history is not None:
                    self._history.skip(skipped)
                sealed += skipped
            sealed += 1
            slot = sealed % len(slots)
            window = slots[slot]
            value = None
            count = 0
            if window is not None and window.head == sealed:
                slots[slot] = None
                count = window.count
                value = rule.measure(window) if count else None
            history = self._history
            if history is not None:
                reading = None
                if value is not None:
                    reading = rule.relative.compare(value, history)
                history.push(value)
                value = reading
            self._reading = value
            self._samples = count
            self._sealed = sealed
            decision = self._decide((sealed + 1) * width, value, count, True)
            if decision is not None:
                out.append(decision)
