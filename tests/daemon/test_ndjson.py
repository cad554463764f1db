"""NDJSON decoding: tables of lines, chunking, bounds and the F06 case."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.daemon.conftest import NOW, RecordingSink, Sample, counters
from tocsin.clock import ManualClock
from tocsin.daemon.dogstatsd import BoundedCache
from tocsin.daemon.ingest import IngestStats
from tocsin.daemon.ndjson import NdjsonDecoder
from tocsin.logs import RateLimiter


def decode(*chunks: bytes, **options) -> tuple[RecordingSink, IngestStats]:
    sink, stats = RecordingSink(), IngestStats()
    decoder = NdjsonDecoder(sink, stats, ManualClock(NOW), **options)
    for chunk in chunks:
        decoder.feed(chunk)
    return sink, stats


def s(name, value, tags=(), kind="g", rate=1.0, timestamp=NOW) -> Sample:
    return Sample(name, kind, tuple(tags), value, rate, timestamp)


def record(tags: str, pad: int = 0) -> bytes:
    """Return a record with ``tags`` (JSON text), padded to ``pad`` bytes."""
    line = b'{"metric":"m","value":1,"tags":%s,"x":"' % tags.encode()
    return line + b"x" * max(0, pad - len(line) - 2) + b'"}'


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


#: 256 tags, the most a line may carry, as an object and as a list.
MOST_TAGS = [f"t{index}:v" for index in range(256)]
TAG_OBJECT = json.dumps(dict(tag.split(":") for tag in MOST_TAGS))
TAG_LIST = json.dumps(MOST_TAGS)


ACCEPTED = {
    "smallest record": (b'{"metric":"m","value":1}', s("m", 1.0)),
    "every field": (
        b'{"metric":"m","value":2.5,"timestamp":1749999000,'
        b'"tags":{"model":"a","env":"prod"},"type":"c","rate":0.5}',
        s("m", 2.5, ["model:a", "env:prod"], "c", 0.5, 1749999000.0),
    ),
    "tags as a list, cleaned like DogStatsD": (
        b'{"metric":"m","value":1,"tags":["a:1","","b:","svc:10.0.0.1:443"]}',
        s("m", 1.0, ["a:1", "b", "svc:10.0.0.1:443"]),
    ),
    "tag object with an empty value": (
        b'{"metric":"m","value":1,"tags":{"key":""}}',
        s("m", 1.0, ["key"]),
    ),
    "null tags and timestamp": (
        b'{"metric":"m","value":1,"tags":null,"timestamp":null}',
        s("m", 1.0),
    ),
    "exponent and sign": (b'{"metric":"m","value":-4.5E-5}', s("m", -4.5e-05)),
    "unknown fields ignored": (
        b'{"metric":"m","value":1,"host":"h","extra":{"a":[1]}}',
        s("m", 1.0),
    ),
    "spaces and CRLF": (b' { "metric" : "m" , "value" : 3 } \r', s("m", 3.0)),
    "unicode metric": ('{"metric":"модель","value":1}'.encode(), s("модель", 1.0)),
    "timestamp at the edges": (
        b'{"metric":"m","value":1,"timestamp":1749996400}',
        s("m", 1.0, timestamp=1749996400.0),
    ),
    "every type": (
        b'{"metric":"m","value":1,"type":"ms"}',
        s("m", 1.0, kind="ms"),
    ),
    "the most tags as an object": (record(TAG_OBJECT), s("m", 1.0, MOST_TAGS)),
    "the most tags as a list": (record(TAG_LIST), s("m", 1.0, MOST_TAGS)),
    "the longest line": (record("null", 8192), s("m", 1.0)),
}


@pytest.mark.parametrize(("line", "sample"), ACCEPTED.values(), ids=list(ACCEPTED))
def test_accepted_lines(line, sample):
    sink, stats = decode(line + b"\n")

    assert sink.samples == [sample]
    assert (stats.lines, stats.samples, stats.parse_errors) == (1, 1, 0)


REJECTED = {
    "not JSON": (b"model.req:1|c", "json"),
    "truncated": (b'{"metric":"m","value":1', "json"),
    "invalid UTF-8": (b'{"metric":"m\xff","value":1}', "json"),
    "top-level array": (b'["m",1]', "schema"),
    "missing metric": (b'{"value":1}', "schema"),
    "missing value": (b'{"metric":"m"}', "schema"),
    "value as text": (b'{"metric":"m","value":"1"}', "schema"),
    "value true": (b'{"metric":"m","value":true}', "schema"),
    "value null": (b'{"metric":"m","value":null}', "schema"),
    "type set": (b'{"metric":"m","value":1,"type":"s"}', "schema"),
    "unknown type": (b'{"metric":"m","value":1,"type":"x"}', "schema"),
    "timestamp as text": (b'{"metric":"m","value":1,"timestamp":"now"}', "schema"),
    "timestamp overflows": (b'{"metric":"m","value":1,"timestamp":1e999}', "schema"),
    "empty metric": (b'{"metric":"","value":1}', "name"),
    "rate zero": (b'{"metric":"m","value":1,"rate":0}', "rate"),
    "rate above one": (b'{"metric":"m","value":1,"rate":1.5}', "rate"),
    "tags a number": (b'{"metric":"m","value":1,"tags":5}', "tags"),
    "tag list of numbers": (b'{"metric":"m","value":1,"tags":[1]}', "tags"),
    "tag object of numbers": (b'{"metric":"m","value":1,"tags":{"a":1}}', "tags"),
    "line over 8 KiB": (record("null", 8193), "too_long"),
    "257 tags in an object": (record(TAG_OBJECT[:-1] + ',"u":"v"}'), "too_many_tags"),
    "257 tags in a list": (record(TAG_LIST[:-1] + ',"u"]'), "too_many_tags"),
    "tags nested, within reach": (record(deep(500)), "tags"),
    "tags nested too deep": (record(deep(2000)), "json"),
    "unknown field nested too deep": (
        b'{"metric":"m","value":1,"y":%s}' % deep(2000).encode(),
        "json",
    ),
}


@pytest.mark.parametrize(("line", "reason"), REJECTED.values(), ids=list(REJECTED))
def test_rejected_lines_are_counted_and_skipped(line, reason):
    sink, stats = decode(line + b'\n{"metric":"ok","value":1}\n')

    assert sink.samples == [s("ok", 1.0)]
    assert stats.errors_by_reason == {reason: 1}
    assert (stats.lines, stats.samples) == (2, 1)


@pytest.mark.parametrize(
    ("line", "counter"),
    [
        (b'{"metric":"err_ratio","value":NaN}', "non_finite"),
        (b'{"metric":"err_ratio","value":Infinity}', "non_finite"),
        (b'{"metric":"err_ratio","value":-Infinity}', "non_finite"),
        (b'{"metric":"err_ratio","value":1e999}', "non_finite"),
        (b'{"metric":"err_ratio","value":-1e999}', "non_finite"),
        (b'{"metric":"m","value":1,"timestamp":1749996399}', "too_old"),
        (b'{"metric":"m","value":1,"timestamp":1750000601}', "too_new"),
    ],
)
def test_refused_samples_are_counted_apart(line, counter):
    sink, stats = decode(line + b'\n{"metric":"ok","value":1}\n')

    assert sink.samples == [s("ok", 1.0)]
    assert counters(stats)[counter] == 1
    assert stats.parse_errors == 0


def test_F06_non_finite_values_never_reach_a_series():
    lines = [b'{"metric":"err_ratio","value":NaN}'] * 3
    lines.append(b'{"metric":"err_ratio","value":Infinity}')

    sink, stats = decode(b"\n".join(lines) + b"\n")

    assert sink.samples == []
    assert sink.resolved == []
    assert (stats.non_finite, stats.parse_errors, stats.lines) == (4, 0, 4)


def test_line_split_across_chunks_is_held():
    sink, stats = decode(
        b'{"metric":"a","val',
        b'ue":1}\n{"metric":',
        b'"b","value":2}',
        b"\n",
    )

    assert sink.samples == [s("a", 1.0), s("b", 2.0)]
    assert stats.lines == 2


def test_end_of_stream_decodes_an_unterminated_line():
    sink, stats = decode(b'{"metric":"a","value":1}\n{"metric":"b","value":2}', b"")

    assert sink.samples == [s("a", 1.0), s("b", 2.0)]


def test_end_of_stream_with_nothing_held_does_nothing():
    sink, stats = decode(b'{"metric":"a","value":1}\n', b"", b"")

    assert sink.samples == [s("a", 1.0)]
    assert stats.lines == 1


def test_long_line_without_newline_is_dropped_and_memory_bounded():
    sink, stats = RecordingSink(), IngestStats()
    decoder = NdjsonDecoder(sink, stats, ManualClock(NOW), max_line=100)

    decoder.feed(b'{"metric":"a","value":1}\n{"metric":"long","value":1,"pad":"')
    for _ in range(50):
        decoder.feed(b"x" * 64)
        assert len(decoder._pending) <= 100
    decoder.feed(b'"}\n{"metric":"b","value":2}\n')
    decoder.feed(b'{"metric":"c","value":3}\n')
    decoder.feed(b'{"metric":"d","value":4}\n')

    assert [sample.name for sample in sink.samples] == ["a", "b", "c", "d"]
    assert stats.errors_by_reason == {"too_long": 1}
    assert stats.lines == 5


def test_long_line_in_one_chunk_is_dropped_too():
    long_line = b'{"metric":"long","value":1,"pad":"' + b"x" * 200 + b'"}'

    sink, stats = decode(long_line + b'\n{"metric":"b","value":2}\n', max_line=100)

    assert sink.samples == [s("b", 2.0)]
    assert stats.errors_by_reason == {"too_long": 1}


def test_long_line_ending_at_end_of_stream_is_not_decoded():
    long_line = b'{"metric":"long","value":1,"pad":"' + b"x" * 200 + b'"}'

    sink, stats = decode(long_line[:150], long_line[150:], b"", max_line=100)

    assert sink.samples == []
    assert stats.errors_by_reason == {"too_long": 1}


def test_series_resolved_once_whatever_the_tag_spelling(sink, stats, clock):
    decoder = NdjsonDecoder(sink, stats, clock)
    decoder.feed(
        b'{"metric":"m","value":1,"tags":{"a":"1"}}\n'
        b'{"metric":"m","value":2,"tags": { "a" : "1" } }\n'
        b'{"metric":"m","value":3,"tags":["a:1"]}\n'
        b'{"metric":"m","value":4,"tags":{"a":"1"},"type":"c"}\n'
    )

    assert sink.resolved == [("m", "g", ("a:1",)), ("m", "c", ("a:1",))]
    assert [sample.value for sample in sink.samples] == [1.0, 2.0, 3.0, 4.0]


def test_full_cache_is_cleared(sink, stats, clock):
    cache = BoundedCache(max_entries=2)
    decoder = NdjsonDecoder(sink, stats, clock, cache=cache)
    chunk = b"".join(
        b'{"metric":"%s","value":1}\n' % name for name in (b"a", b"b", b"c")
    )

    decoder.feed(chunk)
    decoder.feed(chunk)

    assert [sample.name for sample in sink.samples] == list("abc") * 2
    assert [name for name, _, _ in sink.resolved] == list("abc") * 2
    assert len(cache.entries) <= 2


def test_decoders_of_a_listener_share_their_cache_and_limiter(
    sink, stats, clock, caplog
):
    caplog.set_level(logging.WARNING, logger="tocsin.daemon.ndjson")
    limiter, cache = RateLimiter(clock=clock.monotonic), BoundedCache()
    decoders = [
        NdjsonDecoder(sink, stats, clock, limiter=limiter, cache=cache)
        for _ in range(50)
    ]

    for decoder in decoders:
        decoder.feed(b'nope\n{"metric":"m","value":1,"tags":{"a":"1"}}\n')
    clock.advance(11)
    decoders[0].feed(b"nope\n")

    assert sink.resolved == [("m", "g", ("a:1",))]
    assert len(sink.samples) == 50
    assert [(r.reason, r.suppressed) for r in caplog.records] == [
        ("json", 0),
        ("json", 49),
    ]
    assert stats.errors_by_reason == {"json": 51}


def test_handle_that_raises_costs_one_sample_only(stats, clock):
    class Fussy(RecordingSink):
        def resolve(self, name, kind, tags):
            if name == "boom":
                raise RuntimeError("resolve failed")
            return super().resolve(name, kind, tags)

    sink = Fussy()
    decoder = NdjsonDecoder(sink, stats, clock)
    decoder.feed(b'{"metric":"boom","value":1}\n{"metric":"ok","value":1}\n')

    assert sink.samples == [s("ok", 1.0)]
    assert stats.errors_by_reason == {"internal": 1}


def test_warnings_are_rate_limited(sink, stats, clock, caplog):
    caplog.set_level(logging.WARNING, logger="tocsin.daemon.ndjson")
    decoder = NdjsonDecoder(sink, stats, clock, listener="unix_stream")

    decoder.feed(b"nope\n" * 500)
    clock.advance(11)
    decoder.feed(b"nope\n")

    warnings = [(r.reason, r.suppressed, r.listener) for r in caplog.records]
    assert warnings == [("json", 0, "unix_stream"), ("json", 499, "unix_stream")]


RECORDS = [
    b'{"metric":"a","value":1,"tags":{"k":"v"}}',
    b'{"metric":"b","value":-2.5e3,"type":"d"}',
    b'{"metric":"c","value":NaN}',
    b"junk",
    b"",
    b"   ",
    b'{"metric":"d","value":3,"timestamp":1749999999}\r',
    # Lines that would read as records if lines were simply joined by commas.
    b'{"metric":"e","value":1},{"metric":"f","value":2}',
    b'{"metric":"g","value":1} {"metric":"h","value":2}',
    b'[{"metric":"i","value":1}',
    b'{"metric":"j","value":1}]',
    b'{"metric":"k","value":1,"rate":0}',
    # Halves of records, each broken alone, that joined lines could complete.
    b'{"metric":"l","value":3',
    b'"tags":{"x":"y"}}',
    b'{"metric":"m","value":1,"x":"',
    b'{","metric":"n","value":2}',
    b'{"metric":"o","value":1,"tags":{"a":"b"',
    b'{"metric":"p","value":1,"tags":["a:1"]}',
]


@settings(max_examples=200)
@given(
    st.lists(st.sampled_from(RECORDS), min_size=1, max_size=10),
    st.lists(st.integers(min_value=0), max_size=8),
)
def test_chunking_never_changes_the_result(records, cuts):
    stream = b"\n".join(records) + b"\n"
    whole_sink, whole_stats = decode(stream)
    points = sorted({cut % (len(stream) + 1) for cut in cuts} | {0, len(stream)})
    chunks = [stream[a:b] for a, b in zip(points, points[1:], strict=False)]

    sink, stats = decode(*[chunk for chunk in chunks if chunk])

    assert sink.samples == whole_sink.samples
    assert counters(stats) == counters(whole_stats)
    assert whole_stats.lines == sum(1 for r in records if r.strip())


@settings(max_examples=200)
@given(st.lists(st.sampled_from(RECORDS), min_size=1, max_size=12))
def test_a_block_of_lines_decodes_as_its_lines_one_by_one(records):
    block = b"\n".join(records) + b"\n"
    one_by_one = [record + b"\n" for record in records]

    sink, stats = decode(block)
    alone_sink, alone_stats = decode(*one_by_one)

    assert sink.samples == alone_sink.samples
    assert counters(stats) == counters(alone_stats)


@pytest.mark.parametrize(
    "block",
    [
        b'{"metric":"a","value":1},{"metric":"b","value":2}\n'
        b'{"metric":"c","value":3\n"tags":{"x":"y"}}\n',
        b'{"metric":"a","value":1} {"metric":"b","value":2}\n'
        b'{"metric":"c","value":1,"x":"\n{","metric":"d","value":2}\n',
    ],
)
def test_broken_lines_never_combine_into_records(block):
    sink, stats = decode(block)

    assert sink.samples == []
    assert stats.parse_errors == 3
