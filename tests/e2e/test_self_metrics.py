"""Tocsin's own metrics through the running daemon: DogStatsD lines move the
ingest counters by exactly what was sent, a breach shows as an alert under
its state and a notification under its channel and outcome, on TCP the
scrape needs the API's token, and the export can send them to Datadog."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.daemon import DAEMON_HEAD, WAIT, DaemonProcess
from tests.e2e.test_lifecycle import sender
from tests.standins.datadog import DatadogStandIn
from tests.standins.webhook import WebhookStandin
from tocsin import __version__

ENV = "TOCSIN_TEST_METRICS"
TOKEN = "e2e-metrics-token-3c2b1a09"

CONFIG = (
    DAEMON_HEAD
    + """
[api]
tcp = "127.0.0.1:0"
token_env = "{env}_TOKEN"

[[channels]]
name = "hook"
type = "webhook"
url_env = "{env}_HOOK"

[routing]
channels = ["hook"]
group_by = ["rule"]
group_wait = "1s"
group_interval = "1h"

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
async def hook():
    async with WebhookStandin() as standin:
        yield standin


@pytest.fixture
async def daemon(tmp_path, hook):
    env = {f"{ENV}_TOKEN": TOKEN, f"{ENV}_HOOK": hook.url}
    process = DaemonProcess(tmp_path, CONFIG.format(dir=tmp_path, env=ENV), env)
    await process.start()
    yield process
    await process.close()


@pytest.fixture
async def unix_session(tmp_path):
    connector = aiohttp.UnixConnector(path=str(tmp_path / "state" / "api.sock"))
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


