"""Results of the delivery benchmark and their printed report: two Markdown
tables, the settings they were measured under, and the checks of the run."""

from __future__ import annotations

import math
import shlex
import statistics
import sys
from dataclasses import dataclass, field

from bench import _processes as proc
from bench._throughput import IN_FLIGHT, Run

#: What a breach-to-arrival time through Tocsin should stay under, at p99.
TARGET_P99_MS = 20.0


@dataclass
class Latency:
    """Breach-to-arrival times of one system, in nanoseconds.

    :param prefix: starts the model label of each of its breaches.
    :param source: whose notifications to wait for (``tocsin``, ``peer``).
    :param interval: the peer's scrape and evaluation interval, in seconds.
    """

    prefix: str
    source: str
    interval: float = 0.0
    values: list[int] = field(default_factory=list)
    #: CPU the system used while measured, in share of one core.
    cpu: float = 0.0
    #: Notifications that arrived again for a breach already notified.
    repeats: int = 0


@dataclass
class Results:
    """Everything one run measured."""

    warmup: int
    tocsin_runs: list[Run] = field(default_factory=list)
    bare_runs: list[Run] = field(default_factory=list)
    #: Whether Tocsin and the baseline sent the same bodies in every round.
    same_bodies: bool = True
    tocsin: Latency = field(default_factory=lambda: Latency("t", "tocsin"))
    #: The same with the state database on a tmpfs, where one was found.
    tocsin_memory: Latency | None = None
    #: One per interval the peer ran at.
    peers: list[Latency] = field(default_factory=list)
    #: Why the peer did not run, if it did not.
    peer_skipped: str = ""
    peer_versions: dict[str, str] = field(default_factory=dict)
    daemon_warnings: list[str] = field(default_factory=list)
    #: CPU of the machine's other work during the run, in share of one core.
    other_cpu: float = 0.0


def percentile(values: list[int], share: float) -> int:
    """Return the nearest-rank ``share`` percentile of ``values`` (0 < share <= 1).

    Of fewer than 100 values, the 99th percentile is the largest.
    """
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))

    return ordered[rank - 1]


def _ms(nanoseconds: float) -> str:
    milliseconds = nanoseconds / 1e6
    if milliseconds >= 100:
        return f"{milliseconds:,.0f} ms"
    return f"{milliseconds:.1f} ms"


def _spread(values: list[float], unit) -> str:
    middle = unit(statistics.median(values))
    if len(values) < 2:
        return middle
    return f"{middle} [{unit(min(values))}–{unit(max(values))}]"


def _rate(value: float) -> str:
    return f"{value:,.0f}"


def _ratio(value: float) -> str:
    return f"{value:.2f}"


def _interval(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:g} s"
    return f"{seconds * 1000:g} ms"


def _print_throughput(results: Results, args) -> None:
    print("| figure | Tocsin | baseline | ratio |")
    print("|---|---|---|---|")
    ours = [run.rate for run in results.tocsin_runs]
    theirs = [run.rate for run in results.bare_runs]
    pairs = zip(ours, theirs, strict=True)
    ratios = [mine / bare for mine, bare in pairs]
    print(
        f"| notifications/s, SQLite outbox → local webhook, "
        f"{args.notifications:,} queued | {_spread(ours, _rate)} | "
        f"{_spread(theirs, _rate)} (bare aiohttp client, same bodies, "
        f"{IN_FLIGHT} in flight) | {_spread(ratios, _ratio)} |"
    )


