"""Dead letters: when and why each was given up on, newest first, per channel."""

from __future__ import annotations

import pytest

from tests.state.test_alerts import T0, make_spec
from tocsin.state.alerts import AlertStore
from tocsin.state.db import Database
from tocsin.state.migrations import MIGRATIONS
from tocsin.state.outbox import Outbox


@pytest.fixture
def store(db, clock):
    return AlertStore(db, clock)


@pytest.fixture
def outbox(db, clock):
    return Outbox(db, clock)


async def give_up(outbox, channel: str, *, at: float, status: int = 503) -> None:
    [notification] = await outbox.due(channel, at, limit=1)
    await outbox.dead(
        notification,
        status=status,
        reason="server_error" if status >= 500 else "auth",
        error=f"channel {channel}: HTTP {status}",
        duration_ms=1.0,
        at=at,
    )


async def test_an_attempt_given_up_on_keeps_its_reason_and_time(store, outbox, db):
    await store.fire(make_spec(), ["ops"])

    await give_up(outbox, "ops", at=T0 + 5, status=401)

    [letter] = await outbox.dead_letters()
    assert (letter.reason, letter.dead_at, letter.attempts) == ("auth", T0 + 5, 1)
    assert await db.fetchall("SELECT dead_reason, dead_at FROM outbox") == [
        ("auth", T0 + 5)
    ]


async def test_an_expired_row_is_dead_without_an_attempt(store, outbox, db):
    await store.fire(make_spec(), ["ops"])
    [notification] = await outbox.due("ops", T0, limit=1)

    await outbox.expired(notification, reason="expired", at=T0 + 90)
    # Recorded again from the same read (a write that failed late): no change.
    await outbox.expired(notification, reason="expired", at=T0 + 99)

    [letter] = await outbox.dead_letters()
    assert (letter.reason, letter.dead_at, letter.attempts) == ("expired", T0 + 90, 0)
    assert (letter.last_status, letter.last_error) == (None, None)
    assert await outbox.attempts(letter.id) == []
    assert await outbox.pending_count() == 0


async def test_an_expiry_read_before_an_attempt_changes_nothing(store, outbox):
    await store.fire(make_spec(), ["ops"])
    [stale] = await outbox.due("ops", T0, limit=1)
    await outbox.delivered(stale, status=200, duration_ms=1.0)

    await outbox.expired(stale, reason="expired", at=T0 + 90)

    assert await outbox.dead_letters() == []


async def test_dead_letters_are_newest_first_and_filtered_by_channel(store, outbox):
    await store.fire(make_spec(series="model=a"), ["ops", "chat"])
    await store.fire(make_spec(series="model=b"), ["ops"])
    # The first queued is given up on last.
    await give_up(outbox, "chat", at=T0 + 30)
    [first, second] = await outbox.due("ops", T0, limit=2)
    await outbox.expired(second, reason="expired", at=T0 + 10)
    await outbox.expired(first, reason="expired", at=T0 + 20)

    everything = await outbox.dead_letters()
    only_ops = await outbox.dead_letters(channel="ops")
    newest = await outbox.dead_letters(1)

    assert [(d.channel, d.series, d.dead_at) for d in everything] == [
        ("chat", "model=a", T0 + 30),
        ("ops", "model=a", T0 + 20),
        ("ops", "model=b", T0 + 10),
    ]
    assert [d.series for d in only_ops] == ["model=a", "model=b"]
    assert [d.channel for d in newest] == ["chat"]
    assert await outbox.dead_letters(channel="none") == []


async def test_a_row_given_up_on_before_the_migration_takes_its_last_attempts(
    tmp_path, clock
):
    path = tmp_path / "tocsin.db"
    db = await Database.open(path, clock=clock, migrations=MIGRATIONS[:8])
    await AlertStore(db, clock).fire(make_spec(), ["ops"])
    outbox = Outbox(db, clock)
    [notification] = await outbox.due("ops", T0, limit=1)
    # As the code before the migration recorded it: no dead_at, no reason.
    async with db.transaction() as tx:
        await tx.execute(
            "UPDATE outbox SET state = 'dead', attempts = 1, last_status = 503"
            " WHERE id = ?",
            (notification.id,),
        )
        await tx.execute(
            "INSERT INTO delivery_attempts (outbox_id, attempt, at, outcome,"
            " status, reason, error, duration_ms)"
            " VALUES (?, 1, ?, 'dead', 503, 'server_error', 'x', 1.0)",
            (notification.id, T0 + 7),
        )
    await db.close()

    db = await Database.open(path, clock=clock)
    try:
        [letter] = await Outbox(db, clock).dead_letters()
    finally:
        await db.close()

    assert (letter.reason, letter.dead_at) == ("server_error", T0 + 7)
