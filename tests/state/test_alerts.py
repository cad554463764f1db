"""The alert store: one transaction per transition, and what survives a restart."""

from __future__ import annotations

import pytest

from tocsin.errors import StateError
from tocsin.state.alerts import AlertStore
from tocsin.state.db import Database
from tocsin.state.models import AlertSpec

T0 = 1_750_000_000.0


def make_spec(rule: str = "drift", series: str = "model=a", **fields) -> AlertSpec:
    """An AlertSpec as the alerting pipeline would build it."""
    values = {
        "labels": {"model": "a", "team": "ml"},
        "severity": "high",
        "metric": "model.drift",
        "aggregation": "avg",
        "window": 300.0,
        "op": ">",
        "threshold": 0.2,
        "value": 0.31,
        "samples": 12,
        "started_at": T0 - 30,
        "fired_at": T0,
        "reason": "avg 0.31 > 0.2 for 30s",
        "summary": "Drift on model a",
        "runbook": "https://runbooks.example/drift",
        "recommended_actions": ["retrain"],
        "metadata": {"owner": "ml-platform"},
    }
    values.update(fields)
    return AlertSpec(rule=rule, series=series, **values)


async def counts(db: Database) -> dict[str, int]:
    """Rows in each table."""
    result = {}
    for table in ("alerts", "transitions", "outbox", "delivery_attempts"):
        row = await db.fetchone(f"SELECT COUNT(*) FROM {table}")
        result[table] = row[0]
    return result


@pytest.fixture
def store(db, clock):
    return AlertStore(db, clock)


async def test_fire_writes_alert_transition_and_outbox_together(db, store):
    spec = make_spec()

    alert = await store.fire(spec, ["ops", "log"])

    assert alert is not None
    assert alert.state == "triggered"
    assert alert.spec == spec
    assert len(alert.uid) == 32
    assert await counts(db) == {
        "alerts": 1,
        "transitions": 1,
        "outbox": 2,
        "delivery_attempts": 0,
    }
    [transition] = await store.history(alert.id)
    assert (transition.from_state, transition.to_state) == (None, "triggered")
    assert (transition.actor, transition.reason) == ("engine", spec.reason)
    assert transition.at == spec.fired_at
    rows = await db.fetchall(
        "SELECT channel, event, key, state, attempts, next_attempt_at, transition_id"
        " FROM outbox ORDER BY id"
    )
    assert rows == [
        (
            "ops",
            "trigger",
            f"tocsin-{alert.uid}-{transition.id}-ops",
            "pending",
            0,
            T0,
            transition.id,
        ),
        (
            "log",
            "trigger",
            f"tocsin-{alert.uid}-{transition.id}-log",
            "pending",
            0,
            T0,
            transition.id,
        ),
    ]


async def test_a_second_fire_for_an_open_series_writes_nothing(db, store):
    first = await store.fire(make_spec(), ["ops"])
    before = await counts(db)

    again = await store.fire(make_spec(value=0.9, fired_at=T0 + 60), ["ops"])

    assert again is None
    assert await counts(db) == before
    assert [alert.uid for alert in await store.open_alerts()] == [first.uid]


async def test_other_series_and_rules_fire_independently(store):
    a = await store.fire(make_spec(series="model=a"), ["ops"])
    b = await store.fire(make_spec(series="model=b"), ["ops"])
    c = await store.fire(make_spec(rule="latency", series="model=a"), ["ops"])

    assert None not in (a, b, c)
    assert len({a.uid, b.uid, c.uid}) == 3
    assert [x.id for x in await store.open_alerts()] == [a.id, b.id, c.id]


async def test_a_failed_fire_writes_nothing(db, store):
    # An empty channel name breaks a constraint on the last insert.
    with pytest.raises(StateError):
        await store.fire(make_spec(), ["ops", ""])

    assert await counts(db) == {
        "alerts": 0,
        "transitions": 0,
        "outbox": 0,
        "delivery_attempts": 0,
    }


async def test_a_channel_listed_twice_is_notified_once(db, store):
    await store.fire(make_spec(), ["ops", "ops"])

    assert (await counts(db))["outbox"] == 1


