"""The real daemon under systemd-socket-activate, notifying a socket the test
owns: its passed sockets work, and it says ready, reloading, stopping and
alive as systemd expects."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys

import pytest

from tests.e2e.daemon import DAEMON_HEAD, WAIT, DaemonProcess, free_udp_port
from tocsin.client import Client

ACTIVATE = shutil.which("systemd-socket-activate")

pytestmark = pytest.mark.skipif(
    ACTIVATE is None,
    reason="systemd-socket-activate is missing (Debian's systemd package has it)",
)

#: The config leaves UDP off: the socket systemd passes turns it on.
CONFIG = (
    DAEMON_HEAD
    + """
[api]
socket = "{dir}/api.sock"

[[channels]]
name = "log"
type = "log"

[[rules]]
name = "volume"
metric = "model.requests"
aggregation = "sum"
window = "1h"
threshold = 1
channels = ["log"]
"""
)

#: systemd's watchdog timeout for the test, in microseconds: a ping every 0.1s.
WATCHDOG_USEC = 200_000


class Manager:
    """A datagram socket in the role of systemd's notification socket."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setblocking(False)
        #: Every notification, as its assignments.
        self.messages: list[dict[str, str]] = []
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task | None = None

    def start(self) -> None:
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 4096)
            lines = data.decode().split("\n")
            message = dict(line.split("=", 1) for line in lines if line)
            async with self._changed:
                self.messages.append(message)
                self._changed.notify_all()

    async def wait_for(self, test, count: int = 1, after: int = 0) -> int:
        """Wait for ``count`` messages past index ``after`` that pass ``test``;
        return the index of the last."""

        def found() -> list[int]:
            return [
                index
                for index, message in enumerate(self.messages)
                if index >= after and test(message)
            ]

        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: len(found()) >= count), WAIT
                )
            except TimeoutError:
                raise AssertionError(
                    f"no such notification; received: {self.messages}"
                ) from None
        return found()[count - 1]

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with pytest.raises(asyncio.CancelledError):
                await self._reader
        self.sock.close()


def has(key: str, value: str | None = None):
    return lambda message: key in message and value in (None, message[key])


@pytest.fixture
async def manager(tmp_path):
    manager = Manager(str(tmp_path / "notify.sock"))
    manager.start()
    yield manager
    await manager.close()


def activation(manager: Manager, udp_port: int, tmp_path) -> list[str]:
    """Two systemd-socket-activate: one listens on datagrams, the other on
    streams and passes the first one's sockets on with its own."""
    inner_env = [f"--setenv=NOTIFY_SOCKET={manager.path}"]
    inner_env.append(f"--setenv=WATCHDOG_USEC={WATCHDOG_USEC}")
    # It passes on only the variables it is told to.
    if "PYTHONPATH" in os.environ:
        inner_env.append(f"--setenv=PYTHONPATH={os.environ['PYTHONPATH']}")
    return [
        ACTIVATE,
        "--datagram",
        f"--listen=127.0.0.1:{udp_port}",
        f"--listen={tmp_path}/dsd.sock",
        "--fdname=dogstatsd-udp:dogstatsd",
        ACTIVATE,
        f"--listen={tmp_path}/ingest.sock",
        f"--listen={tmp_path}/api.sock",
        "--fdname=dogstatsd-udp:dogstatsd:ingest:api",
        *inner_env,
    ]


async def reload_command(api_socket) -> int:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tocsin",
        "reload",
        "--socket",
        str(api_socket),
        stdout=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(process.wait(), WAIT)


async def call(function, *args):
    return await asyncio.to_thread(function, *args)


