"""Benchmark the rules engine's hot path, its ticks and its memory per series.

Run from the repository root: ``.venv/bin/python -m bench.rules`` (~1 min).

The workload and the 50-rule mix are described in :mod:`bench._rules_workload`.
Samples arrive in datagrams of 25, stamped with the datagram's arrival time,
and ``evaluate_dirty`` follows every datagram, as in the daemon. The handle
cache is a list from input series to what ``targets()`` returned, built before
timing. Ticks are timed apart from the sample path.

The baseline runs the same loop over the same datagrams doing only one dict
update per sample, in the same process, alternating with the engine's runs;
rates are the best of three runs. Figures are printed as a table at the end.
"""

from __future__ import annotations

import gc
import random
import time
import tracemalloc
from math import ceil

from bench._rules_workload import (
    DATAGRAM,
    START,
    kind_rules,
    make_datagrams,
    make_rules,
    make_series,
)
from tocsin.rules.engine import RuleEngine

DATAGRAMS = 20_000
RUNS = 3
#: Stream-clock spacing of datagrams: as if they arrived at 0.5 M samples/s.
STEADY = DATAGRAM / 0.5e6
#: 2 ms per datagram: an input series gets a sample every 8 s, so most
#: samples of a 1m window open a new bin (the window rotates on the add path).
SPARSE = 0.002
#: Series per kind in the memory figures.
KIND_SERIES = 2_000


def run_engine(engine, cache, datagrams, start: float, spacing: float):
    """Feed every datagram, stamped ``spacing`` apart from ``start``."""
    decisions = 0
    now = start
    began = time.perf_counter()
    for samples in datagrams:
        for index, value in samples:
            for series in cache[index]:
                series.add(value, now)
        decisions += len(engine.evaluate_dirty(now))
        now += spacing
    return time.perf_counter() - began, decisions, now


def run_baseline(datagrams, start: float, spacing: float) -> float:
    """Time the same loop doing one dict update per sample."""
    last: dict[int, float] = {}
    now = start
    began = time.perf_counter()
    for samples in datagrams:
        for index, value in samples:
            last[index] = value
        now += spacing
    return time.perf_counter() - began


def compare(engine, cache, datagrams, start: float, spacing: float):
    """Return (engine rate, baseline rate, decisions, now), best of RUNS each."""
    total = DATAGRAM * len(datagrams)
    engine_times, baseline_times = [], []
    now = start
    decisions = 0
    for _ in range(RUNS):
        baseline_times.append(run_baseline(datagrams, now, spacing))
        elapsed, decisions, now = run_engine(engine, cache, datagrams, now, spacing)
        engine_times.append(elapsed)
    return total / min(engine_times), total / min(baseline_times), decisions, now


def build(rules, inputs):
    """Return a started engine and the cache of each input series' targets."""
    engine = RuleEngine(rules)
    engine.evaluate_dirty(START)
    return engine, [engine.targets(metric, labels) for metric, labels in inputs]


def time_ticks(engine, now: float) -> tuple[float, float, int]:
    """Return (rotation, ordinary) tick seconds and the live series ticked.

    The rotating tick lands just after a multiple of 25 s, where every bin
    of the 1m and 5m windows ends (no hour ends there, so tumbling rules
    only check their watched series); the ordinary tick follows 1 s later,
    inside the same bins.
    """
    engine.tick(now)
    rotation_at = ceil((now + 1.0) / 25.0) * 25.0 + 0.001
    engine.tick(rotation_at - 2.0)
    live = engine.series_count
    began = time.perf_counter()
    engine.tick(rotation_at)
    rotating = time.perf_counter() - began
    began = time.perf_counter()
    engine.tick(rotation_at + 1.0)
    ordinary = time.perf_counter() - began
    return rotating, ordinary, live


