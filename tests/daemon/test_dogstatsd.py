"""DogStatsD parsing: tables of lines, the field failure cases, and properties."""

from __future__ import annotations

import logging
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.daemon.conftest import NOW, RecordingSink, Sample, counters
from tocsin.clock import ManualClock
from tocsin.daemon.dogstatsd import DogStatsDParser
from tocsin.daemon.ingest import IngestStats

OLDEST = int(NOW) - 3600
NEWEST = int(NOW) + 600
#: 256 tags, the most a line may carry, and a line of 8 KiB, the longest.
MOST_TAGS = [f"t{index}" for index in range(256)]
LONGEST = b"n:1|c|#a:" + b"v" * (8192 - 9)


def parse(datagram: bytes, clock=None) -> tuple[RecordingSink, IngestStats]:
    sink, stats = RecordingSink(), IngestStats()
    DogStatsDParser(sink, stats, clock or ManualClock(NOW)).feed(datagram)
    return sink, stats


def s(name, kind, value, tags=(), rate=1.0, timestamp=NOW) -> Sample:
    """Spell an expected sample; sets carry no rate."""
    return Sample(
        name, kind, tuple(tags), value, None if kind == "s" else rate, timestamp
    )


# (datagram, expected samples, expected parse errors by reason, other counters)
ACCEPTED = {
    "F01 colons in tag values": (
        b"model.req:42|c|#svc_addr:10.0.0.1:443,route:/v1/a:b",
        [s("model.req", "c", 42.0, ["svc_addr:10.0.0.1:443", "route:/v1/a:b"])],
    ),
    "F02 exponents": (
        b"lat:4.6968460083008E-5|ms|@0.25\ndisk.used:7.72529e+11|g",
        [
            s("lat", "ms", 4.6968460083008e-05, rate=0.25),
            s("disk.used", "g", 772529000000.0),
        ],
    ),
    "F03 signed gauges are absolute": (
        b"temp:-1|g\ntemp:-1|g\ntemp:-1|g\ntemp:+5|g",
        [s("temp", "g", -1.0)] * 3 + [s("temp", "g", 5.0)],
    ),
    "F04 empty tag entries": (
        b"m1:1|c|#a:1,,b:2\nm2:1|c|#\nm3:1|c|#,env:prod,\nm4:1|c|#key:",
        [
            s("m1", "c", 1.0, ["a:1", "b:2"]),
            s("m2", "c", 1.0),
            s("m3", "c", 1.0, ["env:prod"]),
            s("m4", "c", 1.0, ["key"]),
        ],
    ),
    "F05 unicode name kept as is": (
        "модель.latency:12|ms|#env:prod".encode(),
        [s("модель.latency", "ms", 12.0, ["env:prod"])],
    ),
    "every type": (
        b"a:1|c\nb:2|g\nc:3|ms\nd:4|h\ne:5|d\nf:member|s",
        [
            s("a", "c", 1.0),
            s("b", "g", 2.0),
            s("c", "ms", 3.0),
            s("d", "h", 4.0),
            s("e", "d", 5.0),
            s("f", "s", "member"),
        ],
    ),
    "packed values, empty items skipped": (
        b"p:1:2:32|d|#a:b\nq:21::22|h\nr:7:|c",
        [s("p", "d", v, ["a:b"]) for v in (1.0, 2.0, 32.0)]
        + [s("q", "h", 21.0), s("q", "h", 22.0), s("r", "c", 7.0)],
    ),
    "a set member is the raw value": (
        b"users:a:b|s|@0.5\nusers:1.5|s",
        [s("users", "s", "a:b"), s("users", "s", "1.5")],
    ),
    "number forms": (
        b"n:.5|g\nn:5.|g\nn:+.5e-3|g\nn:-0|g\nn:1E5|g\nn:007|g",
        [s("n", "g", v) for v in (0.5, 5.0, 0.0005, -0.0, 100000.0, 7.0)],
    ),
    "rates": (
        b"r:1|c|@1\nr:1|c|@0.001\nr:1|c|@1e-2",
        [s("r", "c", 1.0, rate=rate) for rate in (1.0, 0.001, 0.01)],
    ),
    "optional fields in any order, unknown ones ignored": (
        b"m:1|c|c:ci-123|#a:b|e:it-x|card:high|@0.5|zz:unknown|",
        [s("m", "c", 1.0, ["a:b"], rate=0.5)],
    ),
    "CR stripped, empty lines skipped": (
        b"\n\r\nm:1|c|#a:b\r\n\n\r",
        [s("m", "c", 1.0, ["a:b"])],
    ),
    "T honoured for counts and gauges": (
        b"c:1|c|T%d\ng:2|g|#a:b|T%d" % (OLDEST, NEWEST),
        [
            s("c", "c", 1.0, timestamp=OLDEST),
            s("g", "g", 2.0, ["a:b"], timestamp=NEWEST),
        ],
    ),
    "T checked but ignored for other types": (
        b"t:1|ms|T1\nh:2|h|T99999999999\nu:x|s|T5",
        [s("t", "ms", 1.0), s("h", "h", 2.0), s("u", "s", "x")],
    ),
    "the most tags and the longest line": (
        b"m:1|c|#" + ",".join(MOST_TAGS).encode() + b"\n" + LONGEST,
        [s("m", "c", 1.0, MOST_TAGS), s("n", "c", 1.0, ["a:" + "v" * 8183])],
    ),
}


