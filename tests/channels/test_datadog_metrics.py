"""Datadog export: aggregation, names and tags, splitting, retries."""

from __future__ import annotations

import logging
import math
import random
import socket

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.channels.conftest import INTERVAL, NOW, one_gauge, values
from tests.standins import datadog as intake
from tests.standins.datadog import RecordingSleep
from tocsin.channels import datadog_buffer, datadog_metrics
from tocsin.channels.datadog_buffer import IDLE_DRAINS, tag
from tocsin.channels.datadog_metrics import ExportBuffer
from tocsin.config import DatadogExportConfig
from tocsin.datadog_names import metric_name

# --- aggregation -----------------------------------------------------------

TIMER = {"m.avg": 3, "m.median": 3, "m.max": 3, "m.95percentile": 3, "m.count": 2}
KINDS = [
    # 4 + 3 - 4 counted over 10 s: 0.3 per second, as the Agent sends a counter.
    ("c", [(2.0, 0.5, 0), (3.0, 1.0, 0), (-1.0, 0.25, 0)], {"m": 2}, {"m": 0.3}),
    # The gauge keeps the latest sample timestamp, not the latest arrival.
    ("g", [(-1.0, 1.0, 0), (5.0, 1.0, -1), (9.0, 1.0, -2)], {"m": 3}, {"m": -1.0}),
    ("s", ["a", "b", "a", "c"], {"m": 3}, {"m": 3}),
    # Two samples at rate 0.5 stand for four: 0.4 per second over 10 s.
    *[
        (
            kind,
            [(1.0, 0.5, 0), (3.0, 0.5, 0)],
            TIMER,
            {"m.avg": 2, "m.max": 3, "m.count": 0.4},
        )
        for kind in ("ms", "h", "d")
    ],
]


@pytest.mark.parametrize(("kind", "samples", "types", "exact"), KINDS)
async def test_each_kind_is_exported_as_its_datadog_type(
    make, standin, clock, kind, samples, types, exact
):
    buffer = ExportBuffer()
    series = buffer.series("m", kind, ())
    for sample in samples:
        if kind == "s":
            series.add_member(sample, NOW)
        else:
            value, rate, offset = sample
            series.add(value, rate, NOW + offset)
    exporter = make(buffer)
    clock.advance(INTERVAL)

    await exporter.flush(5.0)
    await exporter.flush(5.0)

    assert len(standin.requests) == 1
    sent = standin.accepted_series()
    assert {s["metric"]: s["type"] for s in sent} == types
    got = {s["metric"]: s["points"][0]["value"] for s in sent}
    assert {name: got[name] for name in exact} == pytest.approx(exact)
    assert {s["points"][0]["timestamp"] for s in sent} == {NOW + INTERVAL}
    # Counts and rates say which interval they cover; gauges do not.
    intervals = {s["metric"]: s.get("interval") for s in sent}
    assert intervals == {n: 10 if t in (1, 2) else None for n, t in types.items()}


@pytest.mark.parametrize("kind", ["ms", "h", "d"])
@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.001, 1e6), min_size=1, max_size=300))
def test_percentiles_are_within_one_percent_of_the_exact_ones(kind, samples):
    buffer = ExportBuffer()
    series = buffer.series("x", kind, ())
    for value in samples:
        series.add(value, 1.0, NOW)

    drained = buffer.drain(NOW, INTERVAL)
    got = {s["metric"]: s["points"][0]["value"] for s in drained}

    ordered = sorted(samples)
    for suffix, quantile in ((".median", 0.5), (".95percentile", 0.95)):
        rank = quantile * (len(ordered) - 1)
        low, high = ordered[math.floor(rank)], ordered[math.ceil(rank)]
        assert low * 0.99 <= got["x" + suffix] <= high * 1.01
    assert got["x.max"] == max(samples)
    assert got["x.avg"] == pytest.approx(sum(samples) / len(samples))


