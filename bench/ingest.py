"""Measure Tocsin's ingest end to end, next to baselines measured in the same run.

Run from the repository root: ``/tmp/venv/bin/python bench/ingest.py`` (under
two minutes; ``--quick`` for a short run). It prints a Markdown table of three
figures, the machine and kernel settings they were measured under, and checks
that nothing the benchmark counts on was lost:

1. DogStatsD lines/s through the real daemon (``tocsin run``, uvloop) over its
   Unix datagram socket, 20 lines per datagram, one rule over 10,000 series,
   Datadog export off. Sends block, so nothing may be lost: the daemon's
   ``ingest totals`` at shutdown must equal what was sent. Baseline: a bare
   uvloop receiver that splits and counts lines.
2. DogStatsD over UDP at one offered rate for a fixed time: lines/s the daemon
   received, against Etsy statsd 0.9.0 (Node) fed by the same sender.
3. NDJSON samples/s over the Unix stream socket (records without a timestamp,
   stamped on arrival like the DogStatsD lines); baseline: a bare uvloop
   receiver that counts newlines.

The clock of a run starts at the sender's first send and stops when the
receiver has processed the last sample: the sender ends with a marker sample
(``bench.marker``) that fires a rule whose log channel writes a line the
benchmark waits for; the baselines report the marker, or the end of the
connection, themselves. Etsy statsd cannot say when it read its last packet; it
is timed over the send window and counted through a backend that prints its
receive counters at each flush (``bench/etsy_backend.js``).

Every receiver and every sender is a process of its own, so each gets a core
of the two this benchmark is meant for; the figures are rounds interleaved
across receivers (median and range), so a noisy neighbour hits all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _processes as proc  # noqa: E402
from bench._report import Round, Totals, print_report  # noqa: E402
from bench._senders import (  # noqa: E402
    LINES_PER_DATAGRAM,
    SERIES,
    statsd_marker,
)

MARKER_RULE = "bench-marker"

CONFIG = """\
[daemon]
state_dir = "{dir}/state"

[ingest]
udp = "127.0.0.1:{udp_port}"
unix_dgram = "{dir}/tocsin-dgram.sock"
unix_stream = "{dir}/tocsin-stream.sock"

[[channels]]
name = "bench-log"
type = "log"
level = "info"

[[rules]]
name = "latency"
metric = "mlmon.latency_ms"
group_by = ["shard"]
aggregation = "avg"
window = "1m"
op = ">"
threshold = 1000.0
channels = ["bench-log"]

