"""The series of a sliding-window rule, and the engine's clock.

A :class:`RuleSeries` is a window of samples (see :mod:`tocsin.rules.windows`)
and an alert state machine (see :mod:`tocsin.rules.states`) in one object.

Samples stamped ahead of the engine's clock wait in the :class:`Timeline`
until the clock reaches their bin, so a sender whose clock runs fast can
neither push a window forward nor empty it early.
"""

from __future__ import annotations

import heapq
import itertools
from math import floor
from typing import TYPE_CHECKING

from tocsin.rules.decisions import Decision
from tocsin.rules.states import FIRING, INACTIVE, STATE_SLOTS, STEPPED, AlertMachine
from tocsin.rules.windows import BINS, UNPLACED, Window

if TYPE_CHECKING:
    from tocsin.rules.engine import RuleRuntime

#: Head of a series the engine has forgotten; its next sample re-registers it.
DETACHED = UNPLACED - 1
#: Samples held ahead of the clock, engine-wide; beyond it they are dropped.
MAX_PARKED = 65_536


class EngineStats:
    """Counters of the rules engine; read by logs, the API and self-metrics."""

    __slots__ = (
        "late_samples",
        "future_samples",
        "non_finite_samples",
        "held_fires",
        "refused_series",
        "forgotten_series",
        "evaluations",
    )

    def __init__(self) -> None:
        #: Samples stamped before the window of their series.
        self.late_samples = 0
        #: Samples stamped ahead of the engine's clock that found the holding
        #: area full (:data:`MAX_PARKED`).
        self.future_samples = 0
        #: NaN or infinite values (the parsers should have refused them).
        self.non_finite_samples = 0
        #: Fires held back by a rate guard (once per episode).
        self.held_fires = 0
        #: New series refused because their rule, or the engine, had as many
        #: as it may hold.
        self.refused_series = 0
        #: Idle series dropped by ticks.
        self.forgotten_series = 0
        #: Series evaluated, after samples arrived or on a tick.
        self.evaluations = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class Timeline:
    """The engine's evaluation clock, and the samples stamped ahead of it.

    The clock is the latest ``now`` the engine was given; it never moves
    backwards and samples never move it.
    """

    __slots__ = ("now", "started", "stats", "_parked", "_order")

    def __init__(self, stats: EngineStats) -> None:
        self.now: float | None = None
        #: The first ``now`` the engine was given (its start, after a restart).
        self.started: float | None = None
        self.stats = stats
        self._parked: list[tuple] = []
        self._order = itertools.count()

    @property
    def parked(self) -> int:
        """Return how many samples wait for the clock."""
        return len(self._parked)

    def advance(self, now: float) -> float:
        """Move the clock to ``now`` unless it is already later; return the clock."""
        if self.now is None:
            self.now = self.started = now
        elif now > self.now:
            self.now = now
        return self.now

    def clock(self) -> float:
        """Return the clock, or 0 before the first evaluation (for rate limits)."""
        return 0.0 if self.now is None else self.now

    def bin(self, width: float) -> int | None:
        """Return the bin of width ``width`` holding the clock, if there is one."""
        return None if self.now is None else floor(self.now / width)

    def park(
        self, series: RuleSeries, value: float, timestamp: float, due: float
    ) -> None:
        """Hold a sample until the clock reaches ``due``, or drop it if full."""
        if len(self._parked) >= MAX_PARKED:
            self.stats.future_samples += 1
            return
        entry = (due, next(self._order), series, value, timestamp)
        heapq.heappush(self._parked, entry)

    def release(self, now: float) -> None:
        """Hand the samples whose bin the clock has reached to their series."""
        parked = self._parked
        if not parked or parked[0][0] > now:
            return

        due = []
        while parked and parked[0][0] <= now:
            due.append(heapq.heappop(parked))
        # Collected first: a sample that rounding sends back waits for the next
        # evaluation instead of spinning here.
        for _, _, series, value, timestamp in due:
            series.add(value, timestamp)


