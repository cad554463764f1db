"""The series of a rule: a window of samples plus an alert state machine.

A series is *inactive* until its condition holds, then *pending* (for the
rule's ``for`` duration; a ``for`` of 0 skips it), then *firing*. A fire that
the rule's cooldown or daily cap holds back leaves the series *held*: it fires
as soon as it is allowed if the condition still holds, and falls back to
inactive, silently, if the condition stops holding first. A firing series
resolves once its condition is false or its window holds fewer samples than
the rule's ``min_samples`` (at least one): a window that short never fires.

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
from tocsin.rules.windows import BINS, UNPLACED, Window

if TYPE_CHECKING:
    from tocsin.rules.engine import RuleRuntime

#: Head of a series the engine has forgotten; its next sample re-registers it.
DETACHED = UNPLACED - 1
#: Samples held ahead of the clock, engine-wide; beyond it they are dropped.
MAX_PARKED = 65_536

INACTIVE, PENDING, HELD, FIRING = range(4)
STATE_NAMES = ("inactive", "pending", "held", "firing")


class EngineStats:
    """Counters of the rules engine; read by logs, the API and self-metrics."""

    __slots__ = (
        "late_samples",
        "future_samples",
        "non_finite_samples",
        "held_fires",
        "refused_series",
        "forgotten_series",
    )

    def __init__(self) -> None:
        #: Samples stamped before the window of their series.
        self.late_samples = 0
        #: Samples stamped ahead of the engine's clock that found the holding
        #: area full (:data:`MAX_PARKED`).
        self.future_samples = 0
        #: NaN or infinite values (the parsers should have refused them).
        self.non_finite_samples = 0
        #: Fires held back by a cooldown or a daily cap (once per episode).
        self.held_fires = 0
        #: New series refused because their rule had ``max_series_per_rule``.
        self.refused_series = 0
        #: Idle series dropped by ticks.
        self.forgotten_series = 0

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


class RuleSeries(Window):
    """One series of one rule: the window of its samples and its alert state.

    The engine creates series (:meth:`RuleEngine.targets`); the daemon calls
    :meth:`add` for every sample.
    """

    # A series is its window rather than holding one: one object less per
    # series, and one call less per sample.
    __slots__ = (
        "_rule",
        "_values",
        "_state",
        "_since",
        "_cleared",
        "_queued",
        "_restored",
    )

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
        self._state = INACTIVE
        self._since: float | None = None
        #: When a firing series' condition stopped holding, while the rule's
        #: ``keep_firing_for`` keeps it firing.
        self._cleared: float | None = None
        self._queued = False
        #: ``(series key, labels)`` of an alert restored after a restart.
        self._restored: tuple[str, dict[str, str]] | None = None
        self.place()

    @property
    def rule(self) -> str:
        """Return the name of the series' rule."""
        return self._rule.name

    @property
    def values(self) -> tuple[str, ...]:
        """Return the values of the rule's ``group_by`` labels, in order."""
        return self._values

    @property
    def key(self) -> str:
        """Return the canonical series key (``k=v`` pairs in ``group_by`` order)."""
        if self._restored is not None:
            return self._restored[0]
        return self._rule.key_of(self._values)

    @property
    def labels(self) -> dict[str, str]:
        """Return the ``group_by`` labels and their values."""
        if self._restored is not None:
            return dict(self._restored[1])
        return dict(zip(self._rule.group_by, self._values, strict=True))

    @property
    def state(self) -> str:
        """Return ``inactive``, ``pending``, ``held`` or ``firing``."""
        return STATE_NAMES[self._state]

    @property
    def value(self) -> float | None:
        """Return the rule's aggregation of the window, ``None`` when empty."""
        return self._rule.measure(self) if self._count or self._head_count else None

    @property
    def since(self) -> float | None:
        """Return when the condition started to hold (pending, held or firing)."""
        return self._since

    @property
    def is_idle(self) -> bool:
        """Return whether the series holds nothing worth keeping."""
        return self._state == INACTIVE and not (self._count or self._head_count)

    @property
    def is_watched(self) -> bool:
        """Return whether time alone can change the series' state.

        Pending and held series wait for time to pass, and so does a cleared
        one kept firing; a restored one waits for its grace to end. Any other
        series evaluated in the current bin changes only with new samples
        (which queue it) or when a bin leaves its window.
        """
        return (
            self._state in (PENDING, HELD)
            or self._restored is not None
            or self._cleared is not None
        )

    def add(self, value: float, timestamp: float) -> None:
        """Record one sample and queue the series for evaluation; O(1)."""
        if self.put(value, timestamp) and not self._queued:
            self._queued = True
            self._rule.changed.append(self)

    def add_sampled(self, value: float, rate: float, timestamp: float) -> None:
        """Do :meth:`add` with the signature of an ingest handle's ``add``.

        The rate is ignored: only counter samples are scaled by it, and the
        daemon scales those before they reach a rule.
        """
        if self.put(value, timestamp) and not self._queued:
            self._queued = True
            self._rule.changed.append(self)

    def _add_slow(self, value: float, timestamp: float, at: int) -> bool:
        rule = self._rule
        timeline = rule.timeline
        if value - value:
            timeline.stats.non_finite_samples += 1
            return False
        if self._head == DETACHED:
            live = rule.reattach(self)
            if live is self:
                return self.put(value, timestamp)
            # Another series object took this key (or the rule is full); a
            # caller still holding this one must not split the series in two.
            if live is not None:
                live.add(value, timestamp)
            return False
        if at <= self._head:
            timeline.stats.late_samples += 1
            return False

        now = timeline.now
        if now is not None and at <= floor(now / self._width):
            self.advance(floor(now / self._width))
            return self.put(value, timestamp)
        # However far ahead: the clock may be stale rather than the sample
        # early (the daemon stalled, or no evaluation ran for a while).
        timeline.park(self, value, timestamp, at * self._width)
        return False

    def place(self) -> None:
        """Put the head on the engine's clock, if it has one."""
        now_bin = self._rule.timeline.bin(self._width)
        self._head = UNPLACED if now_bin is None else now_bin

    def detach(self) -> None:
        """Mark the series forgotten; its next sample registers it again."""
        self._head = DETACHED

    def evaluate(self, now: float) -> Decision | None:
        """Move the window to ``now`` and step the alert state; O(1) amortized.

        :return: a fire or resolve decision, or ``None`` when nothing changed.
        """
        rule = self._rule
        self._queued = False
        at = floor(now / self._width)
        if at > self._head:
            self.advance(at)
        short = self._count + self._head_count < rule.min_samples
        state = self._state
        if state == FIRING:
            if not short and rule.stays(self):
                if self._cleared is not None:
                    self._cleared = None
                    if self._restored is None:
                        rule.watch.discard(self)
                return None
            return self._clear(now, short)

        if not short and rule.holds(self):
            if state == INACTIVE:
                self._state = PENDING
                self._since = now
                rule.watch.add(self)
            if now - self._since < rule.pending:
                return None
            blocker = rule.limits.blocker(self.key, now)
            if blocker is not None:
                if self._state != HELD:
                    self._state = HELD
                    rule.hold(self, blocker)
                return None
            self._state = FIRING
            if self._restored is None:
                rule.watch.discard(self)
            return rule.fire(self, now)

        if state != INACTIVE:
            self._state = INACTIVE
            self._since = None
            rule.watch.discard(self)
        return None

    def _clear(self, now: float, short: bool) -> Decision | None:
        """Resolve a firing series whose condition stopped holding, unless
        its restart grace or the rule's ``keep_firing_for`` holds it."""
        rule = self._rule
        if short and self._restored is not None and self._in_grace(now):
            return None
        kept_for = 0.0
        if rule.keep_firing_for > 0:
            if self._cleared is None:
                self._cleared = now
                rule.watch.add(self)
            kept_for = now - self._cleared
            if kept_for < rule.keep_firing_for:
                return None
        decision = rule.resolve(self, now, kept_for)
        self._state = INACTIVE
        self._since = None
        self._cleared = None
        self._restored = None
        rule.watch.discard(self)
        return decision

    def _in_grace(self, now: float) -> bool:
        # After a restart the window starts empty; an alert restored as firing
        # only resolves for want of samples once a whole window could have
        # been filled.
        started = self._rule.timeline.started
        return started is not None and now < started + self._rule.window

    def restore(self, key: str, labels: dict[str, str], since: float) -> None:
        """Mark the series as firing since ``since`` under an alert's key."""
        self._state = FIRING
        self._since = since
        self._restored = (key, dict(labels))
        self._rule.watch.add(self)
