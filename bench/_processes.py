"""Processes of the ingest benchmark: following their output, and what the
kernel says about them (CPU time, UDP drops, settings)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

#: Longest wait for anything a process should say; reaching it is a failure.
WAIT = 60.0

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SENDERS = BENCH / "_senders.py"
RECEIVERS = BENCH / "_receivers.py"
ETSY_VERSION = "0.9.0"
ETSY_CACHE = BENCH / ".cache"
ETSY_MAIN = ETSY_CACHE / "node_modules" / "statsd" / "stats.js"

Record = dict


class Followed:
    """A subprocess whose output lines are read as they come, stamped on arrival.

    :param parse: turns a line into a record, or ``None`` to skip it.
    """

    def __init__(
        self,
        name: str,
        process: asyncio.subprocess.Process,
        stream: asyncio.StreamReader,
        parse: Callable[[str], Record | None],
    ) -> None:
        self.name = name
        self.process = process
        self.records: list[tuple[float, Record]] = []
        self.tail: list[str] = []
        self._parse = parse
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read(stream))

    @property
    def pid(self) -> int:
        return self.process.pid

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            stamp = time.monotonic()
            text = line.decode(errors="replace").rstrip("\n")
            self.tail = [*self.tail[-30:], text]
            record = self._parse(text)
            async with self._changed:
                if record is not None:
                    self.records.append((stamp, record))
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    def find(self, predicate: Callable[[Record], bool]) -> list[tuple[float, Record]]:
        return [item for item in self.records if predicate(item[1])]

    async def wait_for(
        self, predicate: Callable[[Record], bool], timeout: float = WAIT, count: int = 1
    ) -> tuple[float, Record]:
        """Return (arrival time, record) of the ``count``-th matching record.

        :raises TimeoutError: if it does not come within ``timeout`` seconds.
        :raises RuntimeError: if the process ends first.
        """

        def ready() -> bool:
            return len(self.find(predicate)) >= count or self._reader.done()

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(ready), timeout)
        found = self.find(predicate)
        if len(found) < count:
            raise RuntimeError(f"{self.name} ended early:\n" + "\n".join(self.tail))
        return found[count - 1]

    async def stop(self) -> int:
        """Send SIGTERM and wait for the process and its output to end."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.process.wait(), WAIT)
        await asyncio.wait_for(self._reader, WAIT)
        return code

    async def kill(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


def parse_json(text: str) -> Record | None:
    if not text.startswith("{"):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


async def start(
    name: str,
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    follow: str = "stdout",
) -> Followed:
    """Start ``argv`` and follow its ``follow`` stream as JSON lines."""
    pipe = asyncio.subprocess.PIPE
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=pipe if follow == "stdout" else asyncio.subprocess.DEVNULL,
        stderr=pipe if follow == "stderr" else None,
    )
    stream = process.stdout if follow == "stdout" else process.stderr
    return Followed(name, process, stream, parse_json)


async def send(mode: str, address: str, *options: str) -> Record:
    """Run one sender process to its end and return what it reports."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SENDERS),
        mode,
        address,
        *options,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(process.communicate(), WAIT)
    if process.returncode != 0:
        raise RuntimeError(f"sender {mode} {options} exited with {process.returncode}")
    return json.loads(out)


def cpu_seconds(pid: int) -> float:
    """Return the user plus system CPU time ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # utime and stime are fields 14 and 15 of the file, 12 and 13 after ")".
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def udp_drops(port: int) -> int:
    """Return the kernel's drop count of the IPv4 UDP socket bound to ``port``."""
    wanted = f":{port:04X}"
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(wanted):
            return int(fields[-1])
    raise LookupError(f"no UDP socket on port {port}")


def softnet_drops() -> int:
    """Return packets the kernel dropped before any socket (backlog full)."""
    rows = Path("/proc/net/softnet_stat").read_text().splitlines()
    return sum(int(row.split()[1], 16) for row in rows)


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def sysctl(name: str) -> str:
    try:
        return Path("/proc/sys", *name.split(".")).read_text().strip()
    except OSError:
        return "n/a"


KERNEL_SETTINGS = (
    ("net.core.rmem_max", "cap on SO_RCVBUF; Tocsin asks 4 MiB"),
    ("net.core.rmem_default", "receive buffer of a socket that asks none (Node)"),
    ("net.core.wmem_max", "cap on SO_SNDBUF"),
    ("net.core.wmem_default", "send buffer of the senders"),
    (
        "net.unix.max_dgram_qlen",
        "datagrams queued on a Unix socket before senders wait",
    ),
    ("net.core.netdev_max_backlog", "loopback packets queued before the socket"),
)


def machine_facts() -> list[tuple[str, str]]:
    """Return (fact, value) pairs describing this machine and its software."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    import uvloop

    return [
        ("cores", f"{os.cpu_count()} ({model})"),
        ("kernel", platform.release()),
        ("python", platform.python_version()),
        ("uvloop", uvloop.__version__),
    ]


def udp_receive_buffer(port: int) -> int | None:
    """Return the receive buffer of the UDP socket on ``port``, as ``ss`` shows it."""
    if shutil.which("ss") is None:
        return None
    shown = subprocess.run(
        ["ss", "-uamn", f"sport = :{port}"], capture_output=True, text=True
    ).stdout
    found = re.search(r"\brb(\d+)", shown)
    return int(found[1]) if found else None


def software_facts() -> list[tuple[str, str]]:
    """Return (name, version) of Node and of the Tocsin tree under test."""
    from tocsin import __version__

    facts = [("tocsin", __version__)]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        if described:
            facts[0] = ("tocsin", f"{__version__} (git {described})")
    if shutil.which("node"):
        node = subprocess.run(["node", "--version"], capture_output=True, text=True)
        facts.append(("node", node.stdout.strip()))
    return facts


def machine_cpu() -> tuple[float, float, float]:
    """Return CPU seconds of the whole machine since boot: (in processes, in
    interrupt handling, stolen by the hypervisor)."""
    first = Path("/proc/stat").read_text().split("\n")[0]
    user, nice, system, _, _, irq, softirq, steal = map(int, first.split()[1:9])
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system) / tick, (irq + softirq) / tick, steal / tick


def own_cpu() -> float:
    """Return CPU seconds of this process and of its children that were reaped."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def ensure_etsy() -> str | None:
    """Install Etsy statsd into the cache when missing; return why it cannot run."""
    if shutil.which("node") is None:
        return "node is not installed"
    if ETSY_MAIN.exists():
        return None
    if shutil.which("npm") is None:
        return "npm is not installed"
    print(f"installing statsd@{ETSY_VERSION} into {ETSY_CACHE} ...", file=sys.stderr)
    command = ["npm", "install", "--prefix", str(ETSY_CACHE), f"statsd@{ETSY_VERSION}"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 or not ETSY_MAIN.exists():
        return f"npm install failed: {done.stderr.strip()[-300:]}"
    return None


def etsy_config(port: int) -> str:
    """Return an Etsy statsd config: UDP on ``port``, flush every second to
    the benchmark's backend only, management port on a free port."""
    backend = BENCH / "etsy_backend.js"
    management = free_port(socket.SOCK_STREAM)
    return (
        "{\n"
        f'  port: {port}, address: "127.0.0.1",\n'
        f'  mgmt_port: {management}, mgmt_address: "127.0.0.1",\n'
        "  flushInterval: 1000,\n"
        f'  backends: ["{backend}"]\n'
        "}\n"
    )
