"""The outbox: what is due, and how each attempt is recorded."""

from __future__ import annotations

import pytest

from tests.state.test_alerts import T0, make_spec
from tocsin.clock import ManualClock
from tocsin.state.alerts import AlertStore
from tocsin.state.db import Database
from tocsin.state.outbox import DeliveryAttempt, Outbox


@pytest.fixture
def clock():
    return ManualClock(T0)


@pytest.fixture
async def db(tmp_path, clock):
    database = await Database.open(tmp_path / "tocsin.db", clock=clock)
    yield database
    await database.close()


@pytest.fixture
def store(db, clock):
    return AlertStore(db, clock)


@pytest.fixture
def outbox(db, clock):
    return Outbox(db, clock)


async def test_due_returns_pending_rows_of_one_channel_oldest_first(store, outbox):
    a = await store.fire(make_spec(series="model=a"), ["ops", "log"])
    b = await store.fire(make_spec(series="model=b"), ["ops"])

    due = await outbox.due("ops", T0, limit=10)

    assert [(n.alert.uid, n.channel, n.event) for n in due] == [
        (a.uid, "ops", "trigger"),
        (b.uid, "ops", "trigger"),
    ]
    first = due[0]
    assert first.attempts == 0
    assert first.created_at == T0
    assert first.alert == a
    assert (first.transition.to_state, first.transition.alert_id) == ("triggered", a.id)
    assert first.key == f"tocsin-{a.uid}-{first.transition.id}-ops"
    assert [n.channel for n in await outbox.due("log", T0, limit=10)] == ["log"]
    assert await outbox.due("nowhere", T0, limit=10) == []
    assert len(await outbox.due("ops", T0, limit=1)) == 1
    assert await outbox.due("ops", T0 - 1, limit=10) == []


async def test_retry_records_the_attempt_and_reschedules(db, store, outbox, clock):
    await store.fire(make_spec(), ["ops"])
    [notification] = await outbox.due("ops", T0, limit=10)
    clock.advance(2)

    await outbox.retry(
        notification,
        next_attempt_at=T0 + 60,
        status=503,
        reason="server_error",
        error="channel ops: HTTP 503 Service Unavailable",
        duration_ms=12.5,
    )

    assert await outbox.due("ops", T0 + 59, limit=10) == []
    assert await outbox.next_due("ops") == T0 + 60
    [again] = await outbox.due("ops", T0 + 60, limit=10)
    assert again.attempts == 1
    assert again.key == notification.key
    assert await outbox.attempts(notification.id) == [
        DeliveryAttempt(
            outbox_id=notification.id,
            attempt=1,
            at=T0 + 2,
            outcome="retry",
            status=503,
            reason="server_error",
            error="channel ops: HTTP 503 Service Unavailable",
            duration_ms=12.5,
        )
    ]
    row = await db.fetchone(
        "SELECT state, last_status, last_error FROM outbox WHERE id = ?",
        (notification.id,),
    )
    assert row == ("pending", 503, "channel ops: HTTP 503 Service Unavailable")
    assert await outbox.pending_count() == 1


async def test_delivered_takes_the_row_out_of_the_queue(db, store, outbox, clock):
    await store.fire(make_spec(), ["ops"])
    [notification] = await outbox.due("ops", T0, limit=10)
    clock.advance(1)

    await outbox.delivered(notification, status=202, duration_ms=3.0)

    assert await outbox.due("ops", T0 + 1000, limit=10) == []
    assert await outbox.next_due("ops") is None
    assert await outbox.pending_count() == 0
    row = await db.fetchone(
        "SELECT state, attempts, last_status, delivered_at FROM outbox WHERE id = ?",
        (notification.id,),
    )
    assert row == ("delivered", 1, 202, T0 + 1)
    [attempt] = await outbox.attempts(notification.id)
    assert (attempt.outcome, attempt.status, attempt.attempt) == ("delivered", 202, 1)


async def test_dead_gives_up_and_lists_the_dead_letter(store, outbox, clock):
    alert = await store.fire(make_spec(), ["ops"])
    [notification] = await outbox.due("ops", T0, limit=10)
    await outbox.retry(
        notification,
        next_attempt_at=T0,
        status=None,
        reason="timeout",
        error="channel ops: no response within 5s",
        duration_ms=5000.0,
    )
    [notification] = await outbox.due("ops", T0, limit=10)
    clock.advance(30)

    await outbox.dead(
        notification,
        status=401,
        reason="auth",
        error="channel ops: HTTP 401 Unauthorized",
        duration_ms=4.0,
    )

    assert await outbox.pending_count() == 0
    [letter] = await outbox.dead_letters(10)
    assert (letter.key, letter.channel, letter.event) == (
        notification.key,
        "ops",
        "trigger",
    )
    assert (letter.alert_uid, letter.rule, letter.series) == (
        alert.uid,
        "drift",
        "model=a",
    )
    assert (letter.attempts, letter.last_status) == (2, 401)
    assert letter.last_error == "channel ops: HTTP 401 Unauthorized"
    assert letter.dead_at == T0 + 30
    outcomes = [a.outcome for a in await outbox.attempts(notification.id)]
    assert outcomes == ["retry", "dead"]


async def test_a_resolve_waits_for_its_pending_trigger(store, outbox):
    await store.fire(make_spec(), ["ops"])
    [trigger] = await outbox.due("ops", T0, limit=10)
    await outbox.retry(
        trigger,
        next_attempt_at=T0 + 100,
        status=503,
        reason="server_error",
        error="x",
        duration_ms=1.0,
    )
    await store.resolve(
        "drift", "model=a", at=T0 + 1, value=0.0, reason="ok", channels=["ops"]
    )

    # The resolve is due, but the trigger it follows has not gone out yet.
    assert await outbox.due("ops", T0 + 50, limit=10) == []
    assert await outbox.next_due("ops") == T0 + 100
    assert await outbox.pending_channels() == {"ops": 2}

    [trigger] = await outbox.due("ops", T0 + 100, limit=10)
    assert trigger.event == "trigger"
    await outbox.delivered(trigger, status=200, duration_ms=1.0)
    [resolve] = await outbox.due("ops", T0 + 100, limit=10)
    assert resolve.event == "resolve"
    assert resolve.alert.state == "resolved"


async def test_the_key_never_changes_across_attempts(store, outbox):
    await store.fire(make_spec(), ["ops"])
    keys = []
    for attempt in range(3):
        [notification] = await outbox.due("ops", T0 + attempt, limit=10)
        keys.append(notification.key)
        await outbox.retry(
            notification,
            next_attempt_at=T0 + attempt + 1,
            status=500,
            reason="server_error",
            error="x",
            duration_ms=1.0,
        )

    assert len(set(keys)) == 1
    [notification] = await outbox.due("ops", T0 + 3, limit=10)
    assert [a.attempt for a in await outbox.attempts(notification.id)] == [1, 2, 3]


async def test_pending_rows_survive_a_restart(tmp_path, clock):
    path = tmp_path / "tocsin.db"
    db = await Database.open(path, clock=clock)
    await AlertStore(db, clock).fire(make_spec(), ["ops"])
    [before] = await Outbox(db, clock).due("ops", T0, limit=10)
    await db.close()

    db = await Database.open(path, clock=clock)
    try:
        [after] = await Outbox(db, clock).due("ops", T0, limit=10)
        assert after == before
    finally:
        await db.close()
