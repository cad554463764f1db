"""Measure the ingest parsers in memory, next to a bare line split.

Run from the repository root: ``python bench/parse.py``. Every series is fed
once before timing, so the figures are those of already-seen series; the sink's
handles do nothing, so only parsing is measured. Each figure is the best of
``--rounds`` passes over the same input.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgspec  # noqa: E402

from tocsin.clock import SystemClock  # noqa: E402
from tocsin.daemon.dogstatsd import DogStatsDParser  # noqa: E402
from tocsin.daemon.ingest import IngestStats  # noqa: E402
from tocsin.daemon.ndjson import NdjsonDecoder  # noqa: E402
from tocsin.redaction import Redactor  # noqa: E402


class NullHandle:
    def add(self, value: float, rate: float, timestamp: float) -> None:
        pass

    def add_member(self, member: str, timestamp: float) -> None:
        pass


class NullSink:
    def __init__(self) -> None:
        self.handle = NullHandle()

    def resolve(self, name: str, kind: str, tags: tuple[str, ...]) -> NullHandle:
        return self.handle


class RedactingSink(NullSink):
    """Redacts each new series' tags, as the daemon's ingest router does."""

    def __init__(self) -> None:
        super().__init__()
        self.redactor = Redactor(["user_email", "customer_id"])

    def resolve(self, name: str, kind: str, tags: tuple[str, ...]) -> NullHandle:
        self.redactor.tags(tags)
        return self.handle


def dogstatsd_lines(rng: random.Random, series: int) -> list[bytes]:
    """Return one line template per series, with ``%s`` where the value goes."""
    kinds = ("c", "g", "ms", "h", "d")
    templates = []
    for number in range(series):
        kind = kinds[number % len(kinds)]
        tags = f"env:prod,model:m{number},version:v{number % 7}"
        rate = "|@0.5" if number % 10 == 0 else ""
        templates.append(f"model.metric{number % 50}:%s|{kind}{rate}|#{tags}")

    return [template.encode() for template in templates]


def dogstatsd_datagrams(
    rng: random.Random, series: int, lines: int, per_datagram: int
) -> tuple[list[bytes], list[bytes]]:
    """Return (datagrams that see every series once, timed datagrams)."""
    templates = dogstatsd_lines(rng, series)

    def value() -> bytes:
        if rng.random() < 0.5:
            return str(rng.randint(0, 1000)).encode()
        return f"{rng.uniform(0, 1000):.3f}".encode()

    warm = [template % value() for template in templates]
    warm_datagrams = [
        b"\n".join(warm[i : i + per_datagram]) for i in range(0, series, per_datagram)
    ]
    timed = []
    for _ in range(lines // per_datagram):
        picked = rng.choices(templates, k=per_datagram)
        timed.append(b"\n".join(template % value() for template in picked))

    return warm_datagrams, timed


def ndjson_chunks(
    rng: random.Random, series: int, records: int, per_chunk: int
) -> tuple[list[bytes], list[bytes]]:
    """Return (chunks that see every series once, timed chunks)."""
    encode = msgspec.json.encode
    now = time.time()

    def record(number: int) -> bytes:
        return encode(
            {
                "metric": f"model.metric{number % 50}",
                "value": rng.uniform(0, 1000),
                "timestamp": now,
                "tags": {"env": "prod", "model": f"m{number}"},
            }
        )

    warm = [record(number) for number in range(series)]
    warm_chunks = [
        b"\n".join(warm[i : i + per_chunk]) + b"\n" for i in range(0, series, per_chunk)
    ]
    timed = []
    for _ in range(records // per_chunk):
        picked = rng.choices(range(series), k=per_chunk)
        timed.append(b"\n".join(record(number) for number in picked) + b"\n")

    return warm_chunks, timed


def best_rate(feed, inputs: list[bytes], units: int, rounds: int) -> float:
    """Return the best units per second of ``feed`` over ``inputs``."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for data in inputs:
            feed(data)
        best = min(best, time.perf_counter() - started)

    return units / best


def split_only(data: bytes) -> None:
    for line in data.split(b"\n"):
        if not line:
            continue


def first_sight_rate(sink_type, datagrams: list[bytes], lines: int, rounds: int):
    """Return the best lines per second of a fresh parser and sink over
    ``datagrams``, so that every series is new to both."""
    best = float("inf")
    for _ in range(rounds):
        parser = DogStatsDParser(sink_type(), IngestStats(), SystemClock())
        started = time.perf_counter()
        for datagram in datagrams:
            parser.feed(datagram)
        best = min(best, time.perf_counter() - started)

    return lines / best


def report_redaction(title: str, redacting: float, plain: float) -> None:
    print(f"{title}")
    print(f"  with redaction     {redacting / 1e6:6.2f} M lines/s")
    print(f"  without            {plain / 1e6:6.2f} M lines/s")
    print(f"  with/without       {redacting / plain:6.3f}")


def report(title: str, parser_rate: float, split_rate: float, unit: str) -> None:
    print(f"{title}")
    print(f"  parser        {parser_rate / 1e6:6.2f} M {unit}/s")
    print(f"  split(b'\\n')  {split_rate / 1e6:6.2f} M {unit}/s")
    print(f"  parser/split  {parser_rate / split_rate:6.3f}")


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__)
    options.add_argument("--series", type=int, default=10_000)
    options.add_argument("--lines", type=int, default=1_000_000)
    options.add_argument("--rounds", type=int, default=5)
    args = options.parse_args()
    rng = random.Random(7)
    clock = SystemClock()

    # DogStatsD: 20-line datagrams.
    warm, timed = dogstatsd_datagrams(rng, args.series, args.lines, 20)
    stats = IngestStats()
    parser = DogStatsDParser(NullSink(), stats, clock)
    for datagram in warm:
        parser.feed(datagram)
    lines = len(timed) * 20
    parser_rate = best_rate(parser.feed, timed, lines, args.rounds)
    split_rate = best_rate(split_only, timed, lines, args.rounds)
    assert stats.parse_errors == 0, stats.as_dict()
    assert stats.samples == args.series + lines * args.rounds, stats.as_dict()
    report("DogStatsD, 20 lines per datagram", parser_rate, split_rate, "lines")

    # Redaction runs once per new series: the parser caches the handle.
    redacting = DogStatsDParser(RedactingSink(), IngestStats(), clock)
    for datagram in warm:
        redacting.feed(datagram)
    redacting_rate = best_rate(redacting.feed, timed, lines, args.rounds)
    report_redaction(
        "DogStatsD, known series, privacy detectors on", redacting_rate, parser_rate
    )
    redacting_rate = first_sight_rate(RedactingSink, warm, args.series, args.rounds)
    plain_rate = first_sight_rate(NullSink, warm, args.series, args.rounds)
    report_redaction(
        "DogStatsD, every series new, privacy detectors on", redacting_rate, plain_rate
    )

    # NDJSON: 100 records per chunk.
    warm, timed = ndjson_chunks(rng, args.series, args.lines // 4, 100)
    stats = IngestStats()
    decoder = NdjsonDecoder(NullSink(), stats, clock)
    for chunk in warm:
        decoder.feed(chunk)
    records = len(timed) * 100
    decoder_rate = best_rate(decoder.feed, timed, records, args.rounds)
    split_rate = best_rate(split_only, timed, records, args.rounds)
    assert stats.parse_errors == 0, stats.as_dict()
    report("NDJSON, 100 records per chunk", decoder_rate, split_rate, "records")


if __name__ == "__main__":
    main()
