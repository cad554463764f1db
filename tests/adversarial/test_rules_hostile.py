"""The rules engine, live reload and the control API against hostile or careless
use: reloads of rules at their series limit, reloads and restarts of tumbling
rules with a delay, long histories after a gap, and wrong API requests."""

from __future__ import annotations

import aiohttp
import pytest

from tests.rules.engine_cases import METRIC, MIDNIGHT, T0, rule, series_of
from tocsin import config
from tocsin.config import CompareConfig, Duration
from tocsin.daemon import api
from tocsin.daemon.reload import ReloadOutcome
from tocsin.errors import ConfigError
from tocsin.rules import history
from tocsin.rules.decisions import SERIES_LIMIT_RULE
from tocsin.rules.engine import RuleEngine
from tocsin.rules.runtime import LIMIT_QUIET

HOUR = 3600.0


def limit_decisions(decisions) -> list[tuple[str, str]]:
    return [(d.action, d.series) for d in decisions if d.rule == SERIES_LIMIT_RULE]


def flood(engine: RuleEngine, at: float, first: int, count: int = 10) -> list:
    for index in range(first, first + count):
        for series in engine.targets(METRIC, {"model": f"m{index}"}):
            series.add(0.1, at)
    return engine.evaluate_dirty(at)


def ticks(engine: RuleEngine, start: float, end: float, step: float = 10.0) -> list:
    decisions = []
    at = start
    while at < end:
        decisions += engine.tick(at)
        at += step
    return decisions


# -- series-limit alerts across a reload ---------------------------------------


def test_a_changed_rule_keeps_and_later_resolves_its_series_limit_alert():
    engine = RuleEngine([rule(max_series=5)])
    assert limit_decisions(flood(engine, T0, 0)) == [("fire", "rule=drift")]

    # Any change of the rule (here its limit) makes a new runtime: the open
    # alert about its series limit must stay with it, and resolve once quiet.
    engine.reload([rule(max_series=50)], T0 + 1, max_series=1000)
    later = ticks(engine, T0 + 2, T0 + 2 * LIMIT_QUIET)
    assert limit_decisions(later) == [("resolve", "rule=drift")]


def test_a_removed_rule_resolves_its_series_limit_alert_at_the_reload():
    engine = RuleEngine([rule(max_series=5), rule(name="other", metric="x")])
    assert limit_decisions(flood(engine, T0, 0)) == [("fire", "rule=drift")]

    result = engine.reload([rule(name="other", metric="x")], T0 + 1, max_series=10)
    # Nothing can refuse series for a rule that is gone: its alert would
    # otherwise stay open until the next restart.
    assert limit_decisions(result.decisions) == [("resolve", "rule=drift")]
    assert result.decisions[0].reason == "rule 'drift' removed from the configuration"
    assert limit_decisions(ticks(engine, T0 + 2, T0 + 2 * LIMIT_QUIET)) == []


# -- tumbling rules with a delay, after a reload or a restart --------------------

TUMBLING = {
    "tumbling": True,
    "window": Duration(HOUR),
    "delay": Duration(3 * HOUR),
    "aggregation": "max",
}


def breach_every_minute(engine: RuleEngine, start: float, end: float) -> list:
    decisions = []
    at = start
    while at < end:
        series_of(engine).add(0.5, at)
        decisions += engine.evaluate_dirty(at) + engine.tick(at)
        at += 60.0
    return decisions


def test_a_changed_tumbling_rule_does_not_resolve_while_its_breach_goes_on():
    engine = RuleEngine([rule(**TUMBLING)])
    before = breach_every_minute(engine, MIDNIGHT, MIDNIGHT + 8 * HOUR)
    assert [d.action for d in before] == ["fire"]

    # The bins still open at the reload held samples the new rule never saw:
    # they seal empty, and must not resolve an alert whose samples still
    # breach (nor let it fire again when the next bin seals).
    reloaded = engine.reload(
        [rule(**TUMBLING, summary="changed")], MIDNIGHT + 8 * HOUR, max_series=100
    )
    assert reloaded.changed == ["drift"]
    after = breach_every_minute(engine, MIDNIGHT + 8 * HOUR, MIDNIGHT + 20 * HOUR)
    assert [d.action for d in after] == []