@pytest.mark.parametrize(
    ("datagram", "expected"), ACCEPTED.values(), ids=list(ACCEPTED)
)
def test_accepted_lines(datagram, expected):
    sink, stats = parse(datagram)

    assert sink.samples == expected
    assert stats.parse_errors == 0
    assert stats.samples == len(expected)
    assert stats.non_finite == stats.too_old == stats.too_new == 0


def test_line_count_ignores_blank_lines():
    _, stats = parse(b"\n\r\nm:1|c\r\n\n\r\nbad\n")

    assert stats.lines == 2
    assert stats.datagrams == 1


REJECTED = {
    "F02 nan": (b"x:nan|g", "value"),
    "F02 inf": (b"x:inf|g", "value"),
    "F02 -Infinity": (b"x:-Infinity|g", "value"),
    "F02 underscore": (b"x:1_000|c", "value"),
    "F02 leading space": (b"x: 5|g", "value"),
    "trailing space": (b"x:5 |g", "value"),
    "hex": (b"x:0x10|g", "value"),
    "bare exponent": (b"x:1e|g", "value"),
    "lone sign": (b"x:-|g", "value"),
    "lone dot": (b"x:.|g", "value"),
    "arabic digits": ("x:١٢|g".encode(), "value"),
    "empty value": (b"x:|c", "value"),
    "only empty packed items": (b"x::|d", "value"),
    "one bad packed item": (b"x:1:nan:2|d", "value"),
    "empty name": (b":1|c", "name"),
    "no colon": (b"x|c", "syntax"),
    "no pipe": (b"x:1", "syntax"),
    "colon only after the pipe": (b"x|c:1", "syntax"),
    "gibberish": (b"hello world", "syntax"),
    "unknown type": (b"x:1|q", "type"),
    "empty type": (b"x:1|", "type"),
    "uppercase type": (b"x:1|C", "type"),
    "type with tags glued": (b"x:1|c#a", "type"),
    "rate zero": (b"x:1|c|@0", "rate"),
    "rate above one": (b"x:1|c|@1.5", "rate"),
    "negative rate": (b"x:1|c|@-0.5", "rate"),
    "rate not a number": (b"x:1|c|@abc", "rate"),
    "rate nan": (b"x:1|c|@nan", "rate"),
    "empty rate": (b"x:1|c|@", "rate"),
    "T zero": (b"x:1|c|T0", "timestamp"),
    "T negative": (b"x:1|c|T-5", "timestamp"),
    "T fraction": (b"x:1|g|T1750000000.5", "timestamp"),
    "T empty": (b"x:1|g|T", "timestamp"),
    "T text, ignored type": (b"x:1|ms|Tabc", "timestamp"),
    "T superscript digit": ("x:1|g|T²".encode(), "timestamp"),
    "F05 invalid UTF-8": (b"m:1|c|#host:\xff\xfe", "utf8"),
    "event, zero title": (b"_e{0,4}:|text", "event"),
    "event, body too short": (b"_e{5,10}:title|text", "event"),
    "event, no separator": (b"_e{5,4}:titlextext", "event"),
    "event, lengths too short": (b"_e{2,2}:title|text", "event"),
    "event, text longer than declared": (b"_e{5,3}:title|text", "event"),
    "event, bad header": (b"_e{x,4}:title|text", "event"),
    "event, no colon": (b"_e{5,4}title|text", "event"),
    "event, invalid UTF-8": (b"_e{2,4}:\xff\xfe|text", "utf8"),
    "service check, bad status": (b"_sc|chk|4", "service_check"),
    "service check, empty name": (b"_sc||0", "service_check"),
    "service check, no status": (b"_sc|chk", "service_check"),
    "line over 8 KiB": (LONGEST + b"v", "too_long"),
    "event over 8 KiB": (b"_e{5,8200}:title|" + b"t" * 8200, "too_long"),
    "257 tags": (b"m:1|c|#" + b",".join([b"t"] * 257), "too_many_tags"),
}


