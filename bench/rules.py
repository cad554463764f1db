"""Benchmark the rules engine's hot path and its memory per series.

Run from the repository root: ``/tmp/venv/bin/python -m bench.rules``.

The workload: 100,000 distinct (metric, tags) input series over 20 metrics; 50
rules on 10 of those metrics, each rule matching a slice of its metric's series
(an ``env`` or a ``region``), so most rules match most series not at all and
half the samples feed no rule. Samples arrive in datagrams of 25, stamped with
the datagram's arrival time, and ``evaluate_dirty`` follows every datagram, as
in the daemon. The handle cache is a dict from (metric, tags) to the list
``targets()`` returned, built before timing.

The baseline runs the same loop over the same datagrams doing only one dict
update per sample, in the same process.
"""

from __future__ import annotations

import gc
import random
import time
import tracemalloc

from tocsin.config import Duration, RuleConfig
from tocsin.rules.engine import RuleEngine

INPUT_SERIES = 100_000
METRICS = 20
RULED_METRICS = 10
ENVS = ("prod", "staging", "dev", "test")
REGIONS = ("r0", "r1", "r2", "r3", "r4")
AGGREGATIONS = ("avg", "max", "min", "sum", "last", "count")
DATAGRAM = 25
DATAGRAMS = 40_000
START = 1_750_000_000.0
P95_SERIES = 10_000


def make_rules() -> list[RuleConfig]:
    """Return 50 rules: five per ruled metric, four by env and one by region."""
    rules = []
    for m in range(RULED_METRICS):
        for j in range(5):
            match = {"env": ENVS[j]} if j < 4 else {"region": REGIONS[0]}
            rules.append(
                RuleConfig(
                    name=f"rule-{m}-{j}",
                    metric=f"model.metric{m}",
                    match=match,
                    group_by=["model", "host"],
                    aggregation=AGGREGATIONS[(m + j) % len(AGGREGATIONS)],
                    window=Duration(60.0 if j % 2 else 300.0),
                    op=">",
                    threshold=0.999 if (m + j) % 6 != 5 else 1e9,
                    for_=Duration(30.0 if j == 1 else 0.0),
                )
            )
    return rules


def make_series(rng: random.Random) -> list[tuple[str, dict[str, str]]]:
    """Return the input series as (metric, labels)."""
    series = []
    for i in range(INPUT_SERIES):
        labels = {
            "model": f"model-{i % 2000}",
            "env": ENVS[rng.randrange(len(ENVS))],
            "region": REGIONS[rng.randrange(len(REGIONS))],
            "host": f"host-{i}",
        }
        series.append((f"model.metric{i % METRICS}", labels))
    return series


def make_datagrams(rng: random.Random) -> list[list[tuple[int, float]]]:
    """Return datagrams of (input series index, value)."""
    return [
        [(rng.randrange(INPUT_SERIES), rng.random()) for _ in range(DATAGRAM)]
        for _ in range(DATAGRAMS)
    ]


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
    last: dict[int, float] = {}
    now = start
    began = time.perf_counter()
    for samples in datagrams:
        for index, value in samples:
            last[index] = value
        now += spacing
    return time.perf_counter() - began


def compare(engine, cache, datagrams, start: float, spacing: float) -> float:
    """Print engine and baseline rates over three alternating runs; return now."""
    total = DATAGRAM * len(datagrams)
    engine_times, baseline_times = [], []
    now = start
    for _ in range(3):
        baseline_times.append(run_baseline(datagrams, now, spacing))
        elapsed, decisions, now = run_engine(engine, cache, datagrams, now, spacing)
        engine_times.append(elapsed)
    engine_rate = total / min(engine_times)
    baseline_rate = total / min(baseline_times)
    print(
        f"  ingest-only baseline (dict update): {baseline_rate / 1e6:.2f} M samples/s"
    )
    print(f"  add + evaluate_dirty:               {engine_rate / 1e6:.2f} M samples/s")
    print(f"  ratio engine / baseline: {engine_rate / baseline_rate:.3f}")
    print(f"  decisions in the last run: {decisions}")
    return now


