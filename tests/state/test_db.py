"""The state database: opening, pragmas, migrations and transactions."""

from __future__ import annotations

import sqlite3
import subprocess

import pytest

from tocsin.clock import ManualClock
from tocsin.errors import StateError
from tocsin.state.db import Database
from tocsin.state.migrations import MIGRATIONS, statements

TABLES = {
    "alerts",
    "transitions",
    "outbox",
    "delivery_attempts",
    "silences",
    "escalation_steps",
    "notify_groups",
    "notification_log",
    "dedup_log",
    "notify_sequence",
    "api_rules",
    "api_integrations",
    "api_settings",
    "inbound_events",
    "audit_events",
}


def _tables(path) -> set[str]:
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
        return {row[0] for row in rows}


def _user_version(path) -> int:
    with sqlite3.connect(path) as connection:
        return connection.execute("PRAGMA user_version").fetchone()[0]


async def test_open_creates_the_directory_and_the_schema(tmp_path):
    path = tmp_path / "deep" / "er" / "tocsin.db"
    db = await Database.open(path, clock=ManualClock())
    await db.close()

    assert path.exists()
    assert _tables(path) == TABLES
    assert _user_version(path) == len(MIGRATIONS)


async def test_pragmas_are_set(tmp_path):
    db = await Database.open(tmp_path / "t.db", clock=ManualClock(), busy_timeout=2.5)
    try:
        assert await db.fetchone("PRAGMA journal_mode") == ("wal",)
        assert await db.fetchone("PRAGMA foreign_keys") == (1,)
        assert await db.fetchone("PRAGMA synchronous") == (2,)  # FULL
        assert await db.fetchone("PRAGMA busy_timeout") == (2500,)
    finally:
        await db.close()


async def test_reopen_keeps_rows_and_does_not_migrate_again(tmp_path):
    path = tmp_path / "t.db"
    db = await Database.open(path, clock=ManualClock())
    async with db.transaction() as tx:
        await tx.execute(
            "INSERT INTO alerts (uid, rule, series, state, spec, fired_at, updated_at)"
            " VALUES ('u1', 'r', '', 'triggered', '{}', 1, 1)"
        )
    await db.close()

    db = await Database.open(path, clock=ManualClock())
    try:
        assert await db.fetchall("SELECT uid FROM alerts") == [("u1",)]
        assert await db.fetchone("PRAGMA user_version") == (len(MIGRATIONS),)
    finally:
        await db.close()


async def test_a_newer_database_is_refused_naming_both_versions(tmp_path):
    path = tmp_path / "t.db"
    with sqlite3.connect(path) as connection:
        connection.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")

    with pytest.raises(StateError) as caught:
        await Database.open(path, clock=ManualClock())

    message = str(caught.value)
    assert f"schema version {len(MIGRATIONS) + 1}" in message
    assert f"versions up to {len(MIGRATIONS)}" in message
    assert _user_version(path) == len(MIGRATIONS) + 1


async def test_migrations_apply_in_order_each_in_its_own_transaction(tmp_path):
    path = tmp_path / "t.db"
    first = "CREATE TABLE a (x INTEGER);"
    broken = "CREATE TABLE b (y INTEGER); INSERT INTO nowhere VALUES (1);"

    with pytest.raises(StateError, match="migration to schema version 2"):
        await Database.open(path, clock=ManualClock(), migrations=[first, broken])

    # Version 1 stays; nothing of the failed version 2 remains.
    assert _user_version(path) == 1
    assert _tables(path) == {"a"}

    fixed = "CREATE TABLE b (y INTEGER);"
    db = await Database.open(path, clock=ManualClock(), migrations=[first, fixed])
    await db.close()
    assert _user_version(path) == 2
    assert _tables(path) == {"a", "b"}


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("CREATE TABLE a (x);", ["CREATE TABLE a (x);"]),
        ("A; B;\n", ["A;", "B;"]),
        ("INSERT INTO t VALUES ('a;b');", ["INSERT INTO t VALUES ('a;b');"]),
        (
            "-- a comment; with a semicolon\nSELECT 1;",
            ["-- a comment; with a semicolon\nSELECT 1;"],
        ),
        ("\n  \n", []),
    ],
)
def test_statements_split_on_complete_statements_only(script, expected):
    assert statements(script) == expected


async def test_a_failing_transaction_rolls_back_and_raises_state_error(tmp_path):
    db = await Database.open(tmp_path / "t.db", clock=ManualClock())
    try:
        with pytest.raises(StateError, match="transaction failed"):
            async with db.transaction() as tx:
                await tx.execute(
                    "INSERT INTO alerts (uid, rule, series, state, spec, fired_at,"
                    " updated_at) VALUES ('u1', 'r', '', 'triggered', '{}', 1, 1)"
                )
                await tx.execute("INSERT INTO nowhere VALUES (1)")

        assert await db.fetchall("SELECT uid FROM alerts") == []
        assert db.errors == 1
    finally:
        await db.close()


async def test_an_exception_in_the_body_rolls_back_and_propagates(tmp_path):
    db = await Database.open(tmp_path / "t.db", clock=ManualClock())
    try:
        with pytest.raises(KeyError):
            async with db.transaction() as tx:
                await tx.execute(
                    "INSERT INTO alerts (uid, rule, series, state, spec, fired_at,"
                    " updated_at) VALUES ('u1', 'r', '', 'triggered', '{}', 1, 1)"
                )
                raise KeyError("boom")

        assert await db.fetchall("SELECT uid FROM alerts") == []
    finally:
        await db.close()


