"""HTTP ends of the delivery benchmark: where notifications arrive, and the
metrics endpoint Prometheus scrapes.

:class:`Arrivals` runs in the benchmark's own process, so a breach and its
arrival are stamped by the same ``time.perf_counter_ns`` clock: it takes
Tocsin's webhook payload at ``/tocsin`` and Alertmanager's at
``/alertmanager``, stamps each on entry to its handler, and keys it by the
alert's ``model`` label (one label value per breach). It also serves
``/metrics`` in Prometheus' text format, one ``breach_gauge`` series per model,
whose value the benchmark flips at send time.

Run as ``python bench/_hooks.py`` it is a sink for the throughput runs instead,
in a process of its own so it does not take the sender's core: it answers every
POST with 200 and counts requests, bytes and an order-free digest of the bodies
(``GET /count``); it prints one JSON line with its port when ready.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time

import orjson
from aiohttp import web

#: The gauge the exporter serves and Prometheus' rule watches.
GAUGE = "breach_gauge"
#: What ``breach_gauge`` reads once a model breaches; the rules fire above 0.2.
BREACHING = 1.0


class Arrivals:
    """An aiohttp server on 127.0.0.1 and a free port, in this process."""

    def __init__(self) -> None:
        #: (source, model) -> perf_counter_ns of the first arrival.
        self.stamps: dict[tuple[str, str], int] = {}
        #: Arrivals for a key already stamped (a repeat of a notification),
        #: by source.
        self.repeats: dict[str, int] = {}
        self.scrapes = 0
        self.gauges: dict[str, float] = {}
        self.url = ""
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        """Start serving; return the base URL."""
        app = web.Application()
        app.router.add_post("/tocsin", self._tocsin)
        app.router.add_post("/alertmanager", self._alertmanager)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def breach(self, model: str) -> int:
        """Make ``model``'s gauge breach; return the time just before, in ns."""
        began = time.perf_counter_ns()
        self.gauges[model] = BREACHING

        return began

    async def arrival(self, source: str, model: str, timeout: float) -> int:
        """Return when the first notification of ``model`` from ``source`` came.

        :raises TimeoutError: if none comes within ``timeout`` seconds.
        """
        key = (source, model)
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: key in self.stamps), timeout
            )

        return self.stamps[key]

    async def scraped(self, count: int, timeout: float) -> None:
        """Wait until ``/metrics`` has been read ``count`` times in all."""
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: self.scrapes >= count), timeout
            )

    async def _stamp(self, source: str, models: list[str], stamp: int) -> None:
        async with self._changed:
            for model in models:
                if (source, model) in self.stamps:
                    self.repeats[source] = self.repeats.get(source, 0) + 1
                else:
                    self.stamps[source, model] = stamp
            self._changed.notify_all()

    async def _tocsin(self, request: web.Request) -> web.Response:
        stamp = time.perf_counter_ns()
        body = orjson.loads(await request.read())
        if body.get("event") == "trigger":
            models = [alert["labels"]["model"] for alert in body["alerts"]]
            await self._stamp("tocsin", models, stamp)

        return web.Response()

    async def _alertmanager(self, request: web.Request) -> web.Response:
        stamp = time.perf_counter_ns()
        body = orjson.loads(await request.read())
        firing = [
            alert["labels"]["model"]
            for alert in body.get("alerts", [])
            if alert.get("status") == "firing"
        ]
        await self._stamp("peer", firing, stamp)

        return web.Response()

    async def _metrics(self, request: web.Request) -> web.Response:
        lines = [f"# TYPE {GAUGE} gauge"]
        for model, value in self.gauges.items():
            lines.append(f'{GAUGE}{{model="{model}"}} {value}')
        async with self._changed:
            self.scrapes += 1
            self._changed.notify_all()

        return web.Response(text="\n".join(lines) + "\n")


class Sink:
    """Counts of what the throughput sink has been sent."""

    def __init__(self) -> None:
        self.count = 0
        self.bytes = 0
        #: Sum of a hash of every body, modulo 2**64: equal for the same
        #: bodies in any order.
        self.digest = 0

    async def take(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.count += 1
        self.bytes += len(body)
        hashed = hashlib.blake2b(body, digest_size=8).digest()
        self.digest = (self.digest + int.from_bytes(hashed, "big")) % 2**64

        return web.Response()

    async def report(self, request: web.Request) -> web.Response:
        counts = {"count": self.count, "bytes": self.bytes, "digest": self.digest}
        return web.json_response(counts)


async def serve_sink() -> None:
    """Serve the sink until the process is signalled."""
    sink = Sink()
    app = web.Application()
    app.router.add_post("/{path:.*}", sink.take)
    app.router.add_get("/count", sink.report)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    sys.stdout.write(json.dumps({"ready": True, "port": port}) + "\n")
    sys.stdout.flush()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    import uvloop

    uvloop.run(serve_sink())


if __name__ == "__main__":
    main()
