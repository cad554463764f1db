"""The outbox: what is due, and how each attempt is recorded."""

from __future__ import annotations

import msgspec
import pytest

from tests.state.test_alerts import T0, make_spec
from tocsin.state.alerts import AlertStore
from tocsin.state.db import Database
from tocsin.state.migrations import MIGRATIONS
from tocsin.state.models import Alert
from tocsin.state.outbox import DeliveryAttempt, Outbox


@pytest.fixture
def store(db, clock):
    return AlertStore(db, clock)


@pytest.fixture
def outbox(db, clock):
    return Outbox(db, clock)


async def fail(outbox, notification, *, until: float, status: int = 503) -> None:
    """Record a retryable server error, the next attempt due at ``until``."""
    await outbox.retry(
        notification,
        next_attempt_at=until,
        status=status,
        reason="server_error",
        error="x",
        duration_ms=1.0,
    )


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


async def test_an_outcome_recorded_twice_is_recorded_once(db, store, outbox, clock):
    # As after a commit that reported failure yet took effect.
    await store.fire(make_spec(), ["ops"])
    [notification] = await outbox.due("ops", T0, limit=10)
    clock.advance(5)

    await outbox.delivered(notification, status=200, duration_ms=1.0, at=T0 + 1)
    await outbox.delivered(notification, status=200, duration_ms=1.0, at=T0 + 1)

    assert await db.fetchall("SELECT state, attempts, delivered_at FROM outbox") == [
        ("delivered", 1, T0 + 1)
    ]
    [attempt] = await outbox.attempts(notification.id)
    assert (attempt.attempt, attempt.at) == (1, T0 + 1)


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
    await fail(outbox, trigger, until=T0 + 100)
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
        await fail(outbox, notification, until=T0 + attempt + 1, status=500)

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


async def test_a_notification_keeps_the_alert_as_it_was_at_its_transition(
    store, outbox
):
    alert = await store.fire(make_spec(), ["ops"])
    [trigger] = await outbox.due("ops", T0, limit=10)
    await fail(outbox, trigger, until=T0 + 10)
    await store.resolve(
        "drift", "model=a", at=T0 + 5, value=0.05, reason="ok", channels=["ops"]
    )
    await store.close_resolved(T0 + 6)

    [again] = await outbox.due("ops", T0 + 10, limit=10)

    assert again.alert == alert
    assert (again.alert.state, again.alert.value, again.alert.resolved_at) == (
        "triggered",
        0.31,
        None,
    )
    await outbox.delivered(again, status=200, duration_ms=1.0)
    [resolve] = await outbox.due("ops", T0 + 10, limit=10)
    assert (resolve.alert.state, resolve.alert.value, resolve.alert.resolved_at) == (
        "resolved",
        0.05,
        T0 + 5,
    )


async def test_a_resolve_after_a_dead_trigger_is_not_announced_and_can_be_skipped(
    db, store, outbox, clock
):
    await store.fire(make_spec(), ["ops", "log"])
    [dead] = await outbox.due("ops", T0, limit=10)
    [sent] = await outbox.due("log", T0, limit=10)
    await outbox.dead(dead, status=401, reason="auth", error="x", duration_ms=1.0)
    await outbox.delivered(sent, status=None, duration_ms=1.0)
    await store.resolve(
        "drift", "model=a", at=T0 + 1, value=0.0, reason="ok", channels=["ops", "log"]
    )

    [orphan] = await outbox.due("ops", T0 + 1, limit=10)
    [resolve] = await outbox.due("log", T0 + 1, limit=10)
    assert (orphan.event, orphan.announced) == ("resolve", False)
    assert (resolve.event, resolve.announced) == ("resolve", True)
    assert sent.announced and dead.announced

    clock.advance(3)
    await outbox.skipped(orphan, reason="trigger_not_delivered")

    assert await outbox.pending_channels() == {"log": 1}
    assert await outbox.attempts(orphan.id) == []
    row = await db.fetchone(
        "SELECT state, attempts, skipped_at, skip_reason FROM outbox WHERE id = ?",
        (orphan.id,),
    )
    assert row == ("skipped", 0, T0 + 3, "trigger_not_delivered")


