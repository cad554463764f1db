"""The alert lifecycle: manual moves, the engine's resolve, reopening, lookups."""

from __future__ import annotations

import itertools

import pytest

from tests.state.test_alerts import T0, counts, make_spec
from tocsin.errors import LifecycleError, UnknownAlertError
from tocsin.state.alerts import AlertStore
from tocsin.state.escalations import EscalationStore
from tocsin.state.lifecycle import MANUAL_MOVES, STATES, path_to
from tocsin.state.models import OPEN_STATES, Alert

#: Manual moves that lead from ``triggered`` to each state.
PATHS = {
    "triggered": [],
    "acknowledged": ["acknowledged"],
    "investigating": ["acknowledged", "investigating"],
    "escalated": ["escalated"],
    "resolved": ["escalated", "resolved"],
    "closed": ["escalated", "resolved", "closed"],
}
ALLOWED = {
    ("triggered", "acknowledged"),
    ("triggered", "escalated"),
    ("acknowledged", "investigating"),
    ("acknowledged", "escalated"),
    ("escalated", "acknowledged"),
    ("escalated", "investigating"),
    ("escalated", "resolved"),
    ("investigating", "resolved"),
    ("resolved", "closed"),
}
PAIRS = list(itertools.product(STATES, STATES))


@pytest.fixture
def store(db, clock):
    return AlertStore(db, clock)


async def alert_in(store: AlertStore, state: str, **spec) -> Alert:
    """Fire an alert and move it to ``state`` by hand."""
    alert = await store.fire(make_spec(**spec))
    for step in PATHS[state]:
        alert = await store.move(alert.id, step, actor="api:setup", at=T0 + 1)
    assert alert.state == state
    return alert


def test_the_table_is_the_designed_one():
    pairs = {(a, b) for a, targets in MANUAL_MOVES.items() for b in targets}

    assert pairs == ALLOWED


@pytest.mark.parametrize(("from_state", "to_state"), sorted(ALLOWED))
async def test_an_allowed_move_is_made_and_recorded(
    db, store, clock, from_state, to_state
):
    alert = await alert_in(store, from_state)
    clock.advance(60)

    moved = await store.move(
        alert.uid, to_state, actor="api:alice", comment="on it", at=T0 + 50
    )

    assert moved.state == to_state
    assert (await store.get(alert.id)).state == to_state
    last = (await store.history(alert.id))[-1]
    assert (last.from_state, last.to_state) == (from_state, to_state)
    assert (last.actor, last.comment, last.at) == ("api:alice", "on it", T0 + 50)
    assert last.reason == f"{to_state} by api:alice"
    stored = await store.get(alert.id)
    if to_state == "resolved":
        assert stored.resolved_at == T0 + 50
    if to_state == "closed":
        assert stored.closed_at == T0 + 50
    row = await db.fetchone("SELECT updated_at FROM alerts WHERE id = ?", (alert.id,))
    assert row == (clock.time(),)


@pytest.mark.parametrize(
    ("from_state", "to_state"), [pair for pair in PAIRS if pair not in ALLOWED]
)
async def test_every_other_move_is_refused_and_changes_nothing(
    db, store, from_state, to_state
):
    alert = await alert_in(store, from_state)
    before = await counts(db)
    row_before = await db.fetchall("SELECT * FROM alerts")

    with pytest.raises(LifecycleError) as refused:
        await store.move(alert.id, to_state, actor="api:alice", comment="x")

    error = refused.value
    assert (error.alert_id, error.state, error.to_state) == (
        alert.id,
        from_state,
        to_state,
    )
    assert error.allowed == MANUAL_MOVES[from_state]
    assert await counts(db) == before
    assert await db.fetchall("SELECT * FROM alerts") == row_before


@pytest.mark.parametrize(
    ("state", "to_state", "message"),
    [
        (
            "triggered",
            "investigating",
            "alert 1 is triggered: it can move to acknowledged or escalated,"
            " not investigating",
        ),
        (
            "escalated",
            "closed",
            "alert 1 is escalated: it can move to acknowledged, investigating"
            " or resolved, not closed",
        ),
        (
            "investigating",
            "closed",
            "alert 1 is investigating: it can move to resolved, not closed",
        ),
        ("acknowledged", "acknowledged", "alert 1 is already acknowledged"),
        ("closed", "triggered", "alert 1 is closed: it cannot move to triggered"),
    ],
)
async def test_a_refusal_says_what_is_possible(store, state, to_state, message):
    await alert_in(store, state)

    with pytest.raises(LifecycleError, match=f"^{message}$"):
        await store.move(1, to_state, actor="api:alice")


@pytest.mark.parametrize("ref", [999, "999", "0" * 32])
async def test_an_unknown_alert_cannot_move(store, ref):
    await alert_in(store, "triggered")

    with pytest.raises(UnknownAlertError, match=f"^no alert {ref}$"):
        await store.move(ref, "acknowledged", actor="api:alice")


