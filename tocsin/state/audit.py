"""The audit log: what Tocsin sent, what became of each alert, and who changed
what.

Three tables answer together, newest first: ``delivery_attempts`` (kind
``delivery``, one row per attempt of a notification), ``transitions`` (kind
``transition``, one per change of an alert's state) and ``audit_events``
(kinds ``silence`` and ``config``: silences created and expired, reloads,
rules, integrations and settings added or removed through the API). Each
query asks each table for at most its limit, by an index on time, and
merges the answers; a cursor (time, table, id) pages on from the last entry
returned.

Nothing written here may hold a secret: the callers mask an integration's
secrets before they describe it, and a delivery's payload is stored as the
delivery redacted it.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from typing import Any, Literal, get_args

import msgspec
import orjson

from tocsin.state.db import Database, Transaction

AuditKind = Literal["delivery", "transition", "silence", "config"]
AUDIT_KINDS: tuple[str, ...] = get_args(AuditKind)
EventKind = Literal["silence", "config"]

#: Each table's place in the order of entries recorded at the same time.
_RANK = {"delivery": 0, "transition": 1, "event": 2}


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One entry of the audit log; the fields a kind has not stay unset."""

    kind: AuditKind
    at: float
    #: Pass it as ``cursor`` to read on from here.
    cursor: str
    #: Who: a transition's or an event's actor (``api:alice``, ``sighup``).
    actor: str | None = None
    #: What, in a word: an attempt's outcome (``delivered``, ``retry``,
    #: ``dead``), the state a transition reached, an event's action.
    action: str | None = None
    alert: str | None = None
    alert_id: int | None = None
    rule: str | None = None
    channel: str | None = None
    event: str | None = None
    attempt: int | None = None
    status: int | None = None
    reason: str | None = None
    error: str | None = None
    duration_ms: float | None = None
    payload: str | None = None
    from_state: str | None = None
    comment: str | None = None
    #: A silence's id, a rule's or an integration's name.
    subject: str | None = None
    detail: dict[str, Any] | None = None


class AuditQuery(msgspec.Struct, frozen=True, kw_only=True):
    """The filters of :meth:`AuditLog.query`; each left ``None`` filters nothing.

    ``alert``, ``channel`` and ``outcome`` keep only the kinds that have
    them: an alert's deliveries and transitions, a channel's deliveries,
    deliveries that ended so.
    """

    since: float | None = None
    until: float | None = None
    alert_id: int | None = None
    channel: str | None = None
    outcome: str | None = None
    kind: AuditKind | None = None
    limit: int = 100
    cursor: str | None = None


class AuditPage(msgspec.Struct, frozen=True, kw_only=True):
    """Entries newest first, and the cursor of the next page when there may
    be one."""

    entries: list[AuditEntry]
    next_cursor: str | None = None


def parse_cursor(text: str) -> tuple[float, int, int]:
    """Return the (time, table rank, id) a cursor stands for.

    :raises ValueError: if ``text`` is no cursor this module made.
    """
    at, rank, id_ = text.split(":")
    parsed = (float(at), int(rank), int(id_))
    if parsed[1] not in _RANK.values():
        raise ValueError(f"not a cursor: {text!r}")

    return parsed


def _cursor(at: float, table: str, id_: int) -> str:
    return f"{at!r}:{_RANK[table]}:{id_}"