async def test_resolve_writes_state_transition_and_outbox_together(db, store, clock):
    fired = await store.fire(make_spec(), ["ops", "log"])
    clock.advance(120)

    resolved = await store.resolve(
        "drift",
        "model=a",
        at=T0 + 100,
        value=0.1,
        reason="avg 0.1 <= 0.2",
        channels=["ops"],
    )

    assert resolved is not None
    assert (resolved.id, resolved.uid) == (fired.id, fired.uid)
    assert (resolved.state, resolved.value, resolved.resolved_at) == (
        "resolved",
        0.1,
        T0 + 100,
    )
    assert await store.get(fired.id) == resolved
    history = await store.history(fired.id)
    assert [(t.from_state, t.to_state) for t in history] == [
        (None, "triggered"),
        ("triggered", "resolved"),
    ]
    assert history[1].reason == "avg 0.1 <= 0.2"
    rows = await db.fetchall(
        "SELECT channel, event, key, next_attempt_at FROM outbox"
        " WHERE event = 'resolve'"
    )
    assert rows == [
        ("ops", "resolve", f"tocsin-{fired.uid}-{history[1].id}-ops", T0 + 120)
    ]
    assert await store.open_alerts() == []


async def test_resolve_without_an_open_alert_writes_nothing(db, store):
    result = await store.resolve(
        "drift", "model=a", at=T0, value=0.1, reason="ok", channels=["ops"]
    )

    assert result is None
    assert (await counts(db))["transitions"] == 0


async def test_a_resolved_series_fires_as_a_new_alert(store):
    first = await store.fire(make_spec(), ["ops"])
    await store.resolve(
        "drift", "model=a", at=T0 + 10, value=0.1, reason="ok", channels=[]
    )

    second = await store.fire(make_spec(fired_at=T0 + 20), ["ops"])

    assert second is not None
    assert second.uid != first.uid
    assert [a.id for a in await store.list_alerts()] == [second.id, first.id]
    assert [a.id for a in await store.list_alerts(states=["resolved"])] == [first.id]
    assert [a.id for a in await store.list_alerts(limit=1)] == [second.id]


async def test_everything_survives_a_restart(tmp_path, clock):
    path = tmp_path / "tocsin.db"
    db = await Database.open(path, clock=clock)
    store = AlertStore(db, clock)
    fired = await store.fire(make_spec(), ["ops"])
    await db.close()

    db = await Database.open(path, clock=clock)
    store = AlertStore(db, clock)
    try:
        [alert] = await store.open_alerts()
        assert alert == fired
        # Still the same alert: a fire after the restart is refused.
        assert await store.fire(make_spec(fired_at=T0 + 5), ["ops"]) is None
        assert len(await store.history(fired.id)) == 1
        assert (await counts(db))["outbox"] == 1
    finally:
        await db.close()


async def test_close_resolved_closes_old_resolved_alerts_only(db, store, clock):
    old = await store.fire(make_spec(series="model=a"), ["ops"])
    recent = await store.fire(make_spec(series="model=b"), ["ops"])
    still_open = await store.fire(make_spec(series="model=c"), ["ops"])
    for series, at in (("model=a", T0 + 10), ("model=b", T0 + 500)):
        await store.resolve(
            "drift", series, at=at, value=0.0, reason="ok", channels=["ops"]
        )
    outbox_before = (await counts(db))["outbox"]
    clock.advance(1000)

    closed = await store.close_resolved(T0 + 100)

    assert closed == 1
    assert (await store.get(old.id)).state == "closed"
    assert (await store.get(old.id)).closed_at == T0 + 1000
    assert (await store.get(recent.id)).state == "resolved"
    assert (await store.get(still_open.id)).state == "triggered"
    last = (await store.history(old.id))[-1]
    assert (last.from_state, last.to_state, last.actor) == (
        "resolved",
        "closed",
        "engine",
    )
    assert (await counts(db))["outbox"] == outbox_before
    assert await store.close_resolved(T0 + 100) == 0


async def test_fires_since_lists_series_and_fire_times_of_one_rule(store):
    for index, at in enumerate((T0 - 7200, T0 - 60, T0)):
        await store.fire(make_spec(series=f"model={index}", fired_at=at), [])
    await store.fire(make_spec(rule="other", fired_at=T0), [])

    assert await store.fires_since("drift", T0 - 3600) == [
        ("model=1", T0 - 60),
        ("model=2", T0),
    ]
    assert [at for _, at in await store.fires_since("drift", 0)] == [
        T0 - 7200,
        T0 - 60,
        T0,
    ]
    assert await store.fires_since("nothing", 0) == []


async def test_get_of_an_unknown_alert_is_none(store):
    assert await store.get(12345) is None
    assert await store.history(12345) == []


async def test_a_non_finite_value_is_stored_as_missing(store):
    alert = await store.fire(make_spec(value=float("nan")), ["ops"])

    stored = await store.get(alert.id)
    assert stored.spec.value is None


