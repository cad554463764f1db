"""The self-metrics collector on a daemon-like object: what each counter of
the running parts becomes, and the alerts read from a real state database."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tocsin import __version__
from tocsin.clock import ManualClock
from tocsin.daemon.ingest import IngestStats
from tocsin.daemon.loop_lag import BUCKETS, LoopLag
from tocsin.daemon.self_metrics import SelfMetrics
from tocsin.rules.series import EngineStats
from tocsin.state.db import Database
from tocsin.state.outbox import Outbox

START = 1_750_000_000.0


def values(text: bytes) -> dict[tuple[str, frozenset], float]:
    """Return every sample of a scrape by (name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


class Listener:
    def __init__(self, name: str, counters: dict[str, int]) -> None:
        self.name = name
        self._counters = counters

    def counters(self) -> dict[str, int]:
        return self._counters


class Engine:
    def __init__(self) -> None:
        self.stats = EngineStats()
        self.refused_series = {"latency": 2}

    def series_by_rule(self) -> dict[str, int]:
        return {"latency": 3, "drift": 0}


def running_parts() -> tuple[SimpleNamespace, dict[str, IngestStats]]:
    udp = IngestStats()
    udp.samples, udp.datagrams, udp.too_old = 7, 4, 1
    udp.error("syntax")
    udp.error("syntax")
    udp.error("utf8")
    engine = Engine()
    engine.stats.late_samples = 5
    engine.stats.evaluations = 11
    parts = SimpleNamespace(
        listeners=[Listener("udp", {"too_long_datagrams": 2})],
        engine=engine,
        pipeline=SimpleNamespace(fired=3, resolved=1),
        dispatcher=SimpleNamespace(
            outcomes={("hook", "delivered"): 2, ("page", "dead_lettered"): 1},
            channel_names=["hook", "page"],
        ),
        exporter=SimpleNamespace(
            stats=SimpleNamespace(
                last_success=START + 30,
                requests=4,
                failures=1,
                points_sent=40,
                dropped=0,
            )
        ),
        export_buffer=[object()] * 6,
        reloader=SimpleNamespace(applied=2, refused=1),
    )
    return parts, {"udp": udp}


def metrics_of(parts, stats, clock: ManualClock, lag: LoopLag | None = None):
    return SelfMetrics(
        parts, stats, clock=clock, loop_lag=lag or LoopLag(), started_at=START
    )


async def test_every_counter_of_the_running_parts_is_exposed():
    clock = ManualClock(START + 100)
    parts, stats = running_parts()
    lag = LoopLag()
    lag.observe(0.003)
    lag.observe(0.2)

    found = values(await metrics_of(parts, stats, clock, lag).scrape())

    assert value(found, "tocsin_build_info", version=__version__) == 1
    assert value(found, "tocsin_start_time_seconds") == START
    assert value(found, "tocsin_ingest_samples_total", listener="udp") == 7
    assert value(found, "tocsin_ingest_datagrams_total", listener="udp") == 4
    errors = "tocsin_ingest_parse_errors_total"
    assert value(found, errors, listener="udp", reason="syntax") == 2
    assert value(found, errors, listener="udp", reason="utf8") == 1
    dropped = "tocsin_ingest_samples_dropped_total"
    assert value(found, dropped, listener="udp", reason="too_old") == 1
    assert value(found, dropped, listener="udp", reason="too_new") == 0
    closed = "tocsin_ingest_closed_total"
    assert value(found, closed, listener="udp", reason="too_long_datagrams") == 2
    rule_dropped = "tocsin_rule_samples_dropped_total"
    assert value(found, rule_dropped, reason="late") == 5
    assert value(found, "tocsin_rule_series", rule="latency") == 3
    assert value(found, "tocsin_rule_series", rule="drift") == 0
    assert value(found, "tocsin_rule_series_refused_total", rule="latency") == 2
    assert value(found, "tocsin_rule_evaluations_total") == 11
    assert value(found, "tocsin_alerts_fired_total") == 3
    assert value(found, "tocsin_alerts_resolved_total") == 1
    notifications = "tocsin_notifications_total"
    assert value(found, notifications, channel="hook", outcome="delivered") == 2
    assert value(found, notifications, channel="page", outcome="dead_lettered") == 1
    pending = "tocsin_outbox_pending_notifications"
    assert value(found, pending, channel="hook") == 0
    assert value(found, pending, channel="page") == 0
    assert value(found, "tocsin_datadog_export_lag_seconds") == 70
    assert value(found, "tocsin_datadog_export_buffered_series") == 6
    assert value(found, "tocsin_datadog_export_points_total") == 40
    assert value(found, "tocsin_config_reloads_total", outcome="applied") == 2
    assert value(found, "tocsin_config_reloads_total", outcome="refused") == 1
    assert value(found, "tocsin_event_loop_lag_last_seconds") == 0.2
    assert value(found, "tocsin_event_loop_lag_max_seconds") == 0.2
    assert value(found, "tocsin_event_loop_lag_seconds_count") == 2
    assert value(found, "tocsin_event_loop_lag_seconds_bucket", le="0.005") == 1
    assert value(found, "tocsin_event_loop_lag_seconds_bucket", le="0.25") == 2


async def test_a_scrape_reads_the_counters_as_they_are_then():
    clock = ManualClock(START)
    parts, stats = running_parts()
    metrics = metrics_of(parts, stats, clock)
    name = "tocsin_ingest_samples_total"

    before = value(values(await metrics.scrape()), name, listener="udp")
    stats["udp"].samples += 5
    stats["unix_stream"] = IngestStats()
    after = values(await metrics.scrape())

    assert value(after, name, listener="udp") - before == 5
    assert value(after, name, listener="unix_stream") == 0


async def test_missing_parts_leave_their_figures_out():
    found = values(await metrics_of(SimpleNamespace(), {}, ManualClock()).scrape())
    names = {name for name, _ in found}

    assert "tocsin_build_info" in names
    assert "tocsin_event_loop_lag_seconds_count" in names
    assert not [name for name in names if name.startswith("tocsin_datadog")]
    assert not [name for name in names if name.startswith("tocsin_rule_")]
    assert "tocsin_alerts" not in names


async def test_an_export_that_never_succeeded_is_behind_since_the_start():
    clock = ManualClock(START + 45)
    parts, stats = running_parts()
    parts.exporter.stats.last_success = None

    found = values(await metrics_of(parts, stats, clock).scrape())

    assert value(found, "tocsin_datadog_export_lag_seconds") == 45


def test_two_daemons_in_one_process_have_registries_of_their_own():
    clock = ManualClock()
    first = metrics_of(*running_parts(), clock)
    second = metrics_of(*running_parts(), clock)

    assert first.registry is not second.registry


@pytest.fixture
async def database(tmp_path):
    opened = await Database.open(tmp_path / "state.db", clock=ManualClock(START))
    yield opened
    await opened.close()


async def add_alert(database, alert_id: int, state: str) -> None:
    async with database.transaction() as tx:
        await tx.execute(
            "INSERT INTO alerts (id, uid, rule, series, state, spec, fired_at,"
            " updated_at) VALUES (?, ?, 'r', ?, ?, '{}', ?, ?)",
            (alert_id, f"u{alert_id}", f"s{alert_id}", state, START, START),
        )


async def test_alerts_are_counted_by_state_without_the_closed_ones(database):
    states = ["triggered", "triggered", "acknowledged", "resolved", "closed"]
    for alert_id, state in enumerate(states, 1):
        await add_alert(database, alert_id, state)
    parts = SimpleNamespace(
        database=database, outbox=Outbox(database, ManualClock(START))
    )

    found = values(await metrics_of(parts, {}, ManualClock(START)).scrape())

    alerts = {
        dict(labels)["state"]: count
        for (name, labels), count in found.items()
        if name == "tocsin_alerts"
    }
    assert alerts == {
        "triggered": 2,
        "acknowledged": 1,
        "investigating": 0,
        "escalated": 0,
        "resolved": 1,
    }
    assert value(found, "tocsin_state_transactions_total") == len(states)


def test_the_loop_lag_histogram_counts_each_lag_at_or_below_its_bound():
    lag = LoopLag()
    for seconds in (BUCKETS[0], BUCKETS[0] * 1.5, BUCKETS[-1] * 2, -1.0):
        lag.observe(seconds)

    buckets = dict(lag.cumulative())

    assert buckets[f"{BUCKETS[0]:g}"] == 2
    assert buckets[f"{BUCKETS[1]:g}"] == 3
    assert buckets[f"{BUCKETS[-1]:g}"] == 3
    assert buckets["+Inf"] == lag.count == 4
    assert lag.max == BUCKETS[-1] * 2
    assert lag.last == 0.0


async def test_the_loop_lag_monitor_measures_until_cancelled():
    lag = LoopLag(interval=0.0)
    observed = asyncio.Event()
    observe = lag.observe

    def record(seconds: float) -> None:
        observe(seconds)
        observed.set()

    lag.observe = record
    task = asyncio.create_task(lag.run())
    await asyncio.wait_for(observed.wait(), 5.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert lag.count >= 1
    assert lag.last >= 0.0
