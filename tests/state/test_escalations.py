"""The escalation store: scheduling, due steps, reaching and cancelling them."""

from __future__ import annotations

import pytest

from tests.state.test_alerts import T0, counts, make_spec
from tocsin.state.alerts import AlertStore
from tocsin.state.escalations import EscalationStore
from tocsin.state.models import Alert

#: Three steps: at once to chat, a minute later to the pager, then nobody.
STEPS = [(T0, ["chat"]), (T0 + 60, ["pager", "pager"]), (T0 + 360, [])]


@pytest.fixture
def store(db, clock):
    return AlertStore(db, clock)


@pytest.fixture
def escalations(db, clock):
    return EscalationStore(db, clock)


@pytest.fixture
async def alert(store, escalations) -> Alert:
    fired = await store.fire(make_spec())
    assert await escalations.schedule(fired.id, "oncall", STEPS)
    return fired


async def test_schedule_stores_every_step_pending_once(escalations, alert):
    again = await escalations.schedule(alert.id, "other", [(T0 + 1, ["x"])])

    assert again is False
    steps = await escalations.steps(alert.id)
    assert [(s.step, s.policy, s.due_at, s.channels, s.state) for s in steps] == [
        (0, "oncall", T0, ["chat"], "pending"),
        (1, "oncall", T0 + 60, ["pager", "pager"], "pending"),
        (2, "oncall", T0 + 360, [], "pending"),
    ]


@pytest.mark.parametrize(
    ("now", "expected"),
    [(T0 - 1, []), (T0, [0]), (T0 + 60, [0, 1]), (T0 + 9999, [0, 1, 2])],
)
async def test_due_returns_pending_steps_oldest_first(
    escalations, alert, now, expected
):
    assert [s.step for s in await escalations.due(now)] == expected
    assert [s.step for s in await escalations.due(now, limit=1)] == expected[:1]


async def test_next_due_skips_reached_steps_and_ended_alerts(store, escalations, alert):
    assert await escalations.next_due() == T0
    [first] = await escalations.due(T0)
    await escalations.reach(first.id, at=T0)
    assert await escalations.next_due() == T0 + 60

    await store.resolve("drift", "model=a", at=T0 + 5, value=0.1, reason="ok")

    assert await escalations.next_due() is None
    assert await escalations.due(T0 + 9999) == []


async def test_the_first_step_notifies_without_escalating(
    db, store, escalations, alert
):
    [first] = await escalations.due(T0)

    reached = await escalations.reach(first.id, at=T0 + 1)

    assert (reached.step.state, reached.step.reached_at) == ("reached", T0 + 1)
    assert (reached.escalated, reached.channels) == (False, ["chat"])
    assert reached.alert.state == "triggered"
    last = (await store.history(alert.id))[-1]
    assert (last.from_state, last.to_state, last.actor) == (
        "triggered",
        "triggered",
        "escalation",
    )
    assert last.reason == "escalation policy oncall step 1 reached"
    rows = await db.fetchall(
        "SELECT channel, event, transition_id, alert_state FROM outbox"
    )
    assert rows == [("chat", "trigger", last.id, "triggered")]


async def test_a_later_step_escalates_an_unacknowledged_alert(
    db, store, escalations, alert
):
    steps = await escalations.due(T0 + 60)

    outcomes = [await escalations.reach(step.id, at=T0 + 61) for step in steps]

    assert [o.escalated for o in outcomes] == [False, True]
    assert outcomes[1].channels == ["pager"]
    assert (await store.get(alert.id)).state == "escalated"
    last = (await store.history(alert.id))[-1]
    assert (last.from_state, last.to_state, last.actor, last.at) == (
        "triggered",
        "escalated",
        "escalation",
        T0 + 61,
    )
    assert last.reason == (
        "escalation policy oncall step 2 reached: not acknowledged within 1m"
    )
    rows = await db.fetchall(
        "SELECT channel, key, alert_state FROM outbox WHERE transition_id = ?",
        (last.id,),
    )
    assert rows == [("pager", f"tocsin-{alert.uid}-{last.id}-pager", "escalated")]


async def test_a_step_after_escalation_records_itself_and_keeps_the_state(
    store, escalations, alert
):
    for step in await escalations.due(T0 + 360):
        await escalations.reach(step.id, at=T0 + 360)

    history = await store.history(alert.id)

    assert [(t.from_state, t.to_state) for t in history] == [
        (None, "triggered"),
        ("triggered", "triggered"),
        ("triggered", "escalated"),
        ("escalated", "escalated"),
    ]
    assert history[-1].reason.endswith("step 3 reached: not acknowledged within 6m")


@pytest.mark.parametrize("state", ["acknowledged", "investigating"])
async def test_a_step_read_before_an_acknowledgement_is_cancelled(
    db, store, escalations, alert, state
):
    [_, second] = await escalations.due(T0 + 60)
    # Someone takes the alert between the read of due steps and the reach;
    # written directly, as a move would also have cancelled the step.
    async with db.transaction() as tx:
        await tx.execute("UPDATE alerts SET state = ? WHERE id = ?", (state, alert.id))
    before = await counts(db)

    outcome = await escalations.reach(second.id, at=T0 + 60)

    assert (outcome.step.state, outcome.step.cancelled_at) == ("cancelled", T0 + 60)
    assert (outcome.escalated, outcome.channels) == (False, [])
    assert await counts(db) == before
    assert [s.state for s in await escalations.steps(alert.id)] == [
        "pending",
        "cancelled",
        "pending",
    ]


async def test_reaching_a_step_twice_or_an_unknown_one_does_nothing(
    db, escalations, alert
):
    [first] = await escalations.due(T0)
    await escalations.reach(first.id, at=T0)
    before = await counts(db)

    assert await escalations.reach(first.id, at=T0 + 1) is None
    assert await escalations.reach(999, at=T0 + 1) is None
    assert await counts(db) == before
