"""The silence store: time-boxed mutes that people add and expire.

A silence is stored with its matchers as written; their syntax is checked by
whoever accepts them from a person (the API), and they are matched against
alerts by the notifier. The store only keeps silences and answers questions
about time: which are active now, and when the next one starts or ends, so the
notifier knows when to look again.

Expiring a silence ends it now; the row stays, so the list of silences also
says what was muted, by whom, and until when.
"""

from __future__ import annotations

# ``list`` names a method of the store; annotations say builtins.list.
import builtins
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec
import msgspec.structs

from tocsin.clock import Clock
from tocsin.errors import SilenceExpiredError, UnknownSilenceError
from tocsin.state.audit import write_event
from tocsin.state.db import Database
from tocsin.state.models import Silence

_COLUMNS = (
    "id, matchers, starts_at, ends_at, created_by, comment, created_at, updated_at"
)
_encode_matchers = msgspec.json.Encoder().encode
_decode_matchers = msgspec.json.Decoder(list[str]).decode

#: The states :meth:`SilenceStore.list` filters on.
SILENCE_STATES = ("pending", "active", "expired")


def _silence(row: Sequence[Any]) -> Silence:
    id_, matchers, starts_at, ends_at, created_by, comment, created, updated = row
    return Silence(
        id=id_,
        matchers=_decode_matchers(matchers),
        starts_at=starts_at,
        ends_at=ends_at,
        created_by=created_by,
        comment=comment,
        created_at=created,
        updated_at=updated,
    )


def _described(silence: Silence) -> dict[str, Any]:
    """Return what the audit log keeps of a silence."""
    return {
        "matchers": list(silence.matchers),
        "starts_at": silence.starts_at,
        "ends_at": silence.ends_at,
        "created_by": silence.created_by,
        "comment": silence.comment,
    }


class SilenceStore:
    """Adds, reads and expires silences; every change is one transaction."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def add(
        self,
        matchers: Sequence[str],
        *,
        starts_at: float,
        ends_at: float,
        created_by: str,
        comment: str = "",
    ) -> Silence:
        """Store a new silence and return it.

        :param matchers: matcher strings (``team="ml"``), already validated.
        :raises ValueError: if ``ends_at`` is not after ``starts_at``, or there
            are no matchers (a silence of everything is refused).
        :raises StateError: if the write fails.
        """
        if not ends_at > starts_at:
            raise ValueError("a silence must end after it starts")
        if not matchers:
            raise ValueError("a silence needs at least one matcher")
        now = self._clock.time()
        silence = Silence(
            id=uuid.uuid4().hex,
            matchers=list(matchers),
            starts_at=starts_at,
            ends_at=ends_at,
            created_by=created_by,
            comment=comment,
            created_at=now,
            updated_at=now,
        )
        async with self._db.transaction() as tx:
            await tx.execute(
                f"INSERT INTO silences ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    silence.id,
                    _encode_matchers(silence.matchers).decode(),
                    starts_at,
                    ends_at,
                    created_by,
                    comment,
                    now,
                    now,
                ),
            )
            await write_event(
                tx,
                at=now,
                kind="silence",
                action="created",
                actor=created_by,
                subject=silence.id,
                detail=_described(silence),
            )

        return silence

    async def get(self, silence_id: str) -> Silence | None:
        """Return the silence with id ``silence_id``, or ``None``."""
        row = await self._db.fetchone(
            f"SELECT {_COLUMNS} FROM silences WHERE id = ?", (silence_id,)
        )
        return None if row is None else _silence(row)

    async def expire(self, silence_id: str, *, actor: str = "api") -> Silence:
        """End a silence now and return it.

        A silence that has not started yet ends before it ever starts: both
        its start and its end become now.

        :param actor: who ends it, for the audit log.

        :raises UnknownSilenceError: if no silence has that id.
        :raises SilenceExpiredError: if the silence has already ended.
        :raises StateError: if the write fails.
        """
        now = self._clock.time()
        async with self._db.transaction() as tx:
            row = await tx.fetchone(
                f"SELECT {_COLUMNS} FROM silences WHERE id = ?", (silence_id,)
            )
            if row is None:
                raise UnknownSilenceError(silence_id)
            silence = _silence(row)
            if silence.state(now) == "expired":
                raise SilenceExpiredError(silence_id)
            silence = msgspec.structs.replace(
                silence,
                starts_at=min(silence.starts_at, now),
                ends_at=now,
                updated_at=now,
            )
            await tx.execute(
                "UPDATE silences SET starts_at = ?, ends_at = ?, updated_at = ?"
                " WHERE id = ?",
                (silence.starts_at, now, now, silence_id),
            )
            await write_event(
                tx,
                at=now,
                kind="silence",
                action="expired",
                actor=actor,
                subject=silence_id,
                detail=_described(silence),
            )

        return silence

    async def active(self, now: float) -> builtins.list[Silence]:
        """Return the silences in force at ``now``, oldest first."""
        rows = await self._db.fetchall(
            f"SELECT {_COLUMNS} FROM silences WHERE starts_at <= ? AND ends_at > ?"
            " ORDER BY created_at, id",
            (now, now),
        )
        return [_silence(row) for row in rows]

    async def all_unexpired(self, now: float) -> builtins.list[Silence]:
        """Return the silences active or pending at ``now``, oldest first."""
        rows = await self._db.fetchall(
            f"SELECT {_COLUMNS} FROM silences WHERE ends_at > ?"
            " ORDER BY created_at, id",
            (now,),
        )
        return [_silence(row) for row in rows]

    async def next_change(self, now: float) -> float | None:
        """Return the first time after ``now`` a silence starts or ends, or
        ``None`` when none will."""
        row = await self._db.fetchone(
            "SELECT MIN(CASE WHEN starts_at > ? THEN starts_at ELSE ends_at END)"
            " FROM silences WHERE ends_at > ?",
            (now, now),
        )
        return None if row is None else row[0]

    async def purge(self, ended_before: float) -> int:
        """Delete silences that ended before ``ended_before``; return how many.

        Expired silences are kept for people to read; this bounds how long.
        """
        async with self._db.transaction() as tx:
            return await tx.execute(
                "DELETE FROM silences WHERE ends_at < ?", (ended_before,)
            )

    async def list(self, *, state: str | None = None) -> builtins.list[Silence]:
        """Return every silence, newest first, or only those in ``state`` now.

        :param state: ``pending``, ``active`` or ``expired``.
        :raises ValueError: if ``state`` is none of those.
        """
        if state is not None and state not in SILENCE_STATES:
            raise ValueError(
                f"unknown silence state {state!r}; one of {', '.join(SILENCE_STATES)}"
            )
        now = self._clock.time()
        rows = await self._db.fetchall(
            f"SELECT {_COLUMNS} FROM silences ORDER BY created_at DESC, id"
        )
        silences = [_silence(row) for row in rows]
        if state is None:
            return silences
        return [silence for silence in silences if silence.state(now) == state]
