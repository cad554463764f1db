"""The state database cannot grow: the daemon's file size limit is lowered
from outside while alerts keep firing, as a full disk would stop it.

Writes fail with a clear warning and are retried, reads and the API go on,
nothing crashes and nothing is sent before it is recorded; once there is
room again every alert goes out once, each under its own key.
"""

from __future__ import annotations

import asyncio
import resource

import pytest

from tests.e2e.daemon import WAIT, DaemonProcess
from tests.e2e.test_deleted_database import CONFIG, HOOK_ENV
from tests.e2e.test_lifecycle import sender
from tests.standins.webhook import WebhookStandin
from tocsin.client import Client

#: Alerts fired while the database cannot grow.
DURING = 20


@pytest.fixture
async def hook():
    async with WebhookStandin() as standin:
        yield standin


def limit_file_size(pid: int, size: int) -> None:
    # The soft limit only: an unprivileged process may lower and raise it.
    _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (size, hard))


async def call(function, *args):
    return await asyncio.to_thread(function, *args)


async def test_a_database_that_cannot_grow_delays_alerts_and_loses_none(tmp_path, hook):
    text = CONFIG.format(dir=tmp_path, hook_env=HOOK_ENV)
    daemon = DaemonProcess(tmp_path, text, {HOOK_ENV: hook.url})
    await daemon.start()
    client = Client(socket=str(tmp_path / "state" / "api.sock"))
    metrics = sender(tmp_path)
    try:
        metrics.gauge("model.latency", 250, tags=["model:before"])
        await hook.wait_for(1)

        # No file of the daemon's may grow past one page from now on.
        limit_file_size(daemon.process.pid, 4096)
        for index in range(DURING):
            metrics.gauge("model.latency", 250, tags=[f"model:m{index}"])
        [refused] = await daemon.wait_for_log(
            "cannot record an alert decision; retrying"
        )
        during = await call(client.status)

        limit_file_size(daemon.process.pid, resource.RLIM_INFINITY)
        await hook.wait_for(1 + DURING, timeout=WAIT)
        assert await daemon.stop() == 0
    finally:
        client.disconnect()
        await daemon.close()

    assert refused["level"] == "warning"
    assert "state database" in refused["error"]
    # Nothing went out that was not recorded first; the API still answered.
    assert during["state_database"]["errors"] > 0
    assert during["alerts"] == {"triggered": 1}
    # Then each alert once, under a key of its own.
    keys = [r.headers["Idempotency-Key"] for r in hook.requests]
    assert len(keys) == len(set(keys)) == 1 + DURING
    models = sorted(r.json["alert"]["labels"]["model"] for r in hook.requests)
    assert models == sorted(["before"] + [f"m{i}" for i in range(DURING)])
    assert daemon.process.returncode == 0
