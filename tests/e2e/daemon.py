"""Run the real daemon as a subprocess and follow its JSON log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

#: Upper bound for any single wait; reaching it fails the test, it is not timing.
WAIT = 20.0


#: The ``[daemon]`` and ``[ingest]`` of an end-to-end test: a state directory
#: and a DogStatsD Unix socket in ``{dir}``, a quick tick, no UDP. Braces of
#: the rest of a config that is ``format``-ed with it are doubled.
DAEMON_HEAD = """
[daemon]
state_dir = "{dir}/state"
tick = "100ms"
shutdown_timeout = "5s"

[ingest]
udp = ""
unix_dgram = "{dir}/dsd.sock"
"""


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class DaemonProcess:
    """``tocsin run`` in a subprocess, with its log lines parsed as they come.

    :param config_text: the TOML config, written to ``directory/tocsin.toml``.
    :param env: extra environment variables for the process.
    :param launcher: a command that runs ``tocsin run ...`` as its arguments,
        such as ``systemd-socket-activate`` and its options.
    """

    def __init__(
        self,
        directory: Path,
        config_text: str,
        env: dict | None = None,
        *,
        launcher: Sequence[str] = (),
    ):
        self.directory = directory
        self.launcher = tuple(launcher)
        self.config_path = directory / "tocsin.toml"
        self.config_path.write_text(config_text)
        self.env = {**os.environ, **(env or {})}
        self.logs: list[dict] = []
        self.raw_stderr: list[str] = []
        self.process: asyncio.subprocess.Process | None = None
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task | None = None

    async def start(self, *, wait_ready: bool = True) -> None:
        self.logs.clear()
        self.process = await asyncio.create_subprocess_exec(
            *self.launcher,
            sys.executable,
            "-m",
            "tocsin",
            "run",
            "--config",
            str(self.config_path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
        )
        self._reader = asyncio.create_task(self._read(self.process))
        if wait_ready:
            await self.wait_for_log("ready")

    async def _read(self, process) -> None:
        while line := await process.stderr.readline():
            text = line.decode(errors="replace").rstrip("\n")
            self.raw_stderr.append(text)
            try:
                record = json.loads(text)
            except ValueError:
                record = {"message": text, "level": "unparsed"}
            async with self._changed:
                self.logs.append(record)
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    def find(self, message: str, **fields) -> list[dict]:
        return [
            record
            for record in self.logs
            if record.get("message") == message
            and all(record.get(key) == value for key, value in fields.items())
        ]

    def find_prefix(self, prefix: str) -> list[dict]:
        return [r for r in self.logs if str(r.get("message", "")).startswith(prefix)]

    async def wait_for_log(self, message: str, count: int = 1, **fields) -> list[dict]:
        """Wait until ``count`` log lines with this message (and fields) exist."""

        def found() -> bool:
            exited = self.process is not None and self.process.returncode is not None
            return len(self.find(message, **fields)) >= count or exited

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(found), WAIT)
            except TimeoutError:
                raise AssertionError(
                    f"no log line {message!r} {fields}; log tail:\n"
                    + "\n".join(self.raw_stderr[-20:])
                ) from None
        records = self.find(message, **fields)
        if len(records) < count:
            raise AssertionError(
                f"tocsin exited before logging {message!r}:\n"
                + "\n".join(self.raw_stderr[-20:])
            )
        return records

    async def stop(self, signum: int = signal.SIGTERM) -> int:
        """Send ``signum`` and wait for the process and its log to end."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signum)
        code = await asyncio.wait_for(self.process.wait(), WAIT)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, WAIT)
        return code

    async def wait_exit(self) -> int:
        """Wait for the process to exit on its own."""
        assert self.process is not None
        code = await asyncio.wait_for(self.process.wait(), WAIT)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, WAIT)
        return code

    async def kill(self) -> None:
        await self.stop(signal.SIGKILL)

    async def close(self) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
