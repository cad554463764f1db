"""A local stand-in for a webhook destination and Datadog's metrics intake.

``POST /api/v2/series`` answers like Datadog (202 ``{"errors": []}``) after
checking the API key header and undoing ``deflate`` or ``gzip``; any other
``POST`` is taken as a webhook notification and answered 200. Each request is
printed as one readable line and appended to a JSON lines file; a Datadog line
shows one watched metric (``model.drift.psi`` unless told) per ``model:`` tag.

Run on its own with ``python examples/receiver.py --port 0``; the demo imports
:class:`Receiver` and runs it in its own event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import os
import signal
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

SERIES_PATH = "/api/v2/series"
#: The metric a Datadog line shows, one value per model.
WATCHED = "model.drift.psi"
#: The tag that tells the models apart.
MODEL_TAG = "model"


def describe_notification(body: object) -> dict[str, Any]:
    """Pick out what a person wants to see of one Tocsin webhook notification.

    Reads version 1 of the payload (``tocsin/channels/payload.py``); a field it
    lacks shows as ``None`` rather than failing the request.
    """
    body = body if isinstance(body, dict) else {}
    alert = body.get("alert") if isinstance(body.get("alert"), dict) else {}

    return {
        "event": body.get("event"),
        "name": alert.get("name"),
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


def short_names(names: list[str]) -> dict[str, str]:
    """Map each name to itself less the prefix all of them share, if two or more.

    The prefix is cut at its last ``-``, ``_``, ``.`` or ``/``, so
    ``tumour-screen-north`` and ``tumour-screen-south`` become ``north`` and
    ``south``; a single name is kept whole.
    """
    if len(set(names)) < 2:
        return {name: name for name in names}
    shared = os.path.commonprefix(names)
    cut = max(shared.rfind(mark) for mark in "-_./") + 1

    return {name: name[cut:] for name in names}


def per_model(series: list, metric: str) -> str:
    """Describe the last value of ``metric`` for each model, on one short line.

    Shows ``metric north=2.990 south=0.012``; a series without a ``model:`` tag
    shows as ``untagged``.
    """
    values: dict[str, str] = {}
    for one in series:
        if not isinstance(one, dict) or one.get("metric") != metric:
            continue
        tags = one.get("tags") if isinstance(one.get("tags"), list) else []
        models = [
            str(tag).partition(":")[2]
            for tag in tags
            if str(tag).startswith(f"{MODEL_TAG}:")
        ]
        points = one.get("points")
        last = points[-1] if isinstance(points, list) and points else {}
        value = last.get("value") if isinstance(last, dict) else None
        # Three decimals, as the feeder prints its PSI, so the lines align.
        values[models[0] if models else "untagged"] = (
            f"{value:.3f}" if isinstance(value, int | float) else str(value)
        )
    if not values:
        return f"no {metric}"
    names = short_names(sorted(values))
    shown = " ".join(f"{names[name]}={values[name]}" for name in names)

    return f"{metric} {shown}"


class Receiver:
    """The stand-in server, with every request it received.

    :param api_key: the key Datadog requests must carry; any key if ``None``.
    :param record: JSON lines file to append each request to, if given.
    :param out: where the one-line descriptions go.
    :param watch: the metric a Datadog line shows per model.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        record: Path | None = None,
        out: Callable[[str], None] = print,
        watch: str = WATCHED,
    ) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key
        self.record = record
        self.out = out
        self.watch = watch
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
            if not isinstance(series, list):
                raise TypeError("series is not a list")
        except (zlib.error, OSError, ValueError, KeyError, TypeError) as error:
            self.out(f"datadog  400: {error}")
            return web.json_response({"errors": [str(error)]}, status=400)

        # Each series carries one model's value: show them side by side, not
        # the last value of a name whichever model sent it.
        metrics = {one.get("metric") for one in series if isinstance(one, dict)}
        self.out(
            f"datadog  {len(series)} series of {len(metrics)} metrics, "
            f"{len(wire)} B {encoding} / {len(raw)} B raw: "
            f"{per_model(series, self.watch)}"
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
        self.out(f"         {seen['name']}")
        await self._keep("webhook", {"path": request.path, "seen": seen, "body": body})
        return web.json_response({"ok": True})


async def _serve(args: argparse.Namespace) -> None:
    record = Path(args.record) if args.record else None
    receiver = Receiver(
        port=args.port, api_key=args.api_key, record=record, watch=args.watch
    )
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
    parser.add_argument(
        "--watch", default=WATCHED, help=f"metric to show per model ({WATCHED})"
    )
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