@pytest.mark.parametrize(
    ("seconds", "interval"),
    [
        (10.0, 10),
        (4.0, 4),
        (9.9996, 10),
        (10.4, 10),
        (2.5, 3),
        (2.49, 2),
        (61.0, 61),
        # Never an interval of 0, which the API refuses and a rate cannot use.
        (0.3, 1),
        (0.0, 1),
    ],
)
def test_rates_are_per_second_of_the_drained_interval_in_whole_seconds(
    seconds, interval
):
    buffer = ExportBuffer()
    buffer.series("req", "c", ()).add(30.0, 1.0, NOW)
    timer = buffer.series("lat", "ms", ())
    for _ in range(3):
        timer.add(5.0, 0.5, NOW)

    sent = {s["metric"]: s for s in buffer.drain(NOW, seconds)}

    for name, total in (("req", 30.0), ("lat.count", 6.0)):
        assert sent[name]["type"] == 2
        assert sent[name]["interval"] == interval
        assert sent[name]["points"][0]["value"] == total / interval
        # What Datadog counts from a rate, value times interval, is the total.
        assert sent[name]["points"][0]["value"] * interval == pytest.approx(total)
    assert "interval" not in sent["lat.max"]


def test_a_series_without_samples_is_not_sent_and_state_restarts():
    buffer = ExportBuffer()
    count = buffer.series("c", "c", ())
    count.add(40.0, 1.0, NOW)
    first = buffer.drain(NOW, 10)
    second = buffer.drain(NOW + 10, 10)
    count.add(10.0, 1.0, NOW + 11)

    assert (values(first), second) == ({"c": (2, 4.0)}, [])
    assert values(buffer.drain(NOW + 20, 10)) == {"c": (2, 1.0)}


def test_an_aggregate_that_is_not_finite_is_skipped_and_counted():
    buffer = ExportBuffer()
    huge = buffer.series("huge", "c", ())
    huge.add(1e308, 1.0, NOW)
    huge.add(1e308, 1.0, NOW)
    buffer.series("fine", "g", ()).add(1.0, 1.0, NOW)

    assert values(buffer.drain(NOW, INTERVAL)) == {"fine": (3, 1.0)}
    assert buffer.non_finite == 1


def test_selection_and_identity():
    buffer = ExportBuffer(["wanted"])

    assert buffer.series("other", "c", ()) is None
    first = buffer.series("wanted", "c", ("b:2", "a:1"))
    assert buffer.series("wanted", "c", ("b:2", "a:1")) is first
    # Neither tag order nor a repeated tag makes another Datadog series.
    assert buffer.series("wanted", "c", ("a:1", "b:2", "a:1")) is first
    assert buffer.series("wanted", "g", ("a:1", "b:2")) is not first


def test_idle_series_are_forgotten_but_held_handles_keep_working():
    buffer = ExportBuffer()
    held = buffer.series("idle", "ms", ())
    held.add(1.0, 1.0, NOW)
    buffer.drain(NOW, 1)
    for step in range(IDLE_DRAINS):
        assert len(buffer) == 1, step
        buffer.drain(NOW + step + 1, 1)

    assert len(buffer) == 0
    held.add(2.0, 1.0, NOW + 100)
    assert values(buffer.drain(NOW + 100, 95))["idle.max"] == (3, 2.0)


