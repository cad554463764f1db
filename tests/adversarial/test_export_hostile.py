"""The Datadog export under hostile input and a hostile intake."""

from __future__ import annotations

import gc
import logging
import random
import tracemalloc

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.standins.datadog import DatadogStandIn, RecordingSleep
from tocsin.channels import datadog_buffer, datadog_metrics
from tocsin.channels.datadog_buffer import (
    IDLE_DRAINS,
    MAX_TAG_CHARS,
    MAX_TAGS,
    DistinctCount,
    ExportBuffer,
)
from tocsin.channels.datadog_metrics import DatadogExporter
from tocsin.clock import ManualClock
from tocsin.config import DatadogExportConfig

NOW = 1_750_000_000.0
KEY = "dd-hostile-key-5e4d3c2b1a"


def exported(series: list[dict]) -> dict[tuple[str, tuple[str, ...]], float]:
    """Return each drained series' value by (metric, tags); fail on a repeat."""
    values = {}
    for item in series:
        identity = (item["metric"], tuple(item.get("tags", ())))
        assert identity not in values, f"{identity} exported twice"
        values[identity] = item["points"][0]["value"]
    return values


def warnings(caplog) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == datadog_buffer.__name__ and r.levelno == logging.WARNING
    ]


# --- one aggregate per series, whoever holds a handle ----------------------


def test_a_series_back_from_idle_is_exported_once_with_all_its_samples():
    # Each listener (and each NDJSON connection) caches the handle it was
    # given; after the buffer forgets an idle series, another listener gets a
    # new handle for the same series while the first keeps the old one.
    buffer = ExportBuffer()
    cached_by_udp = buffer.series("m", "c", ("k:v",))
    cached_by_udp.add(1.0, 1.0, NOW)
    for _ in range(IDLE_DRAINS + 1):
        buffer.drain(NOW, 1)
    resolved_by_unix = buffer.series("m", "c", ("k:v",))

    cached_by_udp.add(2.0, 1.0, NOW)
    resolved_by_unix.add(3.0, 1.0, NOW)
    exported = buffer.drain(NOW, 1)

    # Two rate points of one series at one timestamp: Datadog keeps one.
    assert [(s["metric"], s["points"][0]["value"]) for s in exported] == [("m", 5.0)]


def test_a_forgotten_handle_that_speaks_first_stays_the_aggregate():
    buffer = ExportBuffer()
    old = buffer.series("m", "g", ())
    old.add(1.0, 1.0, NOW)
    for _ in range(IDLE_DRAINS + 1):
        buffer.drain(NOW, 1)
    assert len(buffer) == 0

    old.add(7.0, 1.0, NOW + 1)

    assert buffer.series("m", "g", ()) is old
    assert exported(buffer.drain(NOW + 2, 2)) == {("m", ()): 7.0}


def test_timers_histograms_and_distributions_of_one_name_are_one_series():
    buffer = ExportBuffer()
    timer = buffer.series("lat", "ms", ("a:1",))
    assert buffer.series("lat", "h", ("a:1",)) is timer
    assert buffer.series("lat", "d", ("a:1",)) is timer
    for kind, value in (("ms", 1.0), ("h", 2.0), ("d", 3.0)):
        buffer.series("lat", kind, ("a:1",)).add(value, 1.0, NOW)

    values = exported(buffer.drain(NOW, 10))

    assert values[("lat.max", ("a:1",))] == 3.0
    assert values[("lat.count", ("a:1",))] == pytest.approx(0.3)


OPERATION = st.one_of(
    # A sample of series ``s`` through listener ``p``'s cached handle.
    st.tuples(st.just("add"), st.integers(0, 2), st.integers(0, 3)),
    # Listener ``p`` empties its handle cache, as a full cache does.
    st.tuples(st.just("clear"), st.integers(0, 2), st.just(0)),
    st.tuples(st.just("drain"), st.integers(1, IDLE_DRAINS + 2), st.just(0)),
)