async def raise_to_critical(store: AlertStore, **fields) -> object:
    """Move the open alert of ``drift``/``model=a`` to critical at T0 + 60."""
    values = {
        "severity": "critical",
        "at": T0 + 60,
        "value": 0.7,
        "threshold": 0.5,
        "reason": "severity raised from warning to critical: avg 0.7 > 0.5",
        "channels": ["ops", "log"],
    }
    values.update(fields)
    return await store.change_severity("drift", "model=a", **values)


async def test_a_severity_change_updates_the_alert_and_notifies_again(db, store, clock):
    fired = await store.fire(make_spec(severity="warning"), ["ops", "log"])
    clock.advance(61)

    changed = await raise_to_critical(store)

    assert (changed.id, changed.uid, changed.state) == (
        fired.id,
        fired.uid,
        "triggered",
    )
    assert (changed.spec.severity, changed.spec.threshold) == ("critical", 0.5)
    assert changed.value == 0.7
    # What fired stays as it was: the fire's value, time and reason.
    assert (changed.spec.value, changed.spec.fired_at) == (0.31, T0)
    assert changed.spec.reason == fired.spec.reason
    assert await store.get(fired.id) == changed
    [_, moved] = await store.history(fired.id)
    assert (moved.from_state, moved.to_state, moved.at) == (
        "triggered",
        "triggered",
        T0 + 60,
    )
    assert moved.reason == "severity raised from warning to critical: avg 0.7 > 0.5"
    rows = await db.fetchall(
        "SELECT channel, event, key, next_attempt_at, alert_state, alert_value,"
        " alert_severity, alert_threshold FROM outbox WHERE transition_id = ?"
        " ORDER BY id",
        (moved.id,),
    )
    assert rows == [
        (
            channel,
            "trigger",
            f"tocsin-{fired.uid}-{moved.id}-{channel}",
            T0 + 61,
            "triggered",
            0.7,
            "critical",
            0.5,
        )
        for channel in ("ops", "log")
    ]


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        (None, [0.1, 0.9]),
        ([0.2, 0.8], [0.2, 0.8]),
        ([], []),
    ],
)
async def test_a_severity_change_replaces_the_range_only_when_given(store, given, kept):
    await store.fire(make_spec(op="outside", threshold=None, range=[0.1, 0.9]), [])

    changed = await raise_to_critical(store, threshold=None, range=given)

    assert changed.spec.range == kept
    assert (await store.open_alerts())[0].spec.range == kept


async def test_a_severity_change_without_an_open_alert_writes_nothing(db, store):
    await store.fire(make_spec(), ["ops"])
    await store.resolve(
        "drift", "model=a", at=T0 + 10, value=0.1, reason="ok", channels=["ops"]
    )
    before = await counts(db)

    assert await raise_to_critical(store) is None
    assert await counts(db) == before


async def test_a_failed_severity_change_writes_nothing(db, store):
    fired = await store.fire(make_spec(severity="warning"), ["ops"])
    before = await counts(db)

    # An empty channel name breaks a constraint on the last insert.
    with pytest.raises(StateError):
        await raise_to_critical(store, channels=["ops", ""])

    assert await counts(db) == before
    assert await store.get(fired.id) == fired


async def test_a_channel_notified_twice_is_listed_once(store):
    fired = await store.fire(make_spec(severity="warning"), ["log", "ops"])
    await raise_to_critical(store, channels=["ops", "log", "spare"])

    assert await store.notified_channels(fired.id) == ["log", "ops", "spare"]


async def test_a_note_writes_a_transition_and_notifies_nobody(db, store):
    fired = await store.fire(make_spec(), ["ops"])
    before = await counts(db)

    noted = await store.note(
        "drift", "model=a", at=T0 + 30, reason="flapping: 6 changes in 10m"
    )

    assert noted == fired
    assert await store.get(fired.id) == fired
    [_, flapping] = await store.history(fired.id)
    assert (flapping.from_state, flapping.to_state, flapping.at) == (
        "triggered",
        "triggered",
        T0 + 30,
    )
    assert flapping.reason == "flapping: 6 changes in 10m"
    assert await counts(db) == {**before, "transitions": before["transitions"] + 1}


async def test_a_note_without_an_open_alert_writes_nothing(db, store):
    assert await store.note("drift", "model=a", at=T0, reason="settled") is None
    assert (await counts(db))["transitions"] == 0


async def test_open_alert_finds_the_open_alert_of_one_series(store):
    fired = await store.fire(make_spec(), ["ops"])

    assert await store.open_alert("drift", "model=a") == fired
    assert await store.open_alert("drift", "model=b") is None
    assert await store.open_alert("latency", "model=a") is None
