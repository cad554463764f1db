"""A local Datadog intake for tests, as strict as the published contract.

``POST /api/v1/events`` is described in :mod:`tests.standins.datadog_events`.

``POST /api/v2/series`` checks the API key, the encoding, both size limits, the
JSON and every series the way the real intake does, records what it accepted
and what it refused (with the reason), and answers from a script when a test
wants 408, 413, 429 or 5xx. ``GET /api/v1/validate`` checks the key.

Where the contract leaves room the stand-in is stricter than Datadog, so that a
client bug shows up here rather than as silently lost data: an empty ``series``
list, an unknown field in a series and a tag that breaks the published tag rules
are refused with 400 (``strict_tags=False`` relaxes the last), and so is an
unknown key in ``metadata`` or ``metadata.origin``. ``zstd1`` is a valid
encoding in the contract but is refused with 400 here, as no zstd decoder is
installed; Tocsin never sends it.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import zlib
from collections import deque
from dataclasses import dataclass, field

import orjson
from aiohttp import web

from tests.standins.datadog_events import EventsIntake
from tocsin.clock import Clock, ManualClock, SystemClock

WIRE_LIMIT = 512_000
RAW_LIMIT = 5_242_880
PAST = 3600
FUTURE = 600

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.]{0,199}")
_TAG = re.compile(r"[^\W\d_][\w\-:./]*")
_SERIES_FIELDS = frozenset(
    {
        "metric",
        "type",
        "points",
        "interval",
        "unit",
        "tags",
        "resources",
        "source_type_name",
        "metadata",
    }
)
_ORIGIN_FIELDS = frozenset({"metric_type", "product", "service"})
_ORIGIN_MAX = 1000
_FORBIDDEN = orjson.dumps({"errors": ["Forbidden"]})


@dataclass(frozen=True)
class Scripted:
    """One scripted answer, used for the next series request instead of 202."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"errors":["scripted"]}'
    delay: float = 0.0


@dataclass
class Received:
    """One series request, as it arrived and as the stand-in judged it."""

    status: int
    reason: str
    headers: dict[str, str]
    wire_size: int
    raw_size: int | None
    digest: str
    series: list[dict] | None


