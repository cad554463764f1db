"""Integration tests and dead letters through the running daemon: the Python
client and the ``tocsin`` command ask, webhook stand-ins answer, and no
destination URL ever shows in an answer or a log line."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.e2e.daemon import DAEMON_HEAD, DaemonProcess
from tests.e2e.test_lifecycle import sender, tocsin
from tests.standins.webhook import Reply, WebhookStandin
from tocsin.client import Client, TocsinAPIError

CONFIG = (
    DAEMON_HEAD
    + """
[[channels]]
name = "good"
type = "webhook"
url_env = "TOCSIN_TEST_GOOD_HOOK"

[[channels]]
name = "down"
type = "webhook"
url_env = "TOCSIN_TEST_DOWN_HOOK"

[[channels]]
name = "refusing"
type = "webhook"
url_env = "TOCSIN_TEST_REFUSING_HOOK"

[[rules]]
name = "latency"
metric = "model.latency"
aggregation = "max"
window = "1h"
threshold = 100
channels = ["refusing"]
"""
)


@pytest.fixture
async def hooks():
    async with (
        WebhookStandin() as good,
        WebhookStandin(Reply(503)) as down,
        WebhookStandin(Reply(401)) as refusing,
    ):
        yield {"good": good, "down": down, "refusing": refusing}


@pytest.fixture
async def daemon(tmp_path, hooks):
    env = {
        "TOCSIN_TEST_GOOD_HOOK": hooks["good"].url + "/good",
        "TOCSIN_TEST_DOWN_HOOK": hooks["down"].url + "/down",
        "TOCSIN_TEST_REFUSING_HOOK": hooks["refusing"].url + "/refusing",
    }
    process = DaemonProcess(tmp_path, CONFIG.format(dir=tmp_path), env)
    process.urls = list(env.values())
    await process.start()
    yield process
    await process.close()


@pytest.fixture
def client(tmp_path):
    with Client(socket=str(tmp_path / "state" / "api.sock")) as connected:
        yield connected


async def call(function, *args):
    # The client is synchronous; the daemon's output is read on this loop.
    return await asyncio.to_thread(function, *args)


def assert_no_url(daemon: DaemonProcess, *texts: str) -> None:
    for url in daemon.urls:
        assert not [text for text in texts if url in text]
        assert not [line for line in daemon.raw_stderr if url in line]


async def test_a_test_makes_one_attempt_through_the_running_channel(
    daemon, hooks, client
):
    delivered = await call(client.test_integration, "good")
    refused = await call(client.test_integration, "down")
    with pytest.raises(TocsinAPIError) as unknown:
        await call(client.test_integration, "nope")

    assert delivered["ok"] is True
    assert delivered["status"] == 200
    assert delivered["duration_ms"] >= 0
    assert refused == {
        "ok": False,
        "status": 503,
        "duration_ms": refused["duration_ms"],
        "reason": "server_error",
        "error": "channel down: HTTP 503 Service Unavailable",
    }
    assert unknown.value.status == 404
    # The sample went out as a real trigger would, clearly labelled.
    [sample] = hooks["good"].requests
    alert = sample.json["alert"]
    assert (alert["rule"], alert["summary"], alert["severity"]) == (
        "tocsin.test",
        "Test notification from Tocsin",
        "info",
    )
    assert alert["labels"]["integration"] == "good"
    assert sample.headers["Idempotency-Key"].startswith("tocsin-test-")
    # Past the outbox: nothing queued, nothing to retry.
    assert len(hooks["down"].requests) == 1
    assert (await call(client.status))["pending_notifications"] == 0
    tests = daemon.find("integration test sent")
    assert [(t["channel"], t["reason"]) for t in tests] == [
        ("good", "ok"),
        ("down", "server_error"),
    ]
    assert_no_url(daemon, json.dumps([delivered, refused]))


async def test_the_commands_list_and_test_integrations(daemon, hooks):
    listed = await tocsin(daemon, "integrations", "list")
    good = await tocsin(daemon, "integrations", "test", "good")
    down = await tocsin(daemon, "integrations", "test", "down", "--json")

    assert listed == (
        0,
        "NAME      TYPE     SOURCE  STATUS   LAST SUCCESS  FAILURES 24H  BACKLOG"
        "  LAST ERROR\n"
        "good      webhook  config  healthy  -             0             0"
        "        -\n"
        "down      webhook  config  healthy  -             0             0"
        "        -\n"
        "refusing  webhook  config  healthy  -             0             0"
        "        -\n",
        "",
    )
    assert good[0] == 0
    assert good[1].startswith("integration good: delivered (HTTP 200, ")
    assert down[0] == 1
    assert json.loads(down[1])["reason"] == "server_error"
    assert_no_url(daemon, *listed[1:], *good[1:], *down[1:])


async def test_a_dead_letter_shows_in_the_api_and_the_command(
    tmp_path, daemon, hooks, client
):
    sender(tmp_path).gauge("model.latency", 250)
    await daemon.wait_for_log("notification dead-lettered: final error")

    [letter] = await call(client.list_dead_letters)
    status, table, _ = await tocsin(daemon, "deadletters", "--channel", "refusing")
    _, empty, _ = await tocsin(daemon, "deadletters", "--channel", "good")

    assert (letter["channel"], letter["rule"], letter["event"]) == (
        "refusing",
        "latency",
        "trigger",
    )
    assert (letter["attempts"], letter["last_status"], letter["reason"]) == (
        1,
        401,
        "auth",
    )
    assert letter["last_error"] == "channel refusing: HTTP 401 Unauthorized"
    assert letter["dead_at"] >= letter["created_at"]
    assert status == 0
    header, row = table.splitlines()
    assert header.split()[:4] == ["ID", "CHANNEL", "EVENT", "RULE"]
    assert row.split()[1:4] == ["refusing", "trigger", "latency"]
    assert empty == "no dead letters\n"
    assert_no_url(daemon, json.dumps(letter), table)


async def test_an_integration_added_at_run_time_can_be_tested_until_removed(
    daemon, hooks, client
):
    url = hooks["good"].url + "/added"
    await call(lambda: client.add_webhook_integration("added", url=url))

    result = await call(client.test_integration, "added")
    await call(client.delete_integration, "added")
    with pytest.raises(TocsinAPIError) as removed:
        await call(client.test_integration, "added")

    assert result["ok"] is True
    assert [r.path for r in hooks["good"].requests] == [
        "/hook/secret-token-0123456789/added"
    ]
    assert removed.value.status == 404
    daemon.urls.append(url)
    assert_no_url(daemon, json.dumps(result))
