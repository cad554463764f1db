"""Tocsin's own metrics, as Prometheus text at ``GET /metrics``.

Nothing is counted for them: at scrape time the collector reads the counters
the running parts already keep (the listeners' :class:`IngestStats`, the
engine's, the dispatcher's, the export's), so ingest pays nothing for them.
What only the state database knows, the alerts by state and the outbox's
depth, is read once per scrape through partial indexes that hold open alerts,
resolved alerts and pending notifications alone: closed alerts, the bulk of
the table, are never scanned, and are not counted.

Each daemon has a registry of its own, with the process collector (CPU,
memory, file descriptors), so several daemons in one process never collide.
The Datadog export can send the same figures
(:mod:`tocsin.daemon.self_metrics_export`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import SimpleNamespace

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from tocsin import __version__
from tocsin.clock import Clock
from tocsin.daemon.ingest import IngestStats
from tocsin.daemon.loop_lag import LoopLag

#: The content type of a scrape: Prometheus's text format 0.0.4.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

#: Open alerts and resolved ones by state; each query is served by a partial
#: index (``alerts_open_series``, ``alerts_resolved``), not a table scan.
_OPEN_BY_STATE = (
    "SELECT state, COUNT(*) FROM alerts"
    " WHERE state NOT IN ('resolved', 'closed') GROUP BY state"
)
_RESOLVED = "SELECT COUNT(*) FROM alerts WHERE state = 'resolved'"

#: The alert states counted, in the order they are shown.
ALERT_STATES = ("triggered", "acknowledged", "investigating", "escalated", "resolved")

#: Samples a listener left out, by the counter of :class:`IngestStats`.
_INGEST_DROPS = {"non_finite": "non_finite", "too_old": "too_old", "too_new": "too_new"}

#: Samples the rules left out, by the counter of the engine's stats.
_RULE_DROPS = {
    "late_samples": "late",
    "future_samples": "future",
    "non_finite_samples": "non_finite",
}


class SelfMetrics:
    """The metrics of one daemon, and its registry.

    :param parts: the daemon's running parts (``Daemon.parts``); any may be
        missing, and its figures are left out then.
    :param stats: the counters of each ingest listener, by listener name.
    :param loop_lag: the event loop's lag monitor.
    :param started_at: wall-clock time the daemon started.
    """

    def __init__(
        self,
        parts: SimpleNamespace,
        stats: Mapping[str, IngestStats],
        *,
        clock: Clock,
        loop_lag: LoopLag,
        started_at: float,
    ) -> None:
        self.parts = parts
        self.stats = stats
        self.clock = clock
        self.loop_lag = loop_lag
        self.started_at = started_at
        #: Read from the state database by :meth:`read_state`.
        self._alerts: dict[str, int] = {}
        self._pending: dict[str, int] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        self.registry.register(self)

    async def scrape(self) -> bytes:
        """Read what the state database knows, then render every metric.

        :raises StateError: if the database cannot be read.
        """
        await self.read_state()
        return generate_latest(self.registry)

    async def read_state(self) -> None:
        """Read the alerts by state and the outbox's depth from the database.

        :raises StateError: if the database cannot be read.
        """
        database = getattr(self.parts, "database", None)
        if database is None:
            return

        alerts = dict.fromkeys(ALERT_STATES, 0)
        alerts.update(await database.fetchall(_OPEN_BY_STATE))
        [(alerts["resolved"],)] = await database.fetchall(_RESOLVED)
        self._alerts = alerts
        outbox = getattr(self.parts, "outbox", None)
        if outbox is not None:
            self._pending = await outbox.pending_channels()

    def collect(self) -> Iterator[Metric]:
        """Yield every metric of Tocsin's own (the registry's collector)."""
        info = GaugeMetricFamily(
            "tocsin_build_info", "Tocsin's version; always 1.", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info
        yield GaugeMetricFamily(
            "tocsin_start_time_seconds",
            "Unix time the daemon started.",
            value=self.started_at,
        )
        yield from self._ingest()
        yield from self._rules()
        yield from self._alerts_and_notifications()
        yield from self._export()
        yield from self._loop()
        yield from self._reloads_and_state()

    def _ingest(self) -> Iterator[Metric]:
        samples = _counter(
            "tocsin_ingest_samples", "Samples parsed, by listener.", ["listener"]
        )
        datagrams = _counter(
            "tocsin_ingest_datagrams",
            "Datagrams received (datagram listeners), by listener.",
            ["listener"],
        )
        errors = _counter(
            "tocsin_ingest_parse_errors",
            "Lines that could not be parsed, by listener and reason.",
            ["listener", "reason"],
        )
        dropped = _counter(
            "tocsin_ingest_samples_dropped",
            "Parsed samples a listener left out, by listener and reason.",
            ["listener", "reason"],
        )
        for listener, stats in sorted(self.stats.items()):
            samples.add_metric([listener], stats.samples)
            datagrams.add_metric([listener], stats.datagrams)
            for reason, count in sorted(stats.errors_by_reason.items()):
                errors.add_metric([listener, reason], count)
            for field, reason in _INGEST_DROPS.items():
                dropped.add_metric([listener, reason], getattr(stats, field))
        closed = _counter(
            "tocsin_ingest_closed",
            "Datagrams and connections a listener dropped or closed, by reason.",
            ["listener", "reason"],
        )
        for listener in getattr(self.parts, "listeners", ()):
            for reason, count in sorted(listener.counters().items()):
                closed.add_metric([listener.name, reason], count)
        yield from (samples, datagrams, errors, dropped, closed)

    def _rules(self) -> Iterator[Metric]:
        engine = getattr(self.parts, "engine", None)
        if engine is None:
            return

        stats = engine.stats
        dropped = _counter(
            "tocsin_rule_samples_dropped",
            "Samples the rules left out, by reason.",
            ["reason"],
        )
        for field, reason in _RULE_DROPS.items():
            dropped.add_metric([reason], getattr(stats, field))
        series = GaugeMetricFamily(
            "tocsin_rule_series", "Live series, by rule.", labels=["rule"]
        )
        for rule, count in sorted(engine.series_by_rule().items()):
            series.add_metric([rule], count)
        refused = _counter(
            "tocsin_rule_series_refused",
            "New series refused at a series limit, by rule.",
            ["rule"],
        )
        for rule, count in sorted(engine.refused_series.items()):
            refused.add_metric([rule], count)
        yield from (dropped, series, refused)
        yield _counter(
            "tocsin_rule_series_forgotten",
            "Idle series forgotten.",
            value=stats.forgotten_series,
        )
        yield _counter(
            "tocsin_rule_evaluations",
            "Series evaluated, after samples arrived or on a tick.",
            value=stats.evaluations,
        )
        yield _counter(
            "tocsin_rule_held_fires",
            "Fires a rate guard held back.",
            value=stats.held_fires,
        )

    def _alerts_and_notifications(self) -> Iterator[Metric]:
        if self._alerts:
            alerts = GaugeMetricFamily(
                "tocsin_alerts",
                "Alerts by state, closed ones left out.",
                labels=["state"],
            )
            for state, count in self._alerts.items():
                alerts.add_metric([state], count)
            yield alerts
        pipeline = getattr(self.parts, "pipeline", None)
        if pipeline is not None:
            yield _counter(
                "tocsin_alerts_fired", "Alerts the rules fired.", value=pipeline.fired
            )
            yield _counter(
                "tocsin_alerts_resolved",
                "Alerts the rules resolved.",
                value=pipeline.resolved,
            )
        dispatcher = getattr(self.parts, "dispatcher", None)
        if dispatcher is not None:
            notifications = _counter(
                "tocsin_notifications",
                "Delivery outcomes, by channel and outcome.",
                ["channel", "outcome"],
            )
            for (channel, outcome), count in sorted(dispatcher.outcomes.items()):
                notifications.add_metric([channel, outcome], count)
            yield notifications
        pending = GaugeMetricFamily(
            "tocsin_outbox_pending_notifications",
            "Notifications waiting for delivery, by channel.",
            labels=["channel"],
        )
        # A channel with nothing pending has no row to count, yet shows 0.
        names = getattr(dispatcher, "channel_names", ())
        depths = {**dict.fromkeys(names, 0), **self._pending}
        for channel, count in sorted(depths.items()):
            pending.add_metric([channel], count)
        yield pending

    def _export(self) -> Iterator[Metric]:
        exporter = getattr(self.parts, "exporter", None)
        if exporter is None:
            return

        stats = exporter.stats
        # Never exported: behind since the start.
        since = self.started_at if stats.last_success is None else stats.last_success
        behind = self.clock.time() - since
        yield GaugeMetricFamily(
            "tocsin_datadog_export_lag_seconds",
            "Seconds since the last export Datadog accepted (since start if none).",
            value=max(0.0, behind),
        )
        buffer = getattr(self.parts, "export_buffer", None)
        if buffer is not None:
            yield GaugeMetricFamily(
                "tocsin_datadog_export_buffered_series",
                "Series aggregated for the next export.",
                value=len(buffer),
            )
        yield _counter(
            "tocsin_datadog_export_requests",
            "Export requests made, retries included.",
            value=stats.requests,
        )
        yield _counter(
            "tocsin_datadog_export_failures",
            "Export requests that failed, retried or not.",
            value=stats.failures,
        )
        yield _counter(
            "tocsin_datadog_export_points",
            "Points Datadog accepted.",
            value=stats.points_sent,
        )
        yield _counter(
            "tocsin_datadog_export_series_dropped",
            "Series given up on.",
            value=stats.dropped,
        )

    def _loop(self) -> Iterator[Metric]:
        lag = self.loop_lag
        yield GaugeMetricFamily(
            "tocsin_event_loop_lag_last_seconds",
            "How late the event loop ran its last periodic check.",
            value=lag.last,
        )
        yield GaugeMetricFamily(
            "tocsin_event_loop_lag_max_seconds",
            "The largest event loop lag since start.",
            value=lag.max,
        )
        histogram = HistogramMetricFamily(
            "tocsin_event_loop_lag_seconds",
            "How late the event loop ran its periodic checks.",
        )
        histogram.add_metric([], lag.cumulative(), sum_value=lag.sum)
        yield histogram

    def _reloads_and_state(self) -> Iterator[Metric]:
        reloader = getattr(self.parts, "reloader", None)
        if reloader is not None:
            reloads = _counter(
                "tocsin_config_reloads",
                "Config reloads, by outcome (applied or refused).",
                ["outcome"],
            )
            reloads.add_metric(["applied"], reloader.applied)
            reloads.add_metric(["refused"], reloader.refused)
            yield reloads
        database = getattr(self.parts, "database", None)
        if database is not None:
            yield _counter(
                "tocsin_state_transactions",
                "Write transactions of the state database.",
                value=database.transactions,
            )
            yield _counter(
                "tocsin_state_errors",
                "Errors of the state database: failed statements, a file replaced.",
                value=database.errors,
            )
            yield _counter(
                "tocsin_state_locked",
                "Writes refused because another process held the database.",
                value=database.locked,
            )


def _counter(
    name: str,
    documentation: str,
    labels: list[str] | None = None,
    *,
    value: float | None = None,
) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value, labels=labels)
