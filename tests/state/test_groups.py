"""The groups' state: grouped outbox rows, the notification log, one
transaction per flush."""

from __future__ import annotations

import hashlib

import pytest

from tests.state.test_alerts import T0, make_spec
from tocsin.state.alerts import AlertStore
from tocsin.state.db import Database
from tocsin.state.groups import Flush, GroupStore, LogEntry, Message, StoredGroup
from tocsin.state.migrations import MIGRATIONS
from tocsin.state.outbox import Outbox

KEY = 'root:{team="ml"}'


@pytest.fixture
def store(db, clock):
    return AlertStore(db, clock)


@pytest.fixture
def groups(db, clock):
    return GroupStore(db, clock)


@pytest.fixture
def outbox(db, clock):
    return Outbox(db, clock)


def row(key: str = KEY, anchor: float | None = T0) -> StoredGroup:
    return StoredGroup(key, "root", {"team": "ml"}, T0, anchor, 0, T0)


async def two_alerts(store):
    a = await store.fire(make_spec(series="model=a"), ())
    b = await store.fire(make_spec(series="model=b"), ())
    return a, b


async def test_a_flush_writes_rows_log_and_timers_together(store, groups, outbox):
    a, b = await two_alerts(store)
    entry = LogEntry(
        firing=frozenset({(a.id, "high"), (b.id, "high")}),
        announced=frozenset({a.id, b.id}),
        withheld={7: "silenced"},
        sent_at=T0,
    )
    message = Message("ops", "trigger", "first notification", [a, b], "team='ml'")

    number = await groups.flush(Flush(row(), [message], {"ops": entry}))

    [due] = await outbox.due("ops", T0, 10)
    digest = hashlib.sha1(KEY.encode()).hexdigest()[:16]
    assert due.key == f"tocsin-g-{digest}-{number}-ops"
    assert (due.group_key, due.group_labels) == (KEY, {"team": "ml"})
    assert due.reason == "first notification"
    assert due.alerts == [a, b]
    assert due.alert == a
    assert due.transition.alert_id == a.id
    assert await groups.groups() == [row()._replace(seq=number)]
    assert await groups.log() == {KEY: {"ops": entry}}
    assert await groups.dedup_since(T0) == [("ops", "team='ml'", "trigger", T0)]


async def test_a_failed_flush_writes_nothing(db, store, groups):
    a, _ = await two_alerts(store)
    good = Message("ops", "trigger", "first notification", [a])
    empty = Message("pager", "trigger", "first notification", [])
    entry = LogEntry(firing=frozenset({(a.id, "high")}), sent_at=T0)

    with pytest.raises(ValueError, match="at least one alert"):
        await groups.flush(Flush(row(), [good, empty], {"ops": entry}))

    for table in ("outbox", "notify_groups", "notification_log", "dedup_log"):
        assert await db.fetchone(f"SELECT COUNT(*) FROM {table}") == (0,)


async def test_flush_numbers_never_repeat_after_a_group_is_deleted(store, groups):
    a, _ = await two_alerts(store)
    message = Message("ops", "trigger", "first notification", [a])

    first = await groups.flush(Flush(row(), [message], {}))
    await groups.flush(Flush(row(), [], {}, delete=True))
    second = await groups.flush(Flush(row(), [message], {}))

    assert second > first
    assert [g.key for g in await groups.groups()] == [KEY]


async def test_grouped_rows_of_one_group_and_channel_go_out_in_order(
    store, groups, outbox
):
    a, b = await two_alerts(store)
    other = row('root:{team="web"}')
    await groups.flush(Flush(row(), [Message("ops", "trigger", "first", [a])], {}))
    await groups.flush(Flush(row(), [Message("ops", "trigger", "new", [a, b])], {}))
    await groups.flush(Flush(other, [Message("ops", "trigger", "first", [b])], {}))

    due = await outbox.due("ops", T0, 10)
    assert [(n.group_key, n.reason) for n in due] == [
        (KEY, "first"),
        (other.key, "first"),
    ]
    await outbox.delivered(due[0], status=200, duration_ms=1.0)
    assert [n.reason for n in await outbox.due("ops", T0, 10)] == ["new", "first"]


@pytest.mark.parametrize(
    ("trigger_outcome", "announced"), [("delivered", True), ("dead", False)]
)
async def test_a_grouped_resolve_is_announced_by_a_delivered_trigger_of_its_group(
    store, groups, outbox, trigger_outcome, announced
):
    a, _ = await two_alerts(store)
    await groups.flush(Flush(row(), [Message("ops", "trigger", "first", [a])], {}))
    [trigger] = await outbox.due("ops", T0, 10)
    if trigger_outcome == "delivered":
        await outbox.delivered(trigger, status=200, duration_ms=1.0)
    else:
        await outbox.dead(
            trigger, status=400, reason="client_error", error="x", duration_ms=1.0
        )
    resolved = await store.resolve(
        "drift", "model=a", at=T0 + 5, value=0.1, reason="ok", channels=()
    )
    resolve = Message("ops", "resolve", "all alerts resolved", [resolved])
    await groups.flush(Flush(row(), [resolve], {}))

    [due] = await outbox.due("ops", T0, 10)

    assert due.event == "resolve"
    assert due.alert.state == "resolved"
    assert due.announced is announced


async def test_rows_queued_before_the_groups_read_as_single_alert_ones(tmp_path, clock):
    path = tmp_path / "old.db"
    old = await Database.open(path, clock=clock, migrations=MIGRATIONS[:4])
    alert = await AlertStore(old, clock).fire(make_spec(), ["ops"])
    await old.close()

    db = await Database.open(path, clock=clock)
    try:
        [due] = await Outbox(db, clock).due("ops", T0, 10)
    finally:
        await db.close()

    assert due.alert == alert
    assert (due.group_key, due.group_labels, due.reason, due.alerts) == ("", {}, "", [])
