"""Escalation steps and delivery retries through the running daemon: the
real DogStatsd client sends, the ``tocsin`` command acts, a webhook stand-in
receives."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from tests.e2e.daemon import DAEMON_HEAD, DaemonProcess
from tests.e2e.test_lifecycle import sender, tocsin
from tests.standins.webhook import Received, WebhookStandin
from tocsin.client import Client

BASE_ENV = "TOCSIN_TEST_ESCALATION_HOOK"

ESCALATION = (
    DAEMON_HEAD
    + """
[[channels]]
name = "first"
type = "webhook"
url_env = "{env}_FIRST"

[[channels]]
name = "page"
type = "webhook"
url_env = "{env}_PAGE"

[[escalations]]
name = "oncall"
steps = [
  {{ wait = "0s", channels = ["first"] }},
  {{ wait = "5s", channels = ["page"] }},
]

[[rules]]
name = "drift"
metric = "model.drift.psi"
group_by = ["model"]
aggregation = "max"
window = "1h"
threshold = 0.2
escalation = "oncall"
"""
)


@pytest.fixture
async def hook():
    async with WebhookStandin() as standin:
        yield standin


def at_path(hook: WebhookStandin, path: str) -> str:
    """Return the stand-in's URL with ``path`` instead of its own."""
    return hook.url.split("/hook/", 1)[0] + path


def requests_to(hook: WebhookStandin, path: str) -> list[Received]:
    return [request for request in hook.requests if request.path == path]


def series_of(request: Received) -> list[str]:
    return sorted(alert["series"] for alert in request.json["alerts"])


@pytest.fixture
async def escalating(tmp_path, hook):
    env = {
        f"{BASE_ENV}_FIRST": at_path(hook, "/first"),
        f"{BASE_ENV}_PAGE": at_path(hook, "/page"),
    }
    text = ESCALATION.format(dir=tmp_path, env=BASE_ENV)
    process = DaemonProcess(tmp_path, text, env)
    await process.start()
    yield process
    await process.close()


@pytest.fixture
async def bare(tmp_path):
    process = DaemonProcess(tmp_path, DAEMON_HEAD.format(dir=tmp_path))
    await process.start()
    yield process
    await process.close()


async def show(daemon: DaemonProcess, series: str) -> dict:
    code, out, err = await tocsin(daemon, "alerts", "--json")
    assert code == 0, err
    [alert_id] = [a["id"] for a in orjson.loads(out) if a["spec"]["series"] == series]
    code, out, err = await tocsin(daemon, "show", str(alert_id), "--json")
    assert code == 0, err

    return orjson.loads(out)


def client_of(daemon: DaemonProcess) -> Client:
    return Client(socket=str(daemon.directory / "state" / "api.sock"))


async def call(function, *args, **kwargs):
    """Run a blocking client call off the loop that reads the daemon's log."""
    return await asyncio.to_thread(function, *args, **kwargs)


async def test_an_acknowledged_alert_does_not_escalate(escalating, hook, tmp_path):
    statsd = sender(tmp_path)
    statsd.gauge("model.drift.psi", 0.5, tags=["model:a"])
    [first] = await hook.wait_for(1)
    assert (first.path, series_of(first)) == ("/first", ["model=a"])

    # The in-process client, not the command: the acknowledgement must land
    # well before the page step is due, even on a loaded machine.
    with client_of(escalating) as client:
        alerts = await call(client.list_alerts)
        [alert_id] = [a["id"] for a in alerts if a["spec"]["series"] == "model=a"]
        await call(client.acknowledge, alert_id)

    # A second alert fires after the acknowledgement, so its page step is due
    # after the first alert's was; once it is paged, the first's deadline
    # has passed.
    statsd.gauge("model.drift.psi", 0.6, tags=["model:b"])
    await escalating.wait_for_log("alert escalated", series="model=b")
    await hook.wait_for(3)

    assert [series_of(r) for r in requests_to(hook, "/page")] == [["model=b"]]
    acknowledged = await show(escalating, "model=a")
    assert acknowledged["state"] == "acknowledged"
    steps = [(s["step"], s["state"]) for s in acknowledged["escalation"]]
    assert [state for _, state in steps] == ["reached", "cancelled"]
    assert "escalated" not in [t["to_state"] for t in acknowledged["history"]]
    assert not escalating.find("alert escalated", series="model=a")


async def test_an_unacknowledged_alert_escalates(escalating, hook, tmp_path):
    sender(tmp_path).gauge("model.drift.psi", 0.5, tags=["model:a"])
    await hook.wait_for(2)

    assert [r.path for r in hook.requests] == ["/first", "/page"]
    assert series_of(hook.requests[1]) == ["model=a"]
    escalated = await show(escalating, "model=a")
    assert escalated["state"] == "escalated"
    assert [s["state"] for s in escalated["escalation"]] == ["reached", "reached"]


async def test_a_grouped_message_refused_with_500_is_sent_again_once(bare, hook):
    hook.reply(500)
    with client_of(bare) as client:
        await call(client.add_webhook_integration, "ops", url=hook.url, backoff="100ms")
        await call(client.configure_grouping, group_by=["rule"], group_wait="1s")
        await call(
            client.create_alert_rule,
            "errors",
            "api.errors",
            threshold=10,
            window="1h",
            aggregation="sum",
            group_by=["service"],
            channels=["ops"],
        )

    statsd = sender(bare.directory)
    statsd.increment("api.errors", 25, tags=["service:a"])
    statsd.increment("api.errors", 25, tags=["service:b"])
    refused, sent = await hook.wait_for(2)

    assert (refused.status, sent.status) == (500, 200)
    assert refused.body == sent.body
    assert series_of(sent) == ["service=a", "service=b"]
    await bare.wait_for_log("delivery failed; retrying", channel="ops")
    assert len(hook.requests) == 2