@pytest.mark.parametrize(("line", "reason"), REJECTED.values(), ids=list(REJECTED))
def test_rejected_lines_are_counted_by_reason(line, reason):
    sink, stats = parse(line + b"\nok:1|c")

    assert sink.samples == [s("ok", "c", 1.0)]
    assert stats.errors_by_reason == {reason: 1}
    assert stats.parse_errors == 1
    assert (stats.lines, stats.samples) == (2, 1)


@pytest.mark.parametrize(
    ("line", "counter"),
    [
        (b"x:1e999|g", "non_finite"),
        (b"x:-1e999|g", "non_finite"),
        (b"x:1:1e400|d", "non_finite"),
        (b"x:1|c|T%d" % (OLDEST - 1), "too_old"),
        (b"x:1|g|T1", "too_old"),
        (b"x:1|c|T%d" % (NEWEST + 1), "too_new"),
        (b"x:1|g|T" + b"9" * 5000, "timestamp"),
    ],
)
def test_refused_samples_are_counted_apart(line, counter):
    sink, stats = parse(line + b"\nok:1|c")

    assert sink.samples == [s("ok", "c", 1.0)]
    values = counters(stats)
    if counter == "timestamp":
        assert values["errors_by_reason"] == {"timestamp": 1}
    else:
        assert values[counter] == 1
        assert values["parse_errors"] == 0


def test_events_and_service_checks_are_only_counted():
    datagram = "\n".join(
        [
            "_e{5,4}:title|text",
            "_e{5,4}:title|text|d:1750000000|h:host|k:agg|p:low|s:src|t:error|#a:b",
            "_e{6,0}:tïtle|",
            r"_e{8,9}:a\ntitle|two\nrows",
            "_sc|chk|0",
            "_sc|chk|3|d:1750000000|h:host|#a:b|m:all | fine",
            "m:1|c",
        ]
    ).encode()

    sink, stats = parse(datagram)

    assert sink.samples == [s("m", "c", 1.0)]
    assert (stats.events, stats.service_checks, stats.parse_errors) == (4, 2, 0)


def test_F05_bad_line_does_not_poison_the_datagram():
    datagram = (
        b"m:1|c|#host:\xff\xfe\nok:1|c\n" + "модель.latency:12|ms|#env:prod".encode()
    )

    sink, stats = parse(datagram)

    assert sink.samples == [
        s("ok", "c", 1.0),
        s("модель.latency", "ms", 12.0, ["env:prod"]),
    ]
    assert stats.errors_by_reason == {"utf8": 1}
    assert (stats.lines, stats.samples) == (3, 2)


