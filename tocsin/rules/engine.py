"""The rules engine: which rules a sample feeds, and when their series alert.

The daemon resolves each distinct (metric, labels) once with
:meth:`RuleEngine.targets`, caches the returned series, calls
:meth:`RuleSeries.add` per sample, :meth:`RuleEngine.evaluate_dirty` after
each datagram and :meth:`RuleEngine.tick` every tick. The engine never reads a
clock: every ``now`` is given, and the engine's clock is the latest of them
(it never moves backwards; a smaller ``now`` is taken as the latest one).

Cooldowns are per (rule, series); daily caps count fires per rule per UTC
calendar day (POSIX day ``floor(now / 86400)``). A fire that either one holds
back is counted once in :attr:`EngineStats.held_fires`, logged (rate-limited),
and goes out as soon as it is allowed if the condition still holds.

Memory is bounded: at most ``max_series_per_rule`` series per rule (new ones
are refused, counted and logged), idle series are forgotten by :meth:`tick`,
and samples stamped ahead of the clock wait in a bounded holding area. A
series the engine forgot keeps working for a caller that cached it: its next
sample registers it again (or goes to the series that took its place).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from math import floor

from tocsin.config import RuleConfig
from tocsin.logs import RateLimiter
from tocsin.rules.conditions import (
    RANGES,
    FireLimits,
    condition,
    fire_reason,
    resolve_reason,
    subject,
)
from tocsin.rules.decisions import Decision
from tocsin.rules.series import EngineStats, RuleSeries, Timeline
from tocsin.rules.windows import AGGREGATIONS, BINS, QUANTILES

log = logging.getLogger(__name__)

#: Seconds between two log lines about the same rule and cause.
_LOG_INTERVAL = 60.0


def _escape(text: str) -> str:
    """Return ``text`` with the characters that delimit series keys escaped."""
    if "\\" in text or "," in text or "=" in text:
        text = text.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")
    return text


class RuleRuntime:
    """One configured rule as the engine runs it: its series and recent fires."""

    def __init__(
        self,
        config: RuleConfig,
        *,
        changed: list[RuleSeries],
        timeline: Timeline,
        limiter: RateLimiter,
        max_series: int,
    ) -> None:
        if not config.window > 0:
            raise ValueError(f"rule {config.name!r}: window must be longer than 0s")
        self.config = config
        self.name = config.name
        self.match = tuple(config.match.items())
        self.group_by = tuple(config.group_by)
        self.window = float(config.window)
        #: Bin width; one float object shared by every series of the rule.
        self.width = self.window / BINS
        self.quantiles = config.aggregation in QUANTILES
        self.extremes = config.aggregation in ("min", "max")
        self.spread = config.aggregation == "stddev"
        self.trend = config.aggregation in ("delta", "rate")
        self.measure = AGGREGATIONS[config.aggregation]
        if config.op in RANGES:
            self.threshold = None
            self.bound = (float(config.range[0]), float(config.range[1]))
        else:
            self.threshold = float(config.threshold)
            self.bound = self.threshold
        tests = {"quantile": self.quantiles, "optional": config.aggregation == "rate"}
        #: Whether a non-empty window breaches.
        self.holds = condition(config.op, self.bound, self.measure, **tests)
        #: What a firing series must pass to stay firing (the recovery
        #: threshold, where the rule has one).
        self.recovery = self.bound if config.recover is None else config.recover
        self.stays = (
            self.holds
            if config.recover is None
            else condition(config.op, self.recovery, self.measure, **tests)
        )
        self.keep_firing_for = float(config.keep_firing_for)
        self.pending = float(config.for_)
        self.min_samples = config.min_samples
        self.limits = FireLimits(float(config.cooldown), config.daily_cap)
        self.subject = subject(config.aggregation, config.metric, self.window)
        self.series: dict[tuple[str, ...], RuleSeries] = {}
        #: The engine's queue of series that got samples since the last
        #: evaluation (shared by every rule).
        self.changed = changed
        self.timeline = timeline
        self.max_series = max_series
        self.refused = 0
        #: Series whose state time alone can change (see RuleSeries.is_watched).
        self.watch: set[RuleSeries] = set()
        self._ticked_bin: int | None = None
        self._limiter = limiter

    def key_of(self, values: tuple[str, ...]) -> str:
        """Return the series key for ``group_by`` label values.

        ``name=value`` pairs joined by commas, with ``\\``, ``,`` and ``=``
        escaped by a backslash inside names and values, so two different sets
        of labels never share a key (and so never share an alert).
        """
        pairs = zip(self.group_by, values, strict=True)
        return ",".join([f"{_escape(name)}={_escape(value)}" for name, value in pairs])

    def series_for(self, labels: Mapping[str, str]) -> RuleSeries | None:
        """Return the series a sample with ``labels`` feeds, creating it.

        :return: ``None`` if the matchers refuse the labels or the rule is full.
        """
        for name, wanted in self.match:
            if labels.get(name) != wanted:
                return None
        values = tuple([labels.get(name, "") for name in self.group_by])
        series = self.series.get(values)
        if series is None:
            series = self._create(values)
        return series

    def _create(self, values: tuple[str, ...]) -> RuleSeries | None:
        if len(self.series) >= self.max_series:
            self._refuse()
            return None
        series = self.series[values] = RuleSeries(self, values)
        return series

    def _refuse(self) -> None:
        self.refused += 1
        self.timeline.stats.refused_series += 1
        allowed, suppressed = self._limiter.allow(f"refused:{self.name}")
        if allowed:
            # WARNING: samples of the refused series are ignored until the
            # rule's idle series are forgotten.
            log.warning(
                "rule %s has %d series, its limit; new series are refused",
                self.name,
                self.max_series,
                extra={
                    "rule": self.name,
                    "series_count": len(self.series),
                    "count": self.refused,
                    "suppressed": suppressed,
                },
            )

    def reattach(self, series: RuleSeries) -> RuleSeries | None:
        """Return the live series for a forgotten one, registering it again."""
        values = series.values
        live = self.series.get(values)
        if live is not None:
            return live
        if len(self.series) >= self.max_series:
            self._refuse()
            return None
        series.place()
        self.series[values] = series
        return series

    def restore(
        self, key: str, labels: dict[str, str], since: float, fired_at: float
    ) -> None:
        """Mark a series firing; restores may exceed ``max_series``."""
        values = tuple([labels.get(name, "") for name in self.group_by])
        series = self.series.get(values)
        if series is None:
            series = self.series[values] = RuleSeries(self, values)
        series.restore(key, labels, since)
        self.limits.cooled(key, fired_at)

    def hold(self, series: RuleSeries, blocker: str) -> None:
        """Count and log a fire that ``blocker`` holds back."""
        self.timeline.stats.held_fires += 1
        allowed, suppressed = self._limiter.allow(f"held:{self.name}:{blocker}")
        if allowed:
            # WARNING: an alert someone expects is not being sent.
            log.warning(
                "alert of rule %s held back by its %s",
                self.name,
                "cooldown" if blocker == "cooldown" else "daily cap",
                extra={
                    "rule": self.name,
                    "series": series.key,
                    "reason": blocker,
                    "suppressed": suppressed,
                },
            )

    def fire(self, series: RuleSeries, now: float) -> Decision:
        """Record a fire of ``series`` and return its decision."""
        self.limits.record(series.key, now)
        value = self.measure(series)
        op, pending = self.config.op, self.pending
        reason = fire_reason(self.subject, value, op, self.bound, pending)
        return self._decision("fire", series, value, now, reason)

    def resolve(self, series: RuleSeries, now: float, kept_for: float) -> Decision:
        """Return the resolve decision of ``series``.

        :param kept_for: how long the series was kept firing after it cleared.
        """
        value = series.value
        reason = resolve_reason(
            self.subject,
            value,
            self.config.op,
            self.recovery,
            samples=series.count,
            min_samples=self.min_samples,
            kept_for=kept_for,
        )
        return self._decision("resolve", series, value, now, reason)

    def _decision(self, action, series, value, now, reason) -> Decision:
        key = series.key
        log.debug(
            "rule %s series %r: %s (%s)",
            self.name,
            key,
            action,
            reason,
            extra={"rule": self.name, "series": key},
        )
        return Decision(
            action=action,
            rule=self.name,
            series=key,
            labels=series.labels,
            value=value,
            threshold=self.threshold,
            samples=series.count,
            at=now,
            since=now if series.since is None else series.since,
            reason=reason,
        )

    def tick(self, now: float, decisions: list[Decision]) -> int:
        """Evaluate every series that may have changed, forget idle ones.

        Within the bin of the previous tick only watched series can change;
        once per bin every series is visited.

        :return: how many series were forgotten.
        """
        at = floor(now / self.width)
        if at == self._ticked_bin:
            for series in list(self.watch):
                decision = series.evaluate(now)
                if decision is not None:
                    decisions.append(decision)
            return 0

        # TODO: bins are aligned to the epoch, so every series of a rule
        # rotates at the same tick (~3 us each: 60,000 series cost ~180 ms on
        # the benchmark machine). Sweeping a slice of the series per tick
        # would flatten that spike.
        self._ticked_bin = at
        idle = []
        for values, series in self.series.items():
            if series.head < at or series.is_watched:
                decision = series.evaluate(now)
                if decision is not None:
                    decisions.append(decision)
            if series.is_idle:
                idle.append(values)
        for values in idle:
            self.series.pop(values).detach()
        self.limits.forget(now)
        return len(idle)


class RuleEngine:
    """Turn samples into fire and resolve decisions for a set of rules.

    :param rules: the configured rules (names must be unique).
    :param max_series_per_rule: series a rule may hold; new ones beyond are
        refused.
    :raises ValueError: if two rules share a name, a window is not positive or
        ``max_series_per_rule`` is below 1.
    """

    def __init__(
        self, rules: Sequence[RuleConfig], *, max_series_per_rule: int = 100_000
    ) -> None:
        if max_series_per_rule < 1:
            raise ValueError("max_series_per_rule must be at least 1")
        self.stats = EngineStats()
        self._timeline = Timeline(self.stats)
        self._changed: list[RuleSeries] = []
        limiter = RateLimiter(_LOG_INTERVAL, clock=self._timeline.clock)
        self._rules = [
            RuleRuntime(
                config,
                changed=self._changed,
                timeline=self._timeline,
                limiter=limiter,
                max_series=max_series_per_rule,
            )
            for config in rules
        ]
        self._by_name = {rule.name: rule for rule in self._rules}
        if len(self._by_name) != len(self._rules):
            raise ValueError("rule names must be unique")
        by_metric: dict[str, list[RuleRuntime]] = {}
        for rule in self._rules:
            by_metric.setdefault(rule.config.metric, []).append(rule)
        self._by_metric = {metric: tuple(found) for metric, found in by_metric.items()}

    @property
    def series_count(self) -> int:
        """Return the number of live series over all rules."""
        return sum(len(rule.series) for rule in self._rules)

    @property
    def refused_series(self) -> dict[str, int]:
        """Return, per rule that refused any, how many new series it refused."""
        return {rule.name: rule.refused for rule in self._rules if rule.refused}

    @property
    def dirty_count(self) -> int:
        """Return how many series wait for :meth:`evaluate_dirty`."""
        return len(self._changed)

    @property
    def parked_samples(self) -> int:
        """Return how many samples stamped ahead of the clock wait for it."""
        return self._timeline.parked

    @property
    def now(self) -> float | None:
        """Return the engine's clock: the latest ``now`` it was given."""
        return self._timeline.now

    def targets(self, metric: str, labels: Mapping[str, str]) -> list[RuleSeries]:
        """Return the series a sample of ``metric`` with ``labels`` feeds.

        One per rule on ``metric`` whose matchers all equal a label; a
        ``group_by`` label missing from ``labels`` counts as ``""``. Series are
        created on demand; a rule at its series limit contributes none.
        """
        rules = self._by_metric.get(metric)
        if rules is None:
            return []
        found = []
        for rule in rules:
            series = rule.series_for(labels)
            if series is not None:
                found.append(series)
        return found

    def evaluate_dirty(self, now: float) -> list[Decision]:
        """Evaluate the series that got samples since the last evaluation."""
        now = self._timeline.advance(now)
        self._timeline.release(now)
        if not self._changed:
            return []
        return self._evaluate_changed(now)

    def _evaluate_changed(self, now: float) -> list[Decision]:
        decisions = []
        for series in self._changed:
            decision = series.evaluate(now)
            if decision is not None:
                decisions.append(decision)
        self._changed.clear()
        return decisions

    def tick(self, now: float) -> list[Decision]:
        """Evaluate every live series at ``now`` and forget idle ones.

        A firing series whose window ran empty resolves here; a pending one
        fires once its ``for`` has passed; a held one fires once allowed.
        Idle series (empty window, neither pending, held nor firing) are
        forgotten.
        """
        now = self._timeline.advance(now)
        self._timeline.release(now)
        decisions = self._evaluate_changed(now)
        for rule in self._rules:
            self.stats.forgotten_series += rule.tick(now, decisions)
        return decisions

    def restore(
        self,
        rule: str,
        series: str,
        labels: dict[str, str],
        *,
        since: float,
        fired_at: float,
    ) -> None:
        """Mark a series as firing since ``since`` after a restart.

        Its next breaching evaluation fires nothing; a clearing one resolves
        it. An empty window resolves it only once a whole window has passed
        since the engine's first evaluation. ``fired_at`` starts its cooldown;
        it does not count towards the daily cap (see :meth:`restore_fires`).
        """
        runtime = self._by_name.get(rule)
        if runtime is None:
            log.warning(
                "cannot restore an alert of rule %s: no such rule",
                rule,
                extra={"rule": rule, "series": series},
            )
            return
        runtime.restore(series, labels, since, fired_at)

    def restore_fires(
        self,
        rule: str,
        fired_at: Sequence[float],
        *,
        series: Sequence[str] = (),
    ) -> None:
        """Tell the engine about earlier fires of ``rule`` after a restart.

        Every fire counts towards the daily cap of its UTC day. When
        ``series`` gives the series key of each fire (same order), the fires
        also start those series' cooldowns.
        """
        runtime = self._by_name.get(rule)
        if runtime is not None:
            runtime.limits.record_all(fired_at, series)