@pytest.mark.parametrize("max_series", [2, 100])
@settings(max_examples=150, deadline=None)
@given(st.lists(OPERATION, max_size=80))
def test_every_sample_is_exported_once_or_counted_as_over_the_limit(
    max_series, operations
):
    buffer = ExportBuffer(max_series=max_series)
    caches: list[dict[int, object]] = [{}, {}, {}]
    expected: dict[tuple[str, tuple[str, ...]], float] = {}
    sent = total = 0
    for what, which, series in [*operations, ("drain", 1, 0)]:
        if what == "add":
            # Tag order differs per listener: still one Datadog series.
            tags = ("b:2", "a:1") if which else ("a:1", "b:2")
            cache = caches[which]
            handle = cache.get(series) or buffer.series(f"m{series}", "c", tags)
            cache[series] = handle
            handle.add(1.0, 1.0, NOW)
            identity = (f"m{series}", ("a:1", "b:2"))
            expected[identity] = expected.get(identity, 0.0) + 1.0
            total += 1
        elif what == "clear":
            caches[which].clear()
        else:
            for _ in range(which):
                # Over one second a rate is the count.
                got = exported(buffer.drain(NOW, 1))
                assert len(got) <= max_series
                if max_series >= 4:
                    assert got == expected
                sent += sum(got.values())
                expected = {}
        assert len(buffer) <= max_series

    assert sent + buffer.samples_over_limit == total


# --- the limit on series ----------------------------------------------------


def test_beyond_max_series_a_new_series_waits_for_room_and_is_counted(caplog):
    buffer = ExportBuffer.from_config(DatadogExportConfig(max_series=2))
    for name in ("a", "b"):
        buffer.series(name, "c", ()).add(1.0, 1.0, NOW)

    late = buffer.series("late", "c", ())
    late.add(5.0, 1.0, NOW)
    late.add(5.0, 1.0, NOW)
    first = buffer.drain(NOW, 1)
    quiet = buffer.drain(NOW + 1, 1)

    assert exported(first) == {("a", ()): 1.0, ("b", ()): 1.0}
    assert quiet == []
    assert (buffer.series_over_limit, buffer.samples_over_limit) == (1, 2)
    (warning,) = warnings(caplog)
    assert "max_series (2); 1 new series and 2 samples" in warning.getMessage()
    assert (warning.reason, warning.series_count, warning.count) == ("max_series", 2, 2)

    # Once the idle series are forgotten, the held handle registers itself.
    for step in range(IDLE_DRAINS):
        buffer.drain(NOW + 2 + step, 1)
    assert len(buffer) == 0
    late.add(4.0, 1.0, NOW + 10)

    assert exported(buffer.drain(NOW + 10, 1)) == {("late", ()): 4.0}
    assert buffer.series("late", "c", ()) is late
    assert len(warnings(caplog)) == 1


def test_a_cardinality_flood_keeps_the_buffer_within_its_limit():
    buffer = ExportBuffer(max_series=2_000, tags=["team:ml"])
    # Only what Tocsin's code allocated counts: threads left by other tests
    # (a database's worker, say) allocate meanwhile too.
    ours = [tracemalloc.Filter(True, "*/tocsin/*")]
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot().filter_traces(ours)
        for index in range(20_000):
            labels = ("env:prod", f"request_id:{index:012d}", "model:resnet50-v2")
            handle = buffer.series("model.requests", "c", labels)
            handle.add(1.0, 1.0, NOW)
        series = buffer.drain(NOW, 60)
        del handle, series
        gc.collect()
        after = tracemalloc.take_snapshot().filter_traces(ours)
    finally:
        tracemalloc.stop()
    retained = sum(stat.size_diff for stat in after.compare_to(before, "filename"))

    assert buffer.counters() == {
        "series": 2_000,
        "refused": 0,
        "non_finite": 0,
        "series_over_limit": 18_000,
        "samples_over_limit": 18_000,
    }
    # About 250 bytes of Tocsin's own per idle series (the labels are the
    # caller's), 2,000 of them at most; the 18,000 refused ones, which would
    # add as much each, leave nothing behind.
    assert retained < 2_000 * 400, f"{retained / 2_000:.0f} bytes per series"


# --- names, tags and set members that would grow without bound --------------


