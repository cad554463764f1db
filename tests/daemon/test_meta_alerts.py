"""Tocsin's own alerts about its integrations: when they fire and resolve,
that they are stored like any alert, and that they never reach the
integration they are about."""

from __future__ import annotations

import logging

import pytest

from tests.daemon.test_alerting import CHANNELS, RULES, T0, run_pipeline
from tocsin import config
from tocsin.channels.health import (
    DEAD_LETTERS_RULE,
    EXPORT_BEHIND_RULE,
    INTEGRATION_FAILING_RULE,
    DeliveryWatch,
)
from tocsin.channels.policy import NoisePolicy
from tocsin.clock import ManualClock
from tocsin.daemon.alerting import AlertPipeline, alert_spec, restore
from tocsin.daemon.export_watch import ExportWatcher
from tocsin.daemon.meta_alerts import IntegrationWatcher, meta_rules
from tocsin.rules.engine import RuleEngine
from tocsin.schema import HealthConfig
from tocsin.state.alerts import AlertStore
from tocsin.state.db import Database
from tocsin.state.models import Alert

SETTINGS = HealthConfig(failures=3, window=600.0)


@pytest.fixture
def clock():
    return ManualClock(T0)


@pytest.fixture
async def store(tmp_path, clock):
    database = await Database.open(tmp_path / "tocsin.db", clock=clock)
    yield AlertStore(database, clock)
    await database.close()


def watcher_of(clock, internal=("hook", "quiet"), configured=("hook", "quiet")):
    watch = DeliveryWatch(float(SETTINGS.window))
    submitted = []
    watcher = IntegrationWatcher(
        watch,
        SETTINGS,
        submitted.extend,
        clock,
        configured=lambda: configured,
        internal_channels=lambda: internal,
    )
    return watcher, watch


def fail(watch, clock, times, channel="hook"):
    for _ in range(times):
        clock.advance(10)
        watch.attempted(channel, "retry", clock.time(), "server_error")


def actions(decisions):
    return [(d.action, d.rule, d.labels["channel"]) for d in decisions]


def test_failing_fires_at_n_failures_within_the_window_and_resolves_on_success(
    clock,
):
    watcher, watch = watcher_of(clock)
    fail(watch, clock, 2)
    assert watcher.evaluate(clock.time()) == []

    fail(watch, clock, 1)
    [fired] = watcher.evaluate(clock.time())
    assert actions([fired]) == [("fire", INTEGRATION_FAILING_RULE, "hook")]
    assert (fired.series, fired.value, fired.threshold) == ("channel=hook", 3.0, 3.0)
    assert fired.reason == "3 failed attempts within 10m, the last server_error"
    assert (fired.since, fired.severity) == (T0 + 10, "critical")

    # Still failing: nothing more to say.
    fail(watch, clock, 5)
    assert watcher.evaluate(clock.time()) == []

    watch.attempted("hook", "delivered", clock.time())
    [resolved] = watcher.evaluate(clock.time())
    assert actions([resolved]) == [("resolve", INTEGRATION_FAILING_RULE, "hook")]
    assert resolved.reason == "delivers again"


def test_failures_spread_wider_than_the_window_do_not_fire(clock):
    watcher, watch = watcher_of(clock)
    for _ in range(5):
        watch.attempted("hook", "retry", clock.time(), "timeout")
        clock.advance(301)

    assert watcher.evaluate(clock.time()) == []


def test_dead_letters_fire_and_resolve_a_window_later(clock):
    watcher, watch = watcher_of(clock)
    watch.attempted("hook", "dead", clock.time(), "auth")

    decisions = watcher.evaluate(clock.time())
    assert actions(decisions) == [("fire", DEAD_LETTERS_RULE, "hook")]
    clock.advance(600)
    assert watcher.evaluate(clock.time()) == []
    clock.advance(1)
    [resolved] = watcher.evaluate(clock.time())
    assert actions([resolved]) == [("resolve", DEAD_LETTERS_RULE, "hook")]


