"""The ``tocsin`` commands that work over the running daemon's API.

``alerts``, ``show``, ``ack``, ``investigate``, ``escalate``, ``resolve``,
``close``, ``silence add|list|expire``, ``integrations list|test``,
``deadletters``, ``audit`` (:mod:`tocsin.daemon.cli_audit`) and ``status``
call the API through
:class:`tocsin.client.Client`. They find the daemon as ``tocsin reload`` does,
from ``-c tocsin.toml``, or at ``--socket``, or from ``$TOCSIN_API`` (a socket
path, or the ``http://`` URL of the TCP listener, whose token is read from
``$TOCSIN_TOKEN``).

People get aligned tables, times in UTC (``2026-01-31 12:00:00Z``) whatever the
host's zone; ``--json`` prints the API's JSON instead. Exit status: 0 done,
1 refused (unknown alert, forbidden move, invalid value) or a test
notification the destination did not take, 2 unreachable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from tocsin.client import Client, TocsinAPIError, TocsinUnreachableError
from tocsin.daemon import cli_audit
from tocsin.errors import ConfigError

#: Exit status when the daemon refused the request.
EXIT_REFUSED = 1
#: Exit status when the daemon's API cannot be reached.
EXIT_UNREACHABLE = 2
#: The lifecycle commands, and the client call of each.
MOVES = {
    "ack": "acknowledge",
    "investigate": "investigate",
    "escalate": "escalate",
    "resolve": "resolve",
    "close": "close",
}
#: Every command this module adds.
COMMANDS = frozenset(
    {
        "alerts",
        "show",
        "silence",
        "integrations",
        "deadletters",
        "audit",
        "status",
        *MOVES,
    }
)


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """Add the API's commands to the ``tocsin`` parser's ``commands``."""
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("where the daemon is")
    where.add_argument("--config", "-c", help="the daemon's tocsin.toml")
    where.add_argument("--socket", help="the API socket, instead of the config's")
    common.add_argument("--json", action="store_true", help="print the API's JSON")

    alerts = commands.add_parser(
        "alerts", parents=[common], help="list alerts, newest first"
    )
    alerts.add_argument("--state", help="only alerts in this state (triggered...)")
    alerts.add_argument("--rule", help="only alerts of this rule")
    alerts.add_argument(
        "--label",
        action="append",
        default=[],
        type=_label,
        metavar="NAME=VALUE",
        help="only alerts with this label; may be repeated",
    )
    alerts.add_argument("--limit", type=int, help="most alerts listed")

    show = commands.add_parser(
        "show", parents=[common], help="show an alert with its history"
    )
    show.add_argument("ref", help="the alert's id or uid")

    for command, action in MOVES.items():
        move = commands.add_parser(command, parents=[common], help=f"{action} an alert")
        move.add_argument("ref", help="the alert's id or uid")
        move.add_argument("-m", "--comment", help="why, kept in its history")

    silence = commands.add_parser("silence", help="add, list or expire silences")
    silences = silence.add_subparsers(dest="silence_command", required=True)
    add = silences.add_parser(
        "add", parents=[common], help="silence the alerts some matchers select"
    )
    add.add_argument("matchers", nargs="+", metavar="MATCHER", help='team="ml"')
    until = add.add_mutually_exclusive_group(required=True)
    until.add_argument("--duration", help="how long, like 2h")
    until.add_argument("--until", help="when it ends, ISO 8601 (UTC if no zone)")
    add.add_argument("-m", "--comment", default="", help="why")
    add.add_argument("--author", help="who asks; by default your user name")
    listing = silences.add_parser("list", parents=[common], help="list silences")
    listing.add_argument("--state", help="pending, active or expired")
    expire = silences.add_parser("expire", parents=[common], help="end a silence now")
    expire.add_argument("id", help="the silence's id")

    integration = commands.add_parser(
        "integrations", help="list the channels, or send one a test"
    )
    integrations = integration.add_subparsers(
        dest="integrations_command", required=True
    )
    integrations.add_parser(
        "list",
        parents=[common],
        help="list the channels, where each comes from and how it delivers",
    )
    test = integrations.add_parser(
        "test", parents=[common], help="send a channel one test notification now"
    )
    test.add_argument("name", help="the channel's name")

    dead = commands.add_parser(
        "deadletters", parents=[common], help="list notifications given up on"
    )
    dead.add_argument("--channel", help="only those of this channel")
    dead.add_argument("--limit", type=int, help="most listed")

    cli_audit.add_parser(commands, common)

    commands.add_parser("status", parents=[common], help="how the daemon is doing")


def main(
    arguments: argparse.Namespace, find_socket: Callable[[str], str | None]
) -> int:
    """Run one of :data:`COMMANDS`; return the exit status.

    :param find_socket: returns the API socket a config file names, ``None``
        when its API is off; raises :class:`ConfigError` if it cannot tell.
    """
    try:
        client = _client(arguments, find_socket)
    except ConfigError as error:
        print(f"tocsin: config error: {error}", file=sys.stderr)
        return EXIT_REFUSED
    except _NoAddress as error:
        print(f"tocsin: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    try:
        with client:
            output = _run(client, arguments)
    except TocsinUnreachableError as error:
        print(f"tocsin: {error.message}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except TocsinAPIError as error:
        print(f"tocsin: refused: {error.message}", file=sys.stderr)
        return EXIT_REFUSED
    except _NotDelivered as failed:
        print(failed.output)
        return EXIT_REFUSED
    print(output)

    return 0


class _NoAddress(Exception):
    """Raised when no option, config or environment says where the daemon is."""


class _NotDelivered(Exception):
    """Raised when a test notification was sent and the destination refused
    it; ``output`` is what to print all the same."""

    def __init__(self, output: str) -> None:
        self.output = output
        super().__init__(output)


def _client(
    arguments: argparse.Namespace, find_socket: Callable[[str], str | None]
) -> Client:
    if arguments.socket:
        return Client(socket=arguments.socket)
    if arguments.config:
        path = find_socket(arguments.config)
        if path is None:
            raise _NoAddress(f"{arguments.config}: api.enabled is false")
        return Client(socket=path)
    address = os.environ.get("TOCSIN_API", "")
    if address.startswith(("http://", "https://")):
        return Client(url=address, token=os.environ.get("TOCSIN_TOKEN") or None)
    if address:
        return Client(socket=address)
    raise _NoAddress(
        "where is the daemon? give -c tocsin.toml, --socket or $TOCSIN_API"
    )


def _run(client: Client, arguments: argparse.Namespace) -> str:
    """Make the command's calls and return what to print."""
    command = arguments.command
    if command == "alerts":
        alerts = client.list_alerts(
            state=arguments.state,
            rule=arguments.rule,
            labels=dict(arguments.label),
            limit=arguments.limit,
        )
        return _dump(alerts) if arguments.json else _alerts_table(alerts)
    if command == "show":
        alert = client.get_alert(arguments.ref)
        return _dump(alert) if arguments.json else _alert_text(alert)
    if command in MOVES:
        move = getattr(client, MOVES[command])
        alert = move(arguments.ref, comment=arguments.comment)
        return (
            _dump(alert) if arguments.json else f"alert {alert['id']}: {alert['state']}"
        )
    if command == "status":
        status = client.status()
        return _dump(status) if arguments.json else _status_text(status)
    if command == "integrations":
        return _integrations(client, arguments)
    if command == "deadletters":
        letters = client.list_dead_letters(arguments.channel, arguments.limit)
        return _dump(letters) if arguments.json else _dead_letters_table(letters)
    if command == "audit":
        page, text = cli_audit.run(client, arguments)
        return _dump(page) if arguments.json else text

    return _silence(client, arguments)


