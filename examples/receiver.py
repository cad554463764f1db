"""A local stand-in for a webhook destination and Datadog's metrics intake.

``POST /api/v2/series`` answers like Datadog (202 ``{"errors": []}``) after
checking the API key header and undoing ``deflate`` or ``gzip``; any other
``POST`` is taken as a webhook notification and answered 200. Each request is
printed as one readable line and appended to a JSON lines file.

Run on its own with ``python examples/receiver.py --port 0``; the demo imports
:class:`Receiver` and runs it in its own event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import signal
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

SERIES_PATH = "/api/v2/series"


def describe_notification(body: object) -> dict[str, Any]:
    """Pick out what a person wants to see of one Tocsin webhook notification.

    Reads version 1 of the payload (``tocsin/channels/payload.py``); a field it
    lacks shows as ``None`` rather than failing the request.
    """
    body = body if isinstance(body, dict) else {}
    alert = body.get("alert") if isinstance(body.get("alert"), dict) else {}

    return {
        "event": body.get("event"),
        "rule": alert.get("rule"),
        "model": alert.get("model"),
        "severity": alert.get("severity"),
        "value": alert.get("value"),
        "op": alert.get("op"),
        "threshold": alert.get("threshold"),
        "key": body.get("idempotency_key"),
    }


def number(value: object) -> str:
    """Format a number short enough for one line; anything else as it is."""
    return f"{value:.4g}" if isinstance(value, int | float) else str(value)


class Receiver:
    """The stand-in server, with every request it received.

    :param api_key: the key Datadog requests must carry; any key if ``None``.
    :param record: JSON lines file to append each request to, if given.
    :param out: where the one-line descriptions go.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        record: Path | None = None,
        out: Callable[[str], None] = print,
    ) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key
        self.record = record
        self.out = out
        self.notifications: list[dict[str, Any]] = []
        self.datadog_requests: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> int:
        """Bind and start serving; return the port."""
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post(SERIES_PATH, self._series)
        app.router.add_get("/api/v1/validate", self._validate)
        app.router.add_post("/{tail:.*}", self._webhook)
        # Undo the compression here, to show its size on the wire.
        self._runner = web.AppRunner(app, access_log=None, auto_decompress=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = self._runner.addresses[0][1]

        return self.port

    async def stop(self) -> None:
        """Stop serving; safe to call twice."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def wait_for(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``condition()`` holds after a request; False on timeout."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(condition), timeout)
            return condition()

    async def _keep(self, kind: str, entry: dict[str, Any]) -> None:
        entry = {"kind": kind, "received_at": time.time(), **entry}
        (self.notifications if kind == "webhook" else self.datadog_requests).append(
            entry
        )
        if self.record is not None:
            with self.record.open("a") as file:
                file.write(json.dumps(entry) + "\n")
        async with self._changed:
            self._changed.notify_all()

    async def _validate(self, request: web.Request) -> web.Response:
        if not self._key_ok(request):
            return web.json_response({"errors": ["Forbidden"]}, status=403)
        return web.json_response({"valid": True})

    def _key_ok(self, request: web.Request) -> bool:
        given = request.headers.get("DD-API-KEY")
        return bool(given) and (self.api_key is None or given == self.api_key)

    async def _series(self, request: web.Request) -> web.Response:
        if not self._key_ok(request):
            self.out("datadog  403: missing or wrong DD-API-KEY")
            return web.json_response({"errors": ["Forbidden"]}, status=403)
        wire = await request.read()
        encoding = request.headers.get("Content-Encoding", "identity").lower()
        try:
            if encoding == "deflate":
                raw = zlib.decompress(wire)
            elif encoding == "gzip":
                raw = gzip.decompress(wire)
            elif encoding == "identity":
                raw = wire
            else:
                return web.json_response(
                    {"errors": [f"unsupported Content-Encoding {encoding}"]}, status=400
                )
            payload = json.loads(raw)
            series = payload["series"]
        except (zlib.error, OSError, ValueError, KeyError, TypeError) as error:
            self.out(f"datadog  400: {error}")
            return web.json_response({"errors": [str(error)]}, status=400)

        latest = {}
        for one in series:
            points = one.get("points") or [{}]
            latest[str(one.get("metric"))] = points[-1].get("value")
        names = sorted(latest)[:3]
        shown = ", ".join(f"{name}={number(latest[name])}" for name in names)
        more = f" (+{len(latest) - 3} more)" if len(latest) > 3 else ""
        self.out(
            f"datadog  {len(series)} series, {len(wire)} B {encoding} / "
            f"{len(raw)} B raw: {shown}{more}"
        )
        await self._keep(
            "datadog",
            {
                "encoding": encoding,
                "wire_bytes": len(wire),
                "raw_bytes": len(raw),
                "series": len(series),
                "payload": payload,
            },
        )
        return web.json_response({"errors": []}, status=202)

    async def _webhook(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            self.out(f"webhook  400: body on {request.path} is not JSON")
            return web.json_response({"error": "body is not JSON"}, status=400)
        seen = describe_notification(body)
        header_key = request.headers.get("Idempotency-Key")
        if header_key != seen["key"]:
            self.out(f"webhook  note: Idempotency-Key header is {header_key!r}")
        self.out(
            f"webhook  {str(seen['event']).upper():<8} rule={seen['rule']} "
            f"model={seen['model']} severity={seen['severity']} "
            f"value={number(seen['value'])} (condition {seen['op'] or '?'} "
            f"{number(seen['threshold'])}) key={seen['key']}"
        )
        await self._keep("webhook", {"path": request.path, "seen": seen, "body": body})
        return web.json_response({"ok": True})


async def _serve(args: argparse.Namespace) -> None:
    record = Path(args.record) if args.record else None
    receiver = Receiver(port=args.port, api_key=args.api_key, record=record)
    port = await receiver.start()
    print(f"receiver listening on http://127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await receiver.stop()


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", help="the DD-API-KEY to require")
    parser.add_argument("--record", help="JSON lines file of received requests")
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
