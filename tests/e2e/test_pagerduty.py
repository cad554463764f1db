"""PagerDuty both ways through the running daemon: the real DogStatsd client
breaches a rule, the PagerDuty stand-in receives the events, the ``tocsin``
command acknowledges, and a signed PagerDuty webhook resolves."""

from __future__ import annotations

import aiohttp
import pytest

from tests.e2e.daemon import DAEMON_HEAD, DaemonProcess
from tests.e2e.test_escalation import show
from tests.e2e.test_lifecycle import sender, tocsin
from tests.standins.pagerduty import PagerDutyStandIn, signed

ENV = "TOCSIN_TEST_PAGERDUTY"
ROUTING_KEY = "e2eR0utingKey0123456789abcdefABC"
WEBHOOK_SECRET = "e2e-webhook-secret-5f4e3d2c1b"
TOKEN = "e2e-api-token-0a9b8c7d"

CONFIG = (
    DAEMON_HEAD
    + """
[api]
tcp = "127.0.0.1:0"
token_env = "{env}_TOKEN"

[[channels]]
name = "page"
type = "pagerduty"
url = "{url}"
routing_key_env = "{env}_KEY"
webhook_secret_env = "{env}_WEBHOOK"
source = "tocsin-e2e"
backoff = "100ms"

[routing]
channels = ["page"]

[[rules]]
name = "drift"
metric = "model.drift.psi"
group_by = ["model"]
aggregation = "max"
window = "1h"
threshold = 0.2
"""
)


@pytest.fixture
async def pd():
    async with PagerDutyStandIn() as standin:
        yield standin


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
async def daemon(tmp_path, pd):
    env = {
        f"{ENV}_KEY": ROUTING_KEY,
        f"{ENV}_WEBHOOK": WEBHOOK_SECRET,
        f"{ENV}_TOKEN": TOKEN,
    }
    text = CONFIG.format(dir=tmp_path, env=ENV, url=pd.url)
    process = DaemonProcess(tmp_path, text, env)
    await process.start()
    yield process
    await process.close()


async def post_webhook(daemon: DaemonProcess, session, body: bytes) -> int:
    """POST a PagerDuty delivery to the daemon's TCP API, without its token."""
    [bound] = daemon.find("listening", listener="api_tcp")
    url = f"http://{bound['address']}/hooks/pagerduty/page"
    headers = signed(body, WEBHOOK_SECRET)
    async with session.post(url, data=body, headers=headers) as response:
        return response.status


async def test_a_breach_pages_and_a_resolution_in_pagerduty_resolves_it(
    daemon, pd, tmp_path, session
):
    sender(tmp_path).gauge("model.drift.psi", 0.5, tags=["model:a"])
    [trigger] = await pd.wait_for(1)

    alert = await show(daemon, "model=a")
    key = f"tocsin-{alert['uid']}"
    assert trigger.event["event_action"] == "trigger"
    assert trigger.event["dedup_key"] == key
    assert trigger.event["payload"]["source"] == "tocsin-e2e"
    assert trigger.event["payload"]["custom_details"]["model"] == "a"

    body = pd.act(key, "incident.resolved", agent="Ada Lovelace")
    assert await post_webhook(daemon, session, body) == 200

    resolved = await show(daemon, "model=a")
    assert resolved["state"] == "resolved"
    moves = [(t["to_state"], t["actor"]) for t in resolved["history"]]
    assert moves[1:] == [
        ("acknowledged", "pagerduty"),
        ("investigating", "pagerduty"),
        ("resolved", "pagerduty"),
    ]
    assert "by Ada Lovelace" in resolved["history"][-1]["comment"]
    # Tocsin tells PagerDuty too; the incident is already resolved there.
    await pd.wait_for(2)
    assert pd.actions(key) == ["trigger", "resolve"]
    assert pd.incident(key).status == "resolved"
    logs = "\n".join(daemon.raw_stderr)
    assert ROUTING_KEY not in logs and WEBHOOK_SECRET not in logs


async def test_a_breach_acknowledged_in_tocsin_and_resolved_in_pagerduty(
    daemon, pd, tmp_path, session
):
    sender(tmp_path).gauge("model.drift.psi", 0.5, tags=["model:a"])
    await pd.wait_for(1)
    alert = await show(daemon, "model=a")
    key = f"tocsin-{alert['uid']}"

    code, _, err = await tocsin(daemon, "ack", str(alert["id"]))
    assert code == 0, err
    await pd.wait_for(2, timeout=5.0)
    assert pd.actions(key) == ["trigger", "acknowledge"]
    assert pd.incident(key).status == "acknowledged"

    body = pd.act(key, "incident.resolved", agent="Ada Lovelace")
    assert await post_webhook(daemon, session, body) == 200

    resolved = await show(daemon, "model=a")
    assert resolved["state"] == "resolved"
    moves = [(t["to_state"], t["actor"]) for t in resolved["history"]]
    assert moves[-2:] == [("investigating", "pagerduty"), ("resolved", "pagerduty")]
    assert moves[1][0] == "acknowledged" and moves[1][1] != "pagerduty"