def test_F03_gauge_reads_last_absolute_value(sink, stats, clock):
    parser = DogStatsDParser(sink, stats, clock)
    readings = []
    for line in (b"temp:-1|g", b"temp:-1|g", b"temp:-1|g", b"temp:+5|g"):
        parser.feed(line)
        readings.append(sink.samples[-1].value)

    assert readings == [-1.0, -1.0, -1.0, 5.0]


ODD_VALUES = [
    b"nan", b"NaN", b"inf", b"-inf", b"Infinity", b"1_000", b" 5", b"5 ", b"\t5",
    b"5\x0b", b"1e999", b"-1e999", b"0x10", b"", b"1:2", b"1::nan", b"+", b"1e5",
    b".5", b"5.", b"-3", b"+4", b"\xff", b"5" * 8200,
]  # fmt: skip


@pytest.mark.parametrize("value", ODD_VALUES)
def test_cached_series_is_judged_like_a_new_one(value):
    line = b"m:" + value + b"|g|#a:b"
    first_sink, first_stats = parse(line)
    expected = counters(first_stats)
    expected["lines"] += 1
    expected["samples"] += 1
    sink, stats = RecordingSink(), IngestStats()
    parser = DogStatsDParser(sink, stats, ManualClock(NOW))

    parser.feed(b"m:1|g|#a:b")
    parser.feed(line)

    assert sink.samples[1:] == first_sink.samples
    assert counters(stats) == expected


def test_series_resolved_once_whatever_the_rate(sink, stats, clock):
    parser = DogStatsDParser(sink, stats, clock)
    for _ in range(3):
        parser.feed(b"m:1|c|#a:b\nm:2|c|#a:b|@0.5\nm:3|c|#a:b|T%d" % NOW)

    assert sink.resolved == [("m", "c", ("a:b",))]
    assert len(sink.samples) == 9
    assert [sample.rate for sample in sink.samples[:3]] == [1.0, 0.5, 1.0]


def test_stamped_lines_do_not_fill_the_line_cache(sink, stats, clock):
    parser = DogStatsDParser(sink, stats, clock)
    parser.feed(b"\n".join(b"m:1|g|T%d" % (NOW - i) for i in range(100)))

    assert len(parser._lines.entries) == 0
    assert [sample.timestamp for sample in sink.samples] == [
        NOW - i for i in range(100)
    ]


def test_full_cache_is_cleared_and_series_resolved_again(sink, stats, clock):
    parser = DogStatsDParser(sink, stats, clock, cache_size=2)
    datagram = b"a:1|c\nb:1|c\nc:1|c"

    parser.feed(datagram)
    parser.feed(datagram)

    assert len(parser._lines.entries) <= 2
    assert len(parser._series.entries) <= 2
    assert [name for name, _, _ in sink.resolved] == ["a", "b", "c", "a", "b", "c"]
    assert [sample.name for sample in sink.samples] == ["a", "b", "c"] * 2


def test_clock_read_once_per_datagram(sink, stats):
    class CountingClock(ManualClock):
        reads = 0

        def time(self) -> float:
            self.reads += 1
            return super().time()

    clock = CountingClock(NOW)
    parser = DogStatsDParser(sink, stats, clock)
    parser.feed(b"a:1|c\nb:1|g\nc:1|ms\nbad\nd:x|s")

    assert clock.reads == 1


def test_handle_that_raises_costs_one_sample_only(stats, clock, caplog):
    caplog.set_level(logging.ERROR, logger="tocsin.daemon.dogstatsd")

    class Fussy(RecordingSink):
        def resolve(self, name, kind, tags):
            if name == "boom":
                raise RuntimeError("resolve failed")
            handle = super().resolve(name, kind, tags)
            if name == "bad":
                handle.add = None  # calling it raises TypeError
            return handle

    sink = Fussy()
    parser = DogStatsDParser(sink, stats, clock)
    for _ in range(2):
        parser.feed(b"bad:1|c\nboom:1|c\nok:1|c")

    assert [sample.name for sample in sink.samples] == ["ok", "ok"]
    assert stats.errors_by_reason == {"internal": 4}
    assert stats.samples == 2
    assert [r.getMessage() for r in caplog.records] == [
        "ingesting a line failed; its samples are lost"
    ]