async def _write_as_schema_1(db: Database, alert_id: int, **alert) -> None:
    """Write an alert, its trigger and its outbox rows as schema version 1 did.

    :param alert: ``resolved`` (the resolve's value, or absent), ``trigger``
        and ``resolve`` (the state of each outbox row, or absent).
    """
    spec = make_spec(series=f"model={alert_id}", value=0.1 + 0.2)
    resolved = "resolved" in alert
    async with db.transaction() as tx:
        await tx.execute(
            "INSERT INTO alerts (id, uid, rule, series, state, spec, value, fired_at,"
            " resolved_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                alert_id,
                f"uid{alert_id}",
                spec.rule,
                spec.series,
                "resolved" if resolved else "triggered",
                msgspec.json.encode(spec).decode(),
                alert["resolved"] if resolved else spec.value,
                T0,
                T0 + alert_id if resolved else None,
                T0,
            ),
        )
        transitions = [(alert_id * 10, None, "triggered", T0, "trigger")]
        if resolved:
            transitions.append(
                (alert_id * 10 + 1, "triggered", "resolved", T0 + alert_id, "resolve")
            )
        for transition_id, before, after, at, event in transitions:
            await tx.execute(
                "INSERT INTO transitions (id, alert_id, from_state, to_state, at,"
                " actor, reason) VALUES (?, ?, ?, ?, ?, 'engine', 'why')",
                (transition_id, alert_id, before, after, at),
            )
            if event not in alert:
                continue
            await tx.execute(
                "INSERT INTO outbox (alert_id, transition_id, channel, event, key,"
                " state, attempts, next_attempt_at, created_at)"
                " VALUES (?, ?, 'ops', ?, ?, ?, ?, ?, ?)",
                (
                    alert_id,
                    transition_id,
                    event,
                    f"key-{transition_id}",
                    alert[event],
                    0 if alert[event] == "pending" else 1,
                    at,
                    at,
                ),
            )


async def test_rows_queued_by_schema_1_are_delivered_after_the_migration(
    tmp_path, clock
):
    path = tmp_path / "tocsin.db"
    db = await Database.open(path, clock=clock, migrations=MIGRATIONS[:1])
    # Still firing, its trigger pending.
    await _write_as_schema_1(db, 1, trigger="pending")
    # Resolved after its trigger went out; the resolve pending.
    await _write_as_schema_1(
        db, 2, resolved=0.05, trigger="delivered", resolve="pending"
    )
    # Resolved while its trigger still waited: both pending.
    await _write_as_schema_1(db, 3, resolved=0.07, trigger="pending", resolve="pending")
    await db.close()

    db = await Database.open(path, clock=clock)
    try:
        outbox = Outbox(db, clock)
        due = await outbox.due("ops", T0 + 100, limit=10)

        def seen(alert: Alert) -> tuple:
            return (alert.uid, alert.state, alert.value, alert.resolved_at)

        assert [(n.key, n.event, *seen(n.alert)) for n in due] == [
            ("key-10", "trigger", "uid1", "triggered", 0.1 + 0.2, None),
            ("key-21", "resolve", "uid2", "resolved", 0.05, T0 + 2),
            ("key-30", "trigger", "uid3", "triggered", 0.1 + 0.2, None),
        ]
        assert all(n.alert.spec.series == f"model={n.alert.id}" for n in due)
        for notification in due:
            await outbox.delivered(notification, status=200, duration_ms=1.0)
        [resolve] = await outbox.due("ops", T0 + 100, limit=10)
        assert (resolve.key, *seen(resolve.alert)) == (
            "key-31",
            "uid3",
            "resolved",
            0.07,
            T0 + 3,
        )
        assert await db.fetchone("PRAGMA user_version") == (len(MIGRATIONS),)
    finally:
        await db.close()


