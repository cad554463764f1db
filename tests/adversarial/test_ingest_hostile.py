"""Hostile input to the ingest parsers: memory and error accounting."""

from __future__ import annotations

import logging
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tocsin.clock import ManualClock
from tocsin.daemon.dogstatsd import BoundedCache, DogStatsDParser
from tocsin.daemon.ingest import DISCARD, IngestStats
from tocsin.daemon.ndjson import NdjsonDecoder

NOW = 1_750_000_000.0

#: 3,000 tags: a line of about 40 KB, well inside one UDP datagram.
_TAGS = b",".join(b"t%d:v%d" % (index, index) for index in range(3000))

#: What the parser may keep after 300 distinct 40 KB lines (12 MB of input).
#: Today each such line keeps about 300 KB in the line and series caches, so a
#: sender of 65,536 of them (2.6 GB of UDP) makes the daemon hold about 20 GB.
_RETAINED_BUDGET = 16 * 1024 * 1024

#: The cache bound of the parsers measured below, and the error allowed on it:
#: cache costs are estimates, and tracemalloc sees the allocator's rounding.
_CACHE_BYTES = 2 * 1024 * 1024
_SLACK = 1.25


class _DiscardSink:
    def resolve(self, name, kind, tags):
        return DISCARD


class _CountingSink:
    def __init__(self) -> None:
        self.resolved = 0

    def resolve(self, name, kind, tags):
        self.resolved += 1
        return DISCARD


