"""The aggregation groups' state: timers, notification log and dedup log.

What :class:`~tocsin.channels.notifier.Notifier` must find again after a crash
lives here: each flushed group's anchor (its ticks follow from it) and flush
number, each (group, channel)'s entry of the notification log, and the
messages the ``[dedup]`` caps count. :meth:`GroupStore.flush` writes a flush's
outbox rows, log entries and timers in one transaction, so after a kill -9
either the messages are queued and the log says so, or neither: nothing is
sent twice and nothing the log claims was sent is missing.

A group's alerts are not stored: they are the open alerts (and the resolved
ones the log still names), routed again at start-up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import msgspec

from tocsin.clock import Clock
from tocsin.state.db import Database, Transaction
from tocsin.state.models import Alert, NotificationEvent
from tocsin.state.outbox import queue_group

#: One firing alert as the log keys it: a new severity is a new entry.
Firing = tuple[int, str]

_encode = msgspec.json.Encoder().encode
_decode_firing = msgspec.json.Decoder(list[tuple[int, str]]).decode
_decode_ids = msgspec.json.Decoder(list[int]).decode
_decode_withheld = msgspec.json.Decoder(dict[int, str]).decode
_decode_labels = msgspec.json.Decoder(dict[str, str]).decode


class LogEntry(msgspec.Struct, frozen=True, kw_only=True):
    """What one channel was last sent about one group."""

    #: The firing alerts of the last message, as (alert id, severity), less
    #: those that have since been suppressed, resolved or left the group.
    firing: frozenset[Firing] = frozenset()
    #: The resolved alerts of the last message.
    resolved: frozenset[int] = frozenset()
    #: Alerts the channel was told fire and has not been told resolved.
    announced: frozenset[int] = frozenset()
    #: Open alerts held back at the last flush, with what held them back.
    withheld: dict[int, str] = {}
    #: When the last message was queued.
    sent_at: float = 0.0


class StoredGroup(NamedTuple):
    """A group's row: what its timers need across a restart."""

    key: str
    route_id: str
    labels: dict[str, str]
    created_at: float
    #: The first flush; ``None`` before it.
    anchor: float | None
    #: The number of the last flush that queued messages.
    seq: int
    #: When the group was last flushed with something to write; the next
    #: tick after it is due even if it passed while Tocsin was down.
    flushed_at: float | None = None


class Message(NamedTuple):
    """One grouped message to one channel."""

    channel: str
    event: NotificationEvent
    reason: str
    #: Firing alerts first; the first one names the outbox row.
    alerts: list[Alert]
    #: The ``[dedup]`` key the message counts under; empty for none.
    dedup_key: str = ""


class Flush(NamedTuple):
    """Everything one flush of one group writes."""

    group: StoredGroup
    messages: Sequence[Message]
    #: Log entries to write, by channel; ``None`` deletes the channel's entry.
    log: Mapping[str, LogEntry | None]
    #: Remove the group, its log with it: it has no alerts left.
    delete: bool = False
    #: Dedup rows older than this are no longer needed by any cap.
    forget_before: float | None = None