def test_warnings_are_rate_limited(sink, stats, clock, caplog):
    parser = DogStatsDParser(sink, stats, clock)
    caplog.set_level(logging.WARNING, logger="tocsin.daemon.dogstatsd")

    parser.feed(b"\n".join([b"x:nan|g"] * 1000))
    clock.advance(11)
    parser.feed(b"x:nan|g")

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [(r.reason, r.suppressed) for r in warnings] == [
        ("value", 0),
        ("value", 999),
    ]
    assert warnings[0].listener == "dogstatsd"
    assert stats.errors_by_reason == {"value": 1001}


@pytest.mark.parametrize("listener", ["udp", "unix_dgram"])
def test_log_lines_name_the_listener(stats, clock, caplog, listener):
    class Failing(RecordingSink):
        def resolve(self, name, kind, tags):
            raise RuntimeError("resolve failed")

    parser = DogStatsDParser(Failing(), stats, clock, listener=listener)
    caplog.set_level(logging.WARNING, logger="tocsin.daemon.dogstatsd")

    parser.feed(b"x:nan|g\nm:1|c")

    assert [(r.levelname, r.listener) for r in caplog.records] == [
        ("WARNING", listener),
        ("ERROR", listener),
    ]


# Properties.

TEXT = st.text(
    st.characters(codec="utf-8", exclude_characters=":|,\n\r"), min_size=1, max_size=12
)
FINITE = st.floats(allow_nan=False, allow_infinity=False)
RATES = st.floats(min_value=0.0, max_value=1.0, exclude_min=True)


def reference_tags(tags: list[str]) -> tuple[str, ...]:
    """Drop empty tags; a tag ending in its only colon is a bare key."""
    result = []
    for tag in tags:
        if tag.count(":") == 1 and tag.endswith(":"):
            tag = tag[:-1]
        if tag:
            result.append(tag)
    return tuple(result)


@st.composite
def metric_lines(draw):
    """Return (line, expected samples) for one well-formed metric line."""
    name = draw(TEXT.filter(lambda text: not text.startswith("_e{")))
    kind = draw(st.sampled_from(["c", "g", "ms", "h", "d", "s"]))
    tag_text = st.text(st.characters(codec="utf-8", exclude_characters="|,\n\r"))
    tags = draw(st.lists(tag_text, max_size=4))
    rate = draw(st.none() | RATES)
    stamp = draw(st.none() | st.integers(int(NOW) - 3600, int(NOW) + 600))
    if kind == "s":
        values = [draw(TEXT | st.just("a:b"))]
        value_text = values[0]
    else:
        numbers = draw(
            st.lists(FINITE | st.integers(-(10**20), 10**20), min_size=1, max_size=3)
        )
        values = [float(number) for number in numbers]
        spell = draw(st.sampled_from([repr, "{:.17e}".format, "{:+.17E}".format]))
        value_text = ":".join(
            str(number) if isinstance(number, int) else spell(number)
            for number in numbers
        )
    fields = [f"#{','.join(tags)}"] if tags else []
    fields += [f"@{rate!r}"] if rate is not None else []
    fields += [f"T{stamp}"] if stamp is not None else []
    fields += draw(
        st.lists(st.sampled_from(["c:ci-1", "e:it-2", "card:low"]), max_size=2)
    )
    fields = draw(st.permutations(fields))
    line = "|".join([f"{name}:{value_text}", kind, *fields])

    timestamp = float(stamp) if stamp is not None and kind in ("c", "g") else NOW
    sample_rate = None if kind == "s" else (1.0 if rate is None else rate)
    expected = [
        Sample(name, kind, reference_tags(tags), value, sample_rate, timestamp)
        for value in values
    ]
    return line.encode(), expected


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(metric_lines(), min_size=1, max_size=8))
def test_well_formed_lines_parse_back(lines):
    datagram = b"\n".join(line for line, _ in lines)
    expected = [sample for _, samples in lines for sample in samples]
    sink, stats = RecordingSink(), IngestStats()
    parser = DogStatsDParser(sink, stats, ManualClock(NOW))

    parser.feed(datagram)
    parser.feed(datagram)

    assert sink.samples == expected * 2
    assert stats.parse_errors == 0
    assert stats.samples == 2 * len(expected)
    assert stats.lines == 2 * len(lines)