@pytest.mark.parametrize(
    ("own", "configured", "is_exported"),
    [
        ([f"t{i}:v" for i in range(MAX_TAGS - 1)], ["team:ml"], True),
        ([f"t{i}:v" for i in range(MAX_TAGS)], ["team:ml"], False),
        ([f"k{i:02d}:" + "x" * 196 for i in range(MAX_TAG_CHARS // 200)], [], True),
        ([f"k{i:02d}:" + "x" * 196 for i in range(MAX_TAG_CHARS // 200)], ["b"], False),
        # Repeats count as sent: the limit is checked before any tag is read.
        (["env:prod"] * (MAX_TAGS + 1), [], False),
    ],
)
def test_a_series_with_too_many_tags_is_refused_and_logged_once(
    caplog, own, configured, is_exported
):
    assert sum(map(len, own)) <= MAX_TAG_CHARS or not is_exported
    buffer = ExportBuffer(tags=configured)

    first = buffer.series("m", "g", tuple(own))
    again = buffer.series("m", "g", tuple(own))

    assert (first is not None, again is first or not is_exported) == (is_exported, True)
    assert buffer.refused == (0 if is_exported else 2)
    assert len(warnings(caplog)) == (0 if is_exported else 1)


def test_a_huge_name_is_refused_cheaply_and_logged_short(caplog):
    buffer = ExportBuffer()
    huge = "m" * 60_000

    assert buffer.series(huge, "c", ()) is None
    assert buffer.series(huge + "x", "c", ()) is None

    assert buffer.refused == 2
    (warning,) = warnings(caplog)
    assert "longer than 200 characters" in warning.getMessage()
    assert len(warning.getMessage()) < 300
    assert max(map(len, buffer._refused)) == 201


@settings(max_examples=200)
@given(st.lists(st.text(max_size=8), max_size=80), st.integers(2, 40))
def test_distinct_count_is_exact_up_to_its_limit(members, limit):
    counter = DistinctCount(limit)
    for member in members:
        counter.add(member)

    distinct = len(set(members))
    if distinct <= limit:
        assert counter.count() == distinct
    else:
        assert counter.count() > 0


@pytest.mark.parametrize("distinct", [5_000, 60_000])
def test_distinct_count_estimates_large_sets_closely(distinct):
    counter = DistinctCount()
    rng = random.Random(distinct)
    for index in range(distinct):
        member = f"user-{index}"
        counter.add(member)
        if rng.random() < 0.5:
            counter.add(member)

    # About 1.6 % standard error at 4,096 kept hashes; 10 % is over six of it.
    assert counter.count() == pytest.approx(distinct, rel=0.10)


def test_set_members_are_not_kept_however_long_or_many():
    buffer = ExportBuffer()
    users = buffer.series("users", "s", ())
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for index in range(20_000):
            users.add_member(f"{index:08d}" + "u" * 10_000, NOW)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()

    # 200 MB of members arrived; the set keeps at most 4,096 hashes.
    assert held < 2 * 1024 * 1024, f"{held >> 10} KiB held"
    (count,) = exported(buffer.drain(NOW, 60)).values()
    assert count == pytest.approx(20_000, rel=0.10)


# --- an intake that answers 413 to everything --------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
async def refusing(clock):
    async with DatadogStandIn(KEY, clock=clock) as standin:
        standin.fail(413, times=None)
        yield standin


def noisy_gauges(count: int) -> list[dict]:
    """Return ``count`` gauges that compress poorly, about 250 bytes each."""
    rng = random.Random(count)
    buffer = ExportBuffer()
    for index in range(count):
        labels = (f"run:{rng.getrandbits(160):040x}", f"model:m-{index:05d}")
        buffer.series("model.score", "g", labels).add(float(index), 1.0, NOW)
    return buffer.drain(NOW, 10)


@pytest.mark.parametrize("count", [2_000, 20_000])
async def test_a_413_for_everything_costs_few_requests_and_one_error_line(
    refusing, clock, caplog, count
):
    async with aiohttp.ClientSession() as session:
        exporter = DatadogExporter(
            DatadogExportConfig(base_url=refusing.url),
            KEY,
            ExportBuffer(),
            clock=clock,
            session=session,
            sleep=RecordingSleep(clock),
        )
        await exporter.send_series(noisy_gauges(count))

    requests = refusing.requests
    assert exporter.stats.dropped == count
    # Halving down to the floor once, then one request per remaining group.
    assert exporter.stats.requests == len(requests) <= 12
    # Halving stopped at the first request far below both limits.
    small = [
        r
        for r in requests
        if r.wire_size <= datadog_metrics.SPLIT_FLOOR_WIRE
        and r.raw_size <= datadog_metrics.SPLIT_FLOOR_RAW
    ]
    assert len(small) >= 1
    assert all(len(r.series) > 1 for r in requests)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [(r.reason, r.count, r.status) for r in errors] == [
        ("too_large", count, 413)
    ]