def _retained(feed, inputs) -> int:
    """Return the bytes still allocated after ``feed`` took every input."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for data in inputs:
            feed(data)
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_distinct_long_lines_do_not_grow_the_parser_without_bound():
    parser = DogStatsDParser(_DiscardSink(), IngestStats(), ManualClock(NOW))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for index in range(300):
            parser.feed(b"lat:1|ms|#model:a," + _TAGS + b",u:%d" % index)
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()

    assert retained < _RETAINED_BUDGET, f"parser keeps {retained >> 20} MiB"


def _tiny_tags(index: int) -> bytes:
    # 256 tags of a few bytes: the most objects a line within the limits makes.
    return b"m%d:1|c|#" % index + b",".join(b"%d" % tag for tag in range(256))


def _long_name(index: int) -> bytes:
    return b"n%d" % index + b"x" * 8000 + b":1|g"


def _wide_name(index: int) -> bytes:
    # One character outside the BMP makes every character of the name take
    # four bytes in memory, four times its UTF-8 length.
    return "w{}{}".format(index, "x" * 8000 + "\U0001f600").encode() + b":1|g|#a:b"


def _stamped(index: int) -> bytes:
    # Stamped lines skip the line cache but fill the series cache.
    return _tiny_tags(index) + b"|T%d" % NOW


@pytest.mark.parametrize("line", [_tiny_tags, _long_name, _wide_name, _stamped])
def test_parser_caches_stay_within_their_bytes_whatever_the_lines(line):
    stats = IngestStats()
    parser = DogStatsDParser(
        _DiscardSink(), stats, ManualClock(NOW), cache_bytes=_CACHE_BYTES
    )

    retained = _retained(parser.feed, [line(index) for index in range(600)])

    assert stats.samples == 600
    assert retained < _CACHE_BYTES * _SLACK, f"parser keeps {retained >> 10} KiB"


def _ndjson_tags(index: int) -> bytes:
    tags = b",".join(b'"t%d"' % tag for tag in range(255))
    return b'{"metric":"m%d","value":1,"tags":[%s,"u"]}\n' % (index, tags)


def _ndjson_name(index: int) -> bytes:
    name = "n{}{}".format(index, "x" * 8000 + "\U0001f600")
    return b'{"metric":"%s","value":1}\n' % name.encode()


@pytest.mark.parametrize("line", [_ndjson_tags, _ndjson_name])
def test_a_shared_ndjson_cache_stays_within_its_bytes(line):
    stats, clock = IngestStats(), ManualClock(NOW)
    cache = BoundedCache(max_bytes=_CACHE_BYTES)
    decoders = [
        NdjsonDecoder(_DiscardSink(), stats, clock, cache=cache) for _ in range(8)
    ]
    lines = [line(index) for index in range(600)]

    retained = _retained(
        lambda index: decoders[index % 8].feed(lines[index]), range(600)
    )

    assert stats.samples == 600
    assert retained < _CACHE_BYTES * _SLACK, f"decoders keep {retained >> 10} KiB"


def test_legitimate_series_stay_on_the_cached_path():
    # A name of a few hundred bytes and forty tags: large, but what real
    # senders do.
    name = b"model." + b"n" * 300
    tags = b",".join(b"tag_%d:value_of_tag_%d" % (index, index) for index in range(40))
    sink, stats = _CountingSink(), IngestStats()
    parser = DogStatsDParser(sink, stats, ManualClock(NOW))

    for value in range(100):
        parser.feed(b"%s:%d|d|#%s" % (name, value, tags))

    assert (sink.resolved, stats.samples, stats.parse_errors) == (1, 100, 0)
    assert name + b"|d|#" + tags in parser._lines.entries


@pytest.mark.parametrize("depth", [5000, 2000])
def test_a_deeply_nested_ndjson_line_is_a_counted_bad_line_not_a_crash(caplog, depth):
    stats = IngestStats()
    decoder = NdjsonDecoder(_DiscardSink(), stats, ManualClock(NOW))
    deep = b'{"metric":"m","value":1,"tags":' + b"[" * depth + b"]" * depth + b"}"

    with caplog.at_level(logging.WARNING):
        decoder.feed(deep + b"\n" + b'{"metric":"m","value":2}\n')

    assert stats.parse_errors == 1
    assert "internal" not in stats.errors_by_reason
    assert stats.samples == 1
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


HOSTILE_DATAGRAMS = {
    "T of 5,000 digits": (b"m:1|g|T" + b"9" * 5000, "timestamp"),
    "value of 5,000 digits": (b"m:0." + b"9" * 5000 + b"|g", None),
    "value of 400 digits overflowing": (b"m:1" + b"0" * 400 + b"|g", "non_finite"),
    "event lengths at their widest": (b"_e{999999999,999999999}:t|x", "event"),
    "60 KB of empty tags": (b"m:1|c|#" + b"," * 60000, "too_long"),
    "8 KiB of empty tags": (b"m:1|c|#" + b"," * 8000, None),
    "8 KiB of pipes": (b"m:1|c" + b"|" * 8000, None),
    "8 KiB of packed values": (b"m:" + b"1:" * 4000 + b"|d", None),
    "8 KiB of colons": (b":" * 8000 + b"|c", "name"),
    "a NUL byte": (b"m\x00:1|c", None),
}


@pytest.mark.parametrize(
    ("datagram", "reason"), HOSTILE_DATAGRAMS.values(), ids=list(HOSTILE_DATAGRAMS)
)
def test_hostile_dogstatsd_lines_are_counted_never_internal(caplog, datagram, reason):
    stats = IngestStats()
    parser = DogStatsDParser(_DiscardSink(), stats, ManualClock(NOW))

    with caplog.at_level(logging.WARNING):
        parser.feed(datagram)
        parser.feed(datagram)

    expected = {} if reason in (None, "non_finite") else {reason: 2}
    assert stats.errors_by_reason == expected
    assert stats.non_finite == (2 if reason == "non_finite" else 0)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


@given(
    st.lists(
        st.tuples(st.integers(0, 20), st.integers(0, 300)), min_size=1, max_size=60
    )
)
def test_bounded_cache_never_passes_its_bounds(puts):
    cache = BoundedCache(max_entries=8, max_bytes=1000)
    costs: dict[int, int] = {}

    for key, cost in puts:
        cache.put(key, str(key), cost)
        if key not in cache.entries:
            # Only an entry larger than the whole cache is turned away.
            assert cost > 1000 and key not in costs
            continue
        costs = {k: costs.get(k, cost) for k in cache.entries}

        assert cache.entries[key] == str(key)
        assert len(cache.entries) <= 8
        assert cache.size == sum(costs.values()) <= 1000
