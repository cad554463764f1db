"""Composite rules: conditions on several metrics, joined per series key.

Each condition (a *side*) has its own metric, matchers, aggregation, sliding
window and test. Samples are grouped by the rule's ``group_by`` labels; the
series of key ``model=a`` holds one window per side, and its condition is the
sides' tests joined by AND (``join = "all"``) or OR (``any``). A side with
fewer samples than its ``min_samples`` (at least one) is false, never true,
whatever its comparison: silence proves nothing.

While an alert fires, each side is judged by its recovery threshold, if it
has one, so hysteresis works per side.
"""

from __future__ import annotations

from collections.abc import Mapping
from math import floor
from typing import TYPE_CHECKING

from tocsin.rules.conditions import (
    RANGES,
    condition,
    format_condition,
    format_duration,
    format_number,
    subject,
)
from tocsin.rules.levels import Levels
from tocsin.rules.runtime import RuleRuntime
from tocsin.rules.series import DETACHED, park_or_drop
from tocsin.rules.states import INACTIVE, STATE_SLOTS, AlertMachine
from tocsin.rules.windows import AGGREGATIONS, BINS, QUANTILES, UNPLACED, Window

if TYPE_CHECKING:
    from tocsin.config import ConditionConfig, RuleConfig
    from tocsin.rules.decisions import Decision


class Side:
    """One condition of a composite rule, compiled."""

    __slots__ = (
        "index",
        "metric",
        "match",
        "width",
        "window",
        "options",
        "measure",
        "bound",
        "op",
        "holds",
        "stays",
        "min_samples",
        "subject",
    )

    def __init__(self, index: int, config: ConditionConfig) -> None:
        self.index = index
        self.metric = config.metric
        self.match = tuple(config.match.items())
        self.window = float(config.window)
        self.width = self.window / BINS
        aggregation = config.aggregation
        quantiles = aggregation in QUANTILES
        self.options = {
            "extremes": aggregation in ("min", "max"),
            "sketches": quantiles,
            "spread": aggregation == "stddev",
            "trend": aggregation in ("delta", "rate"),
        }
        self.measure = AGGREGATIONS[aggregation]
        self.op = config.op
        if config.op in RANGES:
            self.bound = (float(config.range[0]), float(config.range[1]))
        else:
            self.bound = float(config.threshold)
        tests = {"quantile": quantiles, "optional": aggregation == "rate"}
        self.holds = condition(config.op, self.bound, self.measure, **tests)
        self.stays = (
            self.holds
            if config.recover is None
            else condition(config.op, float(config.recover), self.measure, **tests)
        )
        self.min_samples = config.min_samples
        self.subject = subject(aggregation, config.metric, self.window)

    def describe(self, window: Window) -> str:
        """Say what the side measures now, e.g. ``avg(x) over 5m = 3 (> 2)``."""
        count = window.count
        if count < self.min_samples:
            return f"{self.subject}: {count} samples"
        value = self.measure(window)
        if value is None:
            return f"{self.subject}: no value"
        test = format_condition(self.op, self.bound)
        return f"{self.subject} = {format_number(value)} ({test})"


class SideSeries(Window):
    """The window of one side of one composite series."""

    __slots__ = ("_rule", "_owner", "_index")

    def __init__(self, rule: CompositeRuntime, owner: CompositeSeries, side: Side):
        super().__init__(side.width, BINS, **side.options)
        self._rule = rule
        self._owner = owner
        self._index = side.index

    @property
    def values(self) -> tuple[str, ...]:
        return self._owner.values

    def add(self, value: float, timestamp: float) -> None:
        """Record one sample and queue the composite series; O(1)."""
        if self.put(value, timestamp):
            owner = self._owner
            if not owner._queued:
                owner._queued = True
                self._rule.changed.append(owner)

    def add_sampled(self, value: float, rate: float, timestamp: float) -> None:
        self.add(value, timestamp)

    def _add_slow(self, value: float, timestamp: float, at: int) -> bool:
        return park_or_drop(self, value, timestamp, at)

    def place(self, now_bin: int | None) -> None:
        self._head = UNPLACED if now_bin is None else now_bin


