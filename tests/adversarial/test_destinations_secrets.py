"""Every destination failing in the running daemon, each receiver quoting
the channel's secret back in its answer: no routing key, webhook URL,
signing secret, API key or SMTP password reaches the log, the API's list of
integrations or any database row but the catalog's; and a PagerDuty event in
flight when the daemon is killed goes out again, under the same dedup key."""

from __future__ import annotations

import asyncio
import base64
import socket
import sqlite3

import aiohttp
import orjson
import pytest

from tests.e2e.daemon import DAEMON_HEAD, WAIT, DaemonProcess
from tests.e2e.test_lifecycle import sender
from tests.standins.datadog import DatadogStandIn
from tests.standins.pagerduty import PagerDutyStandIn
from tests.standins.slack import SlackStandin
from tests.standins.smtp import Certificates, SmtpStandin
from tests.standins.teams import SIGNATURE, TeamsStandIn
from tests.standins.webhook import WebhookStandin

ENV = "TOCSIN_TEST_SECRETS"
ROUTING_KEY = "R0utingKeyThatMustNotLeak0123456"
PD_WEBHOOK_SECRET = "pd-webhook-secret-never-logged"
SLACK_SIGNING_SECRET = "slack-signing-secret-never-logged"
WHSEC = "whsec_" + base64.b64encode(bytes(range(100, 132))).decode()
HOOK_TOKEN = "hook-url-token-never-logged"
PASSWORD = "smtp-password-never-logged"
API_KEY = "dd-api-key-never-logged-0123"
DOWN_TOKEN = "down-url-token-never-logged"
TOKEN = "api-token-secrets-test"

CONFIG = (
    DAEMON_HEAD
    + """
[api]
tcp = "127.0.0.1:0"
token_env = "{env}_TOKEN"

[[channels]]
name = "page"
type = "pagerduty"
url = "{pd_url}"
routing_key_env = "{env}_ROUTING_KEY"
webhook_secret_env = "{env}_PD_WEBHOOK"
max_attempts = 2
backoff = "100ms"

[[channels]]
name = "slack"
type = "slack"
webhook_url_env = "{env}_SLACK_URL"
signing_secret_env = "{env}_SLACK_SIGNING"
max_attempts = 2
backoff = "100ms"

[[channels]]
name = "teams"
type = "teams"
webhook_url_env = "{env}_TEAMS_URL"
max_attempts = 2
backoff = "100ms"

[[channels]]
name = "hook"
type = "webhook"
url_env = "{env}_HOOK_URL"
secret_env = "{env}_WHSEC"
max_attempts = 2
backoff = "100ms"

[[channels]]
name = "down"
type = "webhook"
url_env = "{env}_DOWN_URL"
max_attempts = 2
backoff = "100ms"

[[channels]]
name = "mail"
type = "email"
host = "127.0.0.1"
port = {smtp_port}
security = "starttls"
username = "tocsin"
password_env = "{env}_PASSWORD"
from = "Tocsin <tocsin@alerts.example>"
to = ["oncall@example.com"]
ca_file = "{ca_file}"
max_attempts = 2
backoff = "100ms"

[[channels]]
name = "events"
type = "datadog"
base_url = "{dd_url}"
api_key_env = "{env}_DD_KEY"
max_attempts = 2
backoff = "100ms"

[[rules]]
name = "drift"
metric = "model.drift.psi"
aggregation = "max"
window = "1h"
threshold = 0.2
channels = ["page", "slack", "teams", "hook", "down", "mail", "events"]
"""
)

CHANNELS = ("page", "slack", "teams", "hook", "down", "mail", "events")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def wait_for_all(daemon: DaemonProcess, prefix: str, channels) -> None:
    """Wait until a line starting with ``prefix`` was logged for each channel."""

    def done() -> bool:
        seen = {r.get("channel") for r in daemon.find_prefix(prefix)}
        exited = daemon.process.returncode is not None
        return set(channels) <= seen or exited

    async with daemon._changed:
        await asyncio.wait_for(daemon._changed.wait_for(done), WAIT)
    seen = {r.get("channel") for r in daemon.find_prefix(prefix)}
    assert set(channels) <= seen, daemon.raw_stderr[-20:]