async def test_an_unknown_state_is_a_value_error(db, store):
    alert = await alert_in(store, "triggered")
    before = await counts(db)

    with pytest.raises(ValueError, match="unknown alert state 'snoozed'"):
        await store.move(alert.id, "snoozed", actor="api:alice")
    assert await counts(db) == before


async def test_an_alert_is_found_by_id_digits_or_uid(store):
    alert = await alert_in(store, "triggered")

    for ref in (alert.id, str(alert.id), alert.uid):
        assert (await store.get_by_ref(ref)).uid == alert.uid
    assert await store.get_by_ref(alert.id + 1) is None
    assert await store.get_by_ref("f" * 32) is None


async def steps_of(db, alert_id: int) -> list[tuple[int, str]]:
    rows = await db.fetchall(
        "SELECT step, state FROM escalation_steps WHERE alert_id = ? ORDER BY step",
        (alert_id,),
    )
    return [tuple(row) for row in rows]


@pytest.mark.parametrize(("from_state", "to_state"), sorted(ALLOWED))
async def test_a_move_cancels_pending_escalation_only_when_someone_owns_the_alert(
    db, clock, store, from_state, to_state
):
    alert = await alert_in(store, from_state)
    escalations = EscalationStore(db, clock)
    await escalations.schedule(alert.id, "oncall", [(T0 + 60, ["pd"])])

    await store.move(alert.id, to_state, actor="api:alice", at=T0 + 30)

    ends = to_state in ("acknowledged", "investigating", "resolved", "closed")
    expected = "cancelled" if ends else "pending"
    assert await steps_of(db, alert.id) == [(0, expected)]
    if ends:
        [step] = await escalations.steps(alert.id)
        assert step.cancelled_at == T0 + 30


@pytest.mark.parametrize("state", OPEN_STATES)
async def test_the_engine_resolves_from_every_open_state(db, clock, store, state):
    alert = await alert_in(store, state)
    await EscalationStore(db, clock).schedule(alert.id, "p", [(T0 + 600, ["pd"])])

    resolved = await store.resolve(
        "drift", "model=a", at=T0 + 90, value=0.1, reason="back below"
    )

    assert (resolved.id, resolved.state, resolved.resolved_at) == (
        alert.id,
        "resolved",
        T0 + 90,
    )
    last = (await store.history(alert.id))[-1]
    assert (last.from_state, last.to_state, last.actor) == (state, "resolved", "engine")
    assert await steps_of(db, alert.id) == [(0, "cancelled")]


@pytest.mark.parametrize("state", OPEN_STATES)
async def test_severity_changes_and_notes_keep_every_open_state(store, state):
    alert = await alert_in(store, state)

    changed = await store.change_severity(
        "drift",
        "model=a",
        severity="critical",
        at=T0 + 5,
        value=0.9,
        threshold=0.5,
        reason="worse",
    )
    noted = await store.note("drift", "model=a", at=T0 + 6, reason="flapping")

    assert (changed.id, changed.state, changed.spec.severity) == (
        alert.id,
        state,
        "critical",
    )
    assert noted.state == state
    *_, severity, note = await store.history(alert.id)
    assert (severity.from_state, severity.to_state) == (state, state)
    assert (note.from_state, note.to_state, note.reason) == (state, state, "flapping")


# -- reopening ---------------------------------------------------------------


async def fire_resolve_fire(store, *, resolved_at: float, fired_again: float, window):
    first = await store.fire(make_spec(), ["ops"])
    await store.resolve(
        "drift", "model=a", at=resolved_at, value=0.1, reason="ok", channels=["ops"]
    )
    again = make_spec(value=0.8, fired_at=fired_again, reason="avg 0.8 > 0.2")
    second = await store.fire(again, ["ops"], reopen_window=window)
    return first, second


@pytest.mark.parametrize(
    ("resolved_at", "fired_again", "window"),
    [
        (T0 + 100, T0 + 101, 300.0),
        (T0 + 100, T0 + 400, 300.0),  # exactly at the window's end
    ],
)
async def test_a_breach_within_the_window_reopens_the_same_alert(
    db, store, resolved_at, fired_again, window
):
    first, second = await fire_resolve_fire(
        store, resolved_at=resolved_at, fired_again=fired_again, window=window
    )

    assert (second.id, second.uid, second.state) == (first.id, first.uid, "triggered")
    assert (second.value, second.resolved_at) == (0.8, None)
    assert second.spec.fired_at == T0
    assert second.spec.reason == "avg 0.8 > 0.2"
    assert await store.get(first.id) == second
    last = (await store.history(first.id))[-1]
    assert (last.from_state, last.to_state, last.actor, last.at) == (
        "resolved",
        "triggered",
        "engine",
        fired_again,
    )
    assert last.reason == "breached again within the reopen window: avg 0.8 > 0.2"
    row = await db.fetchone("SELECT COUNT(*), MIN(fired_at) FROM alerts")
    assert row == (1, T0)
    keys = await db.fetchall(
        "SELECT event, transition_id FROM outbox WHERE alert_id = ? ORDER BY id",
        (first.id,),
    )
    assert [key[0] for key in keys] == ["trigger", "resolve", "trigger"]
    assert keys[-1][1] == last.id