def _integrations(client: Client, arguments: argparse.Namespace) -> str:
    if arguments.integrations_command == "list":
        entries = client.list_integrations()
        if arguments.json:
            return _dump(entries)
        rows = [(e["name"], e["type"], e["source"], *_health(e)) for e in entries]
        header = ("NAME", "TYPE", "SOURCE", *_HEALTH_COLUMNS)
        return table(header, rows) if rows else "no integrations"
    result = client.test_integration(arguments.name)
    if arguments.json:
        output = _dump(result)
    elif result["ok"]:
        status = f"HTTP {result['status']}, " if result["status"] is not None else ""
        output = (
            f"integration {arguments.name}: delivered"
            f" ({status}{result['duration_ms']:.0f} ms)"
        )
    else:
        output = (
            f"integration {arguments.name}: not delivered: {result['reason']}:"
            f" {result['error']}"
        )
    if not result["ok"]:
        raise _NotDelivered(output)

    return output


#: The health columns of ``tocsin integrations list``.
_HEALTH_COLUMNS = ("STATUS", "LAST SUCCESS", "FAILURES 24H", "BACKLOG", "LAST ERROR")


def _health(entry: dict) -> tuple[object, ...]:
    """Return an integration's health columns."""
    health = entry.get("health")
    if health is None:
        return ("-",) * len(_HEALTH_COLUMNS)
    error = health["last_error_reason"] or "-"
    if health["last_error_status"] is not None:
        error = f"{error} ({health['last_error_status']})"

    return (
        health["status"],
        _time(health["last_success_at"]),
        health["failures_24h"],
        health["backlog"],
        error,
    )


def _silence(client: Client, arguments: argparse.Namespace) -> str:
    if arguments.silence_command == "add":
        silence = client.create_silence(
            arguments.matchers,
            duration=arguments.duration,
            ends_at=arguments.until,
            comment=arguments.comment,
            created_by=arguments.author,
        )
        if arguments.json:
            return _dump(silence)
        return (
            f"silence {silence['id']}: {silence['state']} until"
            f" {_time(silence['ends_at'])}"
        )
    if arguments.silence_command == "list":
        silences = client.list_silences(arguments.state)
        return _dump(silences) if arguments.json else _silences_table(silences)
    silence = client.expire_silence(arguments.id)

    return _dump(silence) if arguments.json else f"silence {silence['id']}: expired"