def test_an_alert_of_an_integration_no_longer_configured_resolves(clock):
    configured = ["hook", "quiet"]
    watcher, watch = watcher_of(clock, configured=configured)
    fail(watch, clock, 3)
    watcher.evaluate(clock.time())

    configured.remove("hook")
    [resolved] = watcher.evaluate(clock.time())

    assert resolved.action == "resolve"
    assert resolved.reason == "no longer configured"


def alert_about(rule: str, channel: str, clock) -> Alert:
    decision_ = IntegrationWatcher(
        DeliveryWatch(),
        SETTINGS,
        print,
        clock,
        configured=list,
        internal_channels=list,
    )._decision("fire", (rule, channel), 3, clock.time(), "failing")
    rules = meta_rules(["hook"], SETTINGS)
    return Alert(
        id=1,
        uid="u",
        state="triggered",
        spec=alert_spec(rules[rule], decision_),
        value=3.0,
    )


def test_restored_alerts_stay_open_until_their_condition_clears(clock):
    watcher, watch = watcher_of(clock)
    watcher.restore(
        [
            alert_about(INTEGRATION_FAILING_RULE, "hook", clock),
            alert_about(DEAD_LETTERS_RULE, "quiet", clock),
        ],
        clock.time(),
    )

    fail(watch, clock, 1)
    assert watcher.evaluate(clock.time()) == []
    clock.advance(600)
    watch.attempted("hook", "delivered", clock.time())
    assert sorted(actions(watcher.evaluate(clock.time()))) == [
        ("resolve", DEAD_LETTERS_RULE, "quiet"),
        ("resolve", INTEGRATION_FAILING_RULE, "hook"),
    ]


ROUTED = """
[[channels]]
name = "hook"
type = "webhook"
url = "http://127.0.0.1:9/hook"

[[channels]]
name = "pager"
type = "log"

[alerts]
internal_channels = {internal}

[routing]
channels = ["hook"]

[[routing.routes]]
matchers = ['rule=~"tocsin.*"']
channels = ["hook", "pager"]
continue = true

[[routing.routes]]
matchers = ['channel="hook"']
channels = ["hook"]
"""


@pytest.mark.parametrize(
    ("internal", "channels"),
    [('["hook", "pager"]', [("pager",)]), ('["hook"]', []), ("[]", [])],
)
@pytest.mark.parametrize("rule", [INTEGRATION_FAILING_RULE, DEAD_LETTERS_RULE])
def test_an_alert_about_an_integration_never_routes_to_it(
    clock, internal, channels, rule
):
    running = config.parse(ROUTED.format(internal=internal))
    rules = meta_rules(running.alerts.internal_channels, SETTINGS)
    policy = NoisePolicy.from_config(running, rules=rules)

    routes = policy.routes(alert_about(rule, "hook", clock))

    # The routing tree sends such alerts to hook, twice over: ignored.
    assert [route.channels for route in routes] == channels
    assert all(route.escalation is None for route in routes)


async def test_the_pipeline_stores_and_queues_them_without_the_integration(
    tmp_path, clock, store
):
    pipeline = AlertPipeline(
        RULES,
        CHANNELS,
        store,
        lambda: None,
        clock,
        internal_channels=["hook", "quiet"],
        health=SETTINGS,
    )
    watcher, watch = watcher_of(clock)
    fail(watch, clock, 3)
    fired = watcher.evaluate(clock.time())
    watch.attempted("hook", "delivered", clock.time())
    resolved = watcher.evaluate(clock.time())

    await run_pipeline(pipeline, fired + resolved)

    [alert] = await store.list_alerts()
    assert (alert.spec.rule, alert.state) == (INTEGRATION_FAILING_RULE, "resolved")
    assert alert.spec.summary == "Integration hook is failing"
    assert "3 times within 10m" in alert.spec.description
    rows = await store._db.fetchall("SELECT DISTINCT channel FROM outbox")
    assert rows == [("quiet",)]