def _print_latency(results: Results) -> None:
    systems = [results.tocsin, *results.peers]
    heads = ["Tocsin"]
    if results.tocsin_memory is not None:
        systems.insert(1, results.tocsin_memory)
        heads.append("Tocsin, state on tmpfs")
    heads += [
        f"Prometheus + Alertmanager, every {_interval(peer.interval)}"
        for peer in results.peers
    ]
    if results.peer_skipped:
        heads.append("Prometheus + Alertmanager")
    print("| breach → webhook arrival | " + " | ".join(heads) + " |")
    print("|---" * (len(heads) + 1) + "|")
    rows = [
        ("median", lambda values: _ms(statistics.median(values))),
        ("p99", lambda values: _ms(percentile(values, 0.99))),
        ("max", lambda values: _ms(max(values))),
        ("breaches", lambda values: str(len(values))),
    ]
    for name, cell in rows:
        cells = [cell(system.values) if system.values else "–" for system in systems]
        if results.peer_skipped:
            cells.append(f"not run ({results.peer_skipped})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    cpu = [f"{100 * system.cpu:.0f} %" for system in systems]
    print("| CPU meanwhile, share of a core | " + " | ".join(cpu) + " |")
    repeats = [str(system.repeats) for system in systems]
    print("| repeats | " + " | ".join(repeats) + " |")


def print_report(results: Results, args, wall: float, today: str) -> int:
    """Print the Markdown report; return the exit status (1 if a check failed)."""
    print("## Delivery benchmark\n")
    command = shlex.join([sys.executable, *sys.argv])
    print(f"`{command}` (from the repository root), {today}.\n")
    _print_throughput(results, args)
    print(
        f"\n{args.rounds} round(s), median [min–max]; each round queues "
        f"{args.notifications:,} triggers in a new state database, then Tocsin "
        "drains it (from the dispatcher's start to the outbox's record of the "
        "last delivery), then the bare client posts the same bodies.\n"
    )
    _print_latency(results)
    print(
        "\nFrom just before the send (Tocsin: one DogStatsD datagram from the "
        "`datadog` client over the Unix socket; the peer: the exporter's gauge "
        "set to 1) to the webhook's arrival in the benchmark's process; one "
        f"new series per breach, after {results.warmup} uncounted ones; p99 of "
        "fewer than 100 breaches is their maximum. A breach reaches the peer "
        "at the next scrape and fires at the next evaluation; CPU is the "
        "daemon's, or Prometheus' and Alertmanager's together, over the "
        "counted breaches.\n"
    )

    print("### Targets\n")
    if results.tocsin.values:
        p99 = percentile(results.tocsin.values, 0.99) / 1e6
        verdict = "met" if p99 <= TARGET_P99_MS else "MISSED"
        print(
            f"- Breach → arrival p99 ≤ {TARGET_P99_MS:g} ms through Tocsin: "
            f"{verdict} ({p99:.1f} ms)."
        )

    print("\n### Settings\n")
    print(
        "- Tocsin: `python -m tocsin run`, one webhook channel, one rule "
        "(`max` over 1m > 0.2, no `for`), routing defaults (no group wait), "
        "daemon defaults otherwise; Datadog export off."
    )
    if results.peers:
        print(
            "- Prometheus + Alertmanager: scrape and rule evaluation at the "
            "interval of each column, `breach_gauge > 0.2` with `for: 0s`; "
            "Alertmanager `group_by: [model]`, `group_wait: 0s`, "
            "`group_interval: 1s`, clustering off."
        )
    for role, version in results.peer_versions.items():
        print(f"- {role}: {version}")
    for name, value in proc.machine_facts() + proc.software_facts():
        print(f"- {name}: {value}")
    print(
        f"- CPU of other work on the machine during the run: "
        f"{100 * max(0.0, results.other_cpu):.0f} % of a core"
    )

    print("\n### Checks\n")
    failures = []
    if results.same_bodies:
        print("- Tocsin and the bare client sent the same bodies in every round")
    else:
        failures.append("Tocsin and the bare client sent different bodies")
    if results.other_cpu > 0.2:
        print(
            f"- WARNING: other work used {100 * results.other_cpu:.0f} % of a "
            "core during the run: it competed with the figures"
        )
    for warning in results.daemon_warnings:
        print(f"- WARNING: Tocsin logged: {warning}")
    tocsin = [results.tocsin, results.tocsin_memory]
    repeated = sum(latency.repeats for latency in tocsin if latency is not None)
    if repeated:
        failures.append(f"{repeated} of Tocsin's notifications arrived twice")
    if any(peer.repeats for peer in results.peers):
        print(
            "- Alertmanager sent notifications again for breaches it had "
            "notified (the table's repeats); only the first arrival is timed."
        )
    for failure in failures:
        print(f"- FAILED: {failure}")
    print(f"\nWall time: {wall:.0f} s.")

    return 1 if failures else 0
