"""The rules engine: which rules a sample feeds, and when their series alert.

The daemon resolves each distinct (metric, labels) once with
:meth:`RuleEngine.targets`, caches the returned series, calls ``add`` on each
per sample, :meth:`RuleEngine.evaluate_dirty` after each datagram and
:meth:`RuleEngine.tick` every tick. The engine never reads a clock: every
``now`` is given, and the engine's clock is the latest of them (it never moves
backwards; a smaller ``now`` is taken as the latest one).

Rules come in three kinds: sliding windows (:mod:`tocsin.rules.series`),
tumbling bins (:mod:`tocsin.rules.tumbling`) and composites
(:mod:`tocsin.rules.composite`); they share the alert state machine of
:mod:`tocsin.rules.states` and the rate guards of :mod:`tocsin.rules.limits`.
A fire a guard holds back is counted once in :attr:`EngineStats.held_fires`,
logged (rate-limited), and goes out as soon as it is allowed if the condition
still holds.

Memory is bounded: at most ``max_series`` series per rule and overall (new
ones are refused, counted, logged and alerted on, see
:mod:`tocsin.rules.runtime`), idle series are forgotten by :meth:`tick`, and
samples stamped ahead of the clock wait in a bounded holding area. A series
the engine forgot keeps working for a caller that cached it: its next sample
registers it again (or goes to the series that took its place).

The rules can be replaced while running (:meth:`RuleEngine.reload`): a rule
whose definition did not change keeps its series, windows and alerts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import msgspec

from tocsin.config import RuleConfig
from tocsin.logs import RateLimiter
from tocsin.rules.composite import CompositeRuntime
from tocsin.rules.decisions import SERIES_LIMIT_RULE, Decision
from tocsin.rules.runtime import LIMIT_QUIET, Census, RuleRuntime
from tocsin.rules.series import EngineStats, Timeline

log = logging.getLogger(__name__)

#: Seconds between two log lines about the same rule and cause.
_LOG_INTERVAL = 60.0


class ReloadResult(NamedTuple):
    """What a reload did, by rule name."""

    kept: list[str]
    added: list[str]
    changed: list[str]
    removed: list[str]
    #: Resolves of the removed rules' firing series.
    decisions: list[Decision]


class RuleEngine:
    """Turn samples into alert decisions for a set of rules.

    :param rules: the configured rules (names must be unique).
    :param max_series: live series the engine may hold over all rules (each
        rule also has its own ``max_series``).
    :raises ValueError: if two rules share a name, a window is not positive or
        ``max_series`` is below 1.
    """

    def __init__(
        self, rules: Sequence[RuleConfig], *, max_series: int = 1_000_000
    ) -> None:
        if max_series < 1:
            raise ValueError("max_series must be at least 1")
        self.stats = EngineStats()
        self._timeline = Timeline(self.stats)
        self._census = Census(max_series)
        self._changed: list = []
        self._limiter = RateLimiter(_LOG_INTERVAL, clock=self._timeline.clock)
        self._index([self._runtime(config) for config in rules])

    def _runtime(self, config: RuleConfig, started: float | None = None):
        kind = CompositeRuntime if config.conditions else RuleRuntime
        return kind(
            config,
            changed=self._changed,
            timeline=self._timeline,
            census=self._census,
            limiter=self._limiter,
            started=started,
        )

    def _index(self, runtimes: list[RuleRuntime]) -> None:
        by_name = {rule.name: rule for rule in runtimes}
        if len(by_name) != len(runtimes):
            raise ValueError("rule names must be unique")
        by_metric: dict[str, list[RuleRuntime]] = {}
        for rule in runtimes:
            metrics = rule.metrics if isinstance(rule, CompositeRuntime) else None
            for metric in metrics or (rule.config.metric,):
                by_metric.setdefault(metric, []).append(rule)
        self._rules = runtimes
        self._tumbling = tuple(rule for rule in runtimes if rule.tumbling)
        self._by_name = by_name
        self._by_metric = {metric: tuple(found) for metric, found in by_metric.items()}

    @property
    def series_count(self) -> int:
        """Return the number of live series over all rules."""
        return sum(len(rule.series) for rule in self._rules)

    @property
    def refused_series(self) -> dict[str, int]:
        """Return, per rule that refused any, how many new series it refused."""
        return {rule.name: rule.refused for rule in self._rules if rule.refused}

    def series_by_rule(self) -> dict[str, int]:
        """Return the number of live series of every rule, by rule name."""
        return {rule.name: len(rule.series) for rule in self._rules}

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

    def rule(self, name: str) -> RuleRuntime:
        """Return the running rule ``name``.

        :raises KeyError: if there is none.
        """
        return self._by_name[name]

    def targets(self, metric: str, labels: Mapping[str, str]) -> list:
        """Return the series a sample of ``metric`` with ``labels`` feeds.

        One per rule on ``metric`` whose matchers all equal a label (a
        composite rule gives one per side on ``metric``); a ``group_by`` label
        missing from ``labels`` counts as ``""``. Series are created on
        demand; a rule at its series limit contributes none.
        """
        rules = self._by_metric.get(metric)
        if rules is None:
            return []
        found: list = []
        for rule in rules:
            rule.targets_for(metric, labels, found)
        return found

    def evaluate_dirty(self, now: float) -> list[Decision]:
        """Evaluate the series that got samples since the last evaluation.

        Bins of tumbling rules that the clock has passed are sealed here too,
        as a tick would (forgetting those rules' idle series).
        """
        now = self._timeline.advance(now)
        decisions = self._seal(now)
        self._timeline.release(now)
        if self._changed or self._census.decisions:
            self._evaluate_changed(now, decisions)
        return decisions

    def _seal(self, now: float) -> list[Decision]:
        """Seal every bin of a tumbling rule that ``now`` has passed.

        Done as soon as the clock moves, before the samples it reached are
        handed over: a tumbling series holds only the bins the clock has not
        sealed, and a sample for a sealed bin is late, whether or not a tick
        has come since.
        """
        decisions: list[Decision] = []
        for rule in self._tumbling:
            if rule.has_bins_to_seal(now):
                self.stats.forgotten_series += rule.tick(now, decisions)
        return decisions

    def _evaluate_changed(self, now: float, decisions: list[Decision]) -> None:
        if self._census.decisions:
            decisions.extend(self._census.decisions)
            self._census.decisions.clear()
        self.stats.evaluations += len(self._changed)
        for series in self._changed:
            series.evaluate(now, decisions)
        self._changed.clear()

    def tick(self, now: float) -> list[Decision]:
        """Evaluate every live series at ``now`` and forget idle ones.

        A firing series whose window ran empty resolves here; a pending one
        fires once its ``for`` has passed; a held one fires once allowed; a
        tumbling rule's bins seal; silent series meet their no-data policy.
        Idle series (empty window, neither pending, held nor firing) are
        forgotten.
        """
        now = self._timeline.advance(now)
        decisions = self._seal(now)
        self._timeline.release(now)
        self._evaluate_changed(now, decisions)
        for rule in self._rules:
            self.stats.evaluations += len(rule.series)
            self.stats.forgotten_series += rule.tick(now, decisions)
        census = self._census
        quiet = now - census.refused_at >= LIMIT_QUIET
        if census.alerted and quiet and census.live < census.limit:
            census.alerted = False
            decisions.append(
                census.limit_decision(
                    "resolve", {"scope": "all"}, census.live, census.limit, now
                )
            )
        return decisions

    def restore(
        self,
        rule: str,
        series: str,
        labels: dict[str, str],
        *,
        since: float,
        fired_at: float,
        severity: str = "",
    ) -> None:
        """Mark a series as firing at ``severity`` since ``since`` after a restart.

        Its next breaching evaluation fires nothing; a clearing one resolves
        it. An empty window resolves it only once a whole window has passed
        since the engine's first evaluation (for a tumbling rule, once the
        first bin seen whole is sealed). ``fired_at`` starts its cooldown;
        it does not count towards the daily cap (see :meth:`restore_fires`).
        """
        if rule == SERIES_LIMIT_RULE:
            self._restore_limit_alert(labels, since)
            return
        runtime = self._by_name.get(rule)
        if runtime is None:
            log.warning(
                "cannot restore an alert of rule %s: no such rule",
                rule,
                extra={"rule": rule, "series": series},
            )
            return
        runtime.restore(series, labels, since, fired_at, severity)

    def _restore_limit_alert(self, labels: dict[str, str], since: float) -> None:
        """Take over an open series-limit alert: it resolves once quiet."""
        census = self._census
        if labels.get("scope") == "all":
            census.alerted = True
            census.refused_at = max(census.refused_at, since)
            return
        name = labels.get("rule", "")
        runtime = self._by_name.get(name)
        if runtime is not None:
            runtime.limit_alerted = True
            runtime.refused_at = max(runtime.refused_at, since)
        else:
            # The rule is gone: nothing can refuse series for it any more.
            census.decisions.append(
                census.limit_decision("resolve", {"rule": name}, 0, 0, since)
            )

    def restore_fires(
        self,
        rule: str,
        fired_at: Sequence[float],
        *,
        series: Sequence[str] = (),
    ) -> None:
        """Tell the engine about earlier fires of ``rule`` after a restart.

        Every fire counts towards the daily and window caps. When ``series``
        gives the series key of each fire (same order), the fires also start
        those series' cooldowns.
        """
        runtime = self._by_name.get(rule)
        if runtime is not None:
            runtime.limits.record_all(fired_at, series)

    def reload(
        self, rules: Sequence[RuleConfig], now: float, *, max_series: int
    ) -> ReloadResult:
        """Replace the rules with ``rules``, keeping what did not change.

        A rule whose definition is unchanged keeps its runtime: windows,
        states, alerts, cooldowns and caps. A changed rule starts new windows,
        but its firing series stay open alerts (restored as after a restart,
        with a grace of one window from now), and its rate guards keep their
        counts when they are configured as before. A removed rule's firing
        series resolve, saying so. Nothing fires at a reload.

        :raises ValueError: as the constructor does; nothing changes then.
        """
        if max_series < 1:
            raise ValueError("max_series must be at least 1")
        if len({config.name for config in rules}) != len(rules):
            raise ValueError("rule names must be unique")
        now = self._timeline.advance(now)
        old = self._by_name
        runtimes = []
        kept, added, changed = [], [], []
        for config in rules:
            runtime = old.get(config.name)
            if runtime is not None and runtime.config == config:
                kept.append(config.name)
                runtimes.append(runtime)
                continue
            fresh = self._runtime(config, started=now)
            if runtime is None:
                added.append(config.name)
            else:
                changed.append(config.name)
                _carry_over(runtime, fresh)
            runtimes.append(fresh)

        names = {config.name for config in rules}
        removed = [name for name in old if name not in names]
        decisions: list[Decision] = []
        for name in removed:
            decisions.extend(_resolve_all(old[name], now))
            if old[name].limit_alerted:
                # Nothing can refuse series for a rule that is gone, so its
                # series-limit alert would stay open until the next start.
                limit = self._census.limit_decision(
                    "resolve", {"rule": name}, 0, 0, now
                )
                reason = f"rule {name!r} removed from the configuration"
                decisions.append(msgspec.structs.replace(limit, reason=reason))
        for name in removed + changed:
            old[name].retire()
        leaving = {id(old[name]) for name in removed + changed}
        self._changed[:] = [s for s in self._changed if id(s._rule) not in leaving]
        self._census.limit = max_series
        self._index(runtimes)
        return ReloadResult(kept, added, changed, removed, decisions)


def _carry_over(old: RuleRuntime, new: RuleRuntime) -> None:
    """Keep the open alerts and rate guards of a rule whose definition changed."""
    for series in old.series.values():
        if series.is_firing:
            new.restore(series.key, series.labels, series.since, None, series.severity)
    if _guards(old.config) == _guards(new.config):
        new.limits = old.limits
    # An open series-limit alert stays the rule's, to resolve once it is quiet
    # and has room under its new limit.
    new.limit_alerted = old.limit_alerted
    new.refused_at = old.refused_at


def _guards(config: RuleConfig) -> tuple:
    return (
        config.cooldown,
        config.daily_cap,
        config.daily_cap_period,
        config.window_cap,
        config.window,
    )


def _resolve_all(rule: RuleRuntime, now: float) -> list[Decision]:
    """Return resolves of every firing series of a rule leaving the engine."""
    reason = f"rule {rule.name!r} removed from the configuration"
    return [
        rule.resolve(series, now, None, 0.0, reason=reason)
        for series in rule.series.values()
        if series.is_firing
    ]
