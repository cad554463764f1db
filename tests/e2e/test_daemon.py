"""The whole daemon as a subprocess: real sockets, a real SQLite file, the real
DogStatsd client as the sender, and local stand-ins for the destinations."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import sqlite3
import time
from datetime import datetime

import orjson
import pytest
from datadog.dogstatsd import DogStatsd

from tests.e2e.daemon import DaemonProcess, free_udp_port
from tests.standins.datadog import DatadogStandIn
from tests.standins.webhook import WebhookStandin

HOOK_ENV = "TOCSIN_TEST_HOOK_URL"

CONFIG = """
[daemon]
state_dir = "{dir}/state"
tick = "100ms"
shutdown_timeout = "5s"

[ingest]
udp = "127.0.0.1:{udp_port}"
unix_dgram = "{dir}/dsd.sock"
unix_stream = "{dir}/ingest.sock"

[export.datadog]
base_url = "{datadog}"
interval = "{interval}"
tags = ["service:tocsin-test"]

[[channels]]
name = "hook"
type = "webhook"
url_env = "{hook_env}"
timeout = "2s"
backoff = "100ms"
max_backoff = "500ms"

[[channels]]
name = "log"
type = "log"

[[rules]]
name = "drift"
metric = "model.drift.psi"
match = {{ env = "test" }}
group_by = ["model", "project"]
aggregation = "max"
window = "2s"
op = ">"
threshold = 0.2
severity = "high"
channels = ["hook", "log"]
summary = "Prediction drift on {{{{ labels.model }}}} ({{{{ labels.project }}}})"
runbook = "https://runbooks.example/drift"
recommended_actions = ["Compare live features with the training set"]
labels = {{ team = "ml-platform" }}
metadata = {{ owner = "risk-ml" }}