class Rejected(Exception):
    """Raised inside the stand-in when a request breaks the contract."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(reason)


class DatadogStandIn(EventsIntake):
    """A Datadog metrics and events intake on ``127.0.0.1`` and a free port.

    :param api_key: the only key accepted.
    :param clock: the intake's time, against which point timestamps are checked.
    """

    def __init__(
        self,
        api_key: str = "dd-test-key-0123456789",
        *,
        clock: Clock | None = None,
        strict_tags: bool = True,
    ) -> None:
        self.api_key = api_key
        self.clock = clock or SystemClock()
        self.strict_tags = strict_tags
        self.script: deque[Scripted] = deque()
        #: The answer once the script is used up, instead of judging the request.
        self.always: Scripted | None = None
        #: Seconds every answer waits before it is sent.
        self.delay = 0.0
        self.requests: list[Received] = []
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.url = ""
        self._init_events()

    @property
    def accepted(self) -> list[Received]:
        return [request for request in self.requests if request.status == 202]

    @property
    def rejected(self) -> list[Received]:
        return [request for request in self.requests if request.status != 202]

    def accepted_series(self) -> list[dict]:
        """Return every series of every accepted request, in arrival order."""
        return [item for request in self.accepted for item in request.series or ()]

    def fail(
        self,
        status: int,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        delay: float = 0.0,
        times: int | None = 1,
    ) -> None:
        """Answer the next ``times`` series requests with ``status``.

        :param times: ``None`` answers every later request so, once the
            scripted answers before it are used up.
        """
        answer = Scripted(status, headers or {}, body or Scripted.body, delay)
        if times is None:
            self.always = answer
        else:
            self.script.extend([answer] * times)

    async def wait_accepted(self, count: int, timeout: float = 10.0) -> None:
        """Wait until ``count`` requests were accepted (a guard, not a measure)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.accepted) >= count)

    async def start(self) -> DatadogStandIn:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/api/v2/series", self._series)
        app.router.add_get("/api/v1/validate", self._validate)
        app.router.add_post("/api/v1/events", self._event)
        # The intake must see the body exactly as sent, compressed.
        self._runner = web.AppRunner(app, auto_decompress=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> DatadogStandIn:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _validate(self, request: web.Request) -> web.Response:
        if request.headers.get("DD-API-KEY") != self.api_key:
            return web.Response(status=403, body=_FORBIDDEN, content_type=_JSON)
        return web.json_response({"valid": True})

    async def _series(self, request: web.Request) -> web.Response:
        wire = await request.read()
        received = Received(
            status=202,
            reason="accepted",
            headers=dict(request.headers),
            wire_size=len(wire),
            raw_size=None,
            digest=hashlib.sha256(wire).hexdigest(),
            series=None,
        )
        status, body, headers = 202, b'{"errors":[]}', {}
        try:
            if request.headers.get("DD-API-KEY") != self.api_key:
                raise Rejected(403, "missing or wrong DD-API-KEY")
            # The contract's answers to a malformed request are 400, 408, 413
            # and 429, never 415: a body that is not declared JSON is a bad
            # request, as one in an unknown encoding is.
            if request.content_type != _JSON:
                raise Rejected(400, f"Content-Type must be {_JSON}")
            raw = _decode(request.headers.get("Content-Encoding", ""), wire)
            received.raw_size = len(raw)
            received.series = self._check(raw)
            scripted = self.script.popleft() if self.script else self.always
            if scripted is not None:
                await asyncio.sleep(scripted.delay)
                status, body = scripted.status, scripted.body
                headers = scripted.headers
                received.reason = f"scripted {status}"
        except Rejected as error:
            status, received.reason = error.status, error.reason
            body = (
                _FORBIDDEN
                if status == 403
                else orjson.dumps({"errors": [error.reason]})
            )
        received.status = status
        await asyncio.sleep(self.delay)
        async with self._changed:
            self.requests.append(received)
            self._changed.notify_all()

        return web.Response(
            status=status, body=body, headers=headers, content_type=_JSON
        )

    def _check(self, raw: bytes) -> list[dict]:
        """Return the series of a decompressed body, or raise :class:`Rejected`."""
        try:
            # orjson refuses NaN and Infinity tokens, as a strict JSON parser must.
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            raise Rejected(400, f"invalid JSON: {error}") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("series"), list):
            raise Rejected(400, "body must be an object with a series array")
        series = payload["series"]
        if not series:
            raise Rejected(400, "series must not be empty")
        now = self.clock.time()
        for index, item in enumerate(series):
            problem = self._problem(item, now)
            if problem:
                raise Rejected(400, f"series[{index}]: {problem}")

        return series

    def _problem(self, item: object, now: float) -> str | None:
        """Return what is wrong with one series, or ``None``."""
        if not isinstance(item, dict):
            return "not an object"
        unknown = set(item) - _SERIES_FIELDS
        if unknown:
            return f"unknown fields {sorted(unknown)}"
        metric = item.get("metric")
        if not isinstance(metric, str) or not _NAME.fullmatch(metric):
            return f"invalid metric name {metric!r}"
        kind = item.get("type", 0)
        if not _is_int(kind) or kind not in (0, 1, 2, 3):
            return f"invalid type {kind!r}"
        if "interval" in item and not _is_int(item["interval"]):
            return "interval must be an integer"
        if "unit" in item and not isinstance(item["unit"], str):
            return "unit must be a string"
        problem = _metadata_problem(item.get("metadata", {}))
        if problem:
            return problem
        points = item.get("points")
        if not isinstance(points, list) or not points:
            return "points must be a non-empty array"
        for point in points:
            problem = _point_problem(point, now)
            if problem:
                return problem
        return self._tags_problem(item.get("tags", [])) or _resources_problem(
            item.get("resources", [])
        )

    def _tags_problem(self, tags: object) -> str | None:
        if not isinstance(tags, list):
            return "tags must be an array"
        for tag in tags:
            if not isinstance(tag, str) or len(tag) > 200:
                return f"invalid tag {tag!r}"
            if self.strict_tags and (not _TAG.fullmatch(tag) or tag.endswith(":")):
                return f"tag breaks the tag rules: {tag!r}"
        return None


