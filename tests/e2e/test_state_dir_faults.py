"""The state directory on a real file system that fills up, or that is
mounted read-only: the faults a disk gives a daemon in the field.

A full file system makes SQLite refuse its writes mid-run: the daemon warns,
keeps taking samples and evaluating them, sends nothing it has not recorded,
and once there is room sends every alert once. A read-only state directory
at start-up is one clear error line naming the file and the cause, and an
exit status of its own, not a traceback.

These tests mount a small tmpfs, which needs root (CI runs as root); they are
skipped where mounting is not allowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import subprocess

import pytest

from tests.e2e.daemon import WAIT, DaemonProcess
from tests.e2e.test_deleted_database import CONFIG, HOOK_ENV
from tests.e2e.test_lifecycle import sender
from tests.standins.webhook import WebhookStandin
from tocsin.client import Client

#: Alerts fired while the file system is full.
DURING = 10


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def state_fs(tmp_path):
    """A 4 MiB tmpfs at ``tmp_path/state``, unmounted afterwards."""
    directory = tmp_path / "state"
    directory.mkdir()
    try:
        mount("-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(directory))
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"cannot mount a tmpfs here: {error}")
    yield directory
    subprocess.run(["umount", "-l", str(directory)], check=False)


@pytest.fixture
async def hook():
    async with WebhookStandin() as standin:
        yield standin


def fill(directory) -> None:
    """Write zeros to ``directory/filler`` until the file system is full."""
    chunk = bytes(64 * 1024)
    with open(directory / "filler", "wb", buffering=0) as filler:
        with contextlib.suppress(OSError):
            while True:
                filler.write(chunk)
        # Whatever is left is smaller than a chunk: take it a byte at a time.
        try:
            while filler.write(b"\0"):
                pass
        except OSError as error:
            assert error.errno == errno.ENOSPC


async def call(function, *args):
    return await asyncio.to_thread(function, *args)


async def test_a_full_file_system_delays_alerts_and_loses_none(
    tmp_path, state_fs, hook
):
    text = CONFIG.format(dir=tmp_path, hook_env=HOOK_ENV)
    daemon = DaemonProcess(tmp_path, text, {HOOK_ENV: hook.url})
    await daemon.start()
    client = Client(socket=str(state_fs / "api.sock"))
    metrics = sender(tmp_path)
    try:
        metrics.gauge("model.latency", 250, tags=["model:before"])
        await hook.wait_for(1)

        fill(state_fs)
        for index in range(DURING):
            metrics.gauge("model.latency", 250, tags=[f"model:m{index}"])
        [refused] = await daemon.wait_for_log(
            "cannot record an alert decision; retrying"
        )
        during = await call(client.status)

        (state_fs / "filler").unlink()
        await hook.wait_for(1 + DURING, timeout=WAIT)
        assert await daemon.stop() == 0
    finally:
        client.disconnect()
        await daemon.close()

    assert refused["level"] == "warning"
    assert "full" in refused["error"]
    # The API answered, and said how the database fares.
    assert during["state_database"]["errors"] > 0
    # Then each alert once, under a key of its own: the daemon evaluated every
    # sample that came while it could not write.
    keys = [r.headers["Idempotency-Key"] for r in hook.requests]
    assert len(keys) == len(set(keys)) == 1 + DURING
    models = sorted(r.json["alert"]["labels"]["model"] for r in hook.requests)
    assert models == sorted(["before"] + [f"m{i}" for i in range(DURING)])
    assert not [line for line in daemon.raw_stderr if "Traceback" in line]


@pytest.mark.parametrize(
    ("api", "message"),
    [
        # The API socket lives in the state directory by default, and
        # listeners are opened first.
        ("", "cannot open a listener"),
        ("{dir}/api.sock", "cannot open the state database"),
    ],
)
async def test_a_read_only_state_directory_is_one_clear_error(
    tmp_path, state_fs, api, message
):
    mount("-o", "remount,ro", str(state_fs))
    text = CONFIG.format(dir=tmp_path, hook_env=HOOK_ENV)
    if api:
        text += f'\n[api]\nsocket = "{api.format(dir=tmp_path)}"\n'
    daemon = DaemonProcess(tmp_path, text, {HOOK_ENV: "http://127.0.0.1:9/"})
    try:
        await daemon.start(wait_ready=False)
        code = await daemon.wait_exit()
    finally:
        await daemon.close()

    [error] = [r for r in daemon.logs if r.get("level") == "error"]
    assert error["message"] == message
    # The line names the file it could not make, and why.
    assert str(state_fs) in " ".join(str(value) for value in error.values())
    assert "Read-only file system" in error["error"]
    assert code == 1
    assert not [line for line in daemon.raw_stderr if "Traceback" in line]
    assert not daemon.find("ready")