class GroupStore:
    """Reads the groups' state at start-up and writes each flush at once."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def groups(self) -> list[StoredGroup]:
        """Return every stored group."""
        rows = await self._db.fetchall(
            "SELECT group_key, route_id, labels, created_at, anchor, seq,"
            " flushed_at FROM notify_groups ORDER BY group_key"
        )
        return [
            StoredGroup(key, route, _decode_labels(labels), created, anchor, seq, at)
            for key, route, labels, created, anchor, seq, at in rows
        ]

    async def log(self) -> dict[str, dict[str, LogEntry]]:
        """Return the notification log: by group key, then by channel."""
        rows = await self._db.fetchall(
            "SELECT group_key, channel, firing, resolved, announced, withheld,"
            " sent_at FROM notification_log ORDER BY group_key, channel"
        )
        log: dict[str, dict[str, LogEntry]] = {}
        for key, channel, firing, resolved, announced, withheld, sent_at in rows:
            log.setdefault(key, {})[channel] = LogEntry(
                firing=frozenset(_decode_firing(firing)),
                resolved=frozenset(_decode_ids(resolved)),
                announced=frozenset(_decode_ids(announced)),
                withheld=_decode_withheld(withheld),
                sent_at=sent_at,
            )

        return log

    async def dedup_since(self, since: float) -> list[tuple[str, str, str, float]]:
        """Return ``(channel, key, event, sent_at)`` of every message counted by
        the dedup caps since ``since``, oldest first."""
        rows = await self._db.fetchall(
            "SELECT channel, key, event, sent_at FROM dedup_log"
            " WHERE sent_at >= ? ORDER BY sent_at, id",
            (since,),
        )
        return [tuple(row) for row in rows]

    async def flush(self, flush: Flush) -> int | None:
        """Write one flush in one transaction.

        :return: the flush number the messages' idempotency keys carry, or
            ``None`` when there were no messages.
        :raises StateError: if the write fails; nothing is written then.
        """
        now = self._clock.time()
        group = flush.group
        number = None
        async with self._db.transaction() as tx:
            if flush.messages:
                number = await _next_number(tx)
                for message in flush.messages:
                    await queue_group(
                        tx,
                        group_key=group.key,
                        group_labels=group.labels,
                        reason=message.reason,
                        channel=message.channel,
                        event=message.event,
                        alerts=message.alerts,
                        flush=number,
                        now=now,
                    )
                await tx.executemany(
                    "INSERT INTO dedup_log (channel, key, event, sent_at)"
                    " VALUES (?, ?, ?, ?)",
                    [
                        (m.channel, m.dedup_key, m.event, now)
                        for m in flush.messages
                        if m.dedup_key
                    ],
                )
            if flush.forget_before is not None:
                await tx.execute(
                    "DELETE FROM dedup_log WHERE sent_at < ?", (flush.forget_before,)
                )
            if flush.delete:
                await _delete(tx, group.key)
                return number
            await tx.execute(
                "INSERT INTO notify_groups (group_key, route_id, labels, created_at,"
                " anchor, seq, flushed_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (group_key) DO UPDATE SET route_id = excluded.route_id,"
                " anchor = excluded.anchor, seq = excluded.seq,"
                " flushed_at = excluded.flushed_at",
                (
                    group.key,
                    group.route_id,
                    _encode(group.labels).decode(),
                    group.created_at,
                    group.anchor,
                    group.seq if number is None else number,
                    group.flushed_at,
                ),
            )
            for channel, entry in flush.log.items():
                await _write_entry(tx, group.key, channel, entry)

        return number

    async def drop(self, keys: Sequence[str]) -> None:
        """Remove groups and their log, in one transaction."""
        if not keys:
            return
        async with self._db.transaction() as tx:
            for key in keys:
                await _delete(tx, key)


async def _next_number(tx: Transaction) -> int:
    await tx.execute("UPDATE notify_sequence SET last = last + 1 WHERE id = 1")
    row = await tx.fetchone("SELECT last FROM notify_sequence WHERE id = 1")
    return int(row[0])


async def _delete(tx: Transaction, key: str) -> None:
    await tx.execute("DELETE FROM notification_log WHERE group_key = ?", (key,))
    await tx.execute("DELETE FROM notify_groups WHERE group_key = ?", (key,))


async def _write_entry(
    tx: Transaction, key: str, channel: str, entry: LogEntry | None
) -> None:
    if entry is None:
        await tx.execute(
            "DELETE FROM notification_log WHERE group_key = ? AND channel = ?",
            (key, channel),
        )
        return
    await tx.execute(
        "INSERT OR REPLACE INTO notification_log (group_key, channel, firing,"
        " resolved, announced, withheld, sent_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            key,
            channel,
            _encode(sorted(entry.firing)).decode(),
            _encode(sorted(entry.resolved)).decode(),
            _encode(sorted(entry.announced)).decode(),
            _encode(entry.withheld).decode(),
            entry.sent_at,
        ),
    )