# --- names and tags --------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "prefix", "room", "expected"),
    [
        ("model.latency", "", 0, "model.latency"),
        ("a-b c/d", "", 0, "a_b_c_d"),
        ("модель.latency", "", 0, None),
        ("модель.latency", "ml.", 0, "ml.______.latency"),
        ("5xx.count", "", 0, None),
        ("5xx.count", "http.", 0, "http.5xx.count"),
        ("_private", "", 0, None),
        ("", "", 0, None),
        # Cutting a long name could merge it with another: it is refused.
        *[("x" * 200, "", 0, "x" * 200), ("x" * 201, "", 0, None)],
        *[("x" * 187, "", 13, "x" * 187), ("x" * 188, "", 13, None)],
        *[("x" * 197, "ml.", 0, "ml." + "x" * 197), ("x" * 198, "ml.", 0, None)],
    ],
)
def test_metric_name_policy(name, prefix, room, expected):
    assert metric_name(name, prefix, room) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("env:prod", "env:prod"),
        ("key:", "key"),
        ("key::", "key"),
        ("svc_addr:10.0.0.1:443", "svc_addr:10.0.0.1:443"),
        ("route:/v1/a:b", "route:/v1/a:b"),
        ("env:pro d", "env:pro_d"),
        ("modèle:ü", "modèle:ü"),
        ("#team", "team"),
        ("5xx", "xx"),
        (":", None),
        ("123", None),
        ("a" * 199 + ":b", "a" * 199),
        ("t" * 300, "t" * 200),
    ],
)
def test_tag_policy(text, expected):
    assert tag(text) == expected


@settings(max_examples=300)
@given(st.text(max_size=250), st.sampled_from(["", "ml.", "9"]))
def test_every_exported_name_and_tag_is_one_datadog_accepts(text, prefix):
    name, exported = metric_name(text, prefix), tag(text)

    assert name is None or intake._NAME.fullmatch(name)
    assert exported is None or intake._TAG.fullmatch(exported)
    assert exported is None or (not exported.endswith(":") and len(exported) <= 200)


async def test_f05_unicode_name_is_refused_once_and_the_rest_is_delivered(
    make, standin, clock, caplog
):
    buffer = ExportBuffer()
    assert buffer.series("модель.latency", "ms", ("env:prod",)) is None
    assert buffer.series("модель.latency", "ms", ("env:dev",)) is None
    buffer.series("ok", "c", ()).add(1.0, 1.0, NOW)
    buffer.series("temp", "g", ()).add(3.0, 1.0, NOW)
    exporter = make(buffer)
    clock.advance(INTERVAL)

    await exporter.flush(5.0)

    assert values(standin.accepted_series()) == {"ok": (2, 0.1), "temp": (3, 3.0)}
    assert buffer.refused == 2
    warnings = [r for r in caplog.records if r.name == datadog_buffer.__name__]
    assert len(warnings) == 1
    assert "metric_prefix" in warnings[0].getMessage()


async def test_prefix_configured_tags_and_host(make, standin):
    config = DatadogExportConfig(
        metric_prefix="ml.", tags=["team:vision", "env:prod"], host="gpu-1"
    )
    buffer = ExportBuffer.from_config(config)
    buffer.series("модель.latency", "g", ("env:prod", "key:", "a b")).add(1.0, 1.0, NOW)

    await make(buffer).flush(5.0)

    (sent,) = standin.accepted_series()
    assert sent["metric"] == "ml.______.latency"
    assert sent["tags"] == ["a_b", "env:prod", "key", "team:vision"]
    assert sent["resources"] == [{"type": "host", "name": "gpu-1"}]


async def test_invalid_series_given_directly_are_dropped_alone(make, standin, caplog):
    exporter = make()
    good = {"metric": "ok", "type": 3, "points": [{"timestamp": NOW, "value": 1}]}
    bad_value = {**good, "points": [{"timestamp": NOW, "value": math.nan}]}

    await exporter.send_series([good, bad_value, {**good, "metric": "9bad"}, {}])

    assert standin.accepted_series() == [good]
    assert exporter.stats.dropped == 3
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [(r.reason, r.count) for r in errors] == [("invalid", 3)]  # one line


# --- size limits (F14) -----------------------------------------------------


def many_series(count: int, *, noisy: bool) -> list[dict]:
    """Return ``count`` distinct gauges, each 260 to 290 bytes of JSON."""
    rng = random.Random(14)
    buffer = ExportBuffer(tags=["team:ml-platform"])
    for index in range(count):
        token = f"{rng.getrandbits(160):040x}" if noisy else "feature-store-ab-00"
        labels = (f"model:resnet50-v2-{index:05d}", f"run:{token}")
        labels += ("region:europe-west4", "dataset:imagenet-validation-2026")
        labels += (f"stage:extract-{index % 7}", f"version:v{index % 13}.0")
        buffer.series("model.inference.score", "g", labels).add(index, 1.0, NOW)
    return buffer.drain(NOW, INTERVAL)