[[rules]]
name = "bench-marker"
metric = "bench.marker"
group_by = ["run"]
aggregation = "max"
window = "1m"
op = ">"
threshold = 0.0
channels = ["bench-log"]
"""


def is_marker(tag: str):
    """Match the log line of the alert that marker ``tag`` fires."""
    series = f"run={tag}"
    return lambda record: (
        record.get("rule") == MARKER_RULE
        and record.get("series") == series
        and record.get("event") == "trigger"
    )


class Bench:
    """The receivers of one benchmark run, and what was sent to each."""

    def __init__(self, args: argparse.Namespace, directory: Path) -> None:
        self.args = args
        self.dir = directory
        self.udp_port = proc.free_port()
        self.etsy_port = proc.free_port()
        self.sender_options = ["--plain"] if args.plain_send else []
        self.rounds: dict[str, list[Round]] = {}
        self.totals = Totals()
        self.marker_latency: list[float] = []
        self.bare_lines = 0
        self.bare_streams = 0
        self.etsy_received = 0
        self.udp_marker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.daemon: proc.Followed | None = None
        self.etsy: proc.Followed | None = None

    def path(self, name: str) -> str:
        return str(self.dir / name)

    # Start-up.

    async def start(self, stack: contextlib.AsyncExitStack) -> None:
        config = self.dir / "tocsin.toml"
        config.write_text(CONFIG.format(dir=self.dir, udp_port=self.udp_port))
        # Export stays off: the daemon only exports with an API key.
        env = {key: value for key, value in os.environ.items() if key != "DD_API_KEY"}
        argv = [sys.executable, "-m", "tocsin", "run", "--config", str(config)]
        self.daemon = await proc.start("tocsin", argv, env=env, follow="stderr")
        stack.push_async_callback(self.daemon.kill)
        await self.daemon.wait_for(lambda record: record.get("message") == "ready")
        for _, record in self.daemon.find(lambda r: r.get("message") == "listening"):
            if record.get("detail"):
                self.totals.buffers[f"Tocsin {record['listener']}"] = record["detail"]

        for mode, name in (
            ("dgram", "bare-dgram.sock"),
            ("stream", "bare-stream.sock"),
        ):
            argv = [sys.executable, str(proc.RECEIVERS), mode, self.path(name)]
            receiver = await proc.start(f"bare {mode}", argv)
            stack.push_async_callback(receiver.kill)
            _, ready = await receiver.wait_for(lambda record: "ready" in record)
            if mode == "dgram":
                self.bare_dgram = receiver
                buffer = ready["receive_buffer"]
                self.totals.buffers["bare unix_dgram"] = (
                    f"receive buffer {buffer} bytes"
                )
            else:
                self.bare_stream = receiver

        if self.args.etsy:
            self.etsy = await self._start_etsy()
            stack.push_async_callback(self.etsy.kill)

    async def _start_etsy(self) -> proc.Followed:
        config = self.dir / "etsy.js"
        config.write_text(proc.etsy_config(self.etsy_port))
        argv = ["node", str(proc.ETSY_MAIN), str(config)]
        etsy = await proc.start("etsy statsd", argv)
        await etsy.wait_for(lambda record: "ready" in record)
        return etsy

    async def prime(self) -> None:
        """Send every series once to each receiver with state, then time a marker.

        The figures are then those of series already seen, as in a daemon that
        has been running for a while.
        """
        path = self.path("tocsin-dgram.sock")
        sent = await proc.send("dgram", path, "--prime", "--marker", "prime-dgram")
        await self.daemon.wait_for(is_marker("prime-dgram"))
        self.totals.add("unix_dgram", sent["datagrams"] + 1, sent["lines"] + 1)
        path = self.path("tocsin-stream.sock")
        sent = await proc.send("stream", path, "--prime", "--marker", "prime-stream")
        await self.daemon.wait_for(is_marker("prime-stream"))
        self.totals.add("unix_stream", 0, sent["lines"] + 1)
        drops = proc.udp_drops(self.udp_port)
        sent = await proc.send("udp", f"127.0.0.1:{self.udp_port}", "--prime")
        await self._await_udp_marker("prime-udp", sent, drops, 0)

        # An idle daemon's marker latency: part of every Tocsin time below.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(self.path("tocsin-dgram.sock"))
            for number in range(3):
                tag = f"probe-{number}"
                sent_at = time.monotonic()
                sock.send(statsd_marker(tag))
                self.totals.add("unix_dgram", 1, 1)
                stamp, _ = await self.daemon.wait_for(is_marker(tag))
                self.marker_latency.append(stamp - sent_at)

        if self.etsy is not None:
            await proc.send("udp", f"127.0.0.1:{self.etsy_port}", "--prime")
            await self._etsy_flushes(2)
            self.etsy_received = self._etsy_count("metrics")
            obtained = proc.udp_receive_buffer(self.etsy_port)
            self.totals.buffers["Etsy statsd udp"] = (
                f"receive buffer {obtained} bytes (Node's default)"
            )

    # One round of each figure.

    async def run_round(self, number: int) -> None:
        await self.tocsin_dgram(number)
        await self.bare_dgram_round(number)
        await self.tocsin_stream(number)
        await self.bare_stream_round(number)
        await self.tocsin_udp(number)
        if self.etsy is not None:
            await self.etsy_udp(number)

    def _record(self, name: str, item: Round) -> None:
        self.rounds.setdefault(name, []).append(item)

    def _timed(self, *extra: str) -> list[str]:
        return ["--seconds", str(self.args.duration), *self.sender_options, *extra]

    async def tocsin_dgram(self, number: int) -> None:
        tag = f"dgram-{number}"
        cpu = proc.cpu_seconds(self.daemon.pid)
        path = self.path("tocsin-dgram.sock")
        sent = await proc.send("dgram", path, *self._timed("--marker", tag))
        stamp, _ = await self.daemon.wait_for(is_marker(tag))
        used = proc.cpu_seconds(self.daemon.pid) - cpu
        self.totals.add("unix_dgram", sent["datagrams"] + 1, sent["lines"] + 1)
        # Loss is checked against the daemon's totals at shutdown.
        self._record("tocsin_dgram", Round(sent, sent["lines"], stamp, used))

    async def bare_dgram_round(self, number: int) -> None:
        tag = f"bare-{number}"
        pid = self.bare_dgram.pid
        cpu = proc.cpu_seconds(pid)
        path = self.path("bare-dgram.sock")
        sent = await proc.send("dgram", path, *self._timed("--marker", tag))
        stamp, report = await self.bare_dgram.wait_for(
            lambda record: record.get("marker", "").endswith(f"run:{tag}")
        )
        used = proc.cpu_seconds(pid) - cpu
        received = report["lines"] - self.bare_lines
        self.bare_lines = report["lines"]
        self._record("bare_dgram", Round(sent, received, stamp, used))

    async def tocsin_stream(self, number: int) -> None:
        tag = f"stream-{number}"
        cpu = proc.cpu_seconds(self.daemon.pid)
        path = self.path("tocsin-stream.sock")
        sent = await proc.send("stream", path, *self._timed("--marker", tag))
        stamp, _ = await self.daemon.wait_for(is_marker(tag))
        used = proc.cpu_seconds(self.daemon.pid) - cpu
        self.totals.add("unix_stream", 0, sent["lines"] + 1)
        self._record("tocsin_stream", Round(sent, sent["lines"], stamp, used))

    async def bare_stream_round(self, number: int) -> None:
        tag = f"bare-stream-{number}"
        pid = self.bare_stream.pid
        cpu = proc.cpu_seconds(pid)
        path = self.path("bare-stream.sock")
        sent = await proc.send("stream", path, *self._timed("--marker", tag))
        self.bare_streams += 1
        stamp, report = await self.bare_stream.wait_for(
            lambda record: "eof" in record, count=self.bare_streams
        )
        used = proc.cpu_seconds(pid) - cpu
        # The newline count includes the marker line.
        self._record("bare_stream", Round(sent, report["newlines"] - 1, stamp, used))

    async def tocsin_udp(self, number: int) -> None:
        tag = f"udp-{number}"
        drops = proc.udp_drops(self.udp_port)
        softnet = proc.softnet_drops()
        cpu = proc.cpu_seconds(self.daemon.pid)
        address = f"127.0.0.1:{self.udp_port}"
        rate = str(self.args.udp_rate / LINES_PER_DATAGRAM)
        sent = await proc.send(
            "udp", address, *self._timed("--rate", rate, "--marker", tag)
        )
        stamp, markers = await self._await_udp_marker(tag, sent, drops, 1)
        used = proc.cpu_seconds(self.daemon.pid) - cpu
        dropped = proc.udp_drops(self.udp_port) - drops
        self.totals.softnet_drops += proc.softnet_drops() - softnet
        # Every drop is charged to the data, none to the markers: received is
        # a lower bound, short by at most (markers - 1) datagrams.
        received = (sent["datagrams"] - dropped) * LINES_PER_DATAGRAM
        item = Round(sent, received, stamp, used, markers=markers)
        self._record("tocsin_udp", item)

    async def _await_udp_marker(
        self, tag: str, sent: dict, drops: int, markers: int
    ) -> tuple[float, int]:
        """Wait for marker ``tag`` over UDP, sending it again while it is lost.

        ``markers`` the sender already sent. Records what the daemon's UDP
        totals must come to, from the kernel's drop count; returns (arrival of
        the marker's log line, markers sent in all).
        """
        address = ("127.0.0.1", self.udp_port)
        if not markers:
            self.udp_marker.sendto(statsd_marker(tag), address)
            markers = 1
        while True:
            try:
                stamp, _ = await self.daemon.wait_for(is_marker(tag), timeout=0.02)
                break
            except TimeoutError:
                # Dropped while the receive buffer was full: the backlog ahead
                # of it is still being read, so a later copy finds room.
                if markers >= 1000:
                    raise
                self.udp_marker.sendto(statsd_marker(tag), address)
                markers += 1
        dropped = proc.udp_drops(self.udp_port) - drops
        self.totals.add_udp(sent["datagrams"], markers, dropped)
        return stamp, markers

    async def etsy_udp(self, number: int) -> None:
        drops = proc.udp_drops(self.etsy_port)
        pid = self.etsy.pid
        cpu = proc.cpu_seconds(pid)
        address = f"127.0.0.1:{self.etsy_port}"
        rate = str(self.args.udp_rate / LINES_PER_DATAGRAM)
        sent = await proc.send("udp", address, *self._timed("--rate", rate))
        used = proc.cpu_seconds(pid) - cpu
        # The second flush after the send window starts after Etsy statsd read
        # its last queued packet (its 208 KiB buffer drains in milliseconds).
        await self._etsy_flushes(2)
        received = self._etsy_count("metrics") - self.etsy_received
        self.etsy_received += received
        dropped = proc.udp_drops(self.etsy_port) - drops
        self.totals.etsy_unexplained += (
            sent["lines"] - dropped * LINES_PER_DATAGRAM - received
        )
        self.totals.etsy_bad_lines = self._etsy_count("bad_lines")
        self._record("etsy_udp", Round(sent, received, sent["last"], used))

    def _etsy_count(self, field: str) -> int:
        return sum(record[field] for _, record in self.etsy.find(_is_flush))

    async def _etsy_flushes(self, count: int) -> None:
        seen = len(self.etsy.find(_is_flush))
        await self.etsy.wait_for(_is_flush, count=seen + count)

    async def stop_daemon(self) -> None:
        await self.daemon.stop()
        for _, record in self.daemon.find(
            lambda r: r.get("message") == "ingest totals"
        ):
            self.totals.daemon[record["listener"]] = record["detail"]
        self.totals.daemon_errors = [
            record.get("message", "")
            for _, record in self.daemon.records
            if record.get("level") in ("warning", "error", "critical")
        ]


def _is_flush(record: dict) -> bool:
    return "flush" in record


async def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    machine, own = proc.machine_cpu(), proc.own_cpu()
    with tempfile.TemporaryDirectory(prefix="tocsin-bench-") as directory:
        bench = Bench(args, Path(directory))
        async with contextlib.AsyncExitStack() as stack:
            await bench.start(stack)
            await bench.prime()
            for number in range(args.rounds):
                print(f"round {number + 1}/{args.rounds} ...", file=sys.stderr)
                await bench.run_round(number)
            await bench.stop_daemon()
        bench.udp_marker.close()
    # Every process of the benchmark has been reaped: what else the machine
    # did meanwhile (other work, interrupts) competed with the figures.
    wall = time.monotonic() - started
    busy, interrupts, stolen = (
        now - then for now, then in zip(proc.machine_cpu(), machine, strict=True)
    )
    args.other_cpu = (busy - (proc.own_cpu() - own)) / wall
    args.interrupt_cpu = interrupts / wall
    args.stolen_cpu = stolen / wall

    return print_report(bench, args, wall)


def main() -> None:
    options = argparse.ArgumentParser(
        description="Measure Tocsin's ingest next to bare receivers and Etsy statsd."
    )
    options.add_argument("--quick", action="store_true", help="1 round of 1 s")
    options.add_argument("--rounds", type=int, default=5)
    options.add_argument("--duration", type=float, default=3.0, help="seconds")
    options.add_argument(
        "--udp-rate",
        type=float,
        default=1_000_000,
        help="DogStatsD lines/s offered over UDP (default 1,000,000)",
    )
    options.add_argument("--no-etsy", dest="etsy", action="store_false")
    options.add_argument(
        "--plain-send", action="store_true", help="senders use send(), not sendmmsg"
    )
    args = options.parse_args()
    if args.quick:
        args.rounds, args.duration = 1, 1.0
    args.series = SERIES
    args.etsy_skipped = proc.ensure_etsy() if args.etsy else "--no-etsy"
    if args.etsy_skipped:
        args.etsy = False
        print(f"Etsy statsd skipped: {args.etsy_skipped}", file=sys.stderr)
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
