"""The state database: one SQLite file in WAL mode, reached through aiosqlite.

Two connections serve the whole process: one writes, one reads. Their
statements run on aiosqlite's threads, so a slow disk or a lock held by another
process never blocks the event loop; an :class:`asyncio.Lock` per connection
keeps the coroutines that share it from interleaving their statements inside
one another's transactions.

Reads have a connection of their own because a write may wait for a lock
another process holds (up to ``busy_timeout``), and in WAL mode a read needs
no lock at all: on a shared connection every read (the outbox's due
notifications, the API's status) would queue behind that waiting write, and
the whole daemon would stall exactly while it most needs to say why. A read
sees every transaction committed before it began.

SQLite goes on writing to a file deleted under it, so a deleted database
fails nothing: the daemon would look healthy while all it records vanishes at
the next restart, and an alert still firing would then fire again as a new
alert, under a new key. Each write transaction therefore first checks that
the path still names the file that is open. A deleted database is written
back from the open copy (``VACUUM INTO``), whole; a file someone put in its
place is theirs, and writes are refused until a restart opens it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from tocsin.clock import Clock
from tocsin.errors import StateError
from tocsin.logs import RateLimiter
from tocsin.state.migrations import MIGRATIONS, migrate

log = logging.getLogger(__name__)

#: A transaction slower than this (seconds, lock wait included) is logged.
_SLOW_TRANSACTION = 1.0


class Transaction:
    """The statements of one open transaction; see :meth:`Database.transaction`."""

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._connection = connection

    async def insert(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one ``INSERT`` and return the new row's id."""
        async with self._connection.execute(sql, params) as cursor:
            return int(cursor.lastrowid)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement and return how many rows it changed."""
        async with self._connection.execute(sql, params) as cursor:
            return cursor.rowcount

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement once per row of parameters."""
        await self._connection.executemany(sql, rows)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Run one query and return every row."""
        return list(await self._connection.execute_fetchall(sql, params))

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        """Run one query and return its first row, or ``None``."""
        rows = await self._connection.execute_fetchall(sql, params)
        return next(iter(rows), None)


class Database:
    """An open state database; create it with :meth:`open`.

    Every sqlite error surfaces as :class:`~tocsin.errors.StateError`. The
    counters (``transactions``, ``errors``, ``locked``, ``slow``) are Tocsin's own
    health signals: ``locked`` counts writes refused because another process held
    the database longer than ``busy_timeout``.
    """

    def __init__(
        self,
        connection: aiosqlite.Connection,
        path: Path,
        clock: Clock,
        reader: aiosqlite.Connection | None = None,
    ) -> None:
        self.path = path
        self.clock = clock
        self.transactions = 0
        self.errors = 0
        self.locked = 0
        self.slow = 0
        self._connection: aiosqlite.Connection | None = connection
        self._lock = asyncio.Lock()
        # Without a reader of its own, reads share the writer's connection.
        self._reader = reader
        self._read_lock = asyncio.Lock() if reader is not None else self._lock
        self._limiter = RateLimiter(clock=clock.monotonic)
        self._busy_timeout = 5.0
        # The file the connections have open, as (device, inode).
        self._identity = _identity(path)

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        clock: Clock,
        busy_timeout: float = 5.0,
        migrations: Sequence[str] = MIGRATIONS,
    ) -> Database:
        """Open (creating if needed) and migrate the database at ``path``.

        :param busy_timeout: seconds a statement waits for a lock another
            process holds before it fails.
        :param migrations: the schema scripts; tests pass their own.
        :raises StateError: if the file cannot be opened or migrated, or holds
            a schema newer than this code.
        """
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StateError(
                f"cannot create the state directory {path.parent}: {error.strerror}"
            ) from None
        _create_private(path)
        connection = await _connect(path)
        reader = None
        try:
            # busy_timeout first: switching to WAL needs the lock too.
            await _configure(connection, busy_timeout)
            rows = await connection.execute_fetchall("PRAGMA journal_mode = WAL")
            mode = next(iter(rows))[0]
            if mode != "wal":
                raise StateError(
                    f"state database {path}: cannot switch to WAL mode "
                    f"(journal mode is {mode})"
                )
            version = await migrate(connection, str(path), migrations)
            await _check_usable(connection, path, version)
            reader = await _connect(path)
            await _configure(reader, busy_timeout)
        except (sqlite3.Error, StateError) as error:
            for opened in (reader, connection):
                if opened is not None:
                    await opened.close()
            if isinstance(error, StateError):
                raise
            raise StateError(
                f"cannot open the state database {path}: {error}"
            ) from None
        log.debug(
            "state database at schema version %d", version, extra={"path": str(path)}
        )

        database = cls(connection, path, clock, reader)
        database._busy_timeout = busy_timeout

        return database

    async def close(self) -> None:
        """Close the connections; later calls do nothing."""
        connection, self._connection = self._connection, None
        reader, self._reader = self._reader, None
        if connection is None:
            return
        try:
            if reader is not None:
                async with self._read_lock:
                    await reader.close()
            async with self._lock:
                await connection.close()
        except sqlite3.Error as error:
            raise StateError(
                f"state database {self.path}: close failed: {error}"
            ) from None

    @property
    def is_open(self) -> bool:
        return self._connection is not None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """Run the body in one write transaction, committed when it ends.

        ``BEGIN IMMEDIATE`` takes the write lock up front, so a transaction
        never fails half-way because another writer got there first. An
        exception in the body rolls everything back.

        :raises StateError: if any statement, or the commit, fails.
        """
        started = self.clock.monotonic()
        async with self._lock:
            self._require()
            await self._check_file()
            # Again: a written-back database has a new connection.
            connection = self._require()
            try:
                await connection.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as error:
                raise self._error("cannot begin a transaction", error) from None
            try:
                yield Transaction(connection)
                await connection.execute("COMMIT")
            except sqlite3.Error as error:
                await self._rollback(connection)
                raise self._error("transaction failed", error) from None
            except BaseException:
                await self._rollback(connection)
                raise
        self.transactions += 1
        elapsed = self.clock.monotonic() - started
        if elapsed > _SLOW_TRANSACTION:
            self.slow += 1
            # A stuck disk makes every transaction slow; one line per interval
            # tells as much, with the count of those held back.
            allowed, suppressed = self._limiter.allow("slow")
            if allowed:
                log.warning(
                    "slow state transaction",
                    extra={
                        "path": str(self.path),
                        "elapsed_ms": round(elapsed * 1000),
                        "suppressed": suppressed,
                    },
                )

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Run one read query outside any transaction and return every row.

        :raises StateError: if the query fails.
        """
        async with self._read_lock:
            connection = self._require()
            if self._reader is not None:
                connection = self._reader
            try:
                return list(await connection.execute_fetchall(sql, params))
            except sqlite3.Error as error:
                raise self._error("query failed", error) from None

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        """Run one read query and return its first row, or ``None``."""
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def _check_file(self) -> None:
        """Make sure the path still names the open file; see the module's text.

        Called with the write lock held.

        :raises StateError: if another file took the database's place, or a
            deleted database cannot be written back.
        """
        found = _identity(self.path)
        if found == self._identity:
            return
        if found is not None:
            self.errors += 1
            raise StateError(
                f"state database {self.path} was replaced by another file while"
                " Tocsin ran; restart Tocsin to use it, or move it aside"
            )
        try:
            await self._write_back()
        except (OSError, sqlite3.Error) as error:
            self.errors += 1
            raise StateError(
                f"state database {self.path} was deleted while Tocsin ran and"
                f" cannot be written back: {error}"
            ) from None
        # An ERROR: someone removed the file Tocsin keeps its alerts in, and
        # should hear that it is back, or they will try again.
        log.error(
            "state database written back",
            extra={
                "path": str(self.path),
                "detail": "the file was deleted while Tocsin ran",
            },
        )

    async def _write_back(self) -> None:
        """Write the open database back at its path, and reopen it there."""
        copy = self.path.with_name(self.path.name + ".restore")
        copy.unlink(missing_ok=True)
        writer = self._require()
        # The copy holds every committed transaction, the log's included.
        await writer.execute("VACUUM INTO ?", (str(copy),))
        # Readable by its owner only, as every database Tocsin creates.
        os.chmod(copy, 0o600)
        # Closing checkpoints into the deleted file and removes its log by
        # name: the log next to the path is still this database's, and must
        # not be read as the copy's.
        async with contextlib.AsyncExitStack() as stack:
            if self._reader is not None:
                await stack.enter_async_context(self._read_lock)
                await self._reader.close()
            await writer.close()
            os.replace(copy, self.path)
            _sync_directory(self.path.parent)
            self._connection = await _connect(self.path)
            await _configure(self._connection, self._busy_timeout)
            # Fetched to the end: a statement left open keeps its lock.
            await self._connection.execute_fetchall("PRAGMA journal_mode = WAL")
            if self._reader is not None:
                self._reader = await _connect(self.path)
                await _configure(self._reader, self._busy_timeout)
        self._identity = _identity(self.path)

    def _require(self) -> aiosqlite.Connection:
        if self._connection is None:
            raise StateError(f"state database {self.path} is closed")
        return self._connection

    def _error(self, what: str, error: sqlite3.Error) -> StateError:
        self.errors += 1
        if isinstance(error, sqlite3.OperationalError) and "locked" in str(error):
            self.locked += 1
        return StateError(f"state database {self.path}: {what}: {error}")

    async def _rollback(self, connection: aiosqlite.Connection) -> None:
        try:
            await connection.execute("ROLLBACK")
        except sqlite3.Error as error:
            # SQLite may already have rolled back on its own (a full disk, an
            # I/O error); the transaction is over either way.
            log.debug("rollback after a failed transaction: %s", error)