def test_a_restored_tumbling_alert_waits_for_the_first_whole_bin():
    # Restarted two minutes before the hour, with samples every minute from
    # half past: the bin holding the restart seals empty, and the next one is
    # the first seen whole. The alert must wait for it, not for one window.
    start = MIDNIGHT + 5 * HOUR - 120
    engine = RuleEngine([rule(**{**TUMBLING, "delay": Duration(0.0)})])
    engine.tick(start)
    engine.restore("drift", "model=a", {"model": "a"}, since=T0, fired_at=T0)
    after = breach_every_minute(engine, start + 150, start + 6 * HOUR)
    assert [d.action for d in after] == []


# -- long histories ------------------------------------------------------------


def count_baselines(monkeypatch) -> list[int]:
    """Return a list that grows by the history's size at each exact baseline."""
    computed: list[int] = []
    real = history._mean_and_deviation

    def counting(values):
        computed.append(len(values))
        return real(values)

    monkeypatch.setattr(history, "_mean_and_deviation", counting)
    return computed


def test_a_long_baseline_catches_up_a_gap_in_one_pass(monkeypatch):
    # A baseline of 10,000 steps recomputes its mean and deviation over the
    # whole history; doing it once per missed step stalls the event loop for
    # seconds per series after a gap.
    computed = count_baselines(monkeypatch)
    baseline = CompareConfig(kind="baseline", bins=10_000)
    engine = RuleEngine([rule(compare=baseline, window=Duration(12.0))])
    series_of(engine).add(0.3, T0)
    engine.evaluate_dirty(T0)
    computed.clear()

    engine.tick(T0 + 3 * HOUR)
    assert len(computed) <= 2


def test_a_long_tumbling_baseline_catches_up_a_gap_in_one_pass(monkeypatch):
    computed = count_baselines(monkeypatch)
    baseline = CompareConfig(kind="baseline", bins=10_000)
    engine = RuleEngine([rule(compare=baseline, tumbling=True, window=Duration(60.0))])
    engine.tick(MIDNIGHT)
    series_of(engine).add(0.3, MIDNIGHT)
    engine.evaluate_dirty(MIDNIGHT)
    computed.clear()

    engine.tick(MIDNIGHT + 10 * 86400)
    # One recomputation for the gap, one per bin a slot may still hold.
    assert len(computed) <= 4


# -- the control API -----------------------------------------------------------


@pytest.fixture
async def served(tmp_path):
    async def reload(source: str) -> ReloadOutcome:
        return ReloadOutcome(kept=("a",))

    path = str(tmp_path / "api.sock")
    control = api.ControlApi(reload, lambda: True)
    await control.start(api.bind(path))
    yield path
    await control.stop()


@pytest.mark.parametrize(
    ("method", "url", "status"),
    [
        ("GET", "/-/reload", 405),
        ("PUT", "/-/reload", 405),
        ("POST", "/-/healthy", 405),
        ("GET", "/nowhere", 404),
    ],
)
async def test_every_api_answer_is_a_json_object(served, method, url, status):
    connector = aiohttp.UnixConnector(path=served)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.request(method, "http://tocsin" + url) as response,
    ):
        assert response.status == status
        assert response.content_type == "application/json"
        if status == 405:
            assert response.headers["Allow"] in ("POST", "GET,HEAD")
        body = await response.json()
    assert body["status"] == "error"
    assert body["error"]


def test_a_steady_long_baseline_does_not_rescan_its_history_each_step(monkeypatch):
    computed = count_baselines(monkeypatch)
    past = history.History(10_000, baseline=True)
    for step in range(100):
        past.push(float(step))
    # 100 steps of one series read 1,000,000 values: at 0.3 ms a step, 10,000
    # such series cannot keep up with a 1 s step.
    assert sum(computed) < 100 * 10_000


# -- the configuration ---------------------------------------------------------

CONFIG = """
[daemon]
state_dir = "/var/lib/tocsin"
[ingest]
udp = ""
unix_stream = "/var/lib/tocsin/{name}"
[export.datadog]
api_key_env = ""
"""


@pytest.mark.parametrize("api_section", ["", '[api]\nsocket = "/run/x.sock"\n'])
def test_check_config_refuses_an_api_socket_on_an_ingest_path(api_section):
    # ``run`` refuses it at start-up; the file alone tells, so check-config must.
    name = "x.sock" if api_section else "api.sock"
    text = CONFIG.format(name=name) + api_section.replace("/run", "/var/lib/tocsin")
    with pytest.raises(ConfigError, match=r"api\.socket: must not be the path"):
        config.parse(text, "t.toml")
