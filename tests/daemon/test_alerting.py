"""From decisions to stored alerts, and what a restart restores into the engine."""

from __future__ import annotations

import asyncio

import pytest

from tocsin import config
from tocsin.clock import ManualClock
from tocsin.daemon.alerting import AlertPipeline, alert_spec, restore
from tocsin.errors import StateError
from tocsin.rules.decisions import Decision
from tocsin.rules.engine import RuleEngine
from tocsin.state.alerts import AlertStore
from tocsin.state.db import Database

T0 = 1_750_000_000.0

CONFIG = config.parse(
    """
[[channels]]
name = "hook"
type = "webhook"
url = "http://127.0.0.1:9/hook"

[[channels]]
name = "quiet"
type = "log"
send_resolved = false

[[rules]]
name = "drift"
metric = "model.drift.psi"
group_by = ["model"]
aggregation = "last"
window = "1m"
threshold = 0.2
cooldown = "1h"
channels = ["hook", "quiet"]
labels = { team = "ml" }
runbook = "https://runbooks.example/drift"
""",
    "test.toml",
)
RULES = {rule.name: rule for rule in CONFIG.rules}
CHANNELS = {channel.name: channel for channel in CONFIG.channels}


def decision(action: str, at: float, value: float | None = 0.5) -> Decision:
    return Decision(
        action=action,
        rule="drift",
        series="model=a",
        labels={"model": "a"},
        value=value,
        threshold=0.2,
        samples=1,
        at=at,
        since=at,
        reason=f"{action} at {at}",
    )


@pytest.fixture
def clock():
    return ManualClock(T0)


@pytest.fixture
async def store(tmp_path, clock):
    database = await Database.open(tmp_path / "tocsin.db", clock=clock)
    yield AlertStore(database, clock)
    await database.close()


async def run_pipeline(pipeline: AlertPipeline, decisions: list[Decision]) -> None:
    task = asyncio.create_task(pipeline.run())
    pipeline.submit(decisions)
    await pipeline.stop()
    await asyncio.wait_for(task, 10)


def test_the_alert_spec_carries_the_rule_and_the_decision():
    spec = alert_spec(RULES["drift"], decision("fire", T0))

    assert spec.labels == {"team": "ml", "model": "a"}
    assert (spec.metric, spec.aggregation, spec.window) == (
        "model.drift.psi",
        "last",
        60,
    )
    assert (spec.value, spec.threshold, spec.fired_at) == (0.5, 0.2, T0)
    assert spec.runbook == "https://runbooks.example/drift"


def test_the_alert_spec_renders_the_rules_texts_for_its_series():
    rule = RULES["drift"]
    templated = config.RuleConfig(
        **{
            field: getattr(rule, field)
            for field in rule.__struct_fields__
            if field not in ("summary", "description")
        },
        summary="Drift on {{ labels.model }} ({{ labels.team }})",
        description="{{ aggregation }} over {{ window }} = {{ value }} {{ op }} "
        "{{ threshold }} [{{ severity }}, {{ rule }}, {{ series }}]",
    )

    spec = alert_spec(templated, decision("fire", T0))

    assert spec.summary == "Drift on a (ml)"
    assert spec.description == "last over 1m = 0.5 > 0.2 [medium, drift, model=a]"


def test_a_text_that_fails_to_render_is_sent_as_written(caplog):
    rule = RULES["drift"]
    broken = config.RuleConfig(
        **{
            field: getattr(rule, field)
            for field in rule.__struct_fields__
            if field != "summary"
        },
        summary="{{ value + 'x' }}",
    )

    spec = alert_spec(broken, decision("fire", T0))

    assert spec.summary == "{{ value + 'x' }}"
    assert [r.message for r in caplog.records] == [
        "cannot render the rule's summary; sending it as written"
    ]


