"""One configured rule as the engine runs it: its series, tests and guards.

A rule's series are created on demand, one per distinct value of its
``group_by`` labels, up to the rule's ``max_series`` and the engine's overall
limit. Series beyond either limit are refused: counted, logged at most once a
minute, and reported by Tocsin's own alert :data:`SERIES_LIMIT_RULE`, which
resolves once the rule has refused nothing for :data:`LIMIT_QUIET` seconds
and has room again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, time, timedelta
from math import floor

from tocsin.config import RuleConfig
from tocsin.logs import RateLimiter
from tocsin.rules.conditions import fire_reason, format_number, resolve_reason, subject
from tocsin.rules.decisions import SERIES_LIMIT_RULE, Decision
from tocsin.rules.flapping import FlapDetector
from tocsin.rules.history import Relative
from tocsin.rules.levels import Levels
from tocsin.rules.limits import FireLimits
from tocsin.rules.series import RuleSeries, Timeline
from tocsin.rules.tumbling import TumblingSeries, open_bins
from tocsin.rules.windows import AGGREGATIONS, BINS, QUANTILES, Window

log = logging.getLogger(__name__)

#: Seconds without a refused series before a series-limit alert resolves.
LIMIT_QUIET = 300.0


def _escape(text: str) -> str:
    """Return ``text`` with the characters that delimit series keys escaped."""
    if "\\" in text or "," in text or "=" in text:
        text = text.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")
    return text


def key_of(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    """Return the series key for ``group_by`` label names and values.

    ``name=value`` pairs joined by commas, with ``\\``, ``,`` and ``=``
    escaped by a backslash inside names and values, so two different sets of
    labels never share a key (and so never share an alert).
    """
    pairs = zip(names, values, strict=True)
    return ",".join([f"{_escape(name)}={_escape(value)}" for name, value in pairs])


class Census:
    """The engine-wide count of live series, its limit and its alert."""

    __slots__ = ("live", "limit", "alerted", "refused_at", "decisions")

    def __init__(self, limit: int) -> None:
        self.live = 0
        self.limit = limit
        #: Whether the engine-wide series-limit alert is open.
        self.alerted = False
        self.refused_at = 0.0
        #: Series-limit decisions not yet handed out.
        self.decisions: list[Decision] = []

    def limit_decision(
        self, action: str, scope: dict[str, str], live: int, limit: int, now: float
    ) -> Decision:
        """Return a fire or resolve of the series-limit alert of ``scope``."""
        ((name, value),) = scope.items()
        if action == "fire":
            reason = f"{live} live series, the limit of {limit}: new series refused"
        else:
            reason = f"no series refused for {format_number(LIMIT_QUIET)}s"
        return Decision(
            action=action,
            rule=SERIES_LIMIT_RULE,
            series=key_of((name,), (value,)),
            labels=dict(scope),
            value=float(live),
            threshold=float(limit),
            samples=0,
            at=now,
            since=now,
            reason=reason,
            severity="warning",
        )


class RuleRuntime:
    """A plain or tumbling rule: its series and what they share."""

    def __init__(
        self,
        config: RuleConfig,
        *,
        changed: list,
        timeline: Timeline,
        census: Census,
        limiter: RateLimiter,
        started: float | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.match = tuple(config.match.items())
        self.group_by = tuple(config.group_by)
        self.relative = None
        self.tumbling = False
        self.delay = 0.0
        self.open_bins = 0
        self._init_signal(config)
        self.pending = float(config.for_)
        self.keep_firing_for = float(config.keep_firing_for)
        self.min_samples = config.min_samples
        self.limits = FireLimits(
            float(config.cooldown),
            config.daily_cap,
            period=config.daily_cap_period,
            window=self.window,
            window_cap=config.window_cap,
        )
        no_data = config.no_data
        active = no_data is not None and no_data.action != "ignore"
        #: How long a silent series waits for its no-data policy, if it has one.
        self.silence_after = float(no_data.after) if active else None
        self.silence_action = no_data.action if active else "ignore"
        #: Whether an idle series may be forgotten: not when its silence
        #: itself is what the rule alerts on.
        self.forgettable = self.silence_action != "alert"
        flapping = config.flapping
        self.flap = (
            None
            if flapping is None
            else FlapDetector(flapping.history, flapping.low, flapping.high)
        )
        #: Whether a quiet series that does not breach has nothing to
        #: record: no flap history, no silence to time, no past to keep.
        self.plain = (
            self.flap is None and self.silence_after is None and self.relative is None
        )
        #: The lowest level's test, which any level's breach implies.
        self.entry = self.levels.holds[0]
        #: The top level, and the test an alert at it must pass to stay.
        self.top = self.levels.top
        self.keep = self.levels.stays[-1]
        self.series: dict[tuple[str, ...], object] = {}
        #: The engine's queue of series that got samples since the last
        #: evaluation (shared by every rule).
        self.changed = changed
        self.timeline = timeline
        self.census = census
        self.max_series = config.max_series
        self.refused = 0
        self.refused_at = 0.0
        #: Whether this rule's series-limit alert is open.
        self.limit_alerted = False
        #: Series whose state time alone can change (see AlertMachine.is_watched).
        self.watch: set = set()
        self._started = started
        self._ticked: int | None = None
        self._next_silence_check = 0.0
        self._limiter = limiter

    def _init_signal(self, config: RuleConfig) -> None:
        """Set what the rule measures, how, and how it compares."""
        if not config.window > 0:
            raise ValueError(f"rule {config.name!r}: window must be longer than 0s")
        self.window = float(config.window)
        self.tumbling = config.tumbling
        self.delay = float(config.delay)
        #: Bin width; one float object shared by every series of the rule.
        self.width = self.window if self.tumbling else self.window / BINS
        self._init_measure(config.aggregation)
        if config.compare is not None:
            compare = config.compare
            steps = compare.bins or round(compare.ago / self.width)
            self.relative = Relative(compare.kind, steps, compare.min_history)
        numbers = self.tumbling or self.relative is not None
        self.levels = Levels(
            config.op,
            config.levels,
            None if numbers else self.measure,
            quantile=self.quantiles,
            optional=config.aggregation == "rate",
        )
        self.subject = self._subject()
        self.series_class = TumblingSeries if self.tumbling else RuleSeries
        if self.tumbling:
            self.open_bins = open_bins(self.width, self.delay)
            self.sweeps_all = True

    def _init_measure(self, aggregation: str) -> None:
        self.quantiles = aggregation in QUANTILES
        self.extremes = aggregation in ("min", "max")
        self.spread = aggregation == "stddev"
        self.trend = aggregation in ("delta", "rate")
        self.measure = AGGREGATIONS[aggregation]

    def _subject(self) -> str:
        config = self.config
        what = subject(config.aggregation, config.metric, self.window)
        if self.tumbling:
            what = what.replace(" over ", " per ", 1) + " bin"
        if self.relative is not None:
            what = f"{what}, {self.relative.describe()}"
        return what

    @property
    def started(self) -> float:
        """Return when the rule started: the engine's start, or its reload."""
        if self._started is not None:
            return self._started
        started = self.timeline.started
        return 0.0 if started is None else started

    def key_of(self, values: tuple[str, ...]) -> str:
        """Return the series key for ``group_by`` label values."""
        return key_of(self.group_by, values)

    def sealed_bin(self, now: float | None = None) -> int | None:
        """Return the newest bin a tumbling rule has sealed at ``now`` (the
        engine's clock by default), ``None`` without a clock."""
        if now is None:
            now = self.timeline.now
            if now is None:
                return None
        return floor((now - self.delay) / self.width) - 1

    def has_bins_to_seal(self, now: float) -> bool:
        """Return whether ``now`` seals a bin of a tumbling rule that its
        last :meth:`tick` did not."""
        return self.sealed_bin(now) != self._ticked

    def new_bin(self, at: int) -> Window:
        """Return an empty one-bin window for bin ``at`` of a tumbling rule."""
        window = Window(
            self.width,
            1,
            extremes=self.extremes,
            sketches=self.quantiles,
            spread=self.spread,
            trend=self.trend,
        )
        window.advance(at)
        return window

    # -- series ---------------------------------------------------------------

    def targets_for(self, metric: str, labels: Mapping[str, str], found: list) -> None:
        """Append the series a sample of ``metric`` with ``labels`` feeds."""
        series = self.series_for(labels)
        if series is not None:
            found.append(series)

    def series_for(self, labels: Mapping[str, str]):
        """Return the series a sample with ``labels`` feeds, creating it.

        :return: ``None`` if the matchers refuse the labels or a limit is reached.
        """
        for name, wanted in self.match:
            if labels.get(name) != wanted:
                return None
        values = tuple([labels.get(name, "") for name in self.group_by])
        series = self.series.get(values)
        if series is None and self._has_room():
            series = self.series[values] = self.series_class(self, values)
            self.census.live += 1
        return series

    def _has_room(self) -> bool:
        census = self.census
        if len(self.series) < self.max_series and census.live < census.limit:
            return True
        self._refuse(engine_wide=len(self.series) < self.max_series)
        return False

    def _refuse(self, *, engine_wide: bool) -> None:
        timeline = self.timeline
        now = timeline.clock()
        self.refused += 1
        self.refused_at = now
        timeline.stats.refused_series += 1
        census = self.census
        if engine_wide:
            census.refused_at = now
            if not census.alerted:
                census.alerted = True
                census.decisions.append(
                    census.limit_decision(
                        "fire", {"scope": "all"}, census.live, census.limit, now
                    )
                )
        elif not self.limit_alerted:
            self.limit_alerted = True
            census.decisions.append(
                census.limit_decision(
                    "fire", {"rule": self.name}, len(self.series), self.max_series, now
                )
            )
        allowed, suppressed = self._limiter.allow(f"refused:{self.name}")
        if allowed:
            limit = census.limit if engine_wide else self.max_series
            where = "all rules have" if engine_wide else f"rule {self.name} has"
            # WARNING: samples of the refused series are ignored until idle
            # series are forgotten.
            log.warning(
                "%s %d series, the limit; new series are refused",
                where,
                limit,
                extra={
                    "rule": self.name,
                    "series_count": len(self.series),
                    "count": self.refused,
                    "suppressed": suppressed,
                },
            )

    def reattach(self, series):
        """Return the live series for a forgotten one, registering it again."""
        values = series.values
        live = self.series.get(values)
        if live is not None:
            return live
        if self.retired or not self._has_room():
            return None
        series.place()
        self.series[values] = series
        self.census.live += 1
        return series

    #: Set once the rule has left the engine (reload); its series stay dead.
    retired = False
    #: Whether every series is evaluated each time a bin passes, rather than
    #: those whose window has not moved on yet.
    sweeps_all = False

    def restore(
        self,
        key: str,
        labels: dict[str, str],
        since: float,
        fired_at: float | None,
        severity: str = "",
    ) -> None:
        """Mark a series firing; restores may exceed the series limits."""
        values = tuple([labels.get(name, "") for name in self.group_by])
        series = self.series.get(values)
        if series is None:
            series = self.series[values] = self.series_class(self, values)
            self.census.live += 1
        series.restore(key, labels, since, severity)
        if fired_at is not None:
            self.limits.cooled(key, fired_at)

    # -- decisions ------------------------------------------------------------

    def hold(self, series, blocker: str) -> None:
        """Count and log a fire that ``blocker`` holds back."""
        self.timeline.stats.held_fires += 1
        allowed, suppressed = self._limiter.allow(f"held:{self.name}:{blocker}")
        if allowed:
            # WARNING: an alert someone expects is not being sent.
            log.warning(
                "alert of rule %s held back by its %s",
                self.name,
                blocker.replace("_", " "),
                extra={
                    "rule": self.name,
                    "series": series.key,
                    "reason": blocker,
                    "suppressed": suppressed,
                },
            )

    def value_of(self, reading: object) -> float | None:
        """Return the value a reading reports."""
        if reading is None or isinstance(reading, float):
            return reading
        return reading.value

    def what(self, series) -> str:
        """Return what the rule measured for ``series``: its subject, and for
        a tumbling rule the bin, e.g. ``avg(x) per 1h bin 2026-12-04 07:00–08:00
        UTC``."""
        if not self.tumbling:
            return self.subject
        start = datetime.fromtimestamp(series.head * self.width, UTC)
        end = start + timedelta(seconds=self.width)
        if self.width % 86400 == 0:
            span = (
                f"{start:%Y-%m-%d}"
                if self.width == 86400
                else (f"{start:%Y-%m-%d}–{end - timedelta(days=1):%Y-%m-%d}")
            )
        elif start.date() == end.date() or end.time() == time(0):
            span = f"{start:%Y-%m-%d %H:%M}–{end:%H:%M} UTC"
        else:
            span = f"{start:%Y-%m-%d %H:%M}–{end:%Y-%m-%d %H:%M} UTC"
        return self.subject.replace(" bin", f" bin {span}", 1)

    def explain(
        self, what: str, value: float | None, level: int, pending: float = 0.0
    ) -> str:
        """Say why ``value`` of ``what`` breaches ``level`` (and has for
        ``pending``)."""
        if value is None:
            return f"{what}: no value"
        bound = self.levels.bounds[level - 1]
        return fire_reason(what, value, self.config.op, bound, pending)

    def fire(self, series, now, reading, level, reason=None) -> Decision:
        """Record a fire of ``series`` at ``level`` and return its decision."""
        self.limits.record(series.key, now)
        value = self.value_of(reading)
        if reason is None:
            reason = self.explain(self.what(series), value, level, self.pending)
            if self.min_samples > 1:
                # The guard matters to whoever reads the alert: the value
                # stands on this many samples, and fewer would not fire.
                reason += f" ({series.count} samples, min_samples {self.min_samples})"
        if series.is_flapping:
            reason += " (flapping)"
        return self._decision("fire", series, value, now, reason, level)

    def change(self, series, now, reading, old: int, new: int, note: str) -> Decision:
        """Return the decision moving a firing ``series`` from level ``old`` to
        ``new``."""
        value = self.value_of(reading)
        levels = self.levels
        verb = "raised" if new > old else "lowered"
        reason = (
            f"{self.explain(self.what(series), value, new)}: severity {verb} from"
            f" {levels.name(old)} to {levels.name(new)}"
        )
        if note:
            reason += f" ({note})"
        return self._decision("severity", series, value, now, reason, new)

    def resolve(self, series, now, reading, kept_for, note="", reason=None) -> Decision:
        """Return the resolve decision of ``series``.

        :param kept_for: how long the series was kept firing after it cleared.
        """
        value = self.value_of(reading)
        if reason is None:
            reason = self.explain_clear(series, value, kept_for)
        if note:
            reason += f" ({note})"
        return self._decision("resolve", series, value, now, reason, 0)

    def explain_clear(self, series, value, kept_for: float) -> str:
        """Say why a firing series no longer breaches."""
        return resolve_reason(
            self.what(series),
            value,
            self.config.op,
            self.levels.recoveries[0],
            samples=series.count,
            min_samples=self.min_samples,
            kept_for=kept_for,
        )

    def note(self, series, now, action: str, reason: str) -> Decision:
        """Return a ``flapping`` or ``settled`` decision for a firing series."""
        value = series.value
        return self._decision(action, series, value, now, reason, series._level)

    def _decision(self, action, series, value, now, reason, level) -> Decision:
        key = series.key
        log.debug(
            "rule %s series %r: %s (%s)",
            self.name,
            key,
            action,
            reason,
            extra={"rule": self.name, "series": key},
        )
        levels = self.levels
        return Decision(
            action=action,
            rule=self.name,
            series=key,
            labels=series.labels,
            value=value,
            threshold=levels.thresholds[level - 1] if level else levels.thresholds[0],
            samples=series.count,
            at=now,
            since=now if series.since is None else series.since,
            reason=reason,
            severity=levels.name(level) if level else "",
        )

    # -- time -----------------------------------------------------------------

    def tick(self, now: float, decisions: list[Decision]) -> int:
        """Evaluate every series that may have changed, forget idle ones.

        Within one bin only watched series can change (and, for a rule with
        a no-data policy, silent ones, checked ten times per ``after``); once
        per bin every series is visited.

        :return: how many series were forgotten.
        """
        at = self.sealed_bin(now) if self.tumbling else floor(now / self.width)
        silence = self.silence_after is not None and now >= self._next_silence_check
        if at == self._ticked and not silence:
            for series in list(self.watch):
                series.evaluate(now, decisions)
            # A tumbling rule's bin may last a day: its limit alert's quiet
            # time runs by the clock, not by bins.
            self._quiet_limit_alert(now, decisions)
            return 0

        if silence:
            self._next_silence_check = now + min(self.silence_after / 10, self.width)
        self._ticked = at
        idle = []
        # A tumbling series changes when a bin seals, whatever its head.
        sweep_all = self.sweeps_all or silence
        for values, series in self.series.items():
            if sweep_all or series.head < at or series.is_watched:
                series.evaluate(now, decisions)
            if series.is_idle:
                idle.append(values)
        for values in idle:
            self.series.pop(values).detach()
        self.census.live -= len(idle)
        self.limits.forget(now)
        self._quiet_limit_alert(now, decisions)
        return len(idle)

    def _quiet_limit_alert(self, now: float, decisions: list[Decision]) -> None:
        if (
            self.limit_alerted
            and now - self.refused_at >= LIMIT_QUIET
            and len(self.series) < self.max_series
        ):
            self.limit_alerted = False
            decisions.append(
                self.census.limit_decision(
                    "resolve",
                    {"rule": self.name},
                    len(self.series),
                    self.max_series,
                    now,
                )
            )

    def retire(self) -> None:
        """Leave the engine: forget every series, which then stays dead."""
        self.retired = True
        for series in self.series.values():
            series.detach()
        self.census.live -= len(self.series)
        self.series.clear()
        self.watch.clear()
