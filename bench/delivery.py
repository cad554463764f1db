"""Measure Tocsin's delivery: throughput from the outbox, and the time from a
breach to the webhook's arrival, next to a baseline and a peer in the same run.

Run from the repository root: ``.venv/bin/python bench/delivery.py`` (~3 min;
``--quick`` for a short run, ``--no-peer`` without Prometheus). It prints a
Markdown report:

1. Notifications/s from the SQLite outbox to a local HTTP sink (a process of
   its own), through the real dispatcher and webhook channel; baseline: a bare
   aiohttp client posting the same bodies to the same sink (see
   :mod:`bench._throughput`). Rounds alternate the two.
2. Breach to arrival through the real daemon (``python -m tocsin run``): the
   real ``datadog`` DogStatsd client sends one breaching gauge of a new series
   (``model:t<i>``) over the Unix datagram socket, a rule with no pending
   duration and the routing defaults (no group wait) fires, and the webhook
   channel posts to a receiver in this process, which stamps the arrival with
   the ``time.perf_counter_ns`` clock the send was stamped with. Measured
   twice: with the state database in the run's temporary directory, and on a
   tmpfs (``/dev/shm``), where a commit's flush to disk costs nothing.
3. The same for Prometheus and Alertmanager (see :mod:`bench._peer`), once per
   scrape and evaluation interval asked for: the breach is a gauge of this
   process's exporter flipping to 1, timed to Alertmanager's webhook
   arriving. Missing binaries skip the peer, and the report says why.

Before each breach the benchmark pauses a random part of a period (the
peer's interval; 20 ms for Tocsin, enough for its previous delivery to be
recorded), so breaches fall at every phase of the peer's cycles. The first
breaches of each system warm connections and caches and are not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402
from datadog import DogStatsd  # noqa: E402

from bench import _processes as proc  # noqa: E402
from bench._delivery_report import Latency, Results, print_report  # noqa: E402
from bench._hooks import Arrivals  # noqa: E402
from bench._peer import Peer, find_binaries  # noqa: E402
from bench._throughput import drain_with_tocsin, fill, post_bare  # noqa: E402

HOOK_ENV = "TOCSIN_BENCH_HOOK"
WARMUP = 3
#: Longest pause before a breach sent to Tocsin, in seconds.
TOCSIN_PERIOD = 0.02
#: A tmpfs, where the state database's commits cost no disk flush.
MEMORY = Path("/dev/shm")

CONFIG = """\
[daemon]
state_dir = "{state}"
shutdown_timeout = "5s"

[ingest]
udp = ""
unix_dgram = "{dir}/dsd.sock"

[[channels]]
name = "bench-hook"
type = "webhook"
url_env = "{hook_env}"

[[rules]]
name = "breach"
metric = "bench.breach"
group_by = ["model"]
aggregation = "max"
window = "1m"
op = ">"
threshold = 0.2
channels = ["bench-hook"]
"""


async def measure_throughput(directory: Path, args, results: Results) -> None:
    """Run ``args.rounds`` rounds of Tocsin's drain and the bare baseline."""
    sink = await proc.start("sink", [sys.executable, str(proc.BENCH / "_hooks.py")])
    try:
        _, ready = await sink.wait_for(lambda record: "ready" in record)
        base = f"http://127.0.0.1:{ready['port']}"
        async with aiohttp.ClientSession() as session:
            before = await _sink_counts(session, base)
            for number in range(args.rounds):
                path = directory / f"outbox-{number}.db"
                bodies = await fill(path, args.notifications)
                run = await drain_with_tocsin(
                    path, f"{base}/tocsin", args.notifications, session
                )
                results.tocsin_runs.append(run)
                middle = await _sink_counts(session, base)
                run = await post_bare(f"{base}/bare", bodies, session)
                results.bare_runs.append(run)
                after = await _sink_counts(session, base)
                results.same_bodies &= _sent(before, middle) == _sent(middle, after)
                before = after
    finally:
        await sink.kill()