def database_text(path) -> str:
    """Every row of every table but the catalog of integrations, as text."""
    with sqlite3.connect(path) as db:
        tables = [
            row[0]
            for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        rows = [
            repr(row)
            for table in tables
            if table != "api_integrations"
            for row in db.execute(f'SELECT * FROM "{table}"')
        ]
    return "\n".join(rows)


async def test_no_secret_escapes_when_every_destination_fails(tmp_path):
    certificates = Certificates(tmp_path)
    async with (
        PagerDutyStandIn() as pd,
        SlackStandin() as slack,
        TeamsStandIn() as teams,
        WebhookStandin() as hook,
        SmtpStandin(certificates, password="the-server-wants-another") as smtp,
        DatadogStandIn(API_KEY) as datadog,
    ):
        hook_url = f"{hook.url}?token={HOOK_TOKEN}"
        down_url = f"http://127.0.0.1:{closed_port()}/in/{DOWN_TOKEN}"
        secrets = {
            "ROUTING_KEY": ROUTING_KEY,
            "PD_WEBHOOK": PD_WEBHOOK_SECRET,
            "SLACK_URL": slack.webhook_url,
            "SLACK_SIGNING": SLACK_SIGNING_SECRET,
            "TEAMS_URL": teams.url,
            "HOOK_URL": hook_url,
            "WHSEC": WHSEC,
            "DOWN_URL": down_url,
            "PASSWORD": PASSWORD,
            "DD_KEY": API_KEY,
            "TOKEN": TOKEN,
        }
        # Each receiver fails twice, quoting what it was sent with.
        echoed = orjson.dumps(
            {"status": "invalid event", "message": ROUTING_KEY, "errors": [WHSEC]}
        )
        pd.fail(400, body=echoed, times=2)
        slack.reply(500, slack.webhook_url.encode(), times=2)
        teams.fail(200, body=f"HTTP error 429 from {teams.url}".encode(), times=2)
        moved = {"Location": hook_url + "&moved=1"}
        hook.reply(307, headers=moved, body=hook_url.encode())
        hook.reply(503, body=hook_url.encode())
        datadog.fail_events(403, body=API_KEY.encode(), times=2)

        text = CONFIG.format(
            dir=tmp_path,
            env=ENV,
            pd_url=pd.url,
            smtp_port=smtp.port,
            ca_file=certificates.ca_file,
            dd_url=datadog.url,
        )
        env = {f"{ENV}_{name}": value for name, value in secrets.items()}
        daemon = DaemonProcess(tmp_path, text, env)
        try:
            await daemon.start()
            sender(tmp_path).gauge("model.drift.psi", 0.5)
            await wait_for_all(daemon, "notification dead-lettered", CHANNELS)
            integrations = await _integrations(daemon)
            # A test of each, each receiver failing once more the same way,
            # and the dead letters: answers that quote what went wrong.
            pd.fail(400, body=echoed)
            slack.reply(500, slack.webhook_url.encode())
            teams.fail(200, body=f"HTTP error 429 from {teams.url}".encode())
            hook.reply(307, headers=moved, body=hook_url.encode())
            datadog.fail_events(403, body=API_KEY.encode())
            tests = [
                await _api(daemon, "POST", f"integrations/{c}/test") for c in CHANNELS
            ]
            letters = await _api(daemon, "GET", "deadletters")
            assert await daemon.stop() == 0
        finally:
            await daemon.close()

    stored = database_text(tmp_path / "state" / "tocsin.db")
    logged = "\n".join(daemon.raw_stderr)
    leaks = [SIGNATURE, "B0TOCSIN/", "/workflows/", HOOK_TOKEN, DOWN_TOKEN]
    leaks += [value for name, value in secrets.items() if name != "TOKEN"]
    for secret in leaks:
        assert secret not in logged
        assert secret not in integrations
        assert secret not in stored
        assert secret not in letters
        assert not [answer for answer in tests if secret in answer]
    # Every test failed, and says why.
    results = [orjson.loads(answer)["result"] for answer in tests]
    assert [result["ok"] for result in results] == [False] * len(CHANNELS)
    assert all(result["error"] for result in results)
    assert len(orjson.loads(letters)["dead_letters"]) == len(CHANNELS)
    # The failures were recorded, each under its channel.
    assert "dead" in stored
    assert {r["channel"] for r in daemon.find_prefix("notification dead")} == set(
        CHANNELS
    )


async def _integrations(daemon: DaemonProcess) -> str:
    return await _api(daemon, "GET", "integrations")


async def _api(daemon: DaemonProcess, method: str, path: str) -> str:
    """Call ``/api/v1/{path}`` on the TCP listener; return the answer's text."""
    [bound] = daemon.find("listening", listener="api_tcp")
    url = f"http://{bound['address']}/api/v1/{path}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, headers=headers) as response,
    ):
        assert response.status == 200
        return await response.text()


@pytest.fixture
async def pd():
    async with PagerDutyStandIn() as standin:
        yield standin


PAGE_ONLY = (
    DAEMON_HEAD
    + """
[[channels]]
name = "page"
type = "pagerduty"
url = "{pd_url}"
routing_key_env = "{env}_ROUTING_KEY"
backoff = "100ms"

[[rules]]
name = "drift"
metric = "model.drift.psi"
aggregation = "max"
window = "1h"
threshold = 0.2
channels = ["page"]
"""
)


async def test_a_page_in_flight_at_kill_9_goes_out_again_under_the_same_key(
    tmp_path, pd
):
    text = PAGE_ONLY.format(dir=tmp_path, env=ENV, pd_url=pd.url)
    daemon = DaemonProcess(tmp_path, text, {f"{ENV}_ROUTING_KEY": ROUTING_KEY})
    try:
        await daemon.start()
        # PagerDuty is slow: the event arrives, its answer does not.
        pd.fail(202, hold=True)
        sender(tmp_path).gauge("model.drift.psi", 0.5)
        [held] = await pd.wait_for(1, timeout=WAIT)

        await daemon.kill()
        pd.release()
        await daemon.start()
        requests = await pd.wait_for(2, timeout=WAIT)
    finally:
        await daemon.close()

    again = requests[1]
    assert again.event["event_action"] == held.event["event_action"] == "trigger"
    assert again.event["dedup_key"] == held.event["dedup_key"]
    assert again.body == held.body
    assert [incident.dedup_key for incident in pd.incidents] == [
        held.event["dedup_key"]
    ]