def _identity(path: Path) -> tuple[int, int] | None:
    """Return the (device, inode) of the file at ``path``, ``None`` if none."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None

    return found.st_dev, found.st_ino


def _sync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` survive a power loss."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


async def _configure(connection: aiosqlite.Connection, busy_timeout: float) -> None:
    """Set what every connection of Tocsin's needs."""
    await connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    # FULL: under NORMAL a power loss can undo the last alerts; writes are rare.
    await connection.execute("PRAGMA synchronous = FULL")
    await connection.execute("PRAGMA foreign_keys = ON")


async def _connect(path: Path) -> aiosqlite.Connection:
    """Open the connection, in autocommit mode: transactions are begun
    explicitly, never implicitly by the sqlite3 module."""
    connection = aiosqlite.connect(path, isolation_level=None)
    try:
        return await connection
    except sqlite3.Error as error:
        # aiosqlite stops its thread by itself after a failed connect; wait for
        # it, or it may report to an event loop that has closed meanwhile.
        thread = getattr(connection, "_thread", None)
        if thread is not None:
            await asyncio.to_thread(thread.join, 1.0)
        raise StateError(f"cannot open the state database {path}: {error}") from None


async def _check_usable(
    connection: aiosqlite.Connection, path: Path, version: int
) -> None:
    """Refuse a database that is damaged or cannot be written.

    Either would let the daemon start, look healthy and then fail every alert
    it tries to record; failing at start-up makes the problem visible at once.
    """
    rows = await connection.execute_fetchall("PRAGMA quick_check")
    problems = [row[0] for row in rows if row[0] != "ok"]
    if problems:
        raise StateError(
            f"state database {path} is damaged ({problems[0]}); "
            "move it aside to start with an empty one"
        )
    # Rewriting the schema version is a real write that changes nothing.
    await connection.execute("BEGIN IMMEDIATE")
    try:
        await connection.execute(f"PRAGMA user_version = {int(version)}")
        await connection.execute("COMMIT")
    except sqlite3.Error as error:
        await connection.execute("ROLLBACK")
        raise StateError(f"state database {path} cannot be written: {error}") from None


def _create_private(path: Path) -> None:
    """Create the database file readable by its owner only, if it is new.

    It holds what the API added, integrations' secrets included; SQLite gives
    its ``-wal`` and ``-shm`` files the database file's permissions. An
    existing file keeps the mode its owner chose.
    """
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    except OSError as error:
        raise StateError(
            f"cannot create the state database {path}: {error.strerror}"
        ) from None
    os.close(descriptor)
