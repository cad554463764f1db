"""The audit log through the running daemon: a breach delivered after a 503,
a silence added and expired, a reload, all read back with ``tocsin audit``
after a restart, and no secret in any of it."""

from __future__ import annotations

import asyncio
import json
import signal

import pytest

from tests.e2e.daemon import DAEMON_HEAD, DaemonProcess
from tests.e2e.test_lifecycle import sender, tocsin
from tests.standins.webhook import WebhookStandin
from tocsin.client import Client

HEADER_SECRET = "Bearer audit-header-secret-42"

CONFIG = (
    DAEMON_HEAD
    + """
[audit]
record_payloads = true

[[channels]]
name = "hook"
type = "webhook"
url_env = "TOCSIN_TEST_AUDIT_HOOK"
backoff = "100ms"
max_backoff = "200ms"
headers = {{ Authorization = "Bearer audit-header-secret-42" }}

[[rules]]
name = "latency"
metric = "model.latency"
aggregation = "max"
window = "1h"
threshold = 100
channels = ["hook"]
"""
)


@pytest.fixture
async def hook():
    async with WebhookStandin() as standin:
        yield standin


@pytest.fixture
async def daemon(tmp_path, hook):
    env = {"TOCSIN_TEST_AUDIT_HOOK": hook.url + "/audit"}
    process = DaemonProcess(tmp_path, CONFIG.format(dir=tmp_path), env)
    process.url = env["TOCSIN_TEST_AUDIT_HOOK"]
    await process.start()
    yield process
    await process.close()


async def audit(daemon, *argv: str) -> list[dict]:
    status, out, err = await tocsin(daemon, "audit", "--json", *argv)
    assert (status, err) == (0, ""), err
    return json.loads(out)["entries"]


async def test_the_audit_tells_what_happened_without_a_secret(tmp_path, daemon, hook):
    # A breach: the stand-in answers 503, then 200 to the retry.
    hook.reply(503)
    sender(tmp_path).gauge("model.latency", 250)
    first, second = await hook.wait_for(2)

    # A silence added and expired, and a reload, each through the command.
    added = await tocsin(daemon, "silence", "add", 'team="ml"', "--duration", "1h")
    silence_id = added[1].split()[1].rstrip(":")
    expired = await tocsin(daemon, "silence", "expire", silence_id)
    reloaded = await tocsin(daemon, "reload")
    assert [added[0], expired[0], reloaded[0]] == [0, 0, 0]
    # An integration added through the API, its URL a secret.
    added_url = hook.url + "/added"
    with Client(socket=str(tmp_path / "state" / "api.sock")) as client:
        await asyncio.to_thread(client.add_webhook_integration, "added", url=added_url)

    # A clean stop records every attempt made; the log outlives the process.
    assert await daemon.stop(signal.SIGTERM) == 0
    await daemon.start()
    entries = await audit(daemon)
    deliveries = await audit(daemon, "--kind", "delivery", "--channel", "hook")
    table = await tocsin(daemon, "audit", "--alert", deliveries[0]["alert"])

    assert [(e["attempt"], e["action"], e["status"]) for e in deliveries] == [
        (2, "delivered", 200),
        (1, "retry", 503),
    ]
    assert deliveries[1]["reason"] == "server_error"
    # Each attempt kept the body it sent, as the stand-in received it.
    assert [json.loads(e["payload"]) for e in deliveries] == [second.json, first.json]
    [fired] = [e for e in entries if e["kind"] == "transition"]
    assert (fired["action"], fired["rule"]) == ("triggered", "latency")
    assert fired["alert"] == deliveries[0]["alert"]
    silences = [(e["action"], e["subject"]) for e in entries if e["kind"] == "silence"]
    assert silences == [("expired", silence_id), ("created", silence_id)]
    integration, reload = [e for e in entries if e["kind"] == "config"]
    assert (reload["action"], reload["actor"]) == ("reloaded", "api")
    assert reload["detail"]["kept"] == ["latency"]
    assert (integration["action"], integration["subject"]) == (
        "integration_added",
        "added",
    )
    assert integration["actor"].startswith("api:")
    assert integration["detail"]["integration"]["url"] == "********"
    assert [e["at"] for e in entries] == sorted(
        (e["at"] for e in entries), reverse=True
    )
    # The alert's own entries, as a table for people.
    assert table[0] == 0
    assert [line.split()[2] for line in table[1].splitlines()[1:]] == [
        "delivery",
        "delivery",
        "transition",
    ]
    # No secret anywhere: not the URL, not the header, not in the log.
    everything = json.dumps(entries) + table[1]
    for secret in (daemon.url, added_url, "secret-token-0123456789", HEADER_SECRET):
        assert secret not in everything
        assert not [line for line in daemon.raw_stderr if secret in line]