class CompositeSeries(AlertMachine):
    """One series key of a composite rule: a window per side, one alert."""

    __slots__ = (*STATE_SLOTS, "_queued", "_sides")

    def __init__(self, rule: CompositeRuntime, values: tuple[str, ...]) -> None:
        self._rule = rule
        self._values = values
        self._queued = False
        self._init_states()
        self._sides = tuple(SideSeries(rule, self, side) for side in rule.sides)
        self.place()

    @property
    def sides(self) -> tuple[SideSeries, ...]:
        return self._sides

    @property
    def value(self) -> None:
        """A composite has no single value; its reasons give each side's."""
        return None

    @property
    def count(self) -> int:
        """Return the samples in every side's window."""
        return sum(side.count for side in self._sides)

    @property
    def is_idle(self) -> bool:
        return (
            self._state == INACTIVE
            and not any(side.count for side in self._sides)
            and self._rule.forgettable
        )

    def place(self) -> None:
        timeline = self._rule.timeline
        for side in self._sides:
            side.place(timeline.bin(side._width))

    def detach(self) -> None:
        for side in self._sides:
            side._head = DETACHED

    def evaluate(self, now: float, out: list[Decision]) -> None:
        """Move every side's window to ``now`` and step the alert state."""
        fresh = self._queued
        self._queued = False
        stepped = False
        count = 0
        heard = self._heard
        for side in self._sides:
            at = floor(now / side._width)
            if at > side._head:
                side.advance(at)
                stepped = True
            if side.count:
                count += side.count
                if fresh and (heard is None or side._last_at > heard):
                    heard = side._last_at
        if self._rule.silence_after is not None:
            self._heard = heard
        decision = self._decide(now, self, count, stepped)
        if decision is not None:
            out.append(decision)


class CompositeRuntime(RuleRuntime):
    """A composite rule: its sides and its series.

    Every series is evaluated once per bin of the narrowest side.
    """

    sweeps_all = True

    def _init_signal(self, config: RuleConfig) -> None:
        self.sides = tuple(
            Side(index, side) for index, side in enumerate(config.conditions)
        )
        self.window = max(side.window for side in self.sides)
        self.width = min(side.width for side in self.sides)
        self.all = config.join == "all"
        self.levels = Levels.custom(config.severity, self._holds, self._stays)
        joiner = " and " if self.all else " or "
        self.subject = joiner.join(side.subject for side in self.sides)
        self.series_class = CompositeSeries

    def _holds(self, series: CompositeSeries) -> bool:
        return self._join(series, firing=False)

    def _stays(self, series: CompositeSeries) -> bool:
        return self._join(series, firing=True)

    def _join(self, series: CompositeSeries, *, firing: bool) -> bool:
        for side, window in zip(self.sides, series.sides, strict=True):
            test = side.stays if firing else side.holds
            passed = window.count >= side.min_samples and test(window)
            if passed != self.all:
                return passed
        return self.all

    @property
    def metrics(self) -> set[str]:
        """Return the metrics the sides read."""
        return {side.metric for side in self.sides}

    def targets_for(self, metric: str, labels: Mapping[str, str], found: list) -> None:
        """Append the side windows a sample of ``metric`` with ``labels`` feeds."""
        series = None
        for side in self.sides:
            if side.metric != metric:
                continue
            if any(labels.get(name) != wanted for name, wanted in side.match):
                continue
            if series is None:
                series = self.series_for(labels)
                if series is None:
                    return
            found.append(series.sides[side.index])

    def reattach(self, window: SideSeries):
        """Return the live window for a side of a forgotten series."""
        owner = window._owner
        live = super().reattach(owner)
        return None if live is None else live.sides[window._index]

    def value_of(self, reading: object) -> None:
        return None

    def fire(self, series, now, reading, level, reason=None) -> Decision:
        if reason is None:
            reason = self.describe(series)
            if self.pending > 0:
                reason += f" for {format_duration(self.pending)}"
        return super().fire(series, now, reading, level, reason)

    def explain_clear(self, series, value, kept_for: float) -> str:
        reason = f"no longer: {self.describe(series)}"
        if kept_for > 0:
            reason += f" for {format_duration(kept_for)}"
        return reason

    def describe(self, series: CompositeSeries) -> str:
        """Say what every side measures now."""
        joiner = ", and " if self.all else ", or "
        return joiner.join(
            side.describe(window)
            for side, window in zip(self.sides, series.sides, strict=True)
        )