async def test_fire_then_resolve_queues_notifications_per_channel(store, clock):
    woken = []
    pipeline = AlertPipeline(RULES, CHANNELS, store, lambda: woken.append(1), clock)

    await run_pipeline(
        pipeline,
        [decision("fire", T0), decision("fire", T0 + 1), decision("resolve", T0 + 2)],
    )

    [alert] = await store.list_alerts()
    assert alert.state == "resolved"
    rows = await store._db.fetchall("SELECT event, channel FROM outbox ORDER BY id")
    # The second fire hit the open alert; "quiet" does not take resolves.
    assert rows == [("trigger", "hook"), ("trigger", "quiet"), ("resolve", "hook")]
    assert (pipeline.fired, pipeline.resolved, len(woken)) == (1, 1, 2)


async def test_a_refused_write_is_retried_not_dropped(store, clock):
    class Flaky:
        def __init__(self):
            self.failures = 2

        async def fire(self, spec, channels):
            if self.failures:
                self.failures -= 1
                raise StateError("database is locked")
            return await store.fire(spec, channels)

    flaky = Flaky()
    pipeline = AlertPipeline(RULES, CHANNELS, flaky, lambda: None, clock)

    await run_pipeline(pipeline, [decision("fire", T0)])

    assert flaky.failures == 0
    assert len(await store.list_alerts()) == 1


async def test_a_restored_alert_is_not_fired_again_and_resolves(store, clock):
    await store.fire(alert_spec(RULES["drift"], decision("fire", T0)), ["hook"])
    engine = RuleEngine(CONFIG.rules)

    assert await restore(store, engine, RULES, T0 + 10) == 1

    [series] = engine.targets("model.drift.psi", {"model": "a"})
    series.add(0.9, T0 + 10)
    assert engine.evaluate_dirty(T0 + 10) == []
    series.add(0.1, T0 + 11)
    [resolved] = engine.evaluate_dirty(T0 + 11)
    assert (resolved.action, resolved.series) == ("resolve", "model=a")


async def test_an_alert_of_a_removed_rule_is_resolved_at_start_up(store, clock):
    alert = await store.fire(
        alert_spec(RULES["drift"], decision("fire", T0)), ["hook", "quiet"]
    )
    assert alert is not None
    engine = RuleEngine([])

    assert await restore(store, engine, {}, T0 + 10, channels=CHANNELS) == 0

    [stored] = await store.list_alerts()
    assert (stored.state, stored.resolved_at) == ("resolved", T0 + 10)
    [_, resolved] = await store.history(alert.id)
    assert resolved.reason == "rule 'drift' is no longer configured"
    rows = await store._db.fetchall("SELECT event, channel FROM outbox ORDER BY id")
    # "quiet" takes no resolves; a channel no longer configured gets none.
    assert rows == [("trigger", "hook"), ("trigger", "quiet"), ("resolve", "hook")]


async def test_a_removed_channel_gets_no_resolve_of_a_removed_rule(store, clock):
    await store.fire(alert_spec(RULES["drift"], decision("fire", T0)), ["hook"])

    await restore(store, RuleEngine([]), {}, T0 + 10, channels={})

    [stored] = await store.list_alerts()
    assert stored.state == "resolved"
    rows = await store._db.fetchall("SELECT event FROM outbox ORDER BY id")
    assert rows == [("trigger",)]


async def test_a_cooldown_survives_a_restart(store, clock):
    alert = await store.fire(alert_spec(RULES["drift"], decision("fire", T0)), [])
    await store.resolve(
        "drift", "model=a", at=T0 + 5, value=0.1, reason="x", channels=[]
    )
    assert alert is not None
    engine = RuleEngine(CONFIG.rules)

    await restore(store, engine, RULES, T0 + 60)

    [series] = engine.targets("model.drift.psi", {"model": "a"})
    series.add(0.9, T0 + 60)
    assert engine.evaluate_dirty(T0 + 60) == []
    series.add(0.9, T0 + 3601)
    [fired] = engine.evaluate_dirty(T0 + 3601)
    assert fired.action == "fire"


async def test_the_backlog_counts_decisions_until_they_are_recorded(store, clock):
    pipeline = AlertPipeline(RULES, CHANNELS, store, lambda: None, clock)

    pipeline.submit([decision("fire", T0), decision("resolve", T0 + 1)])
    assert pipeline.backlog == 2
    await run_pipeline(pipeline, [])

    assert pipeline.backlog == 0