class Scrape:
    """One scrape, its samples by (name, labels)."""

    def __init__(self, text: str, content_type: str) -> None:
        self.text = text
        self.content_type = content_type
        self.samples = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def get(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """Sum ``name`` over every sample whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(
            count
            for (found, have), count in self.samples.items()
            if found == name and wanted <= have
        )


async def scrape(session: aiohttp.ClientSession) -> Scrape:
    async with session.get("http://tocsin/metrics") as response:
        assert response.status == 200, await response.text()
        return Scrape(await response.text(), response.headers["Content-Type"])


async def scrape_until(session, condition) -> Scrape:
    """Scrape until ``condition(scrape)`` holds; fail after :data:`WAIT`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while True:
        found = await scrape(session)
        if condition(found):
            return found
        if loop.time() > deadline:
            raise AssertionError(f"the metrics never met the condition:\n{found.text}")
        await asyncio.sleep(0.05)


def send_raw(tmp_path, *lines: bytes) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        for line in lines:
            sock.sendto(line, str(tmp_path / "dsd.sock"))


async def test_ingest_counters_move_by_exactly_what_was_sent(
    daemon, unix_session, tmp_path
):
    before = await scrape(unix_session)
    samples = "tocsin_ingest_samples_total"
    errors = "tocsin_ingest_parse_errors_total"

    # The malformed line first: the datagrams are read in order, so once the
    # good samples are counted the bad one has been too.
    send_raw(tmp_path, b"model.drift.psi:not-a-number|g")
    statsd = sender(tmp_path)
    for value in (0.01, 0.02, 0.03):
        statsd.gauge("model.drift.psi", value, tags=["model:a"])
    wanted = before.get(samples, listener="unix_dgram") + 3
    after = await scrape_until(
        unix_session, lambda found: found.get(samples, listener="unix_dgram") >= wanted
    )

    assert after.get(samples, listener="unix_dgram") == wanted
    moved = after.total(errors, listener="unix_dgram") - before.total(
        errors, listener="unix_dgram"
    )
    assert moved == 1
    assert after.get("tocsin_rule_series", rule="drift") == 1
    assert after.get("tocsin_rule_evaluations_total") >= 1
    assert after.get("tocsin_build_info", version=__version__) == 1
    assert after.content_type.startswith("text/plain; version=0.0.4")
    # The process collector of the daemon's own registry.
    assert after.get("process_open_fds") > 0


async def test_a_breach_shows_as_an_alert_and_a_delivered_notification(
    daemon, unix_session, hook, tmp_path
):
    sender(tmp_path).gauge("model.drift.psi", 0.5, tags=["model:a"])
    await hook.wait_for(1)

    def delivered(found: Scrape) -> bool:
        # The attempt is counted as it ends, and leaves the outbox once the
        # outbox has recorded it.
        notifications = "tocsin_notifications_total"
        pending = "tocsin_outbox_pending_notifications"
        return (
            found.get(notifications, channel="hook", outcome="delivered") == 1
            and found.samples.get((pending, frozenset({("channel", "hook")}))) == 0
        )

    found = await scrape_until(unix_session, delivered)

    assert found.get("tocsin_alerts", state="triggered") == 1
    assert found.get("tocsin_alerts", state="resolved") == 0
    assert found.get("tocsin_alerts_fired_total") == 1
    assert found.total("tocsin_notifications_total") == 1


async def test_reloads_are_counted_by_outcome(daemon, unix_session):
    async with unix_session.post("http://tocsin/-/reload") as applied:
        assert applied.status == 200
    daemon.config_path.write_text("[[rules]]\nname = 3\n")
    async with unix_session.post("http://tocsin/-/reload") as refused:
        assert refused.status == 400

    found = await scrape(unix_session)

    assert found.get("tocsin_config_reloads_total", outcome="applied") == 1
    assert found.get("tocsin_config_reloads_total", outcome="refused") == 1


async def test_on_tcp_the_scrape_needs_the_token(daemon):
    [bound] = daemon.find("listening", listener="api_tcp")
    url = f"http://{bound['address']}/metrics"

    async with aiohttp.ClientSession() as session:
        async with session.get(url) as refused:
            assert refused.status == 401
            assert "tocsin_" not in await refused.text()
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with session.get(url, headers=headers) as answered:
            assert answered.status == 200
            assert "tocsin_build_info" in await answered.text()
    assert TOKEN not in "\n".join(daemon.raw_stderr)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not on PATH")
async def test_promtool_accepts_the_scrape(daemon, unix_session):
    found = await scrape(unix_session)

    checked = await asyncio.to_thread(
        subprocess.run,
        ["promtool", "check", "metrics"],
        input=found.text.encode(),
        capture_output=True,
    )

    assert checked.returncode == 0, checked.stderr.decode()


EXPORTING = (
    DAEMON_HEAD
    + """
[export.datadog]
base_url = "{url}"
interval = "1s"
tags = ["service:tocsin-e2e"]
metrics = ["model.latency"]
self_metrics = true
"""
)


async def test_the_export_sends_the_self_metrics_to_datadog(tmp_path):
    async with DatadogStandIn() as datadog:
        text = EXPORTING.format(dir=tmp_path, url=datadog.url)
        daemon = DaemonProcess(tmp_path, text, {"DD_API_KEY": datadog.api_key})
        await daemon.start()
        try:
            statsd = sender(tmp_path)
            for value in (1.0, 2.0, 3.0):
                statsd.gauge("model.drift.psi", value)

            def exported() -> float:
                wanted = ["service:tocsin-e2e", "listener:unix_dgram"]
                return sum(
                    item["points"][0]["value"]
                    for item in datadog.accepted_series()
                    if item["metric"] == "tocsin.ingest_samples"
                    and item["tags"] == wanted
                )

            # Each export counts what was ingested since the one before.
            accepted = 1
            async with asyncio.timeout(WAIT):
                while exported() < 3:
                    await datadog.wait_accepted(accepted, timeout=WAIT)
                    accepted += 1
            # One export more: nothing new was ingested, so it adds nothing.
            await datadog.wait_accepted(len(datadog.accepted) + 1, timeout=WAIT)
        finally:
            await daemon.close()

    assert exported() == 3
    names = {item["metric"] for item in datadog.accepted_series()}
    assert {"tocsin.build_info", "tocsin.process_open_fds"} <= names
    # Their selection is the ingested metrics': the self-metrics pass anyway.
    assert "model.drift.psi" not in names