def identities(series: list[dict]) -> list[tuple[str, tuple[str, ...]]]:
    return [(item["metric"], tuple(item["tags"])) for item in series]


@pytest.mark.parametrize("noisy", [False, True], ids=["compressible", "noisy"])
async def test_f14_twenty_thousand_series_arrive_complete_within_limits(
    make, standin, noisy
):
    series = many_series(20_000, noisy=noisy)
    assert sum(len(orjson.dumps(item)) for item in series) > intake.RAW_LIMIT
    exporter = make()

    await exporter.send_series(series)

    assert sorted(identities(standin.accepted_series())) == sorted(identities(series))
    assert len(standin.accepted) >= 2
    assert standin.rejected == []
    for request in standin.requests:
        assert request.wire_size <= intake.WIRE_LIMIT
        assert request.raw_size < intake.RAW_LIMIT
    assert (exporter.stats.series_sent, exporter.stats.points_sent) == (20_000, 20_000)
    assert exporter.stats.dropped == 0


async def test_f14_a_413_splits_the_request_without_resending_its_body(make, standin):
    series = many_series(20_000, noisy=True)
    standin.fail(413)
    exporter = make()

    await exporter.send_series(series)

    refused, *rest = standin.requests
    assert refused.status == 413
    assert refused.digest not in {request.digest for request in rest}
    assert len({request.digest for request in rest}) == len(rest)
    assert sorted(identities(standin.accepted_series())) == sorted(identities(series))
    assert exporter.stats.dropped == 0
    # The refused request's series arrived in two halves.
    halves = [len(request.series) for request in rest[:2]]
    assert sum(halves) == len(refused.series)
    assert abs(halves[0] - halves[1]) <= 1


@settings(max_examples=200)
@given(st.lists(st.binary(min_size=1, max_size=60), max_size=40), st.integers(20, 200))
def test_groups_keep_order_and_fit_the_limit(blobs, limit):
    parts = [(blob, 1) for blob in blobs]

    groups = datadog_metrics._group(parts, limit)

    assert [part for group in groups for part in group] == parts
    for group in groups:
        assert len(group) == 1 or len(datadog_metrics._body(group)) <= limit
    for pieces in (2, 3, 7):
        runs = datadog_metrics._split(parts, pieces) if parts else []
        assert [part for run in runs for part in run] == parts
        assert max(map(len, runs), default=0) - min(map(len, runs), default=0) <= 1


async def test_a_single_series_refused_as_too_large_is_dropped(make, standin, caplog):
    standin.fail(413)
    exporter = make()
    series = {"metric": "a", "type": 3, "points": [{"timestamp": NOW, "value": 1}]}

    await exporter.send_series([series])

    assert len(standin.requests) == 1
    assert exporter.stats.dropped == 1
    assert any(r.levelno == logging.ERROR for r in caplog.records)


async def test_a_series_over_the_raw_limit_is_dropped_without_a_request(make, standin):
    exporter = make()
    (small,) = one_gauge()
    huge = {
        **small,
        "metric": "huge",
        "tags": [f"t{i}:" + "x" * 190 for i in range(28_000)],
    }

    await exporter.send_series([small, huge, {**small, "metric": "after"}])

    assert [s["metric"] for s in standin.accepted_series()] == ["g", "after"]
    assert all(r.status == 202 for r in standin.requests)
    assert (exporter.stats.dropped, exporter.stats.last_error) == (1, "too_large")


