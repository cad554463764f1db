"""Datadog export: the loop, shutdown, the site and unexpected faults."""

from __future__ import annotations

import asyncio
import logging

from tests.channels.conftest import INTERVAL, KEY, NOW, one_gauge, values
from tests.standins import datadog as intake
from tests.standins.datadog import GatedSleep
from tocsin.channels import datadog_metrics
from tocsin.channels.datadog_metrics import DatadogExporter, ExportBuffer
from tocsin.clock import ManualClock
from tocsin.config import DatadogExportConfig

# --- the loop and shutdown -------------------------------------------------


async def test_run_exports_every_interval_and_survives_failures(
    make, standin, clock, caplog
):
    class Flaky(ExportBuffer):
        calls = 0

        def drain(self, now: float, seconds: float) -> list[dict]:
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("broken drain")
            return super().drain(now, seconds)

    buffer = Flaky()
    counter = buffer.series("req", "c", ())
    sleep = GatedSleep(clock)
    exporter = make(buffer, sleep=sleep)
    standin.fail(400)
    task = asyncio.create_task(exporter.run())

    # Interval 1 is refused (400), interval 2 hits the broken drain, whose
    # samples stay in the buffer and go out with interval 3's: a rate over 20 s.
    for value in (1.0, 1.0, 2.0):
        await sleep.started.get()
        counter.add(value, 1.0, clock.time())
        sleep.release()
    await sleep.started.get()
    exporter.close()
    exporter.close()
    await task

    assert [r.status for r in standin.requests] == [400, 202]
    assert values(standin.accepted_series()) == {"req": (2, 0.15)}
    assert standin.accepted_series()[0]["interval"] == 20
    assert standin.accepted_series()[0]["points"][0]["timestamp"] == NOW + 30
    assert sleep.delays == [INTERVAL] * 4
    assert any("unexpectedly" in r.getMessage() for r in caplog.records)
    assert exporter.stats.lag == 0.0


def rates(request: intake.Received) -> dict[str, tuple[float, int]]:
    """Return each rate's value and interval in one request."""
    return {
        s["metric"]: (s["points"][0]["value"], s["interval"])
        for s in request.series
        if s["type"] == 2
    }


async def test_counters_are_rates_over_each_interval_and_the_last_partial_one(
    make, standin, clock
):
    buffer = ExportBuffer()
    counter = buffer.series("req", "c", ())
    timer = buffer.series("lat", "h", ())
    sleep = GatedSleep(clock)
    exporter = make(buffer, sleep=sleep)
    task = asyncio.create_task(exporter.run())

    await sleep.started.get()
    for value, rate in ((10.0, 1.0), (5.0, 0.5), (10.0, 1.0)):
        counter.add(value, rate, clock.time())
    for _ in range(20):
        timer.add(3.0, 1.0, clock.time())
    sleep.release()
    await sleep.started.get()
    # Shutdown comes 4 s into the next interval.
    counter.add(8.0, 1.0, clock.time())
    clock.advance(4)
    exporter.close()
    await task
    await exporter.flush(5.0)

    full, partial = standin.accepted
    assert rates(full) == {"req": (3.0, 10), "lat.count": (2.0, 10)}
    assert full.series[0]["points"][0]["timestamp"] == NOW + 10
    assert rates(partial) == {"req": (2.0, 4)}
    assert partial.series[0]["points"][0]["timestamp"] == NOW + 14


async def test_the_interval_after_an_overrun_export_is_its_whole_length(
    make, standin, clock
):
    buffer = ExportBuffer()
    counter = buffer.series("req", "c", ())
    sleep = GatedSleep(clock)
    exporter = make(buffer, sleep=sleep)
    # The first export waits 25 s to retry, past the next tick at 20 s.
    standin.fail(429, headers={"X-RateLimit-Reset": "25"})
    task = asyncio.create_task(exporter.run())

    for value in (10.0, 45.0, 15.0):
        await sleep.started.get()
        counter.add(value, 1.0, clock.time())
        sleep.release()
    await sleep.started.get()
    exporter.close()
    await task

    assert sleep.delays == [INTERVAL, 25.0, 5.0, INTERVAL]
    assert [r.status for r in standin.requests] == [429, 202, 202]
    first, second = standin.accepted
    assert rates(first) == {"req": (1.0, 10)}
    # Drained at 40 s: the 30 s since the drain at 10 s, which the tick at
    # 20 s would have cut had the export not overrun.
    assert rates(second) == {"req": (2.0, 30)}
    assert second.series[0]["points"][0]["timestamp"] == NOW + 40


async def test_flush_gives_up_at_its_timeout_and_says_what_was_lost(
    make, standin, caplog
):
    async def forever(delay: float) -> None:
        await asyncio.Event().wait()

    buffer = ExportBuffer()
    for name in ("a", "b", "c"):
        buffer.series(name, "g", ()).add(1.0, 1.0, NOW)
    standin.fail(503)
    exporter = make(buffer, sleep=forever)

    await exporter.flush(0.05)

    assert exporter.stats.dropped == 3
    cut = [r for r in caplog.records if "cut short" in r.getMessage()]
    assert len(cut) == 1 and "3 series" in cut[0].getMessage()


# --- the site ----------------------------------------------------------------


def test_the_url_comes_from_the_site():
    exporter = DatadogExporter(
        DatadogExportConfig(site="datadoghq.eu"),
        KEY,
        ExportBuffer(),
        clock=ManualClock(NOW),
        session=None,
    )
    assert exporter.url == "https://api.datadoghq.eu/api/v2/series"


async def test_an_unexpected_error_counts_the_batch_as_failed_and_dropped(
    make, standin, caplog
):
    # aiohttp refuses a header value with a carriage return with a ValueError.
    exporter = make(key=KEY + "\r")

    other = {"metric": "h", "type": 3, "points": [{"timestamp": NOW, "value": 1.0}]}
    await exporter.send_series([*one_gauge(), other])

    assert standin.requests == []
    stats = exporter.stats
    assert (stats.requests, stats.failures, stats.dropped) == (1, 1, 2)
    assert stats.last_error == "internal"
    (error,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert (error.reason, error.count) == ("internal", 2)
    assert "ValueError" in error.getMessage()


async def test_a_fault_before_any_request_is_counted_and_flush_goes_on(
    make, standin, monkeypatch, caplog
):
    async def broken(body: bytes, encoding: str) -> bytes:
        raise MemoryError("no room to compress")

    monkeypatch.setattr(datadog_metrics, "_compress", broken)
    buffer = ExportBuffer()
    for name in ("a", "b", "c"):
        buffer.series(name, "g", ()).add(1.0, 1.0, NOW)
    exporter = make(buffer)

    await exporter.flush(5.0)

    assert standin.requests == []
    stats = exporter.stats
    assert (stats.requests, stats.failures, stats.dropped) == (0, 1, 3)
    assert stats.last_error == "internal"
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert messages == [
        "Datadog export dropped 3 series (internal): "
        "unexpected MemoryError: no room to compress",
        "Datadog export failed unexpectedly",
    ]
