"""Results of the ingest benchmark: rounds, loss checks and the printed report."""

from __future__ import annotations

import shlex
import statistics
import sys
from dataclasses import dataclass, field

from bench import _processes as proc
from bench._senders import LINES_PER_DATAGRAM

#: What Tocsin must reach per process, and what it aims at (lines/s).
REQUIRED = 500_000
AIM = 1_000_000


@dataclass
class Round:
    """One timed run of one receiver.

    :param sent: the sender's report (lines, first, last, cpu, method).
    :param received: data lines the receiver took in.
    :param stamp: when the receiver had processed the last one (monotonic).
    :param cpu: CPU seconds the receiver used meanwhile.
    :param markers: marker datagrams sent (UDP: lost ones are sent again).
    """

    sent: dict
    received: int
    stamp: float
    cpu: float
    markers: int = 1

    @property
    def elapsed(self) -> float:
        return self.stamp - self.sent["first"]

    @property
    def rate(self) -> float:
        return self.received / self.elapsed

    @property
    def offered(self) -> float:
        return self.sent["lines"] / (self.sent["last"] - self.sent["first"])

    @property
    def loss(self) -> float:
        return 1.0 - self.received / self.sent["lines"]

    @property
    def busy(self) -> float:
        return self.cpu / self.elapsed

    @property
    def sender_busy(self) -> float:
        return self.sent["cpu"] / (self.sent["last"] - self.sent["first"])


@dataclass
class Totals:
    """What each of the daemon's listeners must have counted at shutdown."""

    #: listener -> [datagrams, lines] sent.
    expected: dict[str, list[int]] = field(default_factory=dict)
    #: Bounds of the UDP line count: each marker delivered is 1 line, not 20.
    udp_lines: list[int] = field(default_factory=lambda: [0, 0])
    daemon: dict[str, dict] = field(default_factory=dict)
    daemon_errors: list[str] = field(default_factory=list)
    buffers: dict[str, str] = field(default_factory=dict)
    softnet_drops: int = 0
    etsy_unexplained: int = 0
    etsy_bad_lines: int = 0
    notes: list[str] = field(default_factory=list)

    def add(self, listener: str, datagrams: int, lines: int) -> None:
        counts = self.expected.setdefault(listener, [0, 0])
        counts[0] += datagrams
        counts[1] += lines

    def add_udp(self, datagrams: int, markers: int, dropped: int) -> None:
        """Add a UDP run: the kernel delivered all but ``dropped`` datagrams."""
        delivered = datagrams + markers - dropped
        self.add("udp", delivered, 0)
        # At least one marker arrived (its alert fired), at most all of them.
        self.udp_lines[0] += delivered * LINES_PER_DATAGRAM - 19 * markers
        self.udp_lines[1] += delivered * LINES_PER_DATAGRAM - 19

    def check(self, bench) -> tuple[list[str], list[str]]:
        """Return (failures, warnings) of the loss and consistency checks."""
        failures, warnings, notes = [], [], []
        for listener in ("unix_dgram", "unix_stream"):
            datagrams, lines = self.expected[listener]
            counted = self.daemon.get(listener, {})
            got = counted.get("lines", 0)
            notes.append(f"{listener}: sent {lines:,} lines, Tocsin counted {got:,}")
            if got != lines:
                failures.append(f"{listener}: {lines - got:,} lines lost")
            if listener == "unix_dgram" and counted.get("datagrams") != datagrams:
                failures.append(
                    f"unix_dgram: {datagrams:,} datagrams sent, "
                    f"{counted.get('datagrams')} counted"
                )
        for listener, counted in self.daemon.items():
            if counted.get("parse_errors") or counted.get("samples") != counted.get(
                "lines"
            ):
                failures.append(f"{listener}: samples or parse errors off: {counted}")
        udp = self.daemon.get("udp", {})
        low, high = self.udp_lines
        notes.append(
            f"udp: Tocsin counted {udp.get('lines', 0):,} lines; sent minus kernel "
            f"drops predicts {low:,}..{high:,}"
        )
        if not low <= udp.get("lines", 0) <= high:
            warnings.append("udp: Tocsin's count is outside what kernel drops predict")
        if udp.get("datagrams") != self.expected["udp"][0]:
            warnings.append(
                f"udp: {self.expected['udp'][0]:,} datagrams delivered by the "
                f"kernel, {udp.get('datagrams')} counted"
            )
        for name in ("bare_dgram", "bare_stream"):
            for item in bench.rounds.get(name, []):
                if item.received != item.sent["lines"]:
                    failures.append(
                        f"{name}: {item.sent['lines'] - item.received} lost"
                    )
        if self.softnet_drops:
            warnings.append(f"{self.softnet_drops} packets dropped before any socket")
        if self.etsy_unexplained:
            warnings.append(
                f"Etsy statsd: {self.etsy_unexplained} lines neither counted nor "
                "dropped by the kernel"
            )
        if self.etsy_bad_lines:
            warnings.append(f"Etsy statsd: {self.etsy_bad_lines} bad lines")
        warnings.extend(f"Tocsin logged: {message}" for message in self.daemon_errors)
        if bench.args.other_cpu > 0.2:
            warnings.append(
                f"other work used {_percent(bench.args.other_cpu)} of a core during "
                "the run: it competed with the figures"
            )
        self.notes = notes
        return failures, warnings


def _m(value: float) -> str:
    return f"{value / 1e6:.2f} M"