async def test_the_daemon_takes_its_sockets_and_notifies_systemd(tmp_path, manager):
    port = free_udp_port()
    daemon = DaemonProcess(
        tmp_path,
        CONFIG.format(dir=tmp_path),
        launcher=activation(manager, port, tmp_path),
    )
    await daemon.start(wait_ready=False)
    try:
        await daemon.wait_for_log(f"Listening on {tmp_path}/dsd.sock as 4.")
        # The first datagram is what makes systemd-socket-activate start Tocsin;
        # it waits in the passed UDP socket meanwhile.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(b"model.requests:1|c", ("127.0.0.1", port))
        ready = await manager.wait_for(has("READY", "1"))
        passed = daemon.find("using the socket systemd passed")
        assert sorted(record["listener"] for record in passed) == [
            "api",
            "udp",
            "unix_dgram",
            "unix_stream",
        ]
        assert manager.messages[ready]["STATUS"].endswith(" samples/s")

        # The passed Unix datagram socket counts too: both samples cross 1.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as unix:
            unix.sendto(b"model.requests:1|c", str(tmp_path / "dsd.sock"))
        await daemon.wait_for_log("alert fired", rule="volume")
        with Client(socket=str(tmp_path / "api.sock")) as client:
            alerts = await call(client.list_alerts)
        assert [alert["spec"]["rule"] for alert in alerts] == ["volume"]
        await manager.wait_for(
            lambda message: message.get("STATUS", "").startswith(
                "1 series, 1 open alert, 0 notifications queued,"
            )
        )
        await manager.wait_for(has("WATCHDOG", "1"), count=3, after=ready)

        # A reload applied, then one refused: each ends in READY=1.
        daemon.process.send_signal(signal.SIGHUP)
        reloading = await manager.wait_for(has("RELOADING", "1"), after=ready)
        assert int(manager.messages[reloading]["MONOTONIC_USEC"]) > 0
        reloaded = await manager.wait_for(has("READY", "1"), after=reloading)
        assert manager.messages[reloaded]["STATUS"] == "reloaded"
        daemon.config_path.write_text(CONFIG.format(dir=tmp_path) + "[oops]\n")
        daemon.process.send_signal(signal.SIGHUP)
        reloading = await manager.wait_for(has("RELOADING", "1"), after=reloaded)
        refused = await manager.wait_for(has("READY", "1"), after=reloading)
        assert manager.messages[refused]["STATUS"].startswith(
            f"reload refused: {daemon.config_path}"
        )

        # As ExecReload= asks for one: through the passed API socket, waiting.
        daemon.config_path.write_text(CONFIG.format(dir=tmp_path))
        code = await reload_command(tmp_path / "api.sock")
        reloading = await manager.wait_for(has("RELOADING", "1"), after=refused)
        reloaded = await manager.wait_for(has("READY", "1"), after=reloading)
        assert (code, manager.messages[reloaded]["STATUS"]) == (0, "reloaded")

        assert await daemon.stop(signal.SIGTERM) == 0
        await manager.wait_for(has("STOPPING", "1"), after=reloaded)
        # The socket files are systemd's: Tocsin leaves them in place.
        for name in ("dsd.sock", "ingest.sock", "api.sock"):
            assert (tmp_path / name).is_socket()
    finally:
        await daemon.close()


async def test_a_passed_socket_of_the_wrong_type_stops_start_up(tmp_path, manager):
    launcher = [
        ACTIVATE,
        f"--listen={tmp_path}/dsd.sock",
        "--fdname=dogstatsd",
        f"--setenv=NOTIFY_SOCKET={manager.path}",
    ]
    if "PYTHONPATH" in os.environ:
        launcher.append(f"--setenv=PYTHONPATH={os.environ['PYTHONPATH']}")
    daemon = DaemonProcess(tmp_path, CONFIG.format(dir=tmp_path), launcher=launcher)
    await daemon.start(wait_ready=False)
    try:
        await daemon.wait_for_log(f"Listening on {tmp_path}/dsd.sock as 3.")
        # A connection makes systemd-socket-activate start Tocsin.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stream:
            await asyncio.to_thread(stream.connect, str(tmp_path / "dsd.sock"))
            assert await daemon.wait_exit() == 1
        errors = [record for record in daemon.logs if record["level"] == "error"]
        assert [record["message"] for record in errors] == [
            "systemd passed the socket 'dogstatsd' (fd 3): Unix stream,"
            " expected Unix datagram"
        ]
        assert not any("READY" in message for message in manager.messages)
    finally:
        await daemon.close()