class RuleSeries(Window, AlertMachine):
    """One series of a sliding-window rule: its window and its alert state.

    The engine creates series (:meth:`RuleEngine.targets`); the daemon calls
    :meth:`add` for every sample.
    """

    # A series is its window rather than holding one: one object less per
    # series, and one call less per sample.
    __slots__ = (*STATE_SLOTS, "_queued", "_history")

    def __init__(self, rule: RuleRuntime, values: tuple[str, ...]) -> None:
        super().__init__(
            rule.width,
            BINS,
            extremes=rule.extremes,
            sketches=rule.quantiles,
            spread=rule.spread,
            trend=rule.trend,
        )
        self._rule = rule
        self._values = values
        self._queued = False
        self._init_states()
        relative = rule.relative
        self._history = None if relative is None else relative.new_history()
        self.place()

    @property
    def value(self) -> float | None:
        """Return the rule's aggregation of the window, ``None`` when empty."""
        return self._rule.measure(self) if self._count or self._head_count else None

    @property
    def is_idle(self) -> bool:
        """Return whether the series holds nothing worth keeping."""
        # A series comparing with its past keeps that past while it holds a
        # value: forgetting it would start the comparison over.
        history = self._history
        return (
            self._state == INACTIVE
            and not (self._count or self._head_count)
            and self._rule.forgettable
            and (history is None or history.is_empty)
        )

    def add(self, value: float, timestamp: float) -> None:
        """Record one sample and queue the series for evaluation; O(1)."""
        # Window.put's fast path, written out: this runs once per sample and
        # rule, and a call costs as much as the update itself.
        at = floor(timestamp / self._width)
        if at != self._head or value - value or self._extras:
            if not self.put(value, timestamp):
                return
        else:
            self._head_count += 1
            self._head_sum += value
            if value < self._head_min:
                self._head_min = value
            if value > self._head_max:
                self._head_max = value
            if timestamp >= self._last_at:
                self._last = value
                self._last_at = timestamp
        if not self._queued:
            self._queued = True
            self._rule.changed.append(self)

    def add_sampled(self, value: float, rate: float, timestamp: float) -> None:
        """Do :meth:`add` with the signature of an ingest handle's ``add``.

        The rate is ignored: only counter samples are scaled by it, and the
        daemon scales those before they reach a rule.
        """
        self.add(value, timestamp)

    def _add_slow(self, value: float, timestamp: float, at: int) -> bool:
        return park_or_drop(self, value, timestamp, at)

    def place(self) -> None:
        """Put the head on the engine's clock, if it has one."""
        now_bin = self._rule.timeline.bin(self._width)
        self._head = UNPLACED if now_bin is None else now_bin

    def detach(self) -> None:
        """Mark the series forgotten; its next sample registers it again."""
        self._head = DETACHED

    def evaluate(self, now: float, out: list[Decision]) -> None:
        """Move the window to ``now`` and step the alert state; O(1) amortized.

        A fire, resolve or other change is appended to ``out``.
        """
        rule = self._rule
        fresh = self._queued
        self._queued = False
        at = floor(now / self._width)
        if at > self._head:
            self.advance(at)
        count = self._count + self._head_count
        if rule.plain:
            # Nearly every evaluation takes one of two quick ways out: a
            # quiet series that does not breach (the lowest level's test is
            # necessary for any level), or one firing at the top level that
            # has not recovered from it, which nothing can move.
            state = self._state
            if state == INACTIVE:
                if count < rule.min_samples or not rule.entry(self):
                    return
            elif (
                state == FIRING
                and self._level == rule.top
                and self._cleared is None
                and self._restored is None
                and count >= rule.min_samples
                and rule.keep(self)
            ):
                return
        stepped = bool(self._flags & STEPPED)
        self._flags &= ~STEPPED
        if fresh and rule.silence_after is not None:
            heard = self._heard
            if heard is None or self._last_at > heard:
                self._heard = self._last_at
        if self._history is None:
            reading = self
        elif count:
            reading = rule.relative.compare(rule.measure(self), self._history)
        else:
            reading = None
        decision = self._decide(now, reading, count, stepped)
        if decision is not None:
            out.append(decision)

    def advance(self, head: int) -> None:
        """Move the head forward to bin ``head``, noting the step it takes."""
        if head > self._head:
            if self._history is not None:
                self._remember(head)
            self._flags |= STEPPED
            Window.advance(self, head)

    def _remember(self, at: int) -> None:
        """Record the window's value at each step boundary it is leaving."""
        history = self._history
        history.push(self.value)
        # Steps nobody evaluated (the daemon stalled) have no value of their own.
        history.skip(at - self._head - 1)


def park_or_drop(series, value: float, timestamp: float, at: int) -> bool:
    """Handle a sample a series' window cannot take at once.

    A non-finite value is counted and dropped; a sample for a forgotten
    series registers it again; a sample older than the window is late
    (counted, dropped); one ahead of the window's head moves the head if the
    engine's clock has reached its bin, and otherwise waits for the clock.

    :return: whether the window took the sample.
    """
    rule = series._rule
    timeline = rule.timeline
    if value - value:
        timeline.stats.non_finite_samples += 1
        return False
    if series._head == DETACHED:
        live = rule.reattach(series)
        if live is series:
            return series.put(value, timestamp)
        # Another series object took this key (or the rule is full); a
        # caller still holding this one must not split the series in two.
        if live is not None:
            live.add(value, timestamp)
        return False
    if at <= series._head:
        timeline.stats.late_samples += 1
        return False

    now = timeline.now
    if now is not None and at <= floor(now / series._width):
        series.advance(floor(now / series._width))
        return series.put(value, timestamp)
    # However far ahead: the clock may be stale rather than the sample
    # early (the daemon stalled, or no evaluation ran for a while).
    timeline.park(series, value, timestamp, at * series._width)
    return False