def _spread(values: list[float], unit=_m) -> str:
    middle = unit(statistics.median(values))
    if len(values) < 2:
        return middle
    return f"{middle} [{unit(min(values)).split()[0]}–{unit(max(values))}]"


def _ratio(values: list[float]) -> str:
    return _spread(values, lambda value: f"{value:.2f}")


def _percent(value: float) -> str:
    return f"{100 * value:.0f} %"


def _cell(rounds: list[Round], with_loss: bool = False) -> str:
    cell = _spread([item.rate for item in rounds])
    if with_loss:
        cell += f", {_percent(statistics.median(item.loss for item in rounds))} lost"
    return cell


def print_report(bench, args, wall: float) -> int:
    """Print the Markdown report; return the exit status (1 if a check failed)."""
    rounds = bench.rounds
    failures, warnings = bench.totals.check(bench)
    offered = f"{args.udp_rate / 1e6:g} M lines/s offered"
    method = rounds["tocsin_dgram"][0].sent["method"]
    print("## Ingest benchmark\n")
    print(f"`{shlex.join([sys.executable, *sys.argv])}` (from the repository root)\n")
    print(
        f"{args.rounds} round(s) of {args.duration:g} s per receiver, interleaved; "
        "median [min–max] of the rounds. One rule over "
        f"{args.series:,} series, Datadog export off, daemon defaults otherwise.\n"
    )

    print("| figure | Tocsin | baseline | ratio |")
    print("|---|---|---|---|")
    rows = [
        (
            "DogStatsD lines/s, Unix datagram socket, 20 lines/datagram, 0 lost",
            rounds["tocsin_dgram"],
            rounds["bare_dgram"],
            "bare uvloop receiver",
            False,
        ),
        (
            f"DogStatsD lines/s received over UDP, {offered}",
            rounds["tocsin_udp"],
            rounds.get("etsy_udp"),
            "Etsy statsd 0.9.0",
            True,
        ),
        (
            "NDJSON samples/s, Unix stream socket, 0 lost",
            rounds["tocsin_stream"],
            rounds["bare_stream"],
            "bare uvloop receiver",
            False,
        ),
    ]
    for title, ours, theirs, name, with_loss in rows:
        if not theirs:
            print(f"| {title} | {_cell(ours, with_loss)} | not run | – |")
            continue
        ratios = [a.rate / b.rate for a, b in zip(ours, theirs, strict=True)]
        baseline = f"{_cell(theirs, with_loss)} ({name})"
        print(f"| {title} | {_cell(ours, with_loss)} | {baseline} | {_ratio(ratios)} |")

    print("\n### Every run\n")
    print(
        "| run | received/s | receiver CPU | sender CPU | offered/s | lost | elapsed |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, items in rounds.items():
        for item in items:
            print(
                f"| {name} | {_m(item.rate)} | {_percent(item.busy)} | "
                f"{_percent(item.sender_busy)} | {_m(item.offered)} | "
                f"{_percent(item.loss)} | {item.elapsed:.2f} s |"
            )
    latency = statistics.median(bench.marker_latency) * 1000
    print(
        "\nCPU is the share of one core over the run; a receiver well below 100 % "
        "waited for its sender or for the kernel to hand data over. Tocsin's "
        "times include its end marker: a "
        f"rule fire, an SQLite write and a log line, {latency:.1f} ms on an idle "
        "daemon. Etsy statsd is timed over the send window; over UDP Tocsin's "
        "received count charges every kernel drop to the data (a lower bound). "
        f"Senders: {method} (datagrams), "
        f"{rounds['tocsin_stream'][0].sent['method']} (NDJSON).\n"
    )

    print("### Targets\n")
    best_uds = statistics.median(item.rate for item in rounds["tocsin_dgram"])
    print(
        f"- Required ≥ {_m(REQUIRED)} lines/s per process, aim {_m(AIM)}: Tocsin "
        f"over its Unix datagram socket does {_m(best_uds)} "
        f"({100 * best_uds / REQUIRED:.0f} % of the requirement)."
    )
    print(
        "- Measured before on this kind of machine: a bare uvloop receiver 3–4 M "
        "lines/s, Etsy statsd 0.2–0.27 M (one core each)."
    )

    print("\n### Machine and kernel settings\n")
    for name, value in proc.machine_facts() + proc.software_facts():
        print(f"- {name}: {value}")
    print(
        "- CPU of the run outside the benchmark's processes, in share of a core: "
        f"other processes {_percent(max(0.0, args.other_cpu))} (±10 %, "
        "from tick-based accounting), interrupt handling "
        f"{_percent(args.interrupt_cpu)}, stolen by the hypervisor "
        f"{_percent(args.stolen_cpu)}"
    )
    for name, meaning in proc.KERNEL_SETTINGS:
        print(f"- `{name}` = {proc.sysctl(name)} ({meaning})")
    for name, value in bench.totals.buffers.items():
        print(f"- {name}: {value}")
    if not args.etsy:
        print(f"- Etsy statsd: not run ({args.etsy_skipped})")

    print("\n### Checks\n")
    for note in bench.totals.notes:
        print(f"- {note}")
    for warning in warnings:
        print(f"- WARNING: {warning}")
    for failure in failures:
        print(f"- FAILED: {failure}")
    if not failures:
        print("- no sample lost where none may be")
    print(f"\nWall time: {wall:.0f} s.")
    if failures:
        print("\nLOSS OR MISCOUNT: the figures above are not valid.", file=sys.stderr)
        return 1
    return 0
