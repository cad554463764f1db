"""From decisions to stored alerts, and what a restart restores into the engine."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from tocsin import config
from tocsin.clock import ManualClock
from tocsin.daemon.alerting import AlertPipeline, alert_spec, restore
from tocsin.errors import StateError
from tocsin.rules.decisions import SERIES_LIMIT_RULE, Decision
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


def decision(action: str, at: float, value: float | None = 0.5, **fields) -> Decision:
    values = {
        "rule": "drift",
        "series": "model=a",
        "labels": {"model": "a"},
        "value": value,
        "threshold": 0.2,
        "samples": 1,
        "at": at,
        "since": at,
        "reason": f"{action} at {at}",
    }
    values.update(fields)
    return Decision(action=action, **values)


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

        async def fire(self, spec, channels, **options):
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


# Levels and composite rules, built directly: what the pipeline makes of them
# does not depend on how the config file spells them.
LATENCY = config.RuleConfig(
    name="latency",
    metric="model.latency",
    group_by=["model"],
    aggregation="p95",
    window=config.Duration(300.0),
    warning=config.LevelConfig(threshold=200.0),
    critical=config.LevelConfig(threshold=500.0),
    channels=["hook", "quiet"],
    summary="{{ severity }} latency on {{ labels.model }}",
    description="{{ aggregation }}({{ metric }}) over {{ window }} {{ op }} "
    "{{ threshold }}",
)
BAND = config.RuleConfig(
    name="band",
    metric="model.score",
    op="outside",
    warning=config.LevelConfig(range=[0.2, 0.8]),
    critical=config.LevelConfig(range=[0.1, 0.9]),
    channels=["hook"],
)
BROKEN = config.RuleConfig(
    name="broken",
    group_by=["model"],
    join="any",
    conditions=[
        config.ConditionConfig(
            metric="model.errors",
            aggregation="sum",
            window=config.Duration(60.0),
            threshold=5.0,
        ),
        config.ConditionConfig(
            metric="model.latency",
            aggregation="p99",
            window=config.Duration(600.0),
            threshold=900.0,
        ),
    ],
    channels=["hook"],
    summary="{{ metric }} {{ aggregation }} {{ window }} [{{ op }}] {{ threshold }}",
)
ALL_RULES = {**RULES, "latency": LATENCY, "band": BAND, "broken": BROKEN}


@pytest.mark.parametrize(
    ("rule", "severity", "threshold", "expected"),
    [
        # Older code names no severity: the rule's own.
        (RULES["drift"], "", 0.2, ("medium", 0.2, [])),
        (LATENCY, "warning", 200.0, ("warning", 200.0, [])),
        (LATENCY, "critical", 500.0, ("critical", 500.0, [])),
        (BAND, "warning", None, ("warning", None, [0.2, 0.8])),
        (BAND, "critical", None, ("critical", None, [0.1, 0.9])),
        # The engine's threshold is the one a composite alert shows: none.
        (BROKEN, "", 5.0, ("medium", None, [])),
    ],
)
def test_the_alert_spec_takes_the_level_of_the_decision(
    rule, severity, threshold, expected
):
    fired = decision("fire", T0, rule=rule.name, severity=severity, threshold=threshold)

    spec = alert_spec(rule, fired)

    assert (spec.severity, spec.threshold, spec.range) == expected


def test_the_alert_texts_see_the_level_of_the_decision():
    fired = decision("fire", T0, rule="latency", severity="critical", threshold=500.0)

    spec = alert_spec(LATENCY, fired)

    assert spec.summary == "critical latency on a"
    assert spec.description == "p95(model.latency) over 5m > 500.0"


def test_a_composite_alert_names_every_metric_and_the_longest_window():
    spec = alert_spec(BROKEN, decision("fire", T0, rule="broken", threshold=None))

    assert (spec.metric, spec.aggregation, spec.window, spec.op) == (
        "model.errors or model.latency",
        "composite",
        600.0,
        "",
    )
    assert spec.summary == "model.errors or model.latency composite 10m [] None"
    both = msgspec.structs.replace(BROKEN, join="all")
    assert alert_spec(both, decision("fire", T0)).metric == (
        "model.errors and model.latency"
    )


def level_decisions(*steps: tuple[str, str, float]) -> list[Decision]:
    """Decisions of ``latency``/``model=a``: ``(action, severity, at)`` each."""
    thresholds = {"warning": 200.0, "critical": 500.0}
    return [
        decision(
            action,
            at,
            value=thresholds[severity] + 1,
            rule="latency",
            severity=severity,
            threshold=thresholds[severity],
            reason=f"{action} to {severity}",
        )
        for action, severity, at in steps
    ]


async def test_a_severity_decision_moves_the_alert_and_notifies_again(store, clock):
    woken = []
    pipeline = AlertPipeline(ALL_RULES, CHANNELS, store, lambda: woken.append(1), clock)

    await run_pipeline(
        pipeline,
        level_decisions(
            ("fire", "warning", T0),
            ("severity", "critical", T0 + 1),
            ("resolve", "critical", T0 + 2),
        ),
    )

    [alert] = await store.list_alerts()
    assert (alert.state, alert.spec.severity, alert.spec.threshold) == (
        "resolved",
        "critical",
        500.0,
    )
    # The texts are rendered again for the new level; each notification keeps
    # those of its own transition.
    assert alert.spec.summary == "critical latency on a"
    history = await store.history(alert.id)
    assert [(t.to_state, t.reason) for t in history] == [
        ("triggered", "fire to warning"),
        ("triggered", "severity to critical"),
        ("resolved", "resolve to critical"),
    ]
    rows = await store._db.fetchall(
        "SELECT event, channel, alert_severity, alert_value, alert_summary"
        " FROM outbox ORDER BY id"
    )
    assert rows == [
        ("trigger", "hook", "warning", 201.0, "warning latency on a"),
        ("trigger", "quiet", "warning", 201.0, "warning latency on a"),
        ("trigger", "hook", "critical", 501.0, "critical latency on a"),
        ("trigger", "quiet", "critical", 501.0, "critical latency on a"),
        ("resolve", "hook", "critical", 501.0, "critical latency on a"),
    ]
    assert (pipeline.fired, pipeline.resolved, len(woken)) == (1, 1, 3)


async def test_a_severity_decision_without_an_open_alert_writes_nothing(store, clock):
    woken = []
    pipeline = AlertPipeline(ALL_RULES, CHANNELS, store, lambda: woken.append(1), clock)

    await run_pipeline(pipeline, level_decisions(("severity", "critical", T0)))

    assert await store.list_alerts() == []
    assert woken == []


@pytest.mark.parametrize(
    ("action", "level", "message"),
    [
        ("flapping", "WARNING", "alert is flapping; its notifications pause"),
        ("settled", "INFO", "alert settled; its notifications resume"),
    ],
)
async def test_flapping_and_settling_are_noted_without_notifying(
    store, clock, caplog, action, level, message
):
    woken = []
    pipeline = AlertPipeline(RULES, CHANNELS, store, lambda: woken.append(1), clock)
    caplog.set_level("INFO", logger="tocsin.daemon.alerting")

    await run_pipeline(pipeline, [decision("fire", T0), decision(action, T0 + 5)])

    [alert] = await store.list_alerts()
    assert alert.state == "triggered"
    [_, noted] = await store.history(alert.id)
    assert (noted.from_state, noted.to_state, noted.reason) == (
        "triggered",
        "triggered",
        f"{action} at {T0 + 5}",
    )
    rows = await store._db.fetchall("SELECT transition_id FROM outbox")
    assert noted.id not in {row[0] for row in rows}
    assert len(woken) == 1
    [record] = [r for r in caplog.records if r.getMessage() == message]
    assert (record.levelname, record.alert) == (level, alert.uid)


def series_limit(action: str, at: float, **fields) -> Decision:
    values = {
        "rule": SERIES_LIMIT_RULE,
        "series": "rule=drift",
        "labels": {"rule": "drift"},
        "value": 100.0,
        "threshold": 100.0,
        "severity": "warning",
        "reason": "series limit reached",
    }
    values.update(fields)
    return decision(action, at, **values)


async def test_a_series_limit_alert_goes_to_the_internal_channels(store, clock):
    pipeline = AlertPipeline(
        RULES, CHANNELS, store, lambda: None, clock, internal_channels=["hook"]
    )
    everything = {"series": "scope=all", "labels": {"scope": "all"}}

    await run_pipeline(
        pipeline,
        [
            series_limit("fire", T0),
            series_limit("fire", T0, value=5000.0, threshold=5000.0, **everything),
            series_limit("resolve", T0 + 60, value=80.0),
        ],
    )

    [whole, one] = await store.list_alerts()
    assert (one.state, whole.state) == ("resolved", "triggered")
    spec = one.spec
    assert (spec.rule, spec.metric, spec.aggregation, spec.op) == (
        SERIES_LIMIT_RULE,
        "tocsin.rules.series",
        "count",
        ">=",
    )
    assert (spec.severity, spec.threshold, spec.summary) == (
        "warning",
        100.0,
        "Series limit reached",
    )
    assert spec.description.startswith("Rule drift tracks 100 series, its limit:")
    assert "raise its max_series" in spec.description
    assert "5000 series" in whole.spec.description
    assert "raise daemon.max_series" in whole.spec.description
    rows = await store._db.fetchall("SELECT event, channel FROM outbox ORDER BY id")
    assert rows == [("trigger", "hook"), ("trigger", "hook"), ("resolve", "hook")]


async def test_a_resolve_of_a_removed_rule_resolves_where_its_trigger_went(
    store, clock, caplog
):
    caplog.set_level("INFO", logger="tocsin.daemon.alerting")
    pipeline = AlertPipeline(RULES, CHANNELS, store, lambda: None, clock)
    await run_pipeline(pipeline, [decision("fire", T0)])

    pipeline.set_rules({})
    await run_pipeline(
        pipeline,
        [
            decision("fire", T0 + 1, series="model=b", labels={"model": "b"}),
            decision("resolve", T0 + 2, reason="rule removed"),
        ],
    )

    [alert] = await store.list_alerts()
    assert (alert.spec.series, alert.state, alert.resolved_at) == (
        "model=a",
        "resolved",
        T0 + 2,
    )
    assert (await store.history(alert.id))[-1].reason == "rule removed"
    rows = await store._db.fetchall("SELECT event, channel FROM outbox ORDER BY id")
    # "quiet" takes no resolves.
    assert rows == [("trigger", "hook"), ("trigger", "quiet"), ("resolve", "hook")]
    assert pipeline.resolved == 1
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("decision for an unknown rule") == 1
    assert messages.count("resolved an alert of a removed rule") == 1


async def test_rules_set_by_a_reload_decide_the_next_writes(store, clock):
    pipeline = AlertPipeline({}, CHANNELS, store, lambda: None, clock)

    pipeline.set_rules(ALL_RULES)
    await run_pipeline(pipeline, level_decisions(("fire", "warning", T0)))

    [alert] = await store.list_alerts()
    assert alert.spec.rule == "latency"
    assert await store.notified_channels(alert.id) == ["hook", "quiet"]


class RecordingEngine:
    """Keep what restore tells the engine."""

    def __init__(self) -> None:
        self.restored: list[tuple] = []

    def restore(self, rule, series, labels, *, since, fired_at, severity):
        self.restored.append((rule, series, labels, since, fired_at, severity))

    def restore_fires(self, rule, fired_at, *, series=()):
        pass


async def test_restore_tells_the_engine_each_alerts_severity(store, clock):
    pipeline = AlertPipeline(ALL_RULES, CHANNELS, store, lambda: None, clock)
    await run_pipeline(
        pipeline,
        [
            decision("fire", T0 - 10),
            *level_decisions(("fire", "warning", T0), ("severity", "critical", T0)),
        ],
    )
    engine = RecordingEngine()

    assert await restore(store, engine, ALL_RULES, T0 + 10, channels=CHANNELS) == 2

    assert engine.restored == [
        ("drift", "model=a", {"model": "a"}, T0 - 10, T0 - 10, "medium"),
        ("latency", "model=a", {"model": "a"}, T0, T0, "critical"),
    ]


async def test_series_limit_alerts_are_handed_to_the_engine_at_restart(store, clock):
    pipeline = AlertPipeline(RULES, CHANNELS, store, lambda: None, clock)
    await run_pipeline(pipeline, [series_limit("fire", T0)])
    engine = RecordingEngine()

    assert await restore(store, engine, RULES, T0 + 10, channels=CHANNELS) == 0

    [alert] = await store.open_alerts()
    assert alert.spec.rule == SERIES_LIMIT_RULE
    # The engine resolves it once the rule refuses nothing for a while.
    [(rule, series, labels, *_)] = engine.restored
    assert (rule, series, labels) == (
        SERIES_LIMIT_RULE,
        alert.spec.series,
        alert.spec.labels,
    )