async def test_a_restart_keeps_them_open_and_the_engine_out_of_them(
    tmp_path, clock, store
):
    pipeline = AlertPipeline(
        RULES, CHANNELS, store, lambda: None, clock, internal_channels=["quiet"]
    )
    watcher, watch = watcher_of(clock)
    fail(watch, clock, 3)
    await run_pipeline(pipeline, watcher.evaluate(clock.time()))

    engine = RuleEngine(list(RULES.values()))
    restored = await restore(store, engine, RULES, clock.time(), CHANNELS)

    [alert] = await store.open_alerts()
    assert (restored, alert.spec.rule) == (0, INTEGRATION_FAILING_RULE)


def test_an_alert_with_nowhere_to_go_is_an_error_line(clock, caplog):
    caplog.set_level(logging.INFO, logger="tocsin.daemon.meta_alerts")
    watcher, watch = watcher_of(clock, internal=("hook",))
    fail(watch, clock, 3)

    watcher.evaluate(clock.time())

    [record] = caplog.records
    assert record.levelname == "ERROR"
    assert record.getMessage() == (
        "Tocsin's own alert fired and has no channel to go to"
    )
    assert (record.rule, record.channel) == (INTEGRATION_FAILING_RULE, "hook")


class Stats:
    """The exporter's counters, as a test sets them."""

    def __init__(self) -> None:
        self.failures = 0
        self.dropped = 0
        self.last_success: float | None = None
        self.last_error: str | None = None


def test_export_behind_fires_after_intervals_of_failures_and_resolves(clock):
    stats = Stats()
    export = ExportWatcher(stats, 60.0, SETTINGS, clock)
    watcher, _ = watcher_of(clock)
    watcher.export = export

    stats.failures, stats.last_error = 1, "rate_limited"
    assert watcher.evaluate(clock.time()) == []
    clock.advance(179)
    assert watcher.evaluate(clock.time()) == []
    clock.advance(1)
    [fired] = watcher.evaluate(clock.time())
    assert (fired.action, fired.rule, fired.labels) == ("fire", EXPORT_BEHIND_RULE, {})
    assert fired.reason == "no export accepted for 3m, the last error rate_limited"

    stats.last_success = clock.time()
    [resolved] = watcher.evaluate(clock.time())
    assert (resolved.action, resolved.reason) == ("resolve", "exports accepted again")


def test_export_behind_fires_on_dropped_series_for_one_window(clock):
    stats = Stats()
    export = ExportWatcher(stats, 60.0, SETTINGS, clock)

    stats.dropped, stats.last_success = 40, clock.time()
    [fired] = export.evaluate(clock.time())
    assert fired.reason == "40 series dropped within 10m"
    clock.advance(600)
    assert export.evaluate(clock.time()) == []
    clock.advance(1)
    assert [d.action for d in export.evaluate(clock.time())] == ["resolve"]


def test_export_behind_goes_to_the_internal_channels_only(clock):
    running = config.parse(ROUTED.format(internal='["pager"]'))
    rules = meta_rules(running.alerts.internal_channels, SETTINGS)
    policy = NoisePolicy.from_config(running, rules=rules)
    decision_ = ExportWatcher(Stats(), 60.0, SETTINGS, clock)._decision(
        "fire", clock.time(), "behind"
    )
    alert = Alert(
        id=1,
        uid="u",
        state="triggered",
        spec=alert_spec(rules[EXPORT_BEHIND_RULE], decision_),
        value=0.0,
    )

    assert [route.channels for route in policy.routes(alert)] == [("pager",)]


def test_an_export_alert_of_an_earlier_run_resolves_when_the_export_is_off(clock):
    watcher, _ = watcher_of(clock)
    behind = ExportWatcher(Stats(), 60.0, SETTINGS, clock)._decision(
        "fire", clock.time(), "behind"
    )
    rules = meta_rules([], SETTINGS)
    alert = Alert(
        id=1,
        uid="u",
        state="triggered",
        spec=alert_spec(rules[EXPORT_BEHIND_RULE], behind),
        value=0.0,
    )
    watcher.restore([alert], clock.time())

    [resolved] = watcher.evaluate(clock.time())

    assert (resolved.action, resolved.rule) == ("resolve", EXPORT_BEHIND_RULE)
    assert resolved.reason == "the Datadog export is off"
    assert watcher.evaluate(clock.time()) == []