[[rules]]
name = "error-ratio"
metric = "err_ratio"
aggregation = "min"
window = "5m"
op = ">"
threshold = 0.5
channels = ["hook"]
"""


@pytest.fixture
async def hook():
    async with WebhookStandin() as standin:
        yield standin


@pytest.fixture
async def datadog():
    async with DatadogStandIn() as standin:
        yield standin


@pytest.fixture
async def make_daemon(tmp_path, hook, datadog):
    started: list[DaemonProcess] = []
    udp_port = free_udp_port()

    def make(interval: str = "1s") -> DaemonProcess:
        text = CONFIG.format(
            dir=tmp_path,
            udp_port=udp_port,
            datadog=datadog.url,
            interval=interval,
            hook_env=HOOK_ENV,
        )
        env = {HOOK_ENV: hook.url + "/alerts", "DD_API_KEY": datadog.api_key}
        daemon = DaemonProcess(tmp_path, text, env)
        daemon.udp_port = udp_port
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        await daemon.close()


@pytest.fixture
async def daemon(make_daemon):
    process = make_daemon()
    await process.start()
    yield process
    await process.close()


def unix_client(directory) -> DogStatsd:
    return DogStatsd(
        socket_path=str(directory / "dsd.sock"),
        disable_telemetry=True,
        socket_timeout=None,
        constant_tags=["env:test", "project:risk"],
    )


def drift(client: DogStatsd, value: float, model: str = "fraud_v3") -> None:
    client.gauge("model.drift.psi", value, tags=[f"model:{model}"])


def parse_time(text: str) -> datetime:
    assert text.endswith("Z")
    return datetime.fromisoformat(text)


async def test_a_drift_alert_travels_from_the_unix_socket_to_the_webhook(
    daemon, hook, tmp_path
):
    client = unix_client(tmp_path)

    drift(client, 0.5)
    [trigger] = await hook.wait_for(1)
    # No samples follow, so the window runs empty and the alert resolves.
    requests = await hook.wait_for(2)

    body = trigger.json
    alert = body["alert"]
    assert body["event"] == "trigger"
    assert body["status"] == "firing"
    assert trigger.headers["Idempotency-Key"] == body["idempotency_key"]
    assert alert["rule"] == "drift"
    assert alert["name"] == "Prediction drift on fraud_v3 (risk)"
    assert alert["model"] == "fraud_v3"
    assert alert["project"] == "risk"
    assert alert["labels"] == {
        "model": "fraud_v3",
        "project": "risk",
        "team": "ml-platform",
    }
    assert alert["severity"] == "high"
    assert alert["metric"] == "model.drift.psi"
    assert alert["value"] == 0.5
    assert alert["threshold"] == 0.2
    assert alert["window"] == "2s"
    assert alert["runbook"] == "https://runbooks.example/drift"
    assert alert["recommended_actions"] == [
        "Compare live features with the training set"
    ]
    assert alert["metadata"] == {"owner": "risk-ml"}
    parse_time(alert["fired_at"])

    resolve = requests[1].json
    assert resolve["event"] == "resolve"
    assert resolve["status"] == "resolved"
    assert resolve["alert"]["uid"] == alert["uid"]
    assert resolve["idempotency_key"] != body["idempotency_key"]
    assert parse_time(resolve["alert"]["resolved_at"]) >= parse_time(alert["fired_at"])

    assert await daemon.stop() == 0
    messages = [record["message"] for record in daemon.logs]
    for step in ("listeners closed", "state database closed", "stopped"):
        assert step in messages
    with sqlite3.connect(tmp_path / "state" / "tocsin.db") as db:
        transitions = db.execute(
            "SELECT from_state, to_state FROM transitions ORDER BY id"
        ).fetchall()
    assert transitions == [(None, "triggered"), ("triggered", "resolved")]


async def test_udp_datagrams_fire_the_same_rule(daemon, hook):
    client = DogStatsd(
        host="127.0.0.1",
        port=daemon.udp_port,
        disable_telemetry=True,
        constant_tags=["env:test", "project:risk"],
    )

    drift(client, 0.9, model="churn_v1")
    [trigger] = await hook.wait_for(1)

    assert trigger.json["alert"]["model"] == "churn_v1"
    assert trigger.json["alert"]["value"] == 0.9


async def test_ingested_series_are_exported_to_datadog_with_their_types(
    daemon, datadog, tmp_path
):
    client = unix_client(tmp_path)

    client.increment("model.predictions", 3, tags=["model:fraud_v3"])
    client.gauge("model.queue_depth", 7, tags=["model:fraud_v3"])
    client.timing("model.latency_ms", 12.5, tags=["model:fraud_v3"])
    await datadog.wait_accepted(1)

    series = {item["metric"]: item for item in datadog.accepted_series()}
    # A counter goes out as the Agent sends it: a rate over the interval,
    # measured (about the configured 1 s), whose value times interval is 3.
    counter = series["model.predictions"]
    assert counter["type"] == 2
    assert counter["points"][0]["value"] * counter["interval"] == pytest.approx(3)
    assert series["model.queue_depth"]["type"] == 3
    assert series["model.latency_ms.max"]["points"][0]["value"] == 12.5
    assert "model:fraud_v3" in series["model.queue_depth"]["tags"]
    assert "service:tocsin-test" in series["model.queue_depth"]["tags"]
    assert "env:test" in series["model.queue_depth"]["tags"]


async def test_shutdown_flushes_the_pending_export(
    make_daemon, datadog, hook, tmp_path
):
    daemon = make_daemon(interval="1h")
    await daemon.start()
    client = unix_client(tmp_path)

    client.gauge("model.queue_depth", 42, tags=["model:fraud_v3"])
    # The alert proves the daemon has read the datagram with the gauge before it.
    drift(client, 0.7)
    await hook.wait_for(1)
    assert datadog.requests == []
    assert await daemon.stop() == 0

    values = {
        item["metric"]: item["points"][0]["value"] for item in datadog.accepted_series()
    }
    assert values["model.queue_depth"] == 42
    await daemon.wait_for_log("flushing the datadog export")


async def test_after_kill_9_a_firing_alert_is_still_the_same_alert(
    make_daemon, hook, tmp_path
):
    daemon = make_daemon()
    await daemon.start()
    drift(unix_client(tmp_path), 0.6)
    [trigger] = await hook.wait_for(1)

    await daemon.kill()
    await daemon.start()
    await daemon.wait_for_log("restored open alerts", count=1)
    # Still breaching after the restart: this must not be a second alert.
    drift(unix_client(tmp_path), 0.8)
    requests = await wait_for_event(hook, "resolve")
    await daemon.close()

    triggers = [request for request in requests if request.json["event"] == "trigger"]
    # kill -9 may land between the receiver's answer and the record of it; the
    # trigger is then sent again, with the same idempotency key.
    assert {request.headers["Idempotency-Key"] for request in triggers} == {
        trigger.headers["Idempotency-Key"]
    }
    assert requests[-1].json["alert"]["uid"] == trigger.json["alert"]["uid"]
    assert daemon.find("alert fired") == []


async def wait_for_event(hook, event: str) -> list:
    """Wait until a notification of ``event`` arrived; return all requests."""
    count = 1
    while True:
        requests = await hook.wait_for(count)
        if requests[-1].json["event"] == event:
            return requests
        count += 1


async def test_a_notification_in_flight_at_kill_9_is_delivered_after_restart(
    make_daemon, hook, tmp_path
):
    daemon = make_daemon()
    await daemon.start()
    hook.reply(200, hold=True)
    drift(unix_client(tmp_path), 0.6)
    [first] = await hook.wait_for(1)

    await daemon.kill()
    hook.release()
    await daemon.start()
    second = (await hook.wait_for(2))[1]
    await daemon.close()

    assert second.json["event"] == "trigger"
    assert second.headers["Idempotency-Key"] == first.headers["Idempotency-Key"]


async def test_ndjson_samples_fire_rules_and_non_finite_values_are_refused(
    daemon, hook, tmp_path
):
    reader, writer = await asyncio.open_unix_connection(str(tmp_path / "ingest.sock"))
    lines = [
        b'{"metric":"err_ratio","value":NaN}',
        b'{"metric":"err_ratio","value":NaN}',
        b'{"metric":"err_ratio","value":NaN}',
        b'{"metric":"err_ratio","value":Infinity}',
        b"not json at all",
        b'{"metric":"model.drift.psi","value":0.4,'
        b'"tags":{"env":"test","model":"ranker","project":"search"}}',
    ]
    writer.write(b"\n".join(lines) + b"\n")
    await writer.drain()
    [trigger] = await hook.wait_for(1)
    writer.close()
    await daemon.stop()

    assert trigger.json["alert"]["rule"] == "drift"
    assert trigger.json["alert"]["model"] == "ranker"
    [totals] = daemon.find("ingest totals", listener="unix_stream")
    assert totals["detail"]["non_finite"] == 4
    assert totals["detail"]["parse_errors"] == 1
    assert totals["detail"]["samples"] == 1
    # Only the drift alert went out: NaN and Infinity never reached the rule.
    assert len(hook.requests) == 1
    assert b"NaN" not in hook.requests[0].body


async def test_samples_too_late_for_their_window_are_counted_in_the_rules_totals(
    daemon, tmp_path
):
    reader, writer = await asyncio.open_unix_connection(str(tmp_path / "ingest.sock"))
    # Within ingest.max_sample_age, but a minute behind a 2s window.
    stamp = int(time.time()) - 60
    writer.write(
        b'{"metric":"model.drift.psi","value":0.1,"timestamp":%d,'
        b'"tags":{"env":"test","model":"ranker"}}\n' % stamp
    )
    await writer.drain()
    writer.close()
    await daemon.stop()

    [ingested] = daemon.find("ingest totals", listener="unix_stream")
    assert ingested["detail"]["samples"] == 1
    [totals] = daemon.find("rules totals")
    assert totals["detail"]["late_samples"] == 1


async def test_a_bad_line_loses_nothing_else_in_its_datagram(
    daemon, hook, datadog, tmp_path
):
    """A line with invalid UTF-8 is refused; the rest of its datagram, a later
    non-ASCII name, the next database write and the next export all succeed."""
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sender.connect(str(tmp_path / "dsd.sock"))
    sender.send(b"m:1|c|#host:\xff\xfe\nok.count:1|c|#env:test\n")
    sender.send("модель.latency:12|ms|#env:prod".encode())
    # Longer than a datagram may be: dropped whole, counted in the totals.
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    sender.send(b"cut.count:1|c\n" * 5000)
    sender.send(b"model.drift.psi:0.3|g|#env:test,model:a,project:p")
    sender.close()

    await hook.wait_for(1)
    await datadog.wait_accepted(1)
    await daemon.stop()

    exported = {item["metric"] for item in datadog.accepted_series()}
    assert "ok.count" in exported
    assert "m" not in exported
    assert "cut.count" not in exported
    [totals] = daemon.find("ingest totals", listener="unix_dgram")
    assert totals["detail"]["errors_by_reason"] == {"utf8": 1}
    assert totals["detail"]["too_long_datagrams"] == 1
    assert not daemon.find("unexpected error")


async def test_the_webhook_url_and_api_key_never_reach_the_log(
    daemon, hook, datadog, tmp_path
):
    drift(unix_client(tmp_path), 0.5)
    await hook.wait_for(1)
    await datadog.wait_accepted(1)
    await daemon.stop()

    text = "\n".join(daemon.raw_stderr)
    assert hook.url not in text
    assert datadog.api_key not in text
    assert orjson.loads(daemon.raw_stderr[0])["message"] == "starting tocsin"


async def test_an_unreadable_webhook_url_stops_start_up_before_any_state(tmp_path):
    text = CONFIG.format(
        dir=tmp_path,
        udp_port=free_udp_port(),
        datadog="http://127.0.0.1:9",
        interval="1s",
        hook_env="TOCSIN_TEST_UNSET_VARIABLE",
    )
    daemon = DaemonProcess(tmp_path, text)

    await daemon.start(wait_ready=False)
    code = await daemon.wait_exit()

    assert code == 2
    [error] = daemon.find_prefix("config error")
    assert "TOCSIN_TEST_UNSET_VARIABLE" in error["message"]
    assert not (tmp_path / "state").exists()


def occupy(listener: str, directory) -> tuple[socket.socket, str]:
    """Bind, as another process would, the address ``listener`` is given."""
    if listener == "udp":
        taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        taken.bind(("127.0.0.1", 0))
        return taken, f"127.0.0.1:{taken.getsockname()[1]}"
    taken = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    taken.bind(str(directory / "ingest.sock"))
    taken.listen()
    return taken, str(directory / "ingest.sock")


@pytest.mark.parametrize(
    ("listener", "reason"),
    [
        ("udp", os.strerror(errno.EADDRINUSE)),
        ("unix_stream", "another process listens on this socket"),
    ],
)
async def test_a_listener_that_cannot_bind_stops_start_up_before_any_state(
    tmp_path, listener, reason
):
    taken, address = occupy(listener, tmp_path)
    # Only the listener under test: UDP's default port may be taken too.
    ingest = {"udp": "", listener: address}
    text = f'[daemon]\nstate_dir = "{tmp_path}/state"\n[ingest]\n' + "".join(
        f'{name} = "{value}"\n' for name, value in ingest.items()
    )
    daemon = DaemonProcess(tmp_path, text)
    try:
        await daemon.start(wait_ready=False)
        code = await daemon.wait_exit()
    finally:
        await daemon.close()
        taken.close()

    assert code == 1
    [error] = daemon.find("cannot open a listener")
    assert (error["listener"], error["address"]) == (listener, address)
    assert error["error"] == reason
    assert not (tmp_path / "state").exists()


async def test_a_rule_that_notifies_nobody_is_logged_as_a_warning(tmp_path):
    text = (
        f'[daemon]\nstate_dir = "{tmp_path}/state"\n[ingest]\nudp = ""\n'
        '[[rules]]\nname = "record-only"\nmetric = "m"\nthreshold = 1\n'
    )
    # An empty key keeps the export off, whatever the environment holds.
    daemon = DaemonProcess(tmp_path, text, {"DD_API_KEY": ""})
    try:
        await daemon.start()
        assert await daemon.stop() == 0
    finally:
        await daemon.close()

    [warning] = [record for record in daemon.logs if record["level"] == "warning"]
    assert warning["message"] == (
        "config warning: rules[0].channels: no channels: alerts of rule"
        " 'record-only' are recorded but nobody is notified"
    )
    assert warning["path"] == str(daemon.config_path)
