"""The alert lifecycle, grouping and silences through the running daemon: the
real DogStatsd client sends, the ``tocsin`` command acts, a webhook stand-in
receives, and ``kill -9`` in the middle loses and repeats nothing."""

from __future__ import annotations

import asyncio
import getpass
import sys

import orjson
import pytest
from datadog.dogstatsd import DogStatsd

from tests.e2e.daemon import DAEMON_HEAD, WAIT, DaemonProcess
from tests.standins.webhook import WebhookStandin

HOOK_ENV = "TOCSIN_TEST_LIFECYCLE_HOOK"

CONFIG = (
    DAEMON_HEAD
    + """
[[channels]]
name = "hook"
type = "webhook"
url_env = "{hook_env}"

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
    text = CONFIG.format(dir=tmp_path, hook_env=HOOK_ENV)
    process = DaemonProcess(tmp_path, text, {HOOK_ENV: hook.url})
    await process.start()
    yield process
    await process.close()


async def tocsin(daemon: DaemonProcess, *argv: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tocsin",
        *argv,
        "-c",
        str(daemon.config_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), WAIT)
    return process.returncode, out.decode(), err.decode()


def sender(directory) -> DogStatsd:
    return DogStatsd(
        socket_path=str(directory / "dsd.sock"),
        disable_telemetry=True,
        socket_timeout=None,
    )


async def test_a_group_is_sent_once_acknowledged_and_survives_kill_9(
    daemon, hook, tmp_path
):
    statsd = sender(tmp_path)
    statsd.gauge("model.drift.psi", 0.5, tags=["model:a"])
    statsd.gauge("model.drift.psi", 0.7, tags=["model:b"])
    await daemon.wait_for_log("alert fired", 2, rule="drift")

    # Both alerts of the rule in one message, once group_wait has passed.
    [message] = await hook.wait_for(1)
    body = message.json
    assert body["reason"] == "first notification"
    assert body["group_labels"] == {"rule": "drift"}
    assert sorted(alert["series"] for alert in body["alerts"]) == [
        "model=a",
        "model=b",
    ]

    code, out, _ = await tocsin(daemon, "alerts", "--json")
    assert code == 0
    listed = orjson.loads(out)
    alerts = {alert["spec"]["series"]: alert for alert in listed}
    first = alerts["model=a"]["id"]
    second = alerts["model=b"]["id"]

    code, _, _ = await tocsin(daemon, "ack", str(first), "-m", "looking at it")
    assert code == 0
    # Investigating needs an acknowledgement first.
    code, _, err = await tocsin(daemon, "investigate", str(second))
    assert code == 1
    assert f"alert {second} is triggered: it can move to acknowledged or" in err

    # kill -9, then a restart: the acknowledgement is kept, and the group's
    # notification is not sent again.
    await daemon.kill()
    await daemon.start()
    code, out, _ = await tocsin(daemon, "show", str(first), "--json")
    assert code == 0
    shown = orjson.loads(out)
    assert shown["state"] == "acknowledged"
    [ack] = [t for t in shown["history"] if t["to_state"] == "acknowledged"]
    assert (ack["actor"], ack["comment"]) == (
        f"api:{getpass.getuser()}",
        "looking at it",
    )

    # A silence holds a new alert back; expiring it sends it, once.
    code, out, err = await tocsin(
        daemon, "silence", "add", 'model="c"', "--duration", "1h", "--json"
    )
    assert code == 0, err
    silence_id = orjson.loads(out)["id"]
    # A new client: the restart made a new socket file.
    sender(tmp_path).gauge("model.drift.psi", 0.9, tags=["model:c"])
    await daemon.wait_for_log("alert fired", rule="drift", series="model=c")
    code, _, err = await tocsin(daemon, "silence", "expire", silence_id)
    assert code == 0, err
    second_message = (await hook.wait_for(2))[1].json
    # The group's message: every alert of the group, the new one among them.
    series = sorted(alert["series"] for alert in second_message["alerts"])
    assert series == ["model=a", "model=b", "model=c"]
    assert second_message["reason"] == "new alerts"
    assert len(hook.requests) == 2


ESCALATING = (
    DAEMON_HEAD
    + """
[[channels]]
name = "page"
type = "webhook"
url_env = "{hook_env}"

[[escalations]]
name = "oncall"
steps = [{{ wait = "0s" }}, {{ wait = "1h", channels = ["page"] }}]

[[rules]]
name = "errors"
metric = "model.errors"
aggregation = "max"
window = "1h"
threshold = 1
escalation = "oncall"
"""
)


async def test_escalating_by_hand_notifies_the_next_step_at_once(tmp_path, hook):
    text = ESCALATING.format(dir=tmp_path, hook_env=HOOK_ENV)
    daemon = DaemonProcess(tmp_path, text, {HOOK_ENV: hook.url + "/page"})
    await daemon.start()
    try:
        sender(tmp_path).gauge("model.errors", 5)
        [fired] = await daemon.wait_for_log("alert fired", rule="errors")

        code, _, err = await tocsin(daemon, "escalate", fired["alert"])
        assert code == 0, err

        # The step an hour away is reached now, not in an hour.
        [paged] = await hook.wait_for(1)
        assert paged.path.endswith("/page")
        assert paged.json["alert"]["state"] == "escalated"
        code, out, _ = await tocsin(daemon, "show", fired["alert"], "--json")
        steps = orjson.loads(out)["escalation"]
        assert [step["state"] for step in steps] == ["reached", "reached"]
    finally:
        await daemon.close()
