"""Rules and integrations added through the Python client: applied at once,
kept in the state database, and still there after a restart."""

from __future__ import annotations

import asyncio

import pytest

from tests.e2e.daemon import DAEMON_HEAD, DaemonProcess
from tests.e2e.test_lifecycle import sender
from tests.standins.webhook import WebhookStandin
from tocsin.client import Client

CONFIG = (
    DAEMON_HEAD
    + """
[[channels]]
name = "log"
type = "log"
"""
)


@pytest.fixture
async def hook():
    async with WebhookStandin() as standin:
        yield standin


async def call(function, *args, **kwargs):
    # The client is synchronous; the daemon's output is read on this loop.
    return await asyncio.to_thread(function, *args, **kwargs)


async def test_a_rule_and_an_integration_added_at_run_time_work_and_persist(
    tmp_path, hook
):
    daemon = DaemonProcess(tmp_path, CONFIG.format(dir=tmp_path))
    await daemon.start()
    client = Client(socket=str(tmp_path / "state" / "api.sock"))
    secret_url = hook.url + "/runtime"
    try:
        await call(client.add_webhook_integration, "runtime-hook", url=secret_url)
        await call(
            client.create_alert_rule,
            "latency",
            "model.latency",
            threshold=100,
            window="10m",
            channels=["runtime-hook"],
        )

        sender(tmp_path).gauge("model.latency", 250)
        [message] = await hook.wait_for(1)
        assert message.json["alert"]["rule"] == "latency"

        await daemon.stop()
        await daemon.start()

        rules = await call(client.list_alert_rules)
        assert {(rule["name"], rule["source"]) for rule in rules} == {
            ("latency", "api")
        }
        integrations = await call(client.list_integrations)
        assert {(i["name"], i["source"]) for i in integrations} == {
            ("log", "config"),
            ("runtime-hook", "api"),
        }
        # The stored rule still runs after the restart, on the stored channel.
        sender(tmp_path).gauge("model.latency", 10)
        await daemon.wait_for_log("alert resolved", rule="latency")
        await hook.wait_for(2)
        assert secret_url not in str(integrations)
        assert not [line for line in daemon.raw_stderr if secret_url in line]
    finally:
        client.disconnect()
        await daemon.close()
