"""An integration that fails, seen by the running daemon: its health, and
Tocsin's own alert about it, sent to the other integration and never to it.

Two webhook stand-ins: ``broken`` answers 503 to everything until the test
lets it recover, ``fine`` accepts everything. A breach is routed to
``broken``; ``alerts.internal_channels`` lists both.
"""

from __future__ import annotations

import json

import pytest

from tests.e2e.daemon import DAEMON_HEAD, WAIT, DaemonProcess
from tests.e2e.test_lifecycle import sender, tocsin
from tests.standins.webhook import Received, Reply, WebhookStandin

BROKEN_ENV = "TOCSIN_TEST_HEALTH_BROKEN"
FINE_ENV = "TOCSIN_TEST_HEALTH_FINE"
FAILING = "tocsin.integration_failing"

CONFIG = (
    DAEMON_HEAD
    + """
[[channels]]
name = "broken"
type = "webhook"
url_env = "{broken_env}"
backoff = "100ms"
max_backoff = "200ms"
max_attempts = 1000

[[channels]]
name = "fine"
type = "webhook"
url_env = "{fine_env}"

[alerts]
internal_channels = ["broken", "fine"]

[health]
failures = 3
window = "10m"

[routing]
channels = ["fine"]
group_wait = "0s"
group_interval = "0s"

[[rules]]
name = "latency"
metric = "model.latency"
aggregation = "max"
window = "1h"
threshold = 100
channels = ["broken"]
"""
)


@pytest.fixture
async def broken():
    async with WebhookStandin(Reply(503)) as standin:
        yield standin


@pytest.fixture
async def fine():
    async with WebhookStandin() as standin:
        yield standin


@pytest.fixture
async def daemon(tmp_path, broken, fine):
    text = CONFIG.format(dir=tmp_path, broken_env=BROKEN_ENV, fine_env=FINE_ENV)
    env = {BROKEN_ENV: broken.url, FINE_ENV: fine.url}
    process = DaemonProcess(tmp_path, text, env)
    await process.start()
    yield process
    await process.close()


def rule_of(request: Received) -> str:
    return request.json["alert"]["rule"]


async def wait_until(hook: WebhookStandin, wanted) -> Received:
    """Wait for the first request to ``hook`` that ``wanted`` accepts."""
    seen = 0
    while True:
        for request in hook.requests[seen:]:
            if wanted(request):
                return request
        seen = len(hook.requests)
        await hook.wait_for(seen + 1, timeout=WAIT)


async def health_of(daemon, name: str) -> dict:
    code, out, err = await tocsin(daemon, "integrations", "list", "--json")
    assert (code, err) == (0, "")
    [entry] = [entry for entry in json.loads(out) if entry["name"] == name]
    return entry["health"]


async def test_a_failing_integration_is_reported_elsewhere_and_recovers(
    daemon, broken, fine, tmp_path
):
    sender(tmp_path).gauge("model.latency", 250)

    # The meta-alert reaches the other integration.
    fired = await wait_until(
        fine, lambda r: rule_of(r) == FAILING and r.json["event"] == "trigger"
    )
    alert = fired.json["alert"]
    assert alert["labels"]["channel"] == "broken"
    assert alert["severity"] == "critical"
    health = await health_of(daemon, "broken")
    assert health["status"] == "failing"
    assert (health["last_error_reason"], health["last_error_status"]) == (
        "server_error",
        503,
    )
    assert health["backlog"] >= 1
    assert health["failures_24h"] >= 3
    assert (await health_of(daemon, "fine"))["status"] == "healthy"

    # The receiver recovers: the backlog drains, the meta-alert resolves.
    broken.default = Reply(200)
    delivered = await wait_until(broken, lambda r: r.status == 200)
    resolved = await wait_until(
        fine, lambda r: rule_of(r) == FAILING and r.json["event"] == "resolve"
    )
    after = await health_of(daemon, "broken")
    await daemon.stop()

    assert rule_of(delivered) == "latency"
    assert resolved.json["alert"]["labels"] == {"channel": "broken"}
    assert after["backlog"] == 0
    assert after["last_success_at"] is not None
    # Never told of its own failure, though internal_channels lists it.
    assert {rule_of(r) for r in broken.requests} == {"latency"}
    assert daemon.find("Tocsin's own alert fired", channel="broken")
