"""A breach reaches Teams and Datadog's event stream through the running
daemon: the real DogStatsd client sends, strict stand-ins receive, each
refuses the first attempt with a 429, and no secret reaches the log."""

from __future__ import annotations

import socket

import pytest

from tests.e2e.daemon import DAEMON_HEAD, DaemonProcess
from tests.e2e.test_lifecycle import sender
from tests.standins.datadog import DatadogStandIn
from tests.standins.datadog_events import rate_limited
from tests.standins.teams import SIGNATURE, TeamsStandIn

TEAMS_ENV = "TOCSIN_TEST_TEAMS_URL"
KEY_ENV = "TOCSIN_TEST_DD_EVENTS_KEY"
API_KEY = "dd-events-key-5e4d3c2b1a09"
EXTERNAL = "https://tocsin.example"

CONFIG = (
    DAEMON_HEAD
    + """
[api]
external_url = "{external}"

[[channels]]
name = "teams"
type = "teams"
webhook_url_env = "{teams_env}"
card_version = "1.5"
backoff = "100ms"

[[channels]]
name = "events"
type = "datadog"
base_url = "{dd_url}"
api_key_env = "{key_env}"
tags = ["env:test"]
backoff = "100ms"

[[rules]]
name = "drift"
metric = "model.drift.psi"
group_by = ["model"]
aggregation = "max"
window = "2s"
threshold = 0.2
severity = "critical"
runbook = "https://runbooks.example/drift"
channels = ["teams", "events"]
"""
)


@pytest.fixture
async def teams():
    async with TeamsStandIn() as standin:
        yield standin


@pytest.fixture
async def datadog():
    async with DatadogStandIn(API_KEY) as standin:
        yield standin


@pytest.fixture
async def daemon(tmp_path, teams, datadog):
    text = CONFIG.format(
        dir=tmp_path,
        external=EXTERNAL,
        teams_env=TEAMS_ENV,
        dd_url=datadog.url,
        key_env=KEY_ENV,
    )
    env = {TEAMS_ENV: teams.url, KEY_ENV: API_KEY}
    process = DaemonProcess(tmp_path, text, env)
    await process.start()
    yield process
    await process.close()


async def test_a_breach_reaches_teams_and_datadog_events_despite_a_429(
    daemon, teams, datadog, tmp_path
):
    teams.fail(429)
    datadog.fail_events(429, headers=rate_limited(reset=1))

    sender(tmp_path).gauge("model.drift.psi", 0.5, tags=["model:a"])
    # No samples follow, so the 2s window runs empty and the alert resolves.
    await datadog.wait_events(2, timeout=20)
    await teams.wait_for(3, timeout=20)

    # Teams: refused once, then the trigger's card and the resolve's.
    assert [r.status for r in teams.requests] == [429, 202, 202]
    assert teams.requests[0].body == teams.requests[1].body
    firing, resolved = teams.cards()
    assert firing["version"] == "1.5"
    assert firing["body"][0]["text"] == "[FIRING] drift (model=a)"
    assert firing["body"][-1]["text"].startswith("critical model=a: 0.5 (")
    runbook, link = firing["actions"]
    assert runbook["url"] == "https://runbooks.example/drift"
    assert link["url"].startswith(f"{EXTERNAL}/api/v1/alerts/")
    uid = link["url"].rsplit("/", 1)[1]
    assert resolved["body"][0]["text"] == "[RESOLVED] drift (model=a)"

    # Datadog: refused once, then the trigger's event and the resolve's,
    # folded together by the alert's key.
    assert [r.status for r in datadog.events] == [429, 202, 202]
    trigger, resolve = datadog.accepted_events
    assert (trigger["alert_type"], resolve["alert_type"]) == ("error", "success")
    assert trigger["aggregation_key"] == resolve["aggregation_key"] == f"tocsin-{uid}"
    assert trigger["title"] == "[FIRING] drift (model=a)"
    assert trigger["host"] == socket.gethostname()
    assert trigger["tags"] == ["env:test", "model:a", "rule:drift", "severity:critical"]
    assert resolve["date_happened"] >= trigger["date_happened"]

    # Both retries were told, and no secret was.
    for channel in ("teams", "events"):
        await daemon.wait_for_log("delivery failed; retrying", channel=channel)
    log_text = "\n".join(daemon.raw_stderr)
    assert SIGNATURE not in log_text
    assert API_KEY not in log_text
    assert "/workflows/" not in log_text
