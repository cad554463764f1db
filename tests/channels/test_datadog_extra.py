"""Datadog export: series added to each export by the daemon (its own
metrics), sent with the buffer's, and never at their cost."""

from __future__ import annotations

import logging

from tests.channels.conftest import INTERVAL, KEY, NOW, values
from tests.standins.datadog import RecordingSleep
from tocsin.channels.datadog_metrics import DatadogExporter, ExportBuffer
from tocsin.config import DatadogExportConfig, Duration


def exporter_with(standin, session, clock, buffer, extra) -> DatadogExporter:
    config = DatadogExportConfig(base_url=standin.url, interval=Duration(INTERVAL))
    return DatadogExporter(
        config,
        KEY,
        buffer,
        clock=clock,
        session=session,
        sleep=RecordingSleep(clock),
        extra=extra,
    )


async def test_the_extra_series_go_out_with_the_buffers(standin, session, clock):
    stamps = []

    async def extra(stamp: int) -> list[dict]:
        stamps.append(stamp)
        point = {"timestamp": stamp, "value": 4.0}
        return [{"metric": "tocsin.x", "type": 3, "points": [point]}]

    buffer = ExportBuffer()
    buffer.series("g", "g", ()).add(2.0, 1.0, NOW)
    exporter = exporter_with(standin, session, clock, buffer, extra)

    await exporter.flush(5.0)

    assert values(standin.accepted_series()) == {"g": (3, 2.0), "tocsin.x": (3, 4.0)}
    assert stamps == [NOW]


async def test_extra_series_that_fail_leave_the_buffers_to_go_out(
    standin, session, clock, caplog
):
    async def extra(stamp: int) -> list[dict]:
        raise RuntimeError("broken")

    buffer = ExportBuffer()
    buffer.series("g", "g", ()).add(2.0, 1.0, NOW)
    exporter = exporter_with(standin, session, clock, buffer, extra)

    with caplog.at_level(logging.ERROR):
        await exporter.flush(5.0)

    assert values(standin.accepted_series()) == {"g": (3, 2.0)}
    assert any("extra series" in r.getMessage() for r in caplog.records)
