"""The audit log's retention: batches, what goes, and what an open alert or a
pending notification keeps, by a manual clock."""

from __future__ import annotations

import pytest

from tests.state.test_alerts import T0, make_spec
from tests.state.test_audit import attempt
from tocsin.state.alerts import AlertStore
from tocsin.state.audit import AuditLog, AuditQuery
from tocsin.state.audit_retention import Retention, prune
from tocsin.state.outbox import Outbox

DAY = 86400.0


@pytest.fixture
def store(db, clock):
    return AlertStore(db, clock)


@pytest.fixture
def outbox(db, clock):
    return Outbox(db, clock)


async def count(db, table: str) -> int:
    [(found,)] = await db.fetchall(f"SELECT COUNT(*) FROM {table}")
    return found


async def test_events_go_in_batches_and_newer_ones_stay(db, clock):
    audit = AuditLog(db)
    for minute in range(7):
        await audit.record(at=T0 + minute, kind="config", action="x", actor="cli")

    pruned = await prune(db, T0 + 5, batch=2)

    # 5 rows in batches of 2: three for the events, one for each other table.
    assert (pruned.audit_events, pruned.total) == (5, 5)
    assert pruned.batches == 3 + 3
    assert [e.at for e in (await audit.query(AuditQuery())).entries] == [
        T0 + 6,
        T0 + 5,
    ]


async def test_a_closed_alerts_history_goes_and_an_open_ones_stays(
    db, clock, store, outbox
):
    closed = await store.fire(make_spec(series="model=a"), ["pager"])
    opened = await store.fire(make_spec(series="model=b"), ["pager"])
    await attempt(outbox, "pager", at=T0 + 1, status=503)
    await attempt(outbox, "pager", at=T0 + 2, status=200)
    await attempt(outbox, "pager", at=T0 + 3, status=200)
    clock.advance(10)
    await store.resolve("drift", "model=a", at=T0 + 10, value=0.1, reason="ok")
    await store.move(closed.id, "closed", actor="api:alice")
    clock.advance(40 * DAY)

    pruned = await Retention(db, clock, 30 * DAY, batch=1).prune_once()

    history = await db.fetchall("SELECT alert_id, to_state FROM transitions")
    assert history == [(opened.id, "triggered")]
    # The open alert's notification and its attempt stay with it.
    assert await db.fetchall("SELECT alert_id FROM outbox") == [(opened.id,)]
    assert await count(db, "delivery_attempts") == 1
    assert (pruned.delivery_attempts, pruned.outbox, pruned.transitions) == (2, 1, 3)
    assert await count(db, "alerts") == 2


async def test_a_pending_notification_keeps_its_attempts_and_transition(
    db, clock, store, outbox
):
    alert = await store.fire(make_spec(), ["pager"])
    await attempt(outbox, "pager", at=T0 + 1, status=503)
    await store.resolve("drift", "model=a", at=T0 + 2, value=0.1, reason="ok")
    await store.move(alert.id, "closed", actor="api:alice")
    clock.advance(40 * DAY)

    await Retention(db, clock, 30 * DAY).prune_once()

    # The trigger still waits for delivery: its attempt and its transition
    # stay; the others of the closed alert go.
    assert await count(db, "delivery_attempts") == 1
    assert await db.fetchall("SELECT to_state FROM transitions") == [("triggered",)]


async def test_entries_younger_than_the_retention_stay(db, clock, store, outbox):
    alert = await store.fire(make_spec(), ["pager"])
    await attempt(outbox, "pager", at=T0 + 1, status=200)
    await store.resolve("drift", "model=a", at=T0 + 2, value=0.1, reason="ok")
    await store.move(alert.id, "closed", actor="api:alice")
    clock.advance(29 * DAY)

    pruned = await Retention(db, clock, 30 * DAY).prune_once()

    assert pruned.total == 0
    assert await count(db, "transitions") == 3


async def test_a_retention_of_0_keeps_everything(db, clock):
    await AuditLog(db).record(at=T0, kind="config", action="x", actor="cli")
    clock.advance(1000 * DAY)

    pruned = await Retention(db, clock, 0).prune_once()

    assert (pruned.total, pruned.batches) == (0, 0)
    assert await count(db, "audit_events") == 1
