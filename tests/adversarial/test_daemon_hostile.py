"""The real daemon against hostile clients and a damaged state database."""

from __future__ import annotations

import asyncio
import socket
import sqlite3

from tests.e2e.daemon import WAIT, DaemonProcess

CONFIG = """
[daemon]
state_dir = "{dir}/state"
log_level = "{level}"
shutdown_timeout = "2s"

[ingest]
udp = ""
unix_stream = "{dir}/ingest.sock"

[[channels]]
name = "log"
type = "log"

[[rules]]
name = "r"
metric = "m"
threshold = 1
channels = ["log"]
"""

CONNECTIONS = 40


def _send_and_close(path: str, payload: bytes) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(path)
        client.sendall(payload)


async def _wait_for_any(daemon: DaemonProcess, messages: set[str]) -> set[str]:
    """Wait until one of ``messages`` is logged or the process exits."""

    def seen() -> set[str]:
        return {r.get("message") for r in daemon.logs} & messages

    async with daemon._changed:
        await asyncio.wait_for(
            daemon._changed.wait_for(
                lambda: seen() or daemon.process.returncode is not None
            ),
            WAIT,
        )
    return seen()


async def test_bad_lines_on_many_connections_are_logged_once_per_reason(tmp_path):
    daemon = DaemonProcess(tmp_path, CONFIG.format(dir=tmp_path, level="debug"))
    try:
        await daemon.start()
        path = str(tmp_path / "ingest.sock")
        for _ in range(CONNECTIONS):
            await asyncio.to_thread(_send_and_close, path, b'{"metric": 5}\n')
        await daemon.wait_for_log("connection closed", count=CONNECTIONS)

        warnings = [
            record
            for record in daemon.logs
            if record.get("logger") == "tocsin.daemon.ndjson"
            and record.get("level") in ("warning", "error")
        ]
        # One warning per reason per 10 s, whatever the number of connections.
        assert len(warnings) == 1, [w.get("message") for w in warnings]
    finally:
        await daemon.close()


def _corrupt_table(database, table: str) -> None:
    with sqlite3.connect(database) as connection:
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
        (root,) = connection.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)
        ).fetchone()
    with open(database, "r+b") as file:
        file.seek((root - 1) * page_size)
        file.write(b"\xde\xad" * (page_size // 2))


async def test_a_corrupted_state_database_stops_start_up(tmp_path):
    config = CONFIG.format(dir=tmp_path, level="info")
    first = DaemonProcess(tmp_path, config)
    try:
        await first.start()
        assert await first.stop() == 0
    finally:
        await first.close()
    _corrupt_table(tmp_path / "state" / "tocsin.db", "outbox")

    daemon = DaemonProcess(tmp_path, config)
    try:
        await daemon.start(wait_ready=False)
        seen = await _wait_for_any(daemon, {"ready", "cannot open the state database"})
        # Accepting samples whose alerts can never be recorded means alerting
        # on nothing while looking healthy.
        assert seen == {"cannot open the state database"}
        # It exits on its own; a SIGTERM sent now could arrive after its
        # handlers are gone and kill it with -15 instead.
        assert await daemon.wait_exit() == 1
    finally:
        await daemon.close()
