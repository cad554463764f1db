"""``GET /api/v1/audit``: the audit log's query string read and checked.

The handler itself lives with the other ``/api/v1`` handlers; this module
turns a request's query into an :class:`~tocsin.state.audit.AuditQuery`, so
the rules of each filter are in one place.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tocsin.daemon import api_values as values
from tocsin.errors import InvalidValueError
from tocsin.state.audit import AUDIT_KINDS, AuditPage, AuditQuery, parse_cursor
from tocsin.state.outbox import OUTCOMES

#: Entries answered when the request says no ``limit``, and the most it may ask.
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def audit_query(query: Mapping[str, str]) -> tuple[AuditQuery, str | None]:
    """Return the filters of one request, and the alert reference it names.

    :raises InvalidValueError: naming the parameter, if one cannot be read.
    """
    kind = query.get("kind") or None
    if kind is not None and kind not in AUDIT_KINDS:
        known = ", ".join(AUDIT_KINDS)
        raise InvalidValueError(f"unknown kind {kind!r}; known: {known}", "kind")
    outcome = query.get("outcome") or None
    if outcome is not None and outcome not in OUTCOMES:
        known = ", ".join(OUTCOMES)
        raise InvalidValueError(
            f"unknown outcome {outcome!r}; known: {known}", "outcome"
        )
    cursor = query.get("cursor") or None
    if cursor is not None:
        try:
            parse_cursor(cursor)
        except ValueError:
            raise InvalidValueError("not a cursor of this API", "cursor") from None
    filters = AuditQuery(
        since=_time(query.get("since"), "since"),
        until=_time(query.get("until"), "until"),
        channel=query.get("channel") or None,
        outcome=outcome,
        kind=kind,
        limit=_limit(query.get("limit")),
        cursor=cursor,
    )

    return filters, query.get("alert") or None


def audit_json(page: AuditPage) -> dict[str, Any]:
    """Return one page of the audit log as the API answers it."""
    return {
        "entries": values.builtins(page.entries),
        "next_cursor": page.next_cursor,
    }


def _time(text: str | None, key: str) -> float | None:
    """Read a time given as POSIX seconds or RFC 3339."""
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        return values.parse_time(text, key)
    if not math.isfinite(seconds):
        raise InvalidValueError("expected POSIX seconds or an RFC 3339 time", key)

    return seconds


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_LIMIT:
        raise values.RequestError(f"limit: expected a number from 1 to {MAX_LIMIT}")

    return int(text)