async def _sink_counts(session: aiohttp.ClientSession, base: str) -> dict:
    async with session.get(f"{base}/count") as reply:
        return await reply.json()


def _sent(before: dict, after: dict) -> tuple[int, int, int]:
    """Return (requests, bytes, digest) the sink took between two counts."""
    digest = (after["digest"] - before["digest"]) % 2**64
    return after["count"] - before["count"], after["bytes"] - before["bytes"], digest


async def breaches(
    latency: Latency,
    arrivals: Arrivals,
    breach: Callable[[str], int],
    *,
    count: int,
    period: float,
    rng: random.Random,
    pids: list[int],
) -> None:
    """Make ``count`` breaches (after :data:`WARMUP` uncounted ones), one at a
    time, each timed from ``breach(model)``'s stamp to its arrival.

    Also records the CPU time processes ``pids`` used over the counted ones.
    """
    cpu = 0.0
    began_at = time.monotonic()
    for number in range(WARMUP + count):
        if number == WARMUP:
            cpu = sum(proc.cpu_seconds(pid) for pid in pids)
            began_at = time.monotonic()
        # A random phase: the peer's scrape and evaluation cycles do not wait
        # for a breach, and the breaches should not fall in step with them.
        await asyncio.sleep(rng.uniform(0.0, period))
        model = f"{latency.prefix}{number}"
        began = breach(model)
        arrived = await arrivals.arrival(latency.source, model, proc.WAIT)
        if number >= WARMUP:
            latency.values.append(arrived - began)
    used = sum(proc.cpu_seconds(pid) for pid in pids) - cpu
    latency.cpu = used / (time.monotonic() - began_at)


async def measure_tocsin(
    directory: Path,
    state: Path,
    arrivals: Arrivals,
    latency: Latency,
    args,
    results: Results,
) -> None:
    """Time breaches through the real daemon, sent with the real DogStatsd client.

    :param directory: where its config and socket go.
    :param state: its state directory.
    """
    directory.mkdir()
    config = directory / "tocsin.toml"
    config.write_text(CONFIG.format(dir=directory, state=state, hook_env=HOOK_ENV))
    # Export stays off: the daemon only exports with an API key.
    env = {key: value for key, value in os.environ.items() if key != "DD_API_KEY"}
    env[HOOK_ENV] = f"{arrivals.url}/tocsin"
    argv = [sys.executable, "-m", "tocsin", "run", "--config", str(config)]
    repeats = arrivals.repeats.get("tocsin", 0)
    daemon = await proc.start("tocsin", argv, env=env, follow="stderr")
    try:
        await daemon.wait_for(lambda record: record.get("message") == "ready")
        statsd = DogStatsd(
            socket_path=str(directory / "dsd.sock"),
            disable_telemetry=True,
            disable_buffering=True,
            socket_timeout=None,
        )

        def send(model: str) -> int:
            began = time.perf_counter_ns()
            statsd.gauge("bench.breach", 1.0, tags=[f"model:{model}"])
            return began

        await breaches(
            latency,
            arrivals,
            send,
            count=args.breaches,
            period=TOCSIN_PERIOD,
            rng=random.Random(args.seed),
            pids=[daemon.pid],
        )
        statsd.close_socket()
        await daemon.stop()
    finally:
        await daemon.kill()
    latency.repeats = arrivals.repeats.get("tocsin", 0) - repeats
    results.daemon_warnings += [
        record.get("message", "")
        for _, record in daemon.records
        if record.get("level") in ("warning", "error", "critical")
    ]


