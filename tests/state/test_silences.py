"""The silence store: adding, states over time, expiring, and what changes next."""

from __future__ import annotations

import pytest

from tests.state.test_alerts import T0
from tocsin.errors import SilenceExpiredError, UnknownSilenceError
from tocsin.state.db import Database
from tocsin.state.silences import SilenceStore

MATCHERS = ['team="ml"', 'model=~"fraud-.*"']


@pytest.fixture
def silences(db, clock):
    return SilenceStore(db, clock)


async def test_add_stores_the_silence_as_given(silences):
    added = await silences.add(
        MATCHERS,
        starts_at=T0,
        ends_at=T0 + 3600,
        created_by="alice",
        comment="retraining",
    )

    assert len(added.id) == 32
    assert await silences.get(added.id) == added
    assert (added.matchers, added.created_by, added.comment) == (
        MATCHERS,
        "alice",
        "retraining",
    )
    assert (added.created_at, added.updated_at) == (T0, T0)


async def test_silences_survive_a_restart(tmp_path, clock):
    path = tmp_path / "tocsin.db"
    db = await Database.open(path, clock=clock)
    added = await SilenceStore(db, clock).add(
        MATCHERS, starts_at=T0, ends_at=T0 + 60, created_by="alice"
    )
    await db.close()

    db = await Database.open(path, clock=clock)
    try:
        assert await SilenceStore(db, clock).get(added.id) == added
    finally:
        await db.close()


@pytest.mark.parametrize(
    ("matchers", "starts_at", "ends_at", "message"),
    [
        (MATCHERS, T0, T0, "a silence must end after it starts"),
        (MATCHERS, T0, T0 - 1, "a silence must end after it starts"),
        ([], T0, T0 + 1, "a silence needs at least one matcher"),
    ],
)
async def test_add_refuses_an_empty_period_or_no_matchers(
    db, silences, matchers, starts_at, ends_at, message
):
    with pytest.raises(ValueError, match=message):
        await silences.add(
            matchers, starts_at=starts_at, ends_at=ends_at, created_by="alice"
        )
    assert await db.fetchone("SELECT COUNT(*) FROM silences") == (0,)


@pytest.mark.parametrize(
    ("now", "state"),
    [
        (T0 + 99, "pending"),
        (T0 + 100, "active"),
        (T0 + 199, "active"),
        (T0 + 200, "expired"),
    ],
)
async def test_the_state_follows_the_clock(silences, clock, now, state):
    added = await silences.add(
        MATCHERS, starts_at=T0 + 100, ends_at=T0 + 200, created_by="alice"
    )
    clock.set(now)

    assert added.state(now) == state
    assert [s.id for s in await silences.list(state=state)] == [added.id]
    others = {"pending", "active", "expired"} - {state}
    for other in others:
        assert await silences.list(state=other) == []
    assert [s.id for s in await silences.active(now)] == (
        [added.id] if state == "active" else []
    )
    assert [s.id for s in await silences.all_unexpired(now)] == (
        [] if state == "expired" else [added.id]
    )


async def test_list_is_newest_first_and_refuses_an_unknown_state(silences, clock):
    first = await silences.add(MATCHERS, starts_at=T0, ends_at=T0 + 9, created_by="a")
    clock.advance(1)
    second = await silences.add(MATCHERS, starts_at=T0, ends_at=T0 + 9, created_by="b")

    assert [s.id for s in await silences.list()] == [second.id, first.id]
    with pytest.raises(ValueError, match="unknown silence state 'muted'"):
        await silences.list(state="muted")


async def test_expire_ends_an_active_silence_now(silences, clock):
    added = await silences.add(
        MATCHERS, starts_at=T0, ends_at=T0 + 3600, created_by="alice"
    )
    clock.advance(60)

    expired = await silences.expire(added.id)

    assert (expired.starts_at, expired.ends_at, expired.updated_at) == (
        T0,
        T0 + 60,
        T0 + 60,
    )
    assert expired.state(clock.time()) == "expired"
    assert await silences.get(added.id) == expired
    assert await silences.active(clock.time()) == []


async def test_expire_ends_a_pending_silence_before_it_starts(silences, clock):
    added = await silences.add(
        MATCHERS, starts_at=T0 + 600, ends_at=T0 + 3600, created_by="alice"
    )

    expired = await silences.expire(added.id)

    assert (expired.starts_at, expired.ends_at) == (T0, T0)
    assert [s.id for s in await silences.list(state="expired")] == [added.id]
    assert await silences.next_change(T0) is None


async def test_expire_refuses_an_expired_or_unknown_silence(silences, clock):
    added = await silences.add(MATCHERS, starts_at=T0, ends_at=T0 + 10, created_by="a")
    clock.advance(10)

    with pytest.raises(SilenceExpiredError, match=f"^silence {added.id} has already"):
        await silences.expire(added.id)
    with pytest.raises(UnknownSilenceError, match="^no silence nope$"):
        await silences.expire("nope")
    assert await silences.get("nope") is None
    assert (await silences.get(added.id)).ends_at == T0 + 10


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (T0, T0 + 100),  # the pending one starts
        (T0 + 100, T0 + 150),  # the short active one ends
        (T0 + 150, T0 + 300),  # the long one ends
        (T0 + 300, None),  # nothing left
    ],
)
async def test_next_change_is_the_next_start_or_end(silences, now, expected):
    await silences.add(MATCHERS, starts_at=T0 - 50, ends_at=T0 + 300, created_by="a")
    await silences.add(MATCHERS, starts_at=T0 + 100, ends_at=T0 + 150, created_by="b")

    assert await silences.next_change(now) == expected


async def test_purge_deletes_only_silences_that_ended_long_enough(silences):
    old = await silences.add(MATCHERS, starts_at=T0, ends_at=T0 + 10, created_by="a")
    recent = await silences.add(
        MATCHERS, starts_at=T0, ends_at=T0 + 100, created_by="a"
    )

    assert await silences.purge(T0 + 50) == 1
    assert await silences.get(old.id) is None
    assert await silences.get(recent.id) == recent