@pytest.mark.parametrize(
    ("fired_again", "window"),
    [
        (T0 + 401, 300.0),  # a second too late
        (T0 + 101, 0.0),  # reopening off
    ],
)
async def test_a_breach_outside_the_window_fires_a_new_alert(
    store, fired_again, window
):
    first, second = await fire_resolve_fire(
        store, resolved_at=T0 + 100, fired_again=fired_again, window=window
    )

    assert second.id != first.id and second.uid != first.uid
    assert (await store.get(first.id)).state == "resolved"
    assert [t.to_state for t in await store.history(second.id)] == ["triggered"]


async def test_a_closed_alert_never_reopens(store):
    first = await alert_in(store, "closed")

    again = await store.fire(make_spec(fired_at=T0 + 2), reopen_window=3600.0)

    assert again.id != first.id
    assert (await store.get(first.id)).state == "closed"


async def test_an_open_series_neither_reopens_nor_fires(db, store):
    await alert_in(store, "acknowledged")
    before = await counts(db)

    assert await store.fire(make_spec(fired_at=T0 + 5), reopen_window=600.0) is None
    assert await counts(db) == before


# -- listing -----------------------------------------------------------------


@pytest.fixture
async def listed(store):
    """Four alerts: ids 1..4, fired a minute apart, in different states."""
    made = [
        await alert_in(store, "triggered", series="model=a", fired_at=T0),
        await alert_in(
            store,
            "acknowledged",
            series="model=b",
            labels={"model": "b", "team": "ml"},
            fired_at=T0 + 60,
        ),
        await alert_in(
            store,
            "resolved",
            rule="latency",
            series="model=a",
            labels={"model": "a", "team": "web"},
            fired_at=T0 + 120,
        ),
        await alert_in(
            store,
            "closed",
            series="model=c",
            labels={"model": "c", "team": "ml", "odd key.$": "x"},
            fired_at=T0 + 180,
        ),
    ]
    return [alert.id for alert in made]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, [4, 3, 2, 1]),
        ({"states": ["triggered", "acknowledged"]}, [2, 1]),
        ({"states": []}, []),
        ({"rule": "latency"}, [3]),
        ({"labels": {"team": "ml"}}, [4, 2, 1]),
        ({"labels": {"team": "ml", "model": "b"}}, [2]),
        ({"labels": {"odd key.$": "x"}}, [4]),
        ({"labels": {"team": "nobody"}}, []),
        ({"since": T0 + 60}, [4, 3, 2]),
        ({"since": T0 + 60, "states": ["closed", "triggered"]}, [4]),
        ({"limit": 2}, [4, 3]),
    ],
)
async def test_list_alerts_filters(store, listed, filters, expected):
    alerts = await store.list_alerts(**filters)

    assert [alert.id for alert in alerts] == expected


@pytest.mark.parametrize(
    ("start", "target", "path"),
    [
        ("triggered", "resolved", ["acknowledged", "investigating", "resolved"]),
        ("acknowledged", "resolved", ["investigating", "resolved"]),
        ("escalated", "resolved", ["resolved"]),
        ("triggered", "escalated", ["escalated"]),
        ("investigating", "investigating", []),
        ("resolved", "acknowledged", None),
        ("closed", "resolved", None),
    ],
)
def test_a_path_of_manual_moves_never_passes_through_escalated(start, target, path):
    assert path_to(start, target) == path


async def test_a_service_reopens_a_resolved_alert_as_the_same_alert(store):
    alert = await alert_in(store, "resolved")

    reopened = await store.reopen(alert.uid, actor="pagerduty", comment="not fixed")

    assert (reopened.id, reopened.uid, reopened.state) == (
        alert.id,
        alert.uid,
        "triggered",
    )
    assert reopened.resolved_at is None
    [last] = (await store.history(alert.id))[-1:]
    assert (last.from_state, last.to_state, last.actor, last.comment) == (
        "resolved",
        "triggered",
        "pagerduty",
        "not fixed",
    )


@pytest.mark.parametrize("state", ["triggered", "acknowledged", "closed"])
async def test_only_a_resolved_alert_reopens(store, state):
    alert = await alert_in(store, state)

    with pytest.raises(LifecycleError):
        await store.reopen(alert.uid, actor="pagerduty")

    assert (await store.get(alert.id)).state == state


async def test_an_alert_does_not_reopen_beside_another_open_one_of_its_series(store):
    old = await alert_in(store, "resolved")
    await store.fire(make_spec())

    with pytest.raises(LifecycleError):
        await store.reopen(old.uid, actor="pagerduty")

    assert (await store.get(old.id)).state == "resolved"
