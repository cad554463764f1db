"""Tocsin's own metrics as Datadog series: names, types, tags, and counters
sent as what they gained since the previous export."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from tocsin.clock import ManualClock
from tocsin.daemon.ingest import IngestStats
from tocsin.daemon.loop_lag import LoopLag
from tocsin.daemon.self_metrics import SelfMetrics
from tocsin.daemon.self_metrics_export import SelfMetricsExport
from tocsin.errors import StateError

START = 1_750_000_000


def export_of(parts, stats, **options) -> SelfMetricsExport:
    metrics = SelfMetrics(
        parts,
        stats,
        clock=ManualClock(START),
        loop_lag=LoopLag(),
        started_at=START,
    )
    return SelfMetricsExport(metrics, **options)


def by_name(series: list[dict]) -> dict[tuple[str, tuple[str, ...]], dict]:
    return {(s["metric"], tuple(s.get("tags", ()))): s for s in series}


def point(series: dict) -> float:
    [only] = series["points"]
    return only["value"]


async def test_counters_are_sent_as_what_they_gained_since_the_last_export():
    udp = IngestStats()
    udp.samples = 5
    export = export_of(SimpleNamespace(), {"udp": udp}, tags=["env:test"])
    key = ("tocsin.ingest_samples", ("env:test", "listener:udp"))

    first = by_name(await export.series(START))
    udp.samples = 12
    second = by_name(await export.series(START + 10))

    assert (first[key]["type"], point(first[key])) == (1, 5)
    assert (second[key]["type"], point(second[key])) == (1, 7)
    assert second[key]["points"][0]["timestamp"] == START + 10


async def test_gauges_and_histograms_keep_their_meaning_and_names():
    parts = SimpleNamespace(
        dispatcher=SimpleNamespace(outcomes={}, channel_names=["hook"])
    )
    export = export_of(parts, {}, host="box-1")

    found = by_name(await export.series(START))

    pending = found[("tocsin.outbox_pending_notifications", ("channel:hook",))]
    assert (pending["type"], point(pending)) == (3, 0)
    assert pending["resources"] == [{"type": "host", "name": "box-1"}]
    assert found[("tocsin.start_time_seconds", ())]["type"] == 3
    assert found[("tocsin.event_loop_lag_seconds_count", ())]["type"] == 1
    names = {name for name, _ in found}
    assert "tocsin.event_loop_lag_seconds_sum" in names
    assert not [name for name in names if name.endswith("_bucket")]
    assert not [name for name in names if name.endswith("_total")]
    assert all(name.startswith("tocsin.") for name in names)


async def test_an_unreadable_database_leaves_the_rest_to_go_out(caplog):
    class Broken:
        transactions = errors = locked = 0

        async def fetchall(self, sql, params=()):
            raise StateError("disk I/O error")

    udp = IngestStats()
    export = export_of(SimpleNamespace(database=Broken()), {"udp": udp})

    with caplog.at_level(logging.WARNING):
        found = by_name(await export.series(START))

    assert ("tocsin.ingest_samples", ("listener:udp",)) in found
    assert any("without fresh state" in r.getMessage() for r in caplog.records)
