"""Schema 5: a database of schema 4 keeps every row and gains the lifecycle."""

from __future__ import annotations

import msgspec
import pytest

from tests.state.test_alerts import T0, make_spec
from tocsin.errors import StateError
from tocsin.state.alerts import AlertStore
from tocsin.state.db import Database
from tocsin.state.migrations import MIGRATIONS
from tocsin.state.outbox import Outbox

#: (id, state, resolved_at, closed_at) of the alerts written as schema 4.
ALERTS = [
    (1, "triggered", None, None),
    (2, "resolved", T0 + 50, None),
    (3, "closed", T0 + 20, T0 + 40),
]


async def _write_as_schema_4(db: Database) -> None:
    async with db.transaction() as tx:
        for alert_id, state, resolved_at, closed_at in ALERTS:
            spec = make_spec(series=f"model={alert_id}")
            await tx.execute(
                "INSERT INTO alerts (id, uid, rule, series, state, spec, value,"
                " fired_at, resolved_at, closed_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, 0.31, ?, ?, ?, ?)",
                (
                    alert_id,
                    f"uid{alert_id}",
                    spec.rule,
                    spec.series,
                    state,
                    msgspec.json.encode(spec).decode(),
                    T0,
                    resolved_at,
                    closed_at,
                    T0,
                ),
            )
            await tx.execute(
                "INSERT INTO transitions (id, alert_id, from_state, to_state, at,"
                " actor, reason) VALUES (?, ?, NULL, 'triggered', ?, 'engine', 'why')",
                (alert_id * 10, alert_id, T0),
            )
            await tx.execute(
                "INSERT INTO outbox (alert_id, transition_id, channel, event, key,"
                " state, next_attempt_at, created_at, alert_state, alert_value,"
                " alert_severity, alert_threshold, alert_range, alert_summary,"
                " alert_description) VALUES (?, ?, 'ops', 'trigger', ?, 'pending',"
                " ?, ?, 'triggered', 0.31, 'warning', 0.2, '[]', 'sum', 'desc')",
                (alert_id, alert_id * 10, f"key-{alert_id}", T0, T0),
            )


async def _everything(db: Database) -> dict[str, list[tuple]]:
    return {
        table: await db.fetchall(f"SELECT * FROM {table} ORDER BY id")
        for table in ("alerts", "transitions", "outbox", "delivery_attempts")
    }


@pytest.fixture
async def migrated(tmp_path, clock):
    """A schema-4 database with rows, its rows, and the same file at schema 5."""
    path = tmp_path / "tocsin.db"
    db = await Database.open(path, clock=clock, migrations=MIGRATIONS[:4])
    await _write_as_schema_4(db)
    before = await _everything(db)
    await db.close()
    db = await Database.open(path, clock=clock, migrations=MIGRATIONS[:5])
    yield db, before
    await db.close()


async def test_every_row_is_kept(migrated):
    db, before = migrated

    assert await _everything(db) == before
    assert await db.fetchall("PRAGMA foreign_key_check") == []
    assert await db.fetchone("SELECT COUNT(*) FROM silences") == (0,)
    assert await db.fetchone("SELECT COUNT(*) FROM escalation_steps") == (0,)


async def test_indexes_are_kept_and_added(migrated):
    db, _ = migrated

    rows = await db.fetchall(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
    )

    assert {row[0] for row in rows} >= {
        "alerts_open_series",
        "alerts_rule_fired",
        "alerts_resolved",
        "alerts_series",
        "outbox_due",
        "outbox_alert",
        "silences_ends",
        "escalation_steps_due",
    }


async def test_one_open_alert_per_series_is_still_enforced(migrated):
    db, _ = migrated

    with pytest.raises(StateError, match="UNIQUE constraint failed"):
        async with db.transaction() as tx:
            await tx.execute(
                "INSERT INTO alerts (uid, rule, series, state, spec, fired_at,"
                " updated_at) VALUES ('x', 'drift', 'model=1', 'acknowledged',"
                " '{}', 0, 0)"
            )


@pytest.mark.parametrize("column", ["state", "alert_state"])
async def test_the_new_states_pass_and_others_do_not(migrated, column):
    db, _ = migrated
    table = "alerts" if column == "state" else "outbox"

    async with db.transaction() as tx:
        await tx.execute(f"UPDATE {table} SET {column} = 'escalated' WHERE id = 1")
    with pytest.raises(StateError, match="CHECK constraint failed"):
        async with db.transaction() as tx:
            await tx.execute(f"UPDATE {table} SET {column} = 'snoozed' WHERE id = 1")


async def test_migrated_alerts_move_and_their_notifications_are_delivered(
    migrated, clock, tmp_path
):
    db, _ = migrated
    # Up to the current schema, which delivery reads.
    await db.close()
    db = await Database.open(tmp_path / "tocsin.db", clock=clock)
    store = AlertStore(db, clock)

    acked = await store.move("uid1", "acknowledged", actor="api:alice")
    closed = await store.move(2, "closed", actor="api:alice")
    due = await Outbox(db, clock).due("ops", T0 + 1, limit=10)

    assert (acked.state, closed.state) == ("acknowledged", "closed")
    assert [n.key for n in due] == ["key-1", "key-2", "key-3"]
    assert due[0].alert.spec.severity == "warning"
    await db.close()