def traced_per_series(rules, feed) -> tuple[int, float]:
    """Return (live series, traced bytes per live series) after ``feed(engine)``."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    engine = RuleEngine(rules)
    engine.evaluate_dirty(START)
    feed(engine)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    count = engine.series_count
    return count, used / count


def kind_memory(kind: str, rng: random.Random) -> float:
    """Return traced bytes per series of one rule of ``kind``, windows full.

    Every series gets a sample per step for 24 steps (two windows, so a
    comparison's history is full too); values are log-normal, so percentile
    sketches hold as many buckets as real latencies give them.
    """
    rules = kind_rules(kind)
    step = 3600.0 / 12 if kind == "tumbling" else 300.0 / 12
    metrics = ("m", "n") if kind == "composite" else ("m",)
    inputs = [
        (metric, {"host": f"h{i}"}) for metric in metrics for i in range(KIND_SERIES)
    ]

    def feed(engine):
        cache = [engine.targets(metric, labels) for metric, labels in inputs]
        for k in range(24):
            now = START + k * step
            for found in cache:
                for series in found:
                    series.add(rng.lognormvariate(3.0, 1.0), now)
            engine.evaluate_dirty(now)
        engine.tick(START + 24 * step)

    return traced_per_series(rules, feed)[1]


def main() -> None:
    rng = random.Random(7)
    inputs = make_series(rng)
    datagrams = make_datagrams(rng, DATAGRAMS)
    total = DATAGRAM * DATAGRAMS
    rows: list[tuple[str, str, str, str]] = []

    # The mix, steady and sparse.
    rules = make_rules()
    began = time.perf_counter()
    engine, cache = build(rules, inputs)
    resolved = (time.perf_counter() - began) / len(inputs)
    print(
        f"mix: {len(rules)} rules, {len(inputs):,} input series,"
        f" {engine.series_count:,} live rule series;"
        f" targets(): {resolved * 1e6:.2f} us per input series"
    )
    print(f"samples per run: {total:,} in datagrams of {DATAGRAM}, best of {RUNS}")
    now = START
    for name, spacing in (("steady", STEADY), ("sparse", SPARSE)):
        rate, base, decisions, now = compare(engine, cache, datagrams, now, spacing)
        print(f"  {name}: {rate / 1e6:.2f} M samples/s, {decisions} decisions/run")
        rows.append(
            (
                f"add + evaluate_dirty, mix, {name}",
                f"{rate / 1e6:.2f} M samples/s",
                f"{base / 1e6:.2f} M",
                f"{rate / base:.3f}",
            )
        )
    print(f"  engine stats: {engine.stats.as_dict()}")

    rotating, ordinary, live = time_ticks(engine, now)
    rows.append(
        (
            f"tick at a bin rotation, {live:,} series",
            f"{rotating * 1e3:.0f} ms ({rotating / live * 1e9:.0f} ns/series)",
            "",
            "",
        )
    )
    rows.append((f"ordinary tick, {live:,} series", f"{ordinary * 1e3:.2f} ms", "", ""))
    del engine, cache
    gc.collect()

    # The same mix with every window 1m, then 1d: the rate must not depend
    # on the window's length.
    window_rates = {}
    for label, window in (("1m", 60.0), ("1d", 86400.0)):
        engine, cache = build(make_rules(window), inputs)
        rate, base, _, _ = compare(engine, cache, datagrams, START, SPARSE)
        window_rates[label] = rate / base
        print(f"  every window {label}, sparse: {rate / 1e6:.2f} M samples/s")
        rows.append(
            (
                f"add + evaluate_dirty, every window {label}, sparse",
                f"{rate / 1e6:.2f} M samples/s",
                f"{base / 1e6:.2f} M",
                f"{rate / base:.3f}",
            )
        )
        del engine, cache
        gc.collect()
    ratio = window_rates["1d"] / window_rates["1m"]
    rows.append(("rate with 1d windows / with 1m windows", f"{ratio:.2f}", "", ""))

    # Memory: the whole mix after three samples per input series, then each
    # kind alone with its windows full.
    def feed_mix(engine):
        for k in range(3):
            now = START + k * 7.0
            for metric, labels in inputs:
                for series in engine.targets(metric, labels):
                    series.add(0.5, now)
            engine.evaluate_dirty(now)

    count, per_series = traced_per_series(rules, feed_mix)
    rows.append(
        (
            f"memory per live series, mix, {count:,} series",
            f"{per_series:.0f} B",
            "",
            "",
        )
    )
    for kind in ("plain", "p95", "tumbling", "compare", "composite"):
        per_series = kind_memory(kind, rng)
        rows.append(
            (f"memory per series, {kind} alone", f"{per_series:,.0f} B", "", "")
        )

    print_table(rows)


def print_table(rows: list[tuple[str, str, str, str]]) -> None:
    """Print the figures as a plain table."""
    head = ("figure", "Tocsin", "baseline", "ratio")
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(4)]
    print()
    for row in [head, *rows]:
        print(
            "  ".join(
                cell.ljust(width) for cell, width in zip(row, widths, strict=True)
            )
        )


if __name__ == "__main__":
    main()
