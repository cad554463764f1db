"""A local Slack for tests: an incoming webhook, ``response_url``s, and
signed button clicks.

Usage::

    async with SlackStandin() as slack:
        slack.fail("channel_not_found")        # the next post is refused
        slack.reply(429, b"rate_limited", headers={"Retry-After": "3"})
        ...  # POST to slack.webhook_url
        [message] = await slack.wait_for_messages(1)

        url = slack.response_url()
        request = signed_action(SECRET, "tocsin.acknowledge", uid, response_url=url)
        ...  # POST request.body with request.headers to Tocsin
        [update] = await slack.wait_for_updates(1)

The webhook is as strict as Slack's: a body that is not a JSON object is
``400 invalid_payload``, one without ``text``, ``blocks`` or ``attachments``
is ``400 no_text``, and any block past Slack's limits (50 blocks, a header
over 150 characters, a section text over 3000, more than 10 fields of over
2000, a button text over 75...) makes the whole message ``400
invalid_blocks``. A message it takes is answered ``200 ok`` (``text/html``)
and kept in :attr:`SlackStandin.messages`; another path under
``/services/`` is ``404 no_service``, as for a revoked webhook.

A ``response_url`` takes at most five posts within 30 minutes of being
issued, as Slack's do; after that it answers ``404 expired_url``. Its
success answer is ``200 {"ok":true}``: Slack's contract does not document
it, and Tocsin only looks at the status.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import urlencode

import orjson
from aiohttp import web

from tests.standins.block_kit import TEXT_CUT, message_error

#: The statuses Slack answers its error strings with; those Slack does not
#: document are guesses and can be overridden with ``fail(status=...)``.
ERROR_STATUS = {
    "invalid_payload": 400,
    "invalid_blocks": 400,
    "user_not_found": 400,
    "no_text": 400,
    "no_service_id": 400,
    "too_many_attachments": 400,
    "action_prohibited": 403,
    "invalid_token": 403,
    "team_disabled": 403,
    "posting_to_general_channel_denied": 403,
    "channel_not_found": 404,
    "no_service": 404,
    "no_team": 404,
    "no_active_hooks": 404,
    "channel_is_archived": 410,
    "rollup_error": 500,
}

#: Uses and lifetime of one ``response_url``.
RESPONSE_URL_USES = 5
RESPONSE_URL_LIFETIME = 1800.0


@dataclass(frozen=True)
class Reply:
    """One scripted answer of the webhook."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    #: Do not answer until released.
    hold: bool = False