async def measure_peer(
    directory: Path, arrivals: Arrivals, args, results: Results
) -> None:
    """Time breaches through Prometheus and Alertmanager at each interval asked
    for, if they are installed."""
    if not args.peer:
        results.peer_skipped = "--no-peer"
        return
    binaries, why = find_binaries()
    if why:
        results.peer_skipped = why
        print(f"Prometheus + Alertmanager skipped: {why}", file=sys.stderr)
        return
    for number, interval in enumerate(args.peer_intervals):
        peer = Peer(binaries, directory / f"peer-{number}", interval)
        peer.dir.mkdir()
        latency = Latency(f"p{number}-", "peer", interval=interval)
        results.peers.append(latency)
        repeats = arrivals.repeats.get("peer", 0)
        # A new Prometheus would fire the earlier runs' breaches again.
        arrivals.gauges.clear()
        async with contextlib.AsyncExitStack() as stack:
            await peer.start(stack, arrivals)
            results.peer_versions = peer.versions
            await breaches(
                latency,
                arrivals,
                arrivals.breach,
                count=args.peer_breaches,
                period=interval,
                rng=random.Random(args.seed + 1 + number),
                pids=peer.pids,
            )
        latency.repeats = arrivals.repeats.get("peer", 0) - repeats


async def run(args) -> Results:
    """Measure everything ``args`` asks for, in a temporary directory."""
    results = Results(warmup=WARMUP)
    with tempfile.TemporaryDirectory(prefix="tocsin-delivery-") as name:
        directory = Path(name)
        print("throughput ...", file=sys.stderr)
        await measure_throughput(directory, args, results)
        arrivals = Arrivals()
        await arrivals.start()
        try:
            print("latency through Tocsin ...", file=sys.stderr)
            await measure_tocsin(
                directory / "tocsin",
                directory / "tocsin" / "state",
                arrivals,
                results.tocsin,
                args,
                results,
            )
            if MEMORY.is_dir():
                print("latency through Tocsin, state on tmpfs ...", file=sys.stderr)
                results.tocsin_memory = Latency("s", "tocsin")
                with tempfile.TemporaryDirectory(dir=MEMORY) as state:
                    await measure_tocsin(
                        directory / "tocsin-memory",
                        Path(state),
                        arrivals,
                        results.tocsin_memory,
                        args,
                        results,
                    )
            print("latency through Prometheus + Alertmanager ...", file=sys.stderr)
            await measure_peer(directory, arrivals, args, results)
        finally:
            await arrivals.close()
    return results


def options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure Tocsin's delivery next to a bare client and "
        "Prometheus + Alertmanager."
    )
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--notifications", type=int, default=2000, help="per round")
    parser.add_argument("--breaches", type=int, default=300, help="through Tocsin")
    parser.add_argument("--peer-breaches", type=int, default=30)
    parser.add_argument(
        "--peer-intervals",
        type=_seconds_list,
        default=[0.001, 0.1, 1.0],
        help="Prometheus' scrape and evaluation intervals to run, in seconds, "
        "comma-separated (default 0.001,0.1,1: the least Prometheus accepts, "
        "then intervals whose scrapes do not time out)",
    )
    parser.add_argument("--no-peer", dest="peer", action="store_false")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.notifications = 1, 500
        args.breaches, args.peer_breaches = 50, 10

    return args


def _seconds_list(text: str) -> list[float]:
    try:
        values = [float(item) for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not seconds: {text!r}") from None
    if any(value < 0.001 for value in values):
        raise argparse.ArgumentTypeError("Prometheus takes 1 ms at the least")
    return values


def main() -> None:
    import uvloop

    args = options()
    started = time.monotonic()
    machine, own = proc.machine_cpu(), proc.own_cpu()
    results = uvloop.run(run(args))
    wall = time.monotonic() - started
    # Every process of the benchmark has been reaped: what else the machine
    # did meanwhile competed with the figures.
    busy = proc.machine_cpu()[0] - machine[0]
    results.other_cpu = (busy - (proc.own_cpu() - own)) / wall
    today = datetime.date.today().isoformat()
    sys.exit(print_report(results, args, wall, today))


if __name__ == "__main__":
    main()