_JSON = "application/json"


def _decode(encoding: str, wire: bytes) -> bytes:
    """Return the decompressed body, enforcing both size limits."""
    if len(wire) > WIRE_LIMIT:
        raise Rejected(413, f"payload of {len(wire)} bytes exceeds {WIRE_LIMIT}")
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        raw = wire
    elif encoding in ("deflate", "gzip"):
        # deflate is zlib-wrapped; 16 + MAX_WBITS expects a gzip header.
        wbits = zlib.MAX_WBITS if encoding == "deflate" else 16 + zlib.MAX_WBITS
        unpacker = zlib.decompressobj(wbits)
        try:
            raw = unpacker.decompress(wire, RAW_LIMIT)
        except zlib.error as error:
            raise Rejected(400, f"cannot decode {encoding}: {error}") from None
        if unpacker.unconsumed_tail or len(raw) >= RAW_LIMIT:
            raise Rejected(413, f"decompressed payload reaches {RAW_LIMIT} bytes")
        if not unpacker.eof:
            raise Rejected(400, f"truncated {encoding} body")
    else:
        raise Rejected(400, f"unsupported Content-Encoding {encoding!r}")
    if len(raw) >= RAW_LIMIT:
        raise Rejected(413, f"decompressed payload reaches {RAW_LIMIT} bytes")

    return raw


def _point_problem(point: object, now: float) -> str | None:
    if not isinstance(point, dict) or set(point) != {"timestamp", "value"}:
        return f"a point must be {{timestamp, value}}: {point!r}"
    stamp, value = point["timestamp"], point["value"]
    if not _is_int(stamp):
        return f"timestamp must be an integer: {stamp!r}"
    if not now - PAST <= stamp <= now + FUTURE:
        return f"timestamp {stamp} outside -{PAST}s..+{FUTURE}s of {now:.0f}"
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if not is_number or not math.isfinite(value):
        return f"value must be a finite number: {value!r}"
    return None


def _metadata_problem(metadata: object) -> str | None:
    if not isinstance(metadata, dict) or set(metadata) - {"origin"}:
        return f"metadata must be an object with only an origin: {metadata!r}"
    origin = metadata.get("origin", {})
    if not isinstance(origin, dict) or set(origin) - _ORIGIN_FIELDS:
        return f"metadata.origin must be an object of {sorted(_ORIGIN_FIELDS)}"
    for key, code in origin.items():
        if not _is_int(code) or code > _ORIGIN_MAX:
            return f"metadata.origin.{key} must be an integer <= {_ORIGIN_MAX}"
    return None


def _resources_problem(resources: object) -> str | None:
    if not isinstance(resources, list):
        return "resources must be an array"
    for resource in resources:
        if (
            not isinstance(resource, dict)
            or set(resource) != {"name", "type"}
            or not all(isinstance(v, str) and v for v in resource.values())
        ):
            return f"invalid resource {resource!r}"
    return None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# Sleeps to hand an exporter, so retries and intervals pass without real time.


class RecordingSleep:
    """A sleep that returns at once, moving the clock and noting the delay."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self.clock.advance(delay)
        await asyncio.sleep(0)


class GatedSleep(RecordingSleep):
    """A sleep that ends only when the test calls :meth:`release`."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(clock)
        #: One item per sleep begun: the exporter is now waiting.
        self.started: asyncio.Queue[float] = asyncio.Queue()
        self._turns: asyncio.Queue[None] = asyncio.Queue()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self.started.put_nowait(delay)
        await self._turns.get()
        self.clock.advance(delay)

    def release(self) -> None:
        self._turns.put_nowait(None)