def measure_memory(rules, inputs, samples_per_series: int) -> tuple[int, float]:
    """Return (live series, traced bytes per live series) of a fresh engine."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    engine = RuleEngine(rules)
    engine.evaluate_dirty(START)
    for k in range(samples_per_series):
        now = START + k * 7.0
        for metric, labels in inputs:
            for series in engine.targets(metric, labels):
                series.add(0.5, now)
        engine.evaluate_dirty(now)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    count = engine.series_count
    return count, used / count


def main() -> None:
    rng = random.Random(7)
    rules = make_rules()
    inputs = make_series(rng)
    datagrams = make_datagrams(rng)
    total = DATAGRAM * DATAGRAMS

    engine = RuleEngine(rules)
    engine.evaluate_dirty(START)
    began = time.perf_counter()
    cache = [engine.targets(metric, labels) for metric, labels in inputs]
    resolved = time.perf_counter() - began
    fanout = [0, 0, 0]
    for found in cache:
        fanout[min(len(found), 2)] += 1
    print(f"rules: {len(rules)}; input series: {INPUT_SERIES:,}")
    print(
        f"input series feeding 0 / 1 / 2 rules: {fanout[0]:,} / {fanout[1]:,}"
        f" / {fanout[2]:,}; live rule series: {engine.series_count:,}"
    )
    print(f"targets(): {resolved / INPUT_SERIES * 1e6:.2f} us per input series")

    print(f"samples per run: {total:,} in datagrams of {DATAGRAM}, best of 3")
    # Steady: the stream's own clock runs at 0.5 M samples/s, so a series
    # gets a few samples per second and rarely opens a new bin.
    print("steady (stamped as if arriving at 0.5 M samples/s):")
    now = compare(engine, cache, datagrams, START, DATAGRAM / 0.5e6)
    # Sparse: a series gets a sample every few seconds, so most samples open
    # a new bin of their series (the window rotates on the add path).
    print("sparse (stamped 1 ms per datagram, 0.25 samples/s per input series):")
    now = compare(engine, cache, datagrams, now, 0.001)
    print(f"  stats: {engine.stats.as_dict()}")

    calls = 200_000
    began = time.perf_counter()
    for _ in range(calls):
        engine.evaluate_dirty(now)
    idle = (time.perf_counter() - began) / calls
    print(f"evaluate_dirty with nothing dirty: {idle * 1e9:.0f} ns")

    engine.tick(now)
    began = time.perf_counter()
    engine.tick(now + 0.001)
    quiet = time.perf_counter() - began
    began = time.perf_counter()
    engine.tick(now + 30.0)
    rotating = time.perf_counter() - began
    print(
        f"tick over {engine.series_count:,} series: {quiet * 1e3:.1f} ms"
        f" (no bin boundary crossed), {rotating * 1e3:.1f} ms (30 s later:"
        " every window rotates)"
    )

    count, per_series = measure_memory(rules, inputs, samples_per_series=3)
    print(f"traced memory per live series: {per_series:.0f} B ({count:,} series)")

    # A percentile rule fed by every sample, over 10,000 series so that their
    # sketches warm up (a young sketch grows its buckets on most adds); the
    # second run is timed. With the threshold above every value, min and max
    # settle the condition; with it among the values, each evaluation reads
    # the sketch, O(sketch size).
    for threshold in (1e9, 0.5):
        p95 = [
            RuleConfig(
                name="p95",
                metric="lat",
                group_by=["host"],
                aggregation="p95",
                threshold=threshold,
            )
        ]
        engine = RuleEngine(p95)
        engine.evaluate_dirty(now)
        labels = ({"host": f"h{i % P95_SERIES}"} for i in range(INPUT_SERIES))
        cache = [engine.targets("lat", tags) for tags in labels]
        spacing = DATAGRAM / 0.5e6
        _, _, now = run_engine(engine, cache, datagrams, now, spacing)
        elapsed, _, now = run_engine(engine, cache, datagrams, now, spacing)
        print(
            f"one p95 rule over {P95_SERIES:,} series fed by every sample,"
            f" threshold {threshold:g}: {total / elapsed / 1e6:.2f} M samples/s"
        )

    sketched = [("lat", {"host": f"h{i}"}) for i in range(2000)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    engine = RuleEngine(p95[:1])
    engine.evaluate_dirty(START)
    for k in range(40):
        for metric, labels in sketched:
            for series in engine.targets(metric, labels):
                series.add(rng.lognormvariate(3.0, 1.0), START + k * 7.0)
        engine.evaluate_dirty(START + k * 7.0)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    print(
        f"traced memory per live p95 series (40 samples over 12 bins):"
        f" {used / engine.series_count:,.0f} B"
    )


if __name__ == "__main__":
    main()
