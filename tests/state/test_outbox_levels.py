"""What a notification says of its alert's level: the one of its transition,
kept in its outbox row across later moves, retries and the schema upgrade."""

from __future__ import annotations

import msgspec

from tests.state.test_alerts import T0, make_spec
from tocsin.channels.payload import alert_payload
from tocsin.state.alerts import AlertStore
from tocsin.state.db import Database
from tocsin.state.migrations import MIGRATIONS
from tocsin.state.outbox import Outbox


def level(payload: dict) -> tuple:
    alert = payload["alert"]
    return (alert["severity"], alert["threshold"], alert["range"], alert["value"])


async def to_critical(store: AlertStore, **fields):
    """Move the open alert of drift/model=a to critical, as the pipeline would."""
    move = {
        "severity": "critical",
        "at": T0 + 1,
        "value": 0.7,
        "threshold": 0.5,
        "reason": "worse",
        "channels": ["ops"],
        **fields,
    }
    return await store.change_severity("drift", "model=a", **move)


async def test_a_retried_warning_is_sent_as_warning_after_the_alert_turned_critical(
    db, clock
):
    store, outbox = AlertStore(db, clock), Outbox(db, clock)
    await store.fire(make_spec(severity="warning", threshold=0.2), ["ops"])
    [warning] = await outbox.due("ops", T0, limit=10)
    await outbox.retry(
        warning,
        next_attempt_at=T0 + 5,
        status=503,
        reason="server_error",
        error="x",
        duration_ms=1.0,
    )
    await to_critical(store, reason="severity raised from warning to critical")
    await store.resolve(
        "drift", "model=a", at=T0 + 2, value=0.1, reason="ok", channels=["ops"]
    )

    # One at a time, in order: the retried warning first.
    [again] = await outbox.due("ops", T0 + 5, limit=10)
    assert again.key == warning.key
    assert level(alert_payload(again)) == ("warning", 0.2, None, 0.31)
    await outbox.delivered(again, status=200, duration_ms=1.0)
    [critical] = await outbox.due("ops", T0 + 5, limit=10)
    assert (critical.event, critical.transition.reason) == (
        "trigger",
        "severity raised from warning to critical",
    )
    assert critical.alert.uid == warning.alert.uid
    assert critical.key != warning.key
    assert level(alert_payload(critical)) == ("critical", 0.5, None, 0.7)
    await outbox.delivered(critical, status=200, duration_ms=1.0)
    [resolve] = await outbox.due("ops", T0 + 5, limit=10)
    assert level(alert_payload(resolve)) == ("critical", 0.5, None, 0.1)


async def test_a_notification_keeps_the_range_of_its_level(db, clock):
    store, outbox = AlertStore(db, clock), Outbox(db, clock)
    spec = make_spec(severity="warning", op="outside", threshold=None, range=[1, 2])
    await store.fire(spec, ["ops"])
    await to_critical(store, value=7.0, threshold=None, range=[0.5, 3.0])

    [warning] = await outbox.due("ops", T0, limit=10)
    assert level(alert_payload(warning)) == ("warning", None, [1.0, 2.0], 0.31)
    await outbox.delivered(warning, status=200, duration_ms=1.0)
    [critical] = await outbox.due("ops", T0, limit=10)
    assert level(alert_payload(critical)) == ("critical", None, [0.5, 3.0], 7.0)


async def test_a_notification_keeps_the_texts_rendered_for_its_level(db, clock):
    store, outbox = AlertStore(db, clock), Outbox(db, clock)
    spec = make_spec(severity="warning", summary="warning: drift on a")
    await store.fire(spec, ["ops"])
    await to_critical(store, texts=("critical: drift on a", "now critical"))

    [warning] = await outbox.due("ops", T0, limit=10)
    assert (warning.alert.spec.summary, warning.alert.spec.description) == (
        "warning: drift on a",
        spec.description,
    )
    await outbox.delivered(warning, status=200, duration_ms=1.0)
    [critical] = await outbox.due("ops", T0, limit=10)
    summary = alert_payload(critical)["alert"]["summary"]
    assert (summary, critical.alert.spec.description) == (
        "critical: drift on a",
        "now critical",
    )


async def test_rows_of_schema_3_keep_the_level_they_were_queued_with(tmp_path, clock):
    path = tmp_path / "tocsin.db"
    db = await Database.open(path, clock=clock, migrations=MIGRATIONS[:3])
    spec = make_spec(severity="warning", threshold=0.2, range=[])
    ranged = make_spec(series="model=b", op="inside", threshold=None, range=[1, 2])
    async with db.transaction() as tx:
        for alert_id, written in ((1, spec), (2, ranged)):
            await tx.execute(
                "INSERT INTO alerts (id, uid, rule, series, state, spec, value,"
                " fired_at, updated_at) VALUES (?, ?, ?, ?, 'triggered', ?, 0.31,"
                " ?, ?)",
                (
                    alert_id,
                    f"uid{alert_id}",
                    written.rule,
                    written.series,
                    msgspec.json.encode(written).decode(),
                    T0,
                    T0,
                ),
            )
            await tx.execute(
                "INSERT INTO transitions (id, alert_id, from_state, to_state, at,"
                " actor, reason) VALUES (?, ?, NULL, 'triggered', ?, 'engine', 'x')",
                (alert_id, alert_id, T0),
            )
            await tx.execute(
                "INSERT INTO outbox (alert_id, transition_id, channel, event, key,"
                " next_attempt_at, created_at, alert_state, alert_value)"
                " VALUES (?, ?, 'ops', 'trigger', ?, ?, ?, 'triggered', 0.31)",
                (alert_id, alert_id, f"key-{alert_id}", T0, T0),
            )
    await db.close()

    db = await Database.open(path, clock=clock)
    try:
        assert await db.fetchone("PRAGMA user_version") == (len(MIGRATIONS),)
        assert await db.fetchall(
            "SELECT alert_severity, alert_threshold, alert_range FROM outbox"
            " ORDER BY id"
        ) == [("warning", 0.2, "[]"), ("high", None, "[1,2]")]
        # A move after the upgrade does not change what the old row says.
        await to_critical(AlertStore(db, clock), channels=[])
        due = await Outbox(db, clock).due("ops", T0, limit=10)
        assert [level(alert_payload(n)) for n in due] == [
            ("warning", 0.2, None, 0.31),
            ("high", None, [1.0, 2.0], 0.31),
        ]
    finally:
        await db.close()