async def _write_as_schema_2(db: Database) -> None:
    """Write a fired alert notified on three channels as schema version 2 did:
    delivered on ``log``, dead on ``spare``, retried on ``ops``."""
    spec = make_spec()
    async with db.transaction() as tx:
        await tx.execute(
            "INSERT INTO alerts (id, uid, rule, series, state, spec, value, fired_at,"
            " updated_at) VALUES (1, 'uid1', ?, ?, 'triggered', ?, ?, ?, ?)",
            (spec.rule, spec.series, msgspec.json.encode(spec).decode(), 0.31, T0, T0),
        )
        await tx.execute(
            "INSERT INTO transitions (id, alert_id, from_state, to_state, at, actor,"
            " reason) VALUES (10, 1, NULL, 'triggered', ?, 'engine', 'why')",
            (T0,),
        )
        # channel, state, next attempt, last error, last status, delivered at
        outcomes = [
            ("ops", "pending", T0 + 9, "y", 503, None),
            ("log", "delivered", T0, None, None, T0 + 1),
            ("spare", "dead", T0, "x", 401, None),
        ]
        for channel, state, due, error, status, delivered in outcomes:
            outbox_id = await tx.insert(
                "INSERT INTO outbox (alert_id, transition_id, channel, event, key,"
                " state, attempts, next_attempt_at, last_error, last_status,"
                " created_at, delivered_at, alert_state, alert_value,"
                " alert_resolved_at) VALUES (1, 10, ?, 'trigger', ?, ?, 1, ?, ?, ?,"
                " ?, ?, 'triggered', 0.31, NULL)",
                (channel, f"key-{channel}", state, due, error, status, T0, delivered),
            )
            outcome = "retry" if state == "pending" else state
            await tx.execute(
                "INSERT INTO delivery_attempts (outbox_id, attempt, at, outcome,"
                " status, reason, error, duration_ms) VALUES (?, 1, ?, ?, ?, ?, ?, 1)",
                (outbox_id, T0 + 1, outcome, status, "r", error),
            )


#: The outbox's columns in schema version 2.
_V2_COLUMNS = (
    "id, alert_id, transition_id, channel, event, key, state, attempts,"
    " next_attempt_at, last_error, last_status, created_at, delivered_at,"
    " alert_state, alert_value, alert_resolved_at"
)


async def test_rows_of_schema_2_keep_everything_when_the_outbox_is_rebuilt(
    tmp_path, clock
):
    path = tmp_path / "tocsin.db"
    db = await Database.open(path, clock=clock, migrations=MIGRATIONS[:2])
    await _write_as_schema_2(db)
    everything = f"SELECT {_V2_COLUMNS} FROM outbox ORDER BY id"
    before = await db.fetchall(everything)
    attempts = await db.fetchall("SELECT * FROM delivery_attempts ORDER BY id")
    await db.close()

    db = await Database.open(path, clock=clock, migrations=MIGRATIONS[:3])
    try:
        # Every row and column as it was, the two new columns empty.
        assert await db.fetchall(everything) == before
        skips = await db.fetchall("SELECT skipped_at, skip_reason FROM outbox")
        assert set(skips) == {(None, None)}
        assert await db.fetchall("SELECT * FROM delivery_attempts") == attempts
        indexes = await db.fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'index'"
            " AND tbl_name = 'outbox' AND sql IS NOT NULL ORDER BY name"
        )
        assert indexes == [("outbox_alert",), ("outbox_due",)]
    finally:
        await db.close()

    db = await Database.open(path, clock=clock)
    try:
        [again] = await Outbox(db, clock).due("ops", T0 + 9, limit=10)
        assert (again.key, again.attempts, again.alert.state) == (
            "key-ops",
            1,
            "triggered",
        )
    finally:
        await db.close()