@pytest.mark.parametrize("encoding", ["deflate", "gzip"])
async def test_compression(make, standin, encoding):
    exporter = make(compression=encoding)

    await exporter.send_series(many_series(500, noisy=False))

    (request,) = standin.accepted
    assert request.headers["Content-Encoding"] == encoding
    assert request.headers["Content-Type"] == "application/json"
    assert request.raw_size > 5 * request.wire_size
    assert len(request.series) == 500


# --- answers and retries ---------------------------------------------------


async def test_429_waits_for_the_rate_limit_reset_then_delivers_once(
    make, standin, clock
):
    standin.fail(429, headers={"X-RateLimit-Reset": "37"})
    sleep = RecordingSleep(clock)
    exporter = make(sleep=sleep)

    await exporter.send_series(one_gauge())

    assert [r.status for r in standin.requests] == [429, 202]
    assert standin.accepted_series() == one_gauge()
    assert len(sleep.delays) == 1 and sleep.delays[0] >= 37
    assert exporter.stats.requests == 2 and exporter.stats.failures == 1
    assert exporter.stats.last_success == NOW + sleep.delays[0]


@pytest.mark.parametrize(
    ("status", "headers", "least"),
    [
        (503, {"Retry-After": "12"}, 12.0),
        (500, {}, 0.5),
        (408, {}, 0.5),
        # NOW is 15:06:40 UTC on that day.
        (502, {"Retry-After": "Sun, 15 Jun 2025 15:07:00 GMT"}, 20.0),
    ],
)
async def test_retryable_answers_are_retried(
    make, standin, clock, status, headers, least
):
    standin.fail(status, headers=headers)
    sleep = RecordingSleep(clock)
    exporter = make(sleep=sleep)

    await exporter.send_series(one_gauge())

    assert [r.status for r in standin.requests] == [status, 202]
    assert sleep.delays[0] >= least
    assert exporter.stats.dropped == 0


async def test_attempts_run_out_then_the_batch_is_dropped_with_one_warning(
    make, standin, clock, caplog
):
    standin.fail(503, times=10)
    sleep = RecordingSleep(clock)
    exporter = make(sleep=sleep, max_attempts=4)

    await exporter.send_series(one_gauge())

    assert len(standin.requests) == 4
    assert len(sleep.delays) == 3
    # Doubling with jitter: each wait lies in [base/2, base] for base 1, 2, 4.
    for delay, base in zip(sleep.delays, (1.0, 2.0, 4.0), strict=True):
        assert base / 2 <= delay <= base
    levels = [r.levelno for r in caplog.records if r.name.startswith("tocsin")]
    assert levels == [logging.WARNING, logging.ERROR]
    assert (exporter.stats.dropped, exporter.stats.last_error) == (1, "server_error")


async def test_transport_errors_are_retried(make, clock):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    exporter = make(base_url=f"http://127.0.0.1:{port}", max_attempts=2)

    await exporter.send_series(one_gauge())

    assert exporter.stats.requests == 2
    assert (exporter.stats.dropped, exporter.stats.last_error) == (1, "transport")


async def test_400_is_final(make, standin, clock, caplog):
    sleep = RecordingSleep(clock)
    exporter = make(sleep=sleep)
    stale = one_gauge()
    stale[0]["points"][0]["timestamp"] = NOW - 4000

    await exporter.send_series(stale)

    assert [r.status for r in standin.requests] == [400]
    assert sleep.delays == []
    assert exporter.stats.dropped == 1
    (error,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "outside" in error.getMessage()


async def test_403_is_final_and_the_key_never_reaches_a_log(make, standin, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "dd-wrong-key-0000111122223333"
    exporter = make(key=wrong)

    await exporter.send_series(one_gauge())

    assert [r.status for r in standin.requests] == [403]
    assert standin.requests[0].headers["DD-API-KEY"] == wrong
    assert (exporter.stats.dropped, exporter.stats.last_error) == (1, "auth")
    (error,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "API key" in error.getMessage()
    for record in caplog.records:
        assert wrong not in record.getMessage()
        assert wrong not in repr(record.__dict__)
    assert wrong not in caplog.text
