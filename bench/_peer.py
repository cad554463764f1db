"""The peer of the latency benchmark: Prometheus and Alertmanager, from Debian's
``prometheus`` and ``prometheus-alertmanager`` packages, as subprocesses.

Prometheus scrapes the exporter of :class:`bench._hooks.Arrivals` and
evaluates ``breach_gauge > 0.2`` with ``for: 0s``, both every ``interval``;
Alertmanager groups by ``model`` (so each breach is a group of its own) with
``group_wait: 0s`` and sends each group to the same process's ``/alertmanager``
webhook. Both listen on free loopback ports and keep their data in the run's
temporary directory; Alertmanager's clustering is off, so it waits for no peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
from pathlib import Path

import aiohttp

from bench import _processes as proc
from bench._hooks import GAUGE, Arrivals

#: Names the binaries go by: Debian's first, upstream's after.
BINARIES = {
    "prometheus": ("prometheus",),
    "alertmanager": ("prometheus-alertmanager", "alertmanager"),
}

PROMETHEUS_CONFIG = """\
global:
  scrape_interval: {interval}
  scrape_timeout: {interval}
  evaluation_interval: {interval}
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["127.0.0.1:{alertmanager_port}"]
rule_files: ["{dir}/rules.yml"]
scrape_configs:
  - job_name: bench
    static_configs:
      - targets: ["{exporter}"]
"""

RULES = f"""\
groups:
  - name: bench
    interval: {{interval}}
    rules:
      - alert: Breach
        expr: {GAUGE} > 0.2
        for: 0s
"""

ALERTMANAGER_CONFIG = """\
route:
  receiver: bench
  group_by: [model]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: bench
    webhook_configs:
      - url: "{url}/alertmanager"
        send_resolved: false
"""


def find_binaries(search_path: str | None = None) -> tuple[dict[str, str], str]:
    """Return the peer's binaries by role, and why the peer cannot run ("" if
    it can).

    :param search_path: a ``PATH`` to search instead of the process's own.
    """
    found, missing = {}, []
    for role, names in BINARIES.items():
        located = [shutil.which(name, path=search_path) for name in names]
        path = next((where for where in located if where), None)
        if path is None:
            missing.append(" or ".join(names))
        else:
            found[role] = path
    if missing:
        why = (
            f"{', '.join(missing)} not found on PATH; on Debian: "
            "apt-get install -y prometheus prometheus-alertmanager"
        )
        return {}, why

    return found, ""


def duration(seconds: float) -> str:
    """Write ``seconds`` as a Prometheus duration (whole milliseconds)."""
    return f"{round(seconds * 1000)}ms"


class Peer:
    """Prometheus and Alertmanager, started into ``directory``.

    :param interval: seconds between scrapes and between rule evaluations.
    """

    def __init__(
        self, binaries: dict[str, str], directory: Path, interval: float
    ) -> None:
        self.binaries = binaries
        self.dir = directory
        self.interval = interval
        self.versions: dict[str, str] = {}
        #: Process ids of Alertmanager and Prometheus once started.
        self.pids: list[int] = []

    async def start(self, stack: contextlib.AsyncExitStack, arrivals: Arrivals) -> None:
        """Start both, wait until they answer and Prometheus has scraped twice.

        :raises RuntimeError: if either exits or never becomes ready.
        """
        prometheus_port = proc.free_port(socket.SOCK_STREAM)
        alertmanager_port = proc.free_port(socket.SOCK_STREAM)
        every = duration(self.interval)
        exporter = arrivals.url.removeprefix("http://")
        (self.dir / "prometheus.yml").write_text(
            PROMETHEUS_CONFIG.format(
                interval=every,
                alertmanager_port=alertmanager_port,
                dir=self.dir,
                exporter=exporter,
            )
        )
        (self.dir / "rules.yml").write_text(RULES.format(interval=every))
        (self.dir / "alertmanager.yml").write_text(
            ALERTMANAGER_CONFIG.format(url=arrivals.url)
        )

        # Alertmanager first, so Prometheus' first alerts find it listening.
        alertmanager = await proc.start(
            "alertmanager",
            [
                self.binaries["alertmanager"],
                f"--config.file={self.dir / 'alertmanager.yml'}",
                f"--storage.path={self.dir / 'alertmanager-data'}",
                f"--web.listen-address=127.0.0.1:{alertmanager_port}",
                "--cluster.listen-address=",
            ],
            follow="stderr",
        )
        stack.push_async_callback(alertmanager.kill)
        await _ready(alertmanager, alertmanager_port)
        self.pids.append(alertmanager.pid)
        prometheus = await proc.start(
            "prometheus",
            [
                self.binaries["prometheus"],
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
            ],
            follow="stderr",
        )
        stack.push_async_callback(prometheus.kill)
        await _ready(prometheus, prometheus_port)
        self.pids.append(prometheus.pid)
        await arrivals.scraped(arrivals.scrapes + 2, proc.WAIT)
        for role, binary in self.binaries.items():
            self.versions[role] = await _version(binary)


async def _ready(process: proc.Followed, port: int) -> None:
    """Wait until ``process`` answers ``/-/ready`` on ``port`` with a 200.

    :raises RuntimeError: if it exits or is not ready within the wait.
    """
    url = f"http://127.0.0.1:{port}/-/ready"
    deadline = asyncio.get_running_loop().time() + proc.WAIT
    async with aiohttp.ClientSession() as session:
        while asyncio.get_running_loop().time() < deadline:
            if process.process.returncode is not None:
                raise RuntimeError(
                    f"{process.name} exited:\n" + "\n".join(process.tail)
                )
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as reply:
                    if reply.status == 200:
                        return
            # An external program gives no signal when it starts listening.
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{process.name} not ready:\n" + "\n".join(process.tail))


async def _version(binary: str) -> str:
    """Return the first line ``binary --version`` prints."""
    process = await asyncio.create_subprocess_exec(
        binary,
        "--version",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "LANG": "C"},
    )
    out, _ = await process.communicate()

    return out.decode(errors="replace").partition("\n")[0].strip()
