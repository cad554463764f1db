"""``tocsin audit``: the audit log, newest first, as a table or as JSON.

``--since`` and ``--until`` take a time (RFC 3339 or POSIX seconds) or a
duration back from now (``1h``, ``2d``). A page ends with the option that
reads the next one, when there is one.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from tocsin.client import Client
from tocsin.schema import Duration
from tocsin.state.audit import AUDIT_KINDS
from tocsin.state.outbox import OUTCOMES


def add_parser(
    commands: argparse._SubParsersAction, common: argparse.ArgumentParser
) -> None:
    """Add ``tocsin audit`` to the ``tocsin`` parser's ``commands``."""
    audit = commands.add_parser(
        "audit",
        parents=[common],
        help="show deliveries, transitions, silences and config changes",
    )
    audit.add_argument("--since", type=_moment, help="a time, or how long ago: 1h")
    audit.add_argument("--until", type=_moment, help="a time, or how long ago")
    audit.add_argument("--alert", help="only this alert's (its id or uid)")
    audit.add_argument("--channel", help="only deliveries to this channel")
    audit.add_argument("--outcome", choices=OUTCOMES, help="only deliveries so ended")
    audit.add_argument("--kind", choices=AUDIT_KINDS, help="only entries of this kind")
    audit.add_argument("--limit", type=int, help="most listed (default 100)")
    audit.add_argument("--cursor", help="read on from a page's next cursor")


def run(client: Client, arguments: argparse.Namespace) -> tuple[object, str]:
    """Ask for one page; return it as JSON values and as a table."""
    page = client.audit(
        since=arguments.since,
        until=arguments.until,
        alert=arguments.alert,
        channel=arguments.channel,
        outcome=arguments.outcome,
        kind=arguments.kind,
        limit=arguments.limit,
        cursor=arguments.cursor,
    )

    return page, _text(page)


def _moment(text: str) -> str:
    """Turn a duration back from now into POSIX seconds; pass a time on."""
    try:
        ago = Duration.parse(text)
    except ValueError:
        return text
    # A bare number is POSIX seconds, not a duration in seconds.
    if text.replace(".", "", 1).isdigit():
        return text

    return repr(time.time() - ago)


def _text(page: dict[str, Any]) -> str:
    # Imported here: cli_api imports this module to add its command.
    from tocsin.daemon.cli_api import _time, table

    entries = page["entries"]
    if not entries:
        return "no audit entries"
    rows = [
        (
            _time(entry["at"]),
            entry["kind"],
            entry.get("action") or "-",
            entry.get("alert") or entry.get("subject") or "-",
            entry.get("channel") or "-",
            entry.get("actor") or "-",
            _detail(entry),
        )
        for entry in entries
    ]
    header = ("TIME", "KIND", "ACTION", "ALERT/SUBJECT", "CHANNEL", "ACTOR", "DETAIL")
    text = table(header, rows)
    if page["next_cursor"]:
        text += f"\nmore: --cursor {page['next_cursor']}"

    return text


def _detail(entry: dict[str, Any]) -> str:
    """Say in a few words what an entry holds beyond its columns."""
    kind = entry["kind"]
    if kind == "delivery":
        said = [f"{entry['event']} attempt {entry['attempt']}"]
        if entry.get("status") is not None:
            said.append(f"HTTP {entry['status']}")
        if entry.get("reason"):
            said.append(entry["reason"])
        said.append(f"{entry['duration_ms']:.0f} ms")
        return ", ".join(said)
    if kind == "transition":
        moved = f"{entry.get('from_state') or '-'} -> {entry['action']}"
        return f"{moved}: {entry['reason']}" if entry.get("reason") else moved
    detail = entry.get("detail") or {}
    if kind == "silence":
        return " ".join(detail.get("matchers", []))
    if "error" in detail:
        return str(detail["error"])

    return ", ".join(
        f"{name} {len(value)}" if isinstance(value, list) else name
        for name, value in detail.items()
    )