async def write_event(
    tx: Transaction,
    *,
    at: float,
    kind: EventKind,
    action: str,
    actor: str,
    subject: str = "",
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Record one silence or config event inside the transaction of its change.

    :param detail: what the event was, as JSON values; no secrets.
    """
    await tx.insert(
        "INSERT INTO audit_events (at, kind, action, actor, subject, detail)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (at, kind, action, actor, subject, orjson.dumps(dict(detail or {})).decode()),
    )


class _Branch(msgspec.Struct):
    """One table's part of a query: its SQL conditions and their parameters."""

    table: str
    where: list[str]
    params: list[Any]


class AuditLog:
    """Reads the audit log and records the events no other store records.

    Queries run on the database's read connection.
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(
        self,
        *,
        at: float,
        kind: EventKind,
        action: str,
        actor: str,
        subject: str = "",
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Record one event in a transaction of its own (see :func:`write_event`).

        :raises StateError: if the write fails.
        """
        async with self._db.transaction() as tx:
            await write_event(
                tx,
                at=at,
                kind=kind,
                action=action,
                actor=actor,
                subject=subject,
                detail=detail,
            )

    async def query(self, query: AuditQuery) -> AuditPage:
        """Return the entries that match ``query``, newest first.

        :raises ValueError: if the query's cursor is not one of ours.
        """
        cursor = parse_cursor(query.cursor) if query.cursor else None
        found: list[list[tuple[tuple, AuditEntry]]] = []
        for branch in _branches(query):
            _bound(branch, query, cursor)
            found.append(await self._read(branch, query.limit))
        merged = heapq.merge(*found, key=lambda pair: pair[0], reverse=True)
        entries = [entry for _, entry in merged][: query.limit]
        more = len(entries) == query.limit

        return AuditPage(
            entries=entries, next_cursor=entries[-1].cursor if more else None
        )

    async def _read(
        self, branch: _Branch, limit: int
    ) -> list[tuple[tuple, AuditEntry]]:
        where = " AND ".join(branch.where) or "1"
        sql = _SELECT[branch.table].format(where=where)
        rows = await self._db.fetchall(sql, (*branch.params, limit))
        entries = [_ENTRY[branch.table](row) for row in rows]
        rank = _RANK[branch.table]

        return [
            ((entry.at, rank, row[0]), entry)
            for row, entry in zip(rows, entries, strict=True)
        ]


def _branches(query: AuditQuery) -> list[_Branch]:
    """Return the tables that can answer ``query``, with its filters on each."""
    kind = query.kind
    branches = []
    if kind in (None, "delivery"):
        where, params = [], []
        if query.alert_id is not None:
            where.append("o.alert_id = ?")
            params.append(query.alert_id)
        if query.channel is not None:
            where.append("o.channel = ?")
            params.append(query.channel)
        if query.outcome is not None:
            where.append("d.outcome = ?")
            params.append(query.outcome)
        branches.append(_Branch("delivery", where, params))
    only_deliveries = query.channel is not None or query.outcome is not None
    if kind in (None, "transition") and not only_deliveries:
        where, params = [], []
        if query.alert_id is not None:
            where.append("t.alert_id = ?")
            params.append(query.alert_id)
        branches.append(_Branch("transition", where, params))
    events = kind in (None, "silence", "config")
    if events and not only_deliveries and query.alert_id is None:
        where, params = [], []
        if kind is not None:
            where.append("e.kind = ?")
            params.append(kind)
        branches.append(_Branch("event", where, params))

    return branches


#: Each table's alias in its query.
_ALIAS = {"delivery": "d", "transition": "t", "event": "e"}


def _bound(
    branch: _Branch, query: AuditQuery, cursor: tuple[float, int, int] | None
) -> None:
    """Add the query's time range and the cursor's place to ``branch``."""
    alias = _ALIAS[branch.table]
    if query.since is not None:
        branch.where.append(f"{alias}.at >= ?")
        branch.params.append(query.since)
    if query.until is not None:
        branch.where.append(f"{alias}.at <= ?")
        branch.params.append(query.until)
    if cursor is None:
        return
    at, rank, id_ = cursor
    own = _RANK[branch.table]
    # Entries of one time are ordered by table, then id, like the merge.
    if own < rank:
        branch.where.append(f"{alias}.at <= ?")
        branch.params.append(at)
    elif own > rank:
        branch.where.append(f"{alias}.at < ?")
        branch.params.append(at)
    else:
        branch.where.append(f"({alias}.at < ? OR ({alias}.at = ? AND {alias}.id < ?))")
        branch.params.extend((at, at, id_))


_SELECT = {
    "delivery": (
        "SELECT d.id, d.at, d.attempt, d.outcome, d.status, d.reason, d.error,"
        " d.duration_ms, d.payload, o.channel, o.event, a.uid, a.id, a.rule"
        " FROM delivery_attempts AS d"
        " JOIN outbox AS o ON o.id = d.outbox_id"
        " JOIN alerts AS a ON a.id = o.alert_id"
        " WHERE {where} ORDER BY d.at DESC, d.id DESC LIMIT ?"
    ),
    "transition": (
        "SELECT t.id, t.at, t.from_state, t.to_state, t.actor, t.reason,"
        " t.comment, a.uid, a.id, a.rule"
        " FROM transitions AS t JOIN alerts AS a ON a.id = t.alert_id"
        " WHERE {where} ORDER BY t.at DESC, t.id DESC LIMIT ?"
    ),
    "event": (
        "SELECT e.id, e.at, e.kind, e.action, e.actor, e.subject, e.detail"
        " FROM audit_events AS e WHERE {where} ORDER BY e.at DESC, e.id DESC LIMIT ?"
    ),
}


def _delivery(row: tuple) -> AuditEntry:
    id_, at, attempt, outcome, status, reason, error, duration_ms, payload = row[:9]
    channel, event, uid, alert_id, rule = row[9:]
    return AuditEntry(
        kind="delivery",
        at=at,
        cursor=_cursor(at, "delivery", id_),
        action=outcome,
        alert=uid,
        alert_id=alert_id,
        rule=rule,
        channel=channel,
        event=event,
        attempt=attempt,
        status=status,
        reason=reason,
        error=error,
        duration_ms=duration_ms,
        payload=payload,
    )


def _transition(row: tuple) -> AuditEntry:
    id_, at, from_state, to_state, actor, reason, comment, uid, alert_id, rule = row
    return AuditEntry(
        kind="transition",
        at=at,
        cursor=_cursor(at, "transition", id_),
        actor=actor,
        action=to_state,
        alert=uid,
        alert_id=alert_id,
        rule=rule,
        from_state=from_state,
        reason=reason,
        comment=comment or None,
    )


def _event(row: tuple) -> AuditEntry:
    id_, at, kind, action, actor, subject, detail = row
    return AuditEntry(
        kind=kind,
        at=at,
        cursor=_cursor(at, "event", id_),
        actor=actor,
        action=action,
        subject=subject or None,
        detail=orjson.loads(detail),
    )


_ENTRY = {"delivery": _delivery, "transition": _transition, "event": _event}
