"""The audit log: each kind of entry recorded, each filter, paging, the
indexes that serve them, and the migration that added it."""

from __future__ import annotations

import pytest

from tests.state.test_alerts import T0, make_spec
from tocsin.state.alerts import AlertStore
from tocsin.state.audit import AuditLog, AuditQuery
from tocsin.state.catalog import Catalog
from tocsin.state.db import Database
from tocsin.state.migrations import MIGRATIONS
from tocsin.state.outbox import Outbox
from tocsin.state.silences import SilenceStore

SECRET = "https://hooks.example/T000/very-secret"


@pytest.fixture
def store(db, clock):
    return AlertStore(db, clock)


@pytest.fixture
def outbox(db, clock):
    return Outbox(db, clock)


@pytest.fixture
def audit(db):
    return AuditLog(db)


async def attempt(outbox, channel, *, at, status, payload=None):
    """Make the next attempt of the channel's due notification: 2xx delivers."""
    [notification] = await outbox.due(channel, at, limit=1)
    if 200 <= status < 300:
        fields = {"status": status, "duration_ms": 4.0, "at": at, "payload": payload}
        await outbox.record_all([(notification, "delivered", fields)])
        return
    await outbox.retry(
        notification,
        next_attempt_at=at,
        status=status,
        reason="server_error",
        error=f"channel {channel}: HTTP {status}",
        duration_ms=9.0,
        at=at,
    )


async def breach(store, outbox, clock):
    """An alert fired to two channels: one answers 503 then 200, one 200."""
    alert = await store.fire(make_spec(), ["pager", "chat"])
    await attempt(outbox, "pager", at=T0 + 1, status=503)
    await attempt(outbox, "pager", at=T0 + 2, status=200, payload='{"x": 1}')
    await attempt(outbox, "chat", at=T0 + 3, status=200)

    return alert


def summary(page):
    return [(e.kind, e.action, e.channel, e.status) for e in page.entries]


async def test_deliveries_and_transitions_newest_first(store, outbox, audit, clock):
    alert = await breach(store, outbox, clock)

    page = await audit.query(AuditQuery())

    assert summary(page) == [
        ("delivery", "delivered", "chat", 200),
        ("delivery", "delivered", "pager", 200),
        ("delivery", "retry", "pager", 503),
        ("transition", "triggered", None, None),
    ]
    newest, _, retried, fired = page.entries
    assert (newest.alert, newest.rule, newest.event, newest.attempt) == (
        alert.uid,
        "drift",
        "trigger",
        1,
    )
    assert (retried.attempt, retried.reason, retried.duration_ms) == (
        1,
        "server_error",
        9.0,
    )
    assert page.entries[1].payload == '{"x": 1}'
    assert (fired.from_state, fired.actor, fired.at) == (None, "engine", T0)
    assert page.next_cursor is None


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (
            AuditQuery(channel="pager"),
            [
                ("delivery", "delivered", "pager", 200),
                ("delivery", "retry", "pager", 503),
            ],
        ),
        (AuditQuery(outcome="retry"), [("delivery", "retry", "pager", 503)]),
        (AuditQuery(kind="transition"), [("transition", "triggered", None, None)]),
        (
            AuditQuery(since=T0 + 1, until=T0 + 2),
            [
                ("delivery", "delivered", "pager", 200),
                ("delivery", "retry", "pager", 503),
            ],
        ),
        (AuditQuery(kind="silence"), []),
        (AuditQuery(limit=1), [("delivery", "delivered", "chat", 200)]),
    ],
)
async def test_filters(store, outbox, audit, clock, query, expected):
    await breach(store, outbox, clock)

    assert summary(await audit.query(query)) == expected


async def test_an_alert_keeps_its_own_entries_only(store, outbox, audit, db, clock):
    alert = await breach(store, outbox, clock)
    await store.fire(make_spec(series="model=b"), ["pager"])
    silences = SilenceStore(db, clock)
    await silences.add(['team="ml"'], starts_at=T0, ends_at=T0 + 60, created_by="x")

    page = await audit.query(AuditQuery(alert_id=alert.id))

    assert {e.alert for e in page.entries} == {alert.uid}
    assert len(page.entries) == 4


async def test_pages_read_every_entry_once_across_ties(store, audit, db, clock):
    # Entries at the same time in every table: the cursor must still tell
    # them apart.
    silences = SilenceStore(db, clock)
    for series in "abc":
        await store.fire(make_spec(series=f"model={series}", fired_at=T0))
        await silences.add(
            [f'model="{series}"'], starts_at=T0, ends_at=T0 + 60, created_by="x"
        )
    everything = await audit.query(AuditQuery())

    seen, cursor = [], None
    while True:
        page = await audit.query(AuditQuery(limit=2, cursor=cursor))
        seen.extend(page.entries)
        cursor = page.next_cursor
        if cursor is None:
            break

    assert len(everything.entries) == 6
    assert seen == everything.entries