FRAGMENTS = st.sampled_from(
    [
        b":", b"|", b"\n", b"\r", b"c", b"g", b"ms", b"s", b"d", b"#", b",", b"@",
        b"@0.5", b"1", b"-2.5", b"nan", b"1e999", b"_", b" ", b"T", b"T1750000000",
        b"_e{1,1}:", b"_sc|", b"a:b", b"\xff", "é".encode(), b"1:2",
    ]
)  # fmt: skip
NOISE = st.lists(FRAGMENTS | st.binary(max_size=6), max_size=40).map(b"".join)


def outcome_count(stats: IngestStats) -> int:
    return (
        stats.parse_errors
        + stats.non_finite
        + stats.too_old
        + stats.too_new
        + stats.events
        + stats.service_checks
    )


@settings(max_examples=300)
@given(NOISE)
def test_any_bytes_are_accounted_for(datagram):
    sink, stats = RecordingSink(), IngestStats()
    parser = DogStatsDParser(sink, stats, ManualClock(NOW))
    parser.feed(datagram)
    parser.feed(datagram)

    lines = [line for line in datagram.split(b"\n") if line.removesuffix(b"\r")]
    assert stats.lines == 2 * len(lines)

    # Line by line, each line lands in exactly one outcome, and cutting the
    # input into datagrams differently changes nothing.
    one_sink, one_stats = RecordingSink(), IngestStats()
    one_by_one = DogStatsDParser(one_sink, one_stats, ManualClock(NOW))
    accepted = 0
    for line in lines * 2:
        before = (len(one_sink.samples), outcome_count(one_stats))
        one_by_one.feed(line)
        produced = len(one_sink.samples) - before[0]
        refused = outcome_count(one_stats) - before[1]
        assert (produced >= 1 and refused == 0) or (produced == 0 and refused == 1)
        accepted += produced >= 1

    assert one_sink.samples == sink.samples
    assert counters(one_stats) == counters(stats)
    assert accepted + outcome_count(stats) == stats.lines


def reference_number(text: str) -> float | str | None:
    """Read the value grammar by hand: the number, "non_finite", or None."""
    digits = "0123456789"
    at = 1 if text[:1] in ("+", "-") else 0
    start = at
    while text[at : at + 1] and text[at] in digits:
        at += 1
    count = at - start
    if text[at : at + 1] == ".":
        at += 1
        start = at
        while text[at : at + 1] and text[at] in digits:
            at += 1
        count += at - start
    if count == 0:
        return None
    if text[at : at + 1] in ("e", "E"):
        at += 1
        if text[at : at + 1] in ("+", "-"):
            at += 1
        start = at
        while text[at : at + 1] and text[at] in digits:
            at += 1
        if at == start:
            return None
    if at != len(text):
        return None
    number = float(text)
    return number if math.isfinite(number) else "non_finite"


@settings(max_examples=500)
@given(st.text(st.sampled_from("0123456789+-.eE_ naifINFx\t"), max_size=8))
def test_value_grammar_matches_reference(text):
    expected = reference_number(text)

    for warm in (False, True):
        sink, stats = RecordingSink(), IngestStats()
        parser = DogStatsDParser(sink, stats, ManualClock(NOW))
        if warm:
            parser.feed(b"v:0|g")
            del sink.samples[:]
        parser.feed(f"v:{text}|g".encode())

        if expected is None:
            assert sink.samples == []
            assert stats.parse_errors == 1
        elif expected == "non_finite":
            assert sink.samples == []
            assert stats.non_finite == 1
        else:
            assert sink.samples == [s("v", "g", expected)]
