"""Slack through the running daemon: a breach becomes a message with buttons
at a local Slack, and a signed click on Acknowledge, posted to the daemon's
API socket, acknowledges the alert and redraws the message."""

from __future__ import annotations

import aiohttp
import pytest

from tests.e2e.daemon import DAEMON_HEAD, WAIT, DaemonProcess
from tests.e2e.test_escalation import show
from tests.e2e.test_lifecycle import sender
from tests.standins.slack import SlackStandin, signed_action

URL_ENV = "TOCSIN_TEST_SLACK_URL"
SECRET_ENV = "TOCSIN_TEST_SLACK_SECRET"
SECRET = "d41d8cd98f00b204e9800998ecf8427e"

CONFIG = (
    DAEMON_HEAD
    + """
[api]
external_url = "https://tocsin.example"

[[channels]]
name = "team-slack"
type = "slack"
webhook_url_env = "{url_env}"
signing_secret_env = "{secret_env}"

[routing]
channels = ["team-slack"]
group_wait = "0s"

[[rules]]
name = "drift"
metric = "model.drift.psi"
group_by = ["model"]
aggregation = "max"
window = "1h"
threshold = 0.2
runbook = "https://runbooks.example/drift"
severity = "critical"
"""
)


@pytest.fixture
async def slack():
    async with SlackStandin() as standin:
        yield standin


@pytest.fixture
async def daemon(tmp_path, slack):
    text = CONFIG.format(dir=tmp_path, url_env=URL_ENV, secret_env=SECRET_ENV)
    env = {URL_ENV: slack.webhook_url, SECRET_ENV: SECRET}
    process = DaemonProcess(tmp_path, text, env)
    await process.start()
    yield process
    await process.close()


async def test_a_breach_posts_buttons_and_a_signed_click_acknowledges(
    daemon, slack, tmp_path
):
    sender(tmp_path).gauge("model.drift.psi", 0.5, tags=["model:a"])
    [message] = await slack.wait_for_messages(1, timeout=WAIT)

    assert message["blocks"][0]["text"]["text"] == "[FIRING] drift (model=a) · critical"
    [actions] = [block for block in message["blocks"] if block["type"] == "actions"]
    uids = {button["value"] for button in actions["elements"]}
    ids = [button["action_id"] for button in actions["elements"]]
    assert ids == ["tocsin.acknowledge", "tocsin.snooze", "tocsin.resolve"]
    [uid] = uids
    section = message["blocks"][1]["text"]["text"]
    assert f"<https://tocsin.example/api/v1/alerts/{uid}|Alert in Tocsin>" in section
    assert "<https://runbooks.example/drift|Runbook>" in section

    # Alice clicks Acknowledge; Slack posts the signed click to Tocsin.
    click = signed_action(
        SECRET, "tocsin.acknowledge", uid, response_url=slack.response_url()
    )
    connector = aiohttp.UnixConnector(path=str(tmp_path / "state" / "api.sock"))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(
            "http://tocsin/hooks/slack/team-slack",
            data=click.body,
            headers=click.headers,
        ) as response,
    ):
        assert response.status == 200

    [update] = await slack.wait_for_updates(1, timeout=WAIT)
    redrawn = update.json
    assert redrawn["replace_original"] is True
    assert redrawn["blocks"][0]["text"]["text"].startswith("[ACKNOWLEDGED] drift")
    context = redrawn["blocks"][-1]["elements"][0]["text"]
    assert context.startswith("Acknowledged by slack:alice · ")
    alert = await show(daemon, "model=a")
    assert alert["uid"] == uid
    assert alert["state"] == "acknowledged"
    last = alert["history"][-1]
    assert (last["to_state"], last["actor"]) == ("acknowledged", "slack:alice")
    log = "\n".join(daemon.raw_stderr)
    assert SECRET not in log
    assert slack.webhook_url.rsplit("/", 1)[1] not in log