async def test_a_lock_held_by_another_process_becomes_state_error(tmp_path):
    path = tmp_path / "t.db"
    db = await Database.open(path, clock=ManualClock(), busy_timeout=0.05)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StateError, match="locked"):
            async with db.transaction():
                pass
        assert db.locked == 1
    finally:
        other.execute("ROLLBACK")
        other.close()
    async with db.transaction():
        pass
    await db.close()


async def test_close_is_idempotent_and_later_use_is_a_state_error(tmp_path):
    db = await Database.open(tmp_path / "t.db", clock=ManualClock())
    await db.close()
    await db.close()

    assert not db.is_open
    with pytest.raises(StateError, match="closed"):
        await db.fetchall("SELECT 1")


async def test_an_unopenable_path_is_a_state_error(tmp_path):
    (tmp_path / "dir.db").mkdir()

    with pytest.raises(StateError, match="cannot open the state database"):
        await Database.open(tmp_path / "dir.db", clock=ManualClock())


async def test_foreign_keys_are_enforced(tmp_path):
    db = await Database.open(tmp_path / "t.db", clock=ManualClock())
    try:
        with pytest.raises(StateError, match="FOREIGN KEY"):
            async with db.transaction() as tx:
                await tx.execute(
                    "INSERT INTO transitions (alert_id, to_state, at, actor, reason)"
                    " VALUES (999, 'triggered', 1, 'engine', 'x')"
                )
    finally:
        await db.close()


async def test_a_damaged_database_is_refused_at_open(tmp_path):
    clock = ManualClock()
    path = tmp_path / "tocsin.db"
    database = await Database.open(path, clock=clock)
    await database.close()
    data = bytearray(path.read_bytes())
    page = 4096
    # Overwrite the second page (a table's b-tree page) with garbage.
    data[page : 2 * page] = b"\xa5" * page
    path.write_bytes(bytes(data))

    with pytest.raises(StateError, match="damaged|malformed"):
        await Database.open(path, clock=clock)


async def test_a_database_that_cannot_be_written_is_refused_at_open(tmp_path):
    clock = ManualClock()
    path = tmp_path / "tocsin.db"
    database = await Database.open(path, clock=clock)
    await database.close()
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
        pytest.skip("this file system cannot make a file immutable")
    try:
        with pytest.raises(StateError, match="cannot be written"):
            await Database.open(path, clock=clock)
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


async def test_slow_transactions_are_logged_once_per_interval(tmp_path, caplog):
    clock = ManualClock()
    db = await Database.open(tmp_path / "t.db", clock=clock)
    try:
        for _ in range(3):
            async with db.transaction():
                clock.advance(2.0)
        clock.advance(10.0)
        async with db.transaction():
            clock.advance(2.0)
    finally:
        await db.close()

    warnings = [
        (r.getMessage(), r.elapsed_ms, r.suppressed)
        for r in caplog.records
        if r.name == "tocsin.state.db"
    ]
    assert warnings == [
        ("slow state transaction", 2000, 0),
        ("slow state transaction", 2000, 2),
    ]
    assert db.slow == 4


async def test_a_migration_may_rebuild_a_referenced_table(tmp_path):
    path = tmp_path / "t.db"
    first = (
        "CREATE TABLE parent (id INTEGER PRIMARY KEY, x INTEGER CHECK (x > 0));"
        "CREATE TABLE child (parent_id INTEGER NOT NULL REFERENCES parent (id));"
        "INSERT INTO parent VALUES (1, 5); INSERT INTO child VALUES (1);"
    )
    # Loosen the CHECK the only way SQLite can: copy, drop, rename.
    rebuild = (
        "CREATE TABLE parent_new (id INTEGER PRIMARY KEY, x INTEGER);"
        "INSERT INTO parent_new SELECT * FROM parent; DROP TABLE parent;"
        "ALTER TABLE parent_new RENAME TO parent;"
    )

    db = await Database.open(path, clock=ManualClock(), migrations=[first, rebuild])
    try:
        assert await db.fetchall("SELECT * FROM child JOIN parent") == [(1, 1, 5)]
        assert await db.fetchone("PRAGMA foreign_keys") == (1,)
        with pytest.raises(StateError, match="FOREIGN KEY"):
            async with db.transaction() as tx:
                await tx.execute("DELETE FROM parent")
    finally:
        await db.close()


async def test_a_migration_that_breaks_a_foreign_key_is_rolled_back(tmp_path):
    path = tmp_path / "t.db"
    first = (
        "CREATE TABLE parent (id INTEGER PRIMARY KEY);"
        "CREATE TABLE child (parent_id INTEGER NOT NULL REFERENCES parent (id));"
        "INSERT INTO parent VALUES (1); INSERT INTO child VALUES (1);"
    )
    dangling = "DELETE FROM parent;"

    with pytest.raises(StateError) as caught:
        await Database.open(path, clock=ManualClock(), migrations=[first, dangling])

    assert str(caught.value).endswith(
        "migration to schema version 2 failed: "
        "row 1 of child refers to a missing row of parent"
    )
    assert _user_version(path) == 1
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT id FROM parent").fetchall() == [(1,)]


async def test_a_new_database_and_its_journal_are_readable_by_their_owner_only(
    tmp_path,
):
    # What the API adds is kept here, integrations' secrets included.
    path = tmp_path / "tocsin.db"
    db = await Database.open(path, clock=ManualClock())
    try:
        modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    finally:
        await db.close()

    assert modes == dict.fromkeys(
        ["tocsin.db", "tocsin.db-wal", "tocsin.db-shm"], 0o600
    )
