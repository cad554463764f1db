"""The catalog: rules, integrations and settings added at run time, through the API.

What the config file says is read from the file; what an operator adds while
Tocsin runs is kept here, so that it survives a restart. Each entry is stored
as the JSON object the API accepted: the catalog does not interpret it, the
daemon checks it again when it loads it, as it checks the file.

Every change is recorded in the audit log in its own transaction, an
integration as its caller described it, with its secrets masked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from tocsin.clock import Clock
from tocsin.errors import ConflictError
from tocsin.state.audit import write_event
from tocsin.state.db import Database, Transaction

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(dict[str, Any]).decode


class CatalogEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One rule or integration added through the API."""

    name: str
    #: The JSON object the API accepted, secrets included.
    body: dict[str, Any]
    created_at: float
    #: Who added it: the API's actor (``api:alice``).
    created_by: str
    #: An integration's channel type (``webhook``); empty for a rule.
    type: str = ""


class Catalog:
    """Reads and changes the runtime rules, integrations and settings.

    :param db: the state database.
    :param clock: stamps ``created_at`` and ``updated_at``.
    """

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def add_rule(
        self, name: str, body: dict[str, Any], created_by: str
    ) -> CatalogEntry:
        """Store a rule under ``name`` and return it as stored.

        :raises ConflictError: if the catalog already has a rule of that name.
        :raises StateError: if the database cannot be written.
        """
        entry = CatalogEntry(
            name=name, body=body, created_at=self._clock.time(), created_by=created_by
        )
        sql = (
            "INSERT INTO api_rules (name, body, created_at, created_by)"
            " VALUES (?, ?, ?, ?)"
        )
        params = (name, _encode(body), entry.created_at, created_by)
        taken = f"a rule named {name!r} already exists"
        async with self._db.transaction() as tx:
            await _insert(tx, "api_rules", name, sql, params, taken)
            await self._audit(tx, "rule_added", created_by, name, {"rule": body})

        return entry

    async def rules(self) -> list[CatalogEntry]:
        """Return every stored rule, by name."""
        rows = await self._db.fetchall(
            "SELECT name, body, created_at, created_by FROM api_rules ORDER BY name"
        )
        return [_rule(row) for row in rows]

    async def rule(self, name: str) -> CatalogEntry | None:
        """Return the rule called ``name``, or ``None``."""
        row = await self._db.fetchone(
            "SELECT name, body, created_at, created_by FROM api_rules WHERE name = ?",
            (name,),
        )
        return None if row is None else _rule(row)

    async def delete_rule(self, name: str, *, actor: str = "api") -> bool:
        """Remove the rule called ``name``; return whether there was one.

        :param actor: who removes it, for the audit log.
        """
        async with self._db.transaction() as tx:
            deleted = await tx.execute("DELETE FROM api_rules WHERE name = ?", (name,))
            if deleted:
                await self._audit(tx, "rule_removed", actor, name)

        return deleted > 0

    async def add_integration(
        self,
        name: str,
        type: str,
        body: dict[str, Any],
        created_by: str,
        *,
        shown: Mapping[str, Any] | None = None,
    ) -> CatalogEntry:
        """Store an integration (a channel) under ``name``; return it as stored.

        :param type: the channel type (``webhook``), kept apart to list
            integrations without decoding them.
        :param shown: the integration as the audit log keeps it, its secrets
            masked; without it the audit log keeps its name and type only.
        :raises ConflictError: if the catalog already has one of that name.
        :raises StateError: if the database cannot be written.
        """
        entry = CatalogEntry(
            name=name,
            type=type,
            body=body,
            created_at=self._clock.time(),
            created_by=created_by,
        )
        sql = (
            "INSERT INTO api_integrations (name, type, body, created_at, created_by)"
            " VALUES (?, ?, ?, ?, ?)"
        )
        params = (name, type, _encode(body), entry.created_at, created_by)
        taken = f"an integration named {name!r} already exists"
        detail = {"type": type, "integration": dict(shown or {})}
        async with self._db.transaction() as tx:
            await _insert(tx, "api_integrations", name, sql, params, taken)
            await self._audit(tx, "integration_added", created_by, name, detail)

        return entry

    async def integrations(self) -> list[CatalogEntry]:
        """Return every stored integration, by name."""
        rows = await self._db.fetchall(
            "SELECT name, body, created_at, created_by, type FROM api_integrations"
            " ORDER BY name"
        )
        return [_integration(row) for row in rows]

    async def integration(self, name: str) -> CatalogEntry | None:
        """Return the integration called ``name``, or ``None``."""
        row = await self._db.fetchone(
            "SELECT name, body, created_at, created_by, type FROM api_integrations"
            " WHERE name = ?",
            (name,),
        )
        return None if row is None else _integration(row)

    async def delete_integration(self, name: str, *, actor: str = "api") -> bool:
        """Remove the integration called ``name``; return whether there was one.

        :param actor: who removes it, for the audit log.
        """
        async with self._db.transaction() as tx:
            deleted = await tx.execute(
                "DELETE FROM api_integrations WHERE name = ?", (name,)
            )
            if deleted:
                await self._audit(tx, "integration_removed", actor, name)

        return deleted > 0

    async def put_setting(
        self, kind: str, body: dict[str, Any], *, actor: str = "api"
    ) -> None:
        """Store the settings of ``kind`` (``grouping``), replacing any before.

        :param actor: who changes them, for the audit log.
        :raises StateError: if the database cannot be written.
        """
        async with self._db.transaction() as tx:
            await self._audit(tx, "settings_changed", actor, kind, {"settings": body})
            await tx.execute(
                "INSERT INTO api_settings (kind, body, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (kind) DO UPDATE"
                " SET body = excluded.body, updated_at = excluded.updated_at",
                (kind, _encode(body), self._clock.time()),
            )

    async def setting(self, kind: str) -> dict[str, Any] | None:
        """Return the stored settings of ``kind``, or ``None`` if never set."""
        row = await self._db.fetchone(
            "SELECT body FROM api_settings WHERE kind = ?", (kind,)
        )
        return None if row is None else _decode(row[0])

    async def settings(self) -> dict[str, dict[str, Any]]:
        """Return every stored setting, by kind."""
        rows = await self._db.fetchall(
            "SELECT kind, body FROM api_settings ORDER BY kind"
        )
        return {kind: _decode(body) for kind, body in rows}

    async def _audit(
        self,
        tx: Transaction,
        action: str,
        actor: str,
        subject: str,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        await write_event(
            tx,
            at=self._clock.time(),
            kind="config",
            action=action,
            actor=actor,
            subject=subject,
            detail=detail,
        )


async def _insert(
    tx: Transaction, table: str, name: str, sql: str, params: Sequence[Any], taken: str
) -> None:
    # The transaction holds the write lock from its start: no other writer
    # can take the name between the look-up and the insert.
    if await tx.fetchone(f"SELECT 1 FROM {table} WHERE name = ?", (name,)):
        raise ConflictError(taken)
    await tx.insert(sql, params)


def _rule(row: Sequence) -> CatalogEntry:
    name, body, created_at, created_by = row
    return CatalogEntry(
        name=name, body=_decode(body), created_at=created_at, created_by=created_by
    )


def _integration(row: Sequence) -> CatalogEntry:
    name, body, created_at, created_by, type_ = row
    return CatalogEntry(
        name=name,
        type=type_,
        body=_decode(body),
        created_at=created_at,
        created_by=created_by,
    )
