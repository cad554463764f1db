"""Tocsin's own alert about its Datadog export falling behind.

``tocsin.export_behind`` (warning) fires when a request of the export failed
and none has been accepted for ``health.export_intervals`` export intervals
since, or when series were dropped (given up on) within ``health.window``.
It resolves once a request is accepted and no series were dropped for a
whole window. It has no ``channel`` label: it goes to
``alerts.internal_channels``, or, with none, is stored and logged as an
ERROR line (see :mod:`tocsin.daemon.meta_alerts`).

The figures are the exporter's own counters
(:class:`~tocsin.channels.datadog_metrics.ExportStats`), read on every look.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

from tocsin.channels.health import EXPORT_BEHIND_RULE
from tocsin.clock import Clock
from tocsin.config import RuleConfig
from tocsin.rules.conditions import format_duration
from tocsin.rules.decisions import Decision
from tocsin.schema import HealthConfig
from tocsin.state.models import Alert


def export_rule(channels: Sequence[str], settings: HealthConfig) -> RuleConfig:
    """Return the built-in rule of ``tocsin.export_behind``."""
    return RuleConfig(
        name=EXPORT_BEHIND_RULE,
        metric="tocsin.export.behind",
        aggregation="last",
        op=">",
        severity="warning",
        window=settings.window,
        channels=list(channels),
        summary="The Datadog export is behind",
        description=(
            "Tocsin's Datadog export is behind: its requests fail, or series"
            " were given up on. Metrics in Datadog stop or have gaps; the"
            " alert's reason and the export's log lines tell why (an API key"
            " refused, rate limits, the network)."
        ),
    )


class ExportWatcher:
    """Decide ``tocsin.export_behind`` from the exporter's counters.

    :param stats: the exporter's ``stats``.
    :param interval: the export interval, in seconds.
    """

    def __init__(
        self, stats, interval: float, settings: HealthConfig, clock: Clock
    ) -> None:
        self.settings = settings
        self._stats = stats
        self._interval = interval
        self._clock = clock
        self._failures = stats.failures
        self._dropped = stats.dropped
        self._last_success = stats.last_success
        #: When the export started failing with no success since, or ``None``.
        self._failing_since: float | None = None
        #: ``(at, count)`` of series dropped, within the window.
        self._drops: deque[tuple[float, int]] = deque()
        self._firing = False
        #: An alert restored at start-up stays open for one window from then:
        #: the drops before the restart are not in memory.
        self._held_until = 0.0

    def restore(self, alerts: Iterable[Alert], now: float) -> None:
        """Take an open alert of an earlier run as firing."""
        if any(alert.spec.rule == EXPORT_BEHIND_RULE for alert in alerts):
            self._firing = True
            self._held_until = now + float(self.settings.window)

    def evaluate(self, now: float) -> list[Decision]:
        """Return the fire or resolve the counters call for, if any."""
        self._look(now)
        reason = self._behind(now)
        if reason and not self._firing:
            self._firing = True
            return [self._decision("fire", now, reason)]
        if self._firing and not reason and now >= self._held_until:
            self._firing = False
            return [self._decision("resolve", now, "exports accepted again")]

        return []

    def _look(self, now: float) -> None:
        """Note what changed in the counters since the last look."""
        stats = self._stats
        if stats.last_success != self._last_success:
            # A success since the last look ends a streak of failures, even
            # one counted in the same look: the export works again.
            self._last_success = stats.last_success
            self._failing_since = None
        elif stats.failures > self._failures and self._failing_since is None:
            self._failing_since = now
        self._failures = stats.failures
        if stats.dropped > self._dropped:
            self._drops.append((now, stats.dropped - self._dropped))
            self._dropped = stats.dropped
        since = now - float(self.settings.window)
        while self._drops and self._drops[0][0] < since:
            self._drops.popleft()

    def _behind(self, now: float) -> str:
        """Return why the export is behind, or ``""`` when it is not."""
        dropped = sum(count for _, count in self._drops)
        window = format_duration(float(self.settings.window))
        if dropped:
            return f"{dropped} series dropped within {window}"
        late = self._interval * self.settings.export_intervals
        if self._failing_since is not None and now - self._failing_since >= late:
            error = self._stats.last_error or "unknown"
            return (
                f"no export accepted for {format_duration(late)}, the last"
                f" error {error}"
            )

        return ""

    def _decision(self, action: str, now: float, reason: str) -> Decision:
        return Decision(
            action=action,
            rule=EXPORT_BEHIND_RULE,
            series="",
            labels={},
            value=float(sum(count for _, count in self._drops)),
            threshold=None,
            samples=0,
            at=now,
            since=now,
            reason=reason,
            severity="warning",
        )