async def test_silences_are_recorded_with_their_actor(db, clock, audit):
    silences = SilenceStore(db, clock)
    added = await silences.add(
        ['team="ml"'], starts_at=T0, ends_at=T0 + 3600, created_by="api:alice"
    )
    clock.advance(60)
    await silences.expire(added.id, actor="api:bob")

    page = await audit.query(AuditQuery(kind="silence"))

    expired, created = page.entries
    assert (created.action, created.actor, created.subject, created.at) == (
        "created",
        "api:alice",
        added.id,
        T0,
    )
    assert created.detail["matchers"] == ['team="ml"']
    assert (expired.action, expired.actor, expired.at) == (
        "expired",
        "api:bob",
        T0 + 60,
    )


async def test_the_catalogs_changes_are_recorded_without_secrets(db, clock, audit):
    catalog = Catalog(db, clock)
    body = {"type": "webhook", "name": "hook", "url": SECRET}
    shown = {**body, "url": "********"}
    await catalog.add_rule("drift", {"name": "drift", "threshold": 1}, "api:alice")
    await catalog.add_integration("hook", "webhook", body, "api:alice", shown=shown)
    await catalog.put_setting("grouping", {"group_wait": "30s"}, actor="api:bob")
    await catalog.delete_integration("hook", actor="api:bob")
    await catalog.delete_rule("drift", actor="api:carol")
    # Nothing removed, nothing recorded.
    await catalog.delete_rule("drift", actor="api:carol")

    page = await audit.query(AuditQuery(kind="config"))

    assert [(e.action, e.actor, e.subject) for e in page.entries] == [
        ("rule_removed", "api:carol", "drift"),
        ("integration_removed", "api:bob", "hook"),
        ("settings_changed", "api:bob", "grouping"),
        ("integration_added", "api:alice", "hook"),
        ("rule_added", "api:alice", "drift"),
    ]
    assert page.entries[3].detail == {"type": "webhook", "integration": shown}
    rows = await db.fetchall("SELECT detail FROM audit_events")
    assert not any("very-secret" in detail for (detail,) in rows)


async def test_an_event_recorded_on_its_own(audit, clock):
    await audit.record(
        at=T0,
        kind="config",
        action="reload_refused",
        actor="sighup",
        subject="/etc/tocsin/tocsin.toml",
        detail={"error": "rules[0].window: bad"},
    )

    [entry] = (await audit.query(AuditQuery())).entries
    assert (entry.kind, entry.action, entry.actor, entry.detail) == (
        "config",
        "reload_refused",
        "sighup",
        {"error": "rules[0].window: bad"},
    )


@pytest.mark.parametrize(
    ("sql", "index"),
    [
        (
            "SELECT id FROM delivery_attempts WHERE at >= 0 ORDER BY at DESC, id DESC",
            "delivery_attempts_at",
        ),
        (
            "SELECT id FROM transitions WHERE at >= 0 ORDER BY at DESC, id DESC",
            "transitions_at",
        ),
        (
            "SELECT id FROM audit_events WHERE kind = 'config'"
            " ORDER BY at DESC, id DESC",
            "audit_events_kind",
        ),
        ("SELECT id FROM outbox WHERE transition_id = 1", "outbox_transition"),
    ],
)
async def test_the_filters_are_served_by_indexes(db, sql, index):
    plan = await db.fetchall("EXPLAIN QUERY PLAN " + sql)

    assert any(index in row[-1] for row in plan), plan


async def test_the_migration_keeps_the_attempts_already_made(tmp_path, clock):
    path = tmp_path / "tocsin.db"
    old = await Database.open(path, clock=clock, migrations=MIGRATIONS[:9])
    await AlertStore(old, clock).fire(make_spec(), ["pager"])
    outbox = Outbox(old, clock)
    [notification] = await outbox.due("pager", T0, limit=1)
    # As the code before the migration wrote an attempt: without a payload.
    async with old.transaction() as tx:
        await tx.execute(
            "INSERT INTO delivery_attempts (outbox_id, attempt, at, outcome,"
            " status, reason, error, duration_ms)"
            " VALUES (?, 1, ?, 'retry', 503, 'server_error', 'x', 1.0)",
            (notification.id, T0 + 5),
        )
    await old.close()

    db = await Database.open(path, clock=clock)
    try:
        page = await AuditLog(db).query(AuditQuery(kind="delivery"))
        assert await db.fetchone("PRAGMA user_version") == (10,)
    finally:
        await db.close()

    [entry] = page.entries
    assert (entry.at, entry.status, entry.payload) == (T0 + 5, 503, None)