def _label(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")

    return name, value


def _dump(value: object) -> str:
    return json.dumps(value, indent=2, sort_keys=True)


def _time(seconds: float | None) -> str:
    """Return POSIX ``seconds`` in UTC, the same on every host; ``-`` for none."""
    if seconds is None:
        return "-"

    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Return ``rows`` under ``header`` in columns as wide as their widest cell.

    The last column is not padded, so no line ends in spaces.
    """
    cells = [list(header)] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        padded = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append("  ".join(padded).rstrip())

    return "\n".join(lines)


def _alerts_table(alerts: list[dict[str, Any]]) -> str:
    if not alerts:
        return "no alerts"
    rows = [
        (
            alert["id"],
            alert["state"],
            alert["spec"]["severity"],
            alert["spec"]["rule"],
            alert["spec"]["series"] or "-",
            _time(alert["spec"]["fired_at"]),
            alert["spec"].get("summary") or alert["spec"]["reason"],
        )
        for alert in alerts
    ]
    header = ("ID", "STATE", "SEVERITY", "RULE", "SERIES", "FIRED", "SUMMARY")

    return table(header, rows)


def _alert_text(alert: dict[str, Any]) -> str:
    spec = alert["spec"]
    labels = ", ".join(f"{k}={v}" for k, v in sorted(spec["labels"].items()))
    facts = [
        ("alert", f"{alert['id']} ({alert['uid']})"),
        ("state", alert["state"]),
        ("rule", spec["rule"]),
        ("severity", spec["severity"]),
        ("labels", labels or "-"),
        ("value", alert["value"]),
        ("fired", _time(spec["fired_at"])),
        ("resolved", _time(alert.get("resolved_at"))),
        ("summary", spec.get("summary") or "-"),
        ("reason", spec["reason"]),
    ]
    width = max(len(name) for name, _ in facts)
    parts = ["\n".join(f"{name.ljust(width)}  {value}" for name, value in facts)]
    history = [
        (
            _time(t["at"]),
            t["from_state"] or "-",
            t["to_state"],
            t["actor"],
            t["reason"],
            t["comment"],
        )
        for t in alert["history"]
    ]
    header = ("TIME", "FROM", "TO", "ACTOR", "REASON", "COMMENT")
    parts.append("history\n" + table(header, history))
    if alert["escalation"]:
        steps = [
            (s["step"], s["state"], _time(s["due_at"]), ", ".join(s["channels"]))
            for s in alert["escalation"]
        ]
        parts.append(
            "escalation\n" + table(("STEP", "STATE", "DUE", "CHANNELS"), steps)
        )

    return "\n\n".join(parts)


def _silences_table(silences: list[dict[str, Any]]) -> str:
    if not silences:
        return "no silences"
    rows = [
        (
            s["id"],
            s["state"],
            _time(s["starts_at"]),
            _time(s["ends_at"]),
            s["created_by"],
            " ".join(s["matchers"]),
            s["comment"],
        )
        for s in silences
    ]
    header = ("ID", "STATE", "STARTS", "ENDS", "CREATED BY", "MATCHERS", "COMMENT")

    return table(header, rows)


def _dead_letters_table(letters: list[dict[str, Any]]) -> str:
    if not letters:
        return "no dead letters"
    rows = [
        (
            d["id"],
            d["channel"],
            d["event"],
            d["rule"],
            d["series"] or "-",
            d["attempts"],
            _time(d["dead_at"]),
            d["reason"] or "-",
            d["last_error"] or "-",
        )
        for d in letters
    ]
    header = (
        "ID",
        "CHANNEL",
        "EVENT",
        "RULE",
        "SERIES",
        "ATTEMPTS",
        "GIVEN UP",
        "REASON",
        "LAST ERROR",
    )

    return table(header, rows)


def _status_text(status: dict[str, Any]) -> str:
    def counts(by: dict[str, int]) -> str:
        return ", ".join(f"{n} {name}" for name, n in sorted(by.items())) or "none"

    facts = [
        ("version", status["version"]),
        ("config", status["config"]),
        ("started", _time(status["started_at"])),
        ("uptime", f"{status['uptime_s']:.0f}s"),
        ("alerts", counts(status["alerts"])),
        ("silences", counts(status["silences"])),
        ("rules", counts(status["rules"])),
        ("channels", counts(status["channels"])),
        ("pending notifications", status["pending_notifications"]),
    ]
    database = status.get("state_database")
    if database:
        facts.append(
            (
                "state database",
                f"{database['transactions']} transactions, {database['errors']}"
                f" errors ({database['locked']} locked), {database['slow']} slow",
            )
        )
    width = max(len(name) for name, _ in facts)

    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in facts)
