"""Reloading the running daemon: a bad file over SIGHUP, then a good one through
``tocsin reload``, with the real DogStatsd client as the sender."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys

import pytest
from datadog.dogstatsd import DogStatsd

from tests.e2e.daemon import DAEMON_HEAD, WAIT, DaemonProcess

HEAD = (
    DAEMON_HEAD
    + """
[[channels]]
name = "log"
type = "log"
"""
)

#: Fires on any request count over 2 in the last hour: it shows when the
#: first half of the requests has been counted.
VOLUME_LOW = """
[[rules]]
name = "volume-low"
metric = "model.requests"
aggregation = "sum"
window = "1h"
threshold = 2
channels = ["log"]
"""

#: Fires on more than 5: only both halves together cross it.
VOLUME = VOLUME_LOW.replace("volume-low", "volume").replace("= 2", "= 5")

DRIFT = """
[[rules]]
name = "drift"
metric = "model.drift.psi"
group_by = ["model"]
aggregation = "max"
window = "1h"
threshold = 0.2
channels = ["log"]
"""

REMOVED = "rule 'drift' removed from the configuration"


@pytest.fixture
async def daemon(tmp_path):
    process = DaemonProcess(
        tmp_path, (HEAD + DRIFT + VOLUME_LOW + VOLUME).format(dir=tmp_path)
    )
    await process.start()
    yield process
    await process.close()


def client(directory) -> DogStatsd:
    return DogStatsd(
        socket_path=str(directory / "dsd.sock"),
        disable_telemetry=True,
        socket_timeout=None,
    )


async def reload_command(config_path) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tocsin",
        "reload",
        "--config",
        str(config_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), WAIT)
    return process.returncode, out.decode(), err.decode()


async def test_a_bad_file_is_refused_and_a_good_one_applied_in_place(daemon, tmp_path):
    statsd = client(tmp_path)
    statsd.gauge("model.drift.psi", 0.5, tags=["model:a"])
    await daemon.wait_for_log("alert fired", rule="drift", series="model=a")

    # A broken file over SIGHUP: logged, and the old rules go on alerting.
    good = daemon.config_path.read_text()
    daemon.config_path.write_text(good.replace('window = "1h"', 'window = "5x"', 1))
    daemon.process.send_signal(signal.SIGHUP)
    [failed] = await daemon.wait_for_log("config reload failed", reason="SIGHUP")
    assert failed["level"] == "error"
    assert failed["detail"] == "rules[0].window"
    assert failed["error"].endswith(
        "rules[0].window: invalid duration '5x' (write it like 30s, 5m, 1h or 1d)"
    )
    statsd.gauge("model.drift.psi", 0.7, tags=["model:b"])
    await daemon.wait_for_log("alert fired", rule="drift", series="model=b")

    # Half of the requests before the reload: counted, and under the threshold.
    for _ in range(3):
        statsd.increment("model.requests")
    await daemon.wait_for_log("alert fired", rule="volume-low")
    assert not daemon.find("alert fired", rule="volume")

    daemon.config_path.write_text((HEAD + VOLUME_LOW + VOLUME).format(dir=tmp_path))
    code, out, err = await reload_command(daemon.config_path)
    assert (code, err) == (0, "")
    summary = "2 kept, 0 added, 0 changed, 1 removed: drift"
    assert out == f"{daemon.config_path}: reloaded ({summary})\n"
    [reloaded] = daemon.find("config reloaded", reason="api")
    assert reloaded["detail"]["removed"] == {"count": 1, "names": ["drift"]}

    # The removed rule's alerts resolve, saying why.
    resolved = await daemon.wait_for_log(
        "resolved an alert of a removed rule", 2, rule="drift"
    )
    assert {record["series"] for record in resolved} == {"model=a", "model=b"}
    assert {record["reason"] for record in resolved} == {REMOVED}

    # The other half: the kept rule's window still holds the first.
    for _ in range(3):
        statsd.increment("model.requests")
    await daemon.wait_for_log("alert fired", rule="volume")

    assert await daemon.stop() == 0
    with sqlite3.connect(tmp_path / "state" / "tocsin.db") as db:
        rows = db.execute(
            "SELECT a.series, t.reason FROM transitions t JOIN alerts a"
            " ON a.id = t.alert_id WHERE a.rule = 'drift' AND t.to_state = 'resolved'"
            " ORDER BY a.series"
        ).fetchall()
    assert rows == [("model=a", REMOVED), ("model=b", REMOVED)]