@dataclass(frozen=True)
class Received:
    """One post to the webhook, with how it was answered."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    answer: bytes


@dataclass(frozen=True)
class Update:
    """One post a ``response_url`` took."""

    url: str
    json: dict


@dataclass
class _ResponseUrl:
    issued_at: float
    uses: int = 0


class SlackStandin:
    """An aiohttp server on 127.0.0.1 and a free port.

    :param clock: what ``response_url`` lifetimes are measured with
        (anything with ``time()``); the wall clock by default.
    """

    def __init__(self, clock=None) -> None:
        self._clock = clock
        self.requests: list[Received] = []
        #: The messages the webhook took, as posted (``text`` cut at 40000).
        self.messages: list[dict] = []
        self.updates: list[Update] = []
        self._replies: deque[Reply] = deque()
        self._response_urls: dict[str, _ResponseUrl] = {}
        self._changed = asyncio.Event()
        self._released = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._path = f"/services/T0TOCSIN/B0TOCSIN/{secrets.token_hex(12)}"
        self.base_url = ""

    @property
    def webhook_url(self) -> str:
        """The incoming webhook's URL: the credential a channel is given."""
        return self.base_url + self._path

    async def start(self) -> SlackStandin:
        app = web.Application()
        app.router.add_post("/services/{tail:.*}", self._webhook)
        app.router.add_post("/actions/{tail:.*}", self._response)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        return self

    async def close(self) -> None:
        self.release()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SlackStandin:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # Scripting the webhook

    def reply(
        self,
        status: int,
        body: bytes,
        *,
        headers: dict[str, str] | None = None,
        hold: bool = False,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` posts so, whatever they hold."""
        for _ in range(times):
            self._replies.append(Reply(status, body, headers or {}, hold))

    def fail(self, error: str, *, status: int | None = None, times: int = 1) -> None:
        """Refuse the next ``times`` posts with Slack's ``error`` string."""
        code = status if status is not None else ERROR_STATUS[error]
        self.reply(code, error.encode(), times=times)

    def hold(self) -> None:
        """Take the next post and answer it only once released (a slow Slack)."""
        self.reply(200, b"ok", hold=True)

    def release(self) -> None:
        """Answer every held post, now and later."""
        self._released.set()

    # response_url

    def response_url(self) -> str:
        """Issue a new ``response_url``, as Slack does with each click."""
        token = secrets.token_hex(12)
        self._response_urls[token] = _ResponseUrl(self._now())
        return f"{self.base_url}/actions/T0TOCSIN/{len(self._response_urls)}/{token}"

    # Waiting

    async def wait_for_messages(self, count: int, timeout: float = 10.0) -> list[dict]:
        """Wait until the webhook took ``count`` messages; return them all.

        ``timeout`` only guards against a hung test.
        """
        await self._wait(lambda: len(self.messages) >= count, timeout)
        return list(self.messages)

    async def wait_for_updates(self, count: int, timeout: float = 10.0) -> list[Update]:
        """Wait until ``response_url``s took ``count`` posts; return them all."""
        await self._wait(lambda: len(self.updates) >= count, timeout)
        return list(self.updates)

    async def _wait(self, done, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                self._changed.clear()
                await self._changed.wait()

    def _now(self) -> float:
        return self._clock.time() if self._clock is not None else time.time()

    # Handlers

    async def _webhook(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self._replies:
            reply = self._replies.popleft()
        elif request.path != self._path:
            reply = _error("no_service")
        else:
            message, error = _read_message(request.content_type, body)
            if error is None:
                error = message_error(message)
            if error is not None:
                reply = _error(error)
            else:
                self.messages.append(message)
                reply = Reply(200, b"ok")
        self.requests.append(
            Received(
                request.path, dict(request.headers), body, reply.status, reply.body
            )
        )
        self._changed.set()
        if reply.hold:
            await self._released.wait()
        headers = {"Content-Type": "text/html", **reply.headers}

        return web.Response(status=reply.status, body=reply.body, headers=headers)

    async def _response(self, request: web.Request) -> web.Response:
        token = request.path.rsplit("/", 1)[-1]
        issued = self._response_urls.get(token)
        body = await request.read()
        if issued is None:
            return _json_error("no_service", 404)
        issued.uses += 1
        expired = self._now() - issued.issued_at > RESPONSE_URL_LIFETIME
        if expired or issued.uses > RESPONSE_URL_USES:
            return _json_error("expired_url", 404)
        message, error = _read_message(request.content_type, body)
        if error is None:
            error = message_error(message) or _response_error(message)
        if error is not None:
            return _json_error(error, 400)
        self.updates.append(Update(str(request.url), message))
        self._changed.set()

        return web.json_response({"ok": True})


def _error(error: str) -> Reply:
    return Reply(ERROR_STATUS[error], error.encode())


def _json_error(error: str, status: int) -> web.Response:
    return web.json_response({"ok": False, "error": error}, status=status)


def _read_message(content_type: str, body: bytes) -> tuple[dict, str | None]:
    if content_type != "application/json":
        return {}, "invalid_payload"
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}, "invalid_payload"
    if not isinstance(message, dict):
        return {}, "invalid_payload"
    text = message.get("text")
    if isinstance(text, str) and len(text) > TEXT_CUT:
        message["text"] = text[:TEXT_CUT]

    return message, None


def _response_error(message: dict) -> str | None:
    if message.get("response_type", "ephemeral") not in ("ephemeral", "in_channel"):
        return "invalid_payload"
    for flag in ("replace_original", "delete_original"):
        if not isinstance(message.get(flag, False), bool):
            return "invalid_payload"
    return None


# Signed clicks


@dataclass(frozen=True)
class SignedRequest:
    """An interactivity request as Slack posts it to an app."""

    headers: dict[str, str]
    body: bytes
    #: The ``payload`` JSON inside the body.
    payload: dict


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Return ``X-Slack-Signature`` for ``body`` sent at ``timestamp``."""
    base = b"v0:" + timestamp.encode() + b":" + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return f"v0={digest}"


def signed_action(
    secret: str,
    action_id: str,
    value: str,
    *,
    timestamp: float | None = None,
    action_ts: str = "1750000000.000100",
    user_id: str = "U0ALICE",
    username: str = "alice",
    response_url: str = "https://hooks.slack.invalid/actions/T0/1/none",
    message: dict | None = None,
) -> SignedRequest:
    """Build the ``block_actions`` request of one button click, signed.

    :param timestamp: ``X-Slack-Request-Timestamp``; now by default.
    :param message: the message the button was on.
    """
    stamp = str(int(time.time() if timestamp is None else timestamp))
    payload = {
        "type": "block_actions",
        "user": {
            "id": user_id,
            "username": username,
            "name": username,
            "team_id": "T0TOCSIN",
        },
        "api_app_id": "A0TOCSIN",
        "token": "legacy-verification-token",
        "container": {
            "type": "message",
            "message_ts": "1750000000.000001",
            "channel_id": "C0ALERTS",
            "is_ephemeral": False,
        },
        "trigger_id": "1750000000.1.trigger",
        "team": {"id": "T0TOCSIN", "domain": "tocsin-tests"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": "C0ALERTS", "name": "alerts"},
        "message": message or {"type": "message", "ts": "1750000000.000001"},
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [
            {
                "action_id": action_id,
                "block_id": "b0",
                "type": "button",
                "value": value,
                "text": {"type": "plain_text", "text": action_id, "emoji": True},
                "action_ts": action_ts,
            }
        ],
    }
    body = urlencode({"payload": orjson.dumps(payload).decode()}).encode()
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": sign(secret, stamp, body),
    }

    return SignedRequest(headers, body, payload)
