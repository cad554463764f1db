"""A local webhook receiver for tests: records every request, answers as scripted.

Usage::

    async with WebhookStandin() as hook:
        hook.reply(503, headers={"Retry-After": "7"})
        hook.reply(200)
        ...  # POST to hook.url
        requests = await hook.wait_for(2)

Replies are used in order, one per request; when the queue is empty the
``default`` reply is used, or ``responder()`` when one is set (for replies
that depend on something the test controls, such as a manual clock). A reply
with ``hold=True`` never answers until :meth:`WebhookStandin.release` is called,
which forces the client to time out; one with ``delay`` answers that many
seconds late, as a slow receiver that still processes the request does.

Given a Standard Webhooks ``signing_secret`` (``whsec_...``), the stand-in
checks every request as a receiver would: the three ``webhook-*`` headers, a
timestamp within five minutes of its ``clock``, and a ``v1`` signature over
``{id}.{timestamp}.{body}``. A request that fails is answered 401 and
recorded with its ``signature_error``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from aiohttp import web


@dataclass(frozen=True)
class Reply:
    """One scripted answer."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    #: Do not answer until released.
    hold: bool = False
    #: Seconds to wait before answering.
    delay: float = 0.0


@dataclass(frozen=True)
class Received:
    """One request as it arrived."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    #: The parsed JSON body, or ``None`` if it was not JSON.
    json: object
    #: When it arrived (POSIX seconds); for information, never for asserts.
    at: float
    #: The status it was (or, once released, will be) answered with.
    status: int
    #: Whether the answer was held back.
    held: bool
    #: Why its signature was refused; ``None`` if accepted or not checked.
    signature_error: str | None = None


#: How far a signed request's timestamp may be from the receiver's clock.
SIGNATURE_TOLERANCE = 300.0


def verify_signature(
    secret: str,
    headers: dict[str, str],
    body: bytes,
    now: float,
    tolerance: float = SIGNATURE_TOLERANCE,
) -> str | None:
    """Check a Standard Webhooks signature; return why it fails, or ``None``.

    Written from the specification alone: ``secret`` is ``whsec_`` and the
    base64 key; the signed bytes are ``{id}.{timestamp}.{body}``; the header
    lists space-separated ``version,base64`` signatures, of which one ``v1``
    (HMAC-SHA256) must match.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    message_id = lowered.get("webhook-id")
    stamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not (message_id and stamp and signatures):
        return "missing headers"
    if not stamp.isdigit():
        return "bad timestamp"
    if abs(now - int(stamp)) > tolerance:
        return "timestamp too old" if int(stamp) < now else "timestamp too new"
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{stamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    for entry in signatures.split(" "):
        version, _, value = entry.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            return None
    return "no matching signature"


class WebhookStandin:
    """An aiohttp server on 127.0.0.1 and a free port."""

    def __init__(
        self,
        default: Reply | None = None,
        *,
        signing_secret: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.default = default or Reply(200, body=b'{"ok":true}')
        self.signing_secret = signing_secret
        self.clock = clock
        self.responder: Callable[[], Reply] | None = None
        self.requests: list[Received] = []
        #: Requests being answered now, and the most there ever were at once.
        self.in_flight = 0
        self.most_in_flight = 0
        self._replies: deque[Reply] = deque()
        self._arrived = asyncio.Event()
        self._released = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> WebhookStandin:
        """Start listening; :attr:`url` is then the address to POST to."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/hook/secret-token-0123456789"
        return self

    async def close(self) -> None:
        """Answer every held request and stop the server."""
        self.release()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> WebhookStandin:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def reply(
        self,
        status: int = 200,
        *,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        hold: bool = False,
        delay: float = 0.0,
        times: int = 1,
    ) -> None:
        """Queue the answer to the next request (``times`` requests)."""
        for _ in range(times):
            self._replies.append(Reply(status, headers or {}, body, hold, delay))

    def release(self) -> None:
        """Let every held request (now and later) be answered."""
        self._released.set()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Wait until ``count`` requests arrived and return them all.

        ``timeout`` only guards against a hung test; it is not a timing check.
        """
        async with asyncio.timeout(timeout):
            while len(self.requests) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return list(self.requests)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            parsed = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            parsed = None
        refused = None
        if self.signing_secret is not None:
            refused = verify_signature(
                self.signing_secret, dict(request.headers), body, self.clock()
            )
        if refused is not None:
            reply = Reply(401, body=orjson.dumps({"error": refused}))
        elif self._replies:
            reply = self._replies.popleft()
        elif self.responder is not None:
            reply = self.responder()
        else:
            reply = self.default
        self.requests.append(
            Received(
                method=request.method,
                path=request.path,
                headers=dict(request.headers),
                body=body,
                json=parsed,
                at=time.time(),
                status=reply.status,
                held=reply.hold,
                signature_error=refused,
            )
        )
        self._arrived.set()
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if reply.hold:
                await self._released.wait()
            if reply.delay:
                await asyncio.sleep(reply.delay)
        finally:
            self.in_flight -= 1

        return web.Response(status=reply.status, headers=reply.headers, body=reply.body)
