"""Escalation: plans, acknowledgement before a step, unacknowledged alerts,
restarts, and the escalator's task."""

from __future__ import annotations

import asyncio

import pytest

from tests.state.test_alerts import make_spec
from tocsin.channels.escalation import Escalator, plan
from tocsin.clock import ManualClock
from tocsin.config import Duration
from tocsin.errors import StateError
from tocsin.schema import EscalationConfig, EscalationStepConfig
from tocsin.state.alerts import AlertStore
from tocsin.state.db import Database
from tocsin.state.escalations import EscalationStore

T0 = 1_750_000_000.0

#: Chat at once, the pager after a minute, then five more minutes to nobody.
ONCALL = EscalationConfig(
    name="oncall",
    steps=[
        EscalationStepConfig(wait=Duration(0.0), channels=["slack"]),
        EscalationStepConfig(wait=Duration(60.0), channels=["pagerduty"]),
        EscalationStepConfig(wait=Duration(300.0), channels=[]),
    ],
)


class Woken:
    """Records the channels the escalator asked delivery to look at."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.event = asyncio.Event()

    def __call__(self, channels) -> None:
        self.calls.append(list(channels))
        self.event.set()


@pytest.fixture
def clock():
    return ManualClock(T0)


@pytest.fixture
async def db(tmp_path, clock):
    database = await Database.open(tmp_path / "tocsin.db", clock=clock)
    yield database
    await database.close()


@pytest.fixture
def woken():
    return Woken()


def escalator_for(db, clock, woken) -> Escalator:
    return Escalator(EscalationStore(db, clock), clock, woken)


@pytest.mark.parametrize(
    ("waits", "expected"),
    [
        ([0.0], [T0]),
        ([0.0, 60.0, 300.0], [T0, T0 + 60, T0 + 360]),
        ([30.0, 30.0], [T0 + 30, T0 + 60]),
    ],
)
def test_plan_counts_each_wait_from_the_previous_step(waits, expected):
    policy = EscalationConfig(
        name="p",
        steps=[
            EscalationStepConfig(wait=Duration(w), channels=[f"c{i}"])
            for i, w in enumerate(waits)
        ],
    )

    steps = plan(policy, T0)

    assert steps == [(due, [f"c{i}"]) for i, due in enumerate(expected)]


async def outbox_channels(db) -> list[str]:
    rows = await db.fetchall("SELECT channel FROM outbox ORDER BY id")
    return [row[0] for row in rows]


async def test_an_alert_acknowledged_before_the_pager_step_never_pages(
    tmp_path, db, clock, woken
):
    store = AlertStore(db, clock)
    escalator = escalator_for(db, clock, woken)
    alert = await store.fire(make_spec(fired_at=T0))
    assert await escalator.ensure(alert, ONCALL)

    assert await escalator.fire_due(T0) == 1
    clock.set(T0 + 30)
    await store.move(alert.id, "acknowledged", actor="api:alice", comment="mine")
    clock.set(T0 + 60)
    assert await escalator.fire_due(T0 + 60) == 0
    clock.set(T0 + 400)
    assert await escalator.fire_due(T0 + 400) == 0

    assert await outbox_channels(db) == ["slack"]
    assert woken.calls == [["slack"]]
    history = await store.history(alert.id)
    assert "escalated" not in {t.to_state for t in history}
    assert (await store.get(alert.id)).state == "acknowledged"
    await db.close()

    # After a restart the steps are still cancelled, and nothing comes due.
    db = await Database.open(tmp_path / "tocsin.db", clock=clock)
    try:
        escalations = EscalationStore(db, clock)
        steps = await escalations.steps(alert.id)
        assert [(s.step, s.state) for s in steps] == [
            (0, "reached"),
            (1, "cancelled"),
            (2, "cancelled"),
        ]
        assert [s.cancelled_at for s in steps[1:]] == [T0 + 30, T0 + 30]
        assert await escalations.next_due() is None
        restarted = escalator_for(db, clock, woken)
        assert await restarted.fire_due(T0 + 9999) == 0
        assert await outbox_channels(db) == ["slack"]
    finally:
        await db.close()


async def test_an_unacknowledged_alert_escalates_once_and_pages(db, clock, woken):
    store = AlertStore(db, clock)
    escalator = escalator_for(db, clock, woken)
    alert = await store.fire(make_spec(fired_at=T0))
    await escalator.ensure(alert, ONCALL)

    reached = [await escalator.fire_due(at) for at in (T0, T0 + 60, T0 + 400)]

    assert reached == [1, 1, 1]
    assert (escalator.escalated, escalator.reached) == (1, 3)
    assert await outbox_channels(db) == ["slack", "pagerduty"]
    assert woken.calls == [["slack"], ["pagerduty"]]
    history = await store.history(alert.id)
    escalations = [t for t in history if t.to_state == "escalated"]
    assert [(t.from_state, t.actor, t.at) for t in escalations] == [
        ("triggered", "escalation", T0 + 60),
        ("escalated", "escalation", T0 + 400),
    ]
    assert [t.from_state for t in history].count("triggered") == 2
    assert (await store.get(alert.id)).state == "escalated"
    steps = await EscalationStore(db, clock).steps(alert.id)
    assert [(s.state, s.reached_at) for s in steps] == [
        ("reached", T0),
        ("reached", T0 + 60),
        ("reached", T0 + 400),
    ]


async def test_steps_that_came_due_while_stopped_are_reached_in_one_round(
    db, clock, woken
):
    store = AlertStore(db, clock)
    escalator = escalator_for(db, clock, woken)
    alert = await store.fire(make_spec(fired_at=T0))
    await escalator.ensure(alert, ONCALL)

    assert await escalator.fire_due(T0 + 3600) == 3
    assert woken.calls == [["slack", "pagerduty"]]
    assert (await store.get(alert.id)).state == "escalated"


@pytest.mark.parametrize("policy", [None, ONCALL])
async def test_ensure_schedules_once(db, clock, woken, policy):
    store = AlertStore(db, clock)
    escalator = escalator_for(db, clock, woken)
    alert = await store.fire(make_spec(fired_at=T0))

    first = await escalator.ensure(alert, policy)
    second = await escalator.ensure(alert, ONCALL if policy is None else policy)

    assert (first, second) == ((False, True) if policy is None else (True, False))
    assert len(await EscalationStore(db, clock).steps(alert.id)) == 3


async def test_the_task_reaches_due_steps_when_woken_and_stops(db, clock, woken):
    store = AlertStore(db, clock)
    escalator = escalator_for(db, clock, woken)
    task = asyncio.create_task(escalator.run())
    alert = await store.fire(make_spec(fired_at=T0))

    # Step 0 is due at once; ensure wakes the task, which reaches it.
    await escalator.ensure(alert, ONCALL)
    await asyncio.wait_for(woken.event.wait(), timeout=5)

    assert woken.calls == [["slack"]]
    assert await escalator.next_due() == T0 + 60
    escalator.stop()
    escalator.stop()
    await asyncio.wait_for(task, timeout=5)
    assert task.result() is None


class RefusingStore:
    """An escalation store whose database refuses every read."""

    def __init__(self) -> None:
        self.reads = 0
        self.refused = asyncio.Event()

    async def due(self, now, limit=100):
        self.reads += 1
        self.refused.set()
        raise StateError("state database x: query failed: disk I/O error")

    async def next_due(self):
        raise AssertionError("not reached after a refused read")


async def test_the_task_survives_a_refusing_database(clock, woken, caplog):
    store = RefusingStore()
    escalator = Escalator(store, clock, woken)
    task = asyncio.create_task(escalator.run())

    await asyncio.wait_for(store.refused.wait(), timeout=5)
    escalator.stop()
    await asyncio.wait_for(task, timeout=5)

    assert task.result() is None
    assert store.reads == 1
    [record] = [r for r in caplog.records if r.name == "tocsin.channels.escalation"]
    assert record.levelname == "WARNING"
    assert record.getMessage() == "escalation paused: the state database refused"
    assert "disk I/O error" in record.error
    assert woken.calls == []
