"""A local Teams Workflows webhook for tests, as strict as the published contract.

The webhook URL has the shape of a real one, a ``sig`` query parameter
included; a request without that exact signature is refused with 401. A body
above :data:`SIZE_LIMIT` bytes gets 413. The body must be the envelope the
"post to a channel" flow reads (``type: message``, attachments of
``application/vnd.microsoft.card.adaptive`` whose content is an
``AdaptiveCard`` of version 1.5 or lower); anything else gets 400 with the
reason. The real webhook answers 202 to such a body and the flow fails later,
out of the sender's sight; the stand-in is stricter so a malformed card shows
up in the test that sent it. ``Action.Submit`` is refused for the same reason:
a card posted by a webhook cannot carry it.

A valid message gets 202 with an empty body, unless a test scripted another
answer (429 with or without ``Retry-After``, a 5xx, a delay). In ``legacy``
mode the stand-in answers as a retired Office 365 connector did: 200 with
``1`` on success, and 200 with an error text for every scripted failure.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import orjson
from aiohttp import web

#: Teams' documented limit of one message, about 28 KB.
SIZE_LIMIT = 28 * 1024
ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"
#: The highest Adaptive Card version Teams renders.
MAX_VERSION = (1, 5)
SIGNATURE = "sig-0123456789abcdefABCDEF"

_VERSION = re.compile(r"(\d+)\.(\d+)")
_ACTIONS = frozenset({"Action.OpenUrl", "Action.ShowCard", "Action.ToggleVisibility"})
_ELEMENTS = frozenset(
    {
        "TextBlock",
        "RichTextBlock",
        "FactSet",
        "Container",
        "ColumnSet",
        "Image",
        "ImageSet",
        "ActionSet",
    }
)


@dataclass(frozen=True)
class Scripted:
    """One scripted answer to a valid message, instead of 202."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0


@dataclass
class Received:
    """One request as it arrived and as the stand-in judged it."""

    status: int
    reason: str
    headers: dict[str, str]
    body: bytes
    #: The parsed body, or ``None`` if it was not JSON.
    json: object


class Rejected(Exception):
    """Raised inside the stand-in when a request breaks the contract."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(reason)


class TeamsStandIn:
    """A Workflows webhook on ``127.0.0.1`` and a free port.

    :param legacy: answer as an Office 365 connector did (200 and a text).
    """

    def __init__(self, *, legacy: bool = False) -> None:
        self.legacy = legacy
        self.script: deque[Scripted] = deque()
        #: Seconds every answer waits before it is sent.
        self.delay = 0.0
        self.requests: list[Received] = []
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.url = ""

    @property
    def accepted(self) -> list[Received]:
        return [r for r in self.requests if r.reason == "accepted"]

    def cards(self) -> list[dict]:
        """Return the card of every accepted message, in arrival order."""
        return [r.json["attachments"][0]["content"] for r in self.accepted]

    def fail(
        self,
        status: int,
        *,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        delay: float = 0.0,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` valid messages with ``status``.

        In legacy mode the answer is 200 with the connector's error text for
        ``status`` instead.
        """
        answer = Scripted(status, headers or {}, body, delay)
        self.script.extend([answer] * times)

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Wait until ``count`` requests arrived (a guard, not a measure)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.requests) >= count)
        return list(self.requests)

    async def start(self) -> TeamsStandIn:
        app = web.Application(client_max_size=4 * SIZE_LIMIT)
        path = "/workflows/0a1b2c3d4e5f/triggers/manual/paths/invoke"
        app.router.add_route("*", path, self._invoke)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        grant = "sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0"
        query = f"api-version=2016-06-01&{grant}&sig={SIGNATURE}"
        self.url = f"http://{host}:{port}{path}?{query}"

        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> TeamsStandIn:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _invoke(self, request: web.Request) -> web.Response:
        body = await request.read()
        received = Received(202, "accepted", dict(request.headers), body, None)
        headers: dict[str, str] = {}
        try:
            received.json = self._check(request, body)
            scripted = self.script.popleft() if self.script else None
            if scripted is None:
                status, answer = (200, b"1") if self.legacy else (202, b"")
            else:
                await asyncio.sleep(scripted.delay)
                received.reason = f"scripted {scripted.status}"
                status, answer, headers = self._scripted(scripted)
        except Rejected as error:
            received.reason = error.reason
            status, answer = self._refusal(error)
        received.status = status
        await asyncio.sleep(self.delay)
        async with self._changed:
            self.requests.append(received)
            self._changed.notify_all()

        return web.Response(status=status, body=answer, headers=headers)

    def _scripted(self, scripted: Scripted) -> tuple[int, bytes, dict[str, str]]:
        if not self.legacy:
            return scripted.status, scripted.body, scripted.headers
        return 200, _connector_text(scripted.status), {}

    def _refusal(self, error: Rejected) -> tuple[int, bytes]:
        if not self.legacy:
            detail = {"code": "InvalidRequestContent", "message": error.reason}
            return error.status, orjson.dumps({"error": detail})
        # A connector refused a malformed card outright, and reported what
        # Teams refused (a card too large) in a 200.
        if error.status == 400:
            return 400, b"Bad payload received by generic incoming webhook."
        if error.status == 413:
            return 200, _connector_text(413)
        return error.status, b""

    def _check(self, request: web.Request, body: bytes) -> dict:
        """Return the parsed message, or raise :class:`Rejected`."""
        if request.method != "POST":
            raise Rejected(405, f"method {request.method} not allowed")
        if request.query.get("sig") != SIGNATURE:
            raise Rejected(401, "missing or wrong sig")
        if len(body) > SIZE_LIMIT:
            raise Rejected(413, f"Request Entity too large: {len(body)} bytes")
        if request.content_type != "application/json":
            raise Rejected(400, "Content-Type must be application/json")
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise Rejected(400, f"invalid JSON: {error}") from None
        problem = envelope_problem(message)
        if problem:
            raise Rejected(400, problem)

        return message


def _connector_text(status: int) -> bytes:
    text = f"Microsoft Teams endpoint returned HTTP error {status} to the message."
    return text.encode()


def envelope_problem(message: object) -> str | None:
    """Return what keeps ``message`` from being a message the flow posts."""
    if not isinstance(message, dict) or message.get("type") != "message":
        return "type must be 'message'"
    attachments = message.get("attachments")
    if not isinstance(attachments, list) or not attachments:
        return "attachments must be a non-empty array"
    for index, attachment in enumerate(attachments):
        where = f"attachments[{index}]"
        if not isinstance(attachment, dict):
            return f"{where} must be an object"
        if attachment.get("contentType") != ADAPTIVE_CARD:
            return f"{where}.contentType must be {ADAPTIVE_CARD}"
        problem = card_problem(attachment.get("content"))
        if problem:
            return f"{where}.content: {problem}"
    return None


def card_problem(card: object) -> str | None:
    """Return what keeps ``card`` from being an Adaptive Card Teams renders."""
    if not isinstance(card, dict) or card.get("type") != "AdaptiveCard":
        return "Property 'type' must be 'AdaptiveCard'"
    version = card.get("version")
    match = _VERSION.fullmatch(version) if isinstance(version, str) else None
    if match is None:
        return f"version must be like '1.4': {version!r}"
    if (int(match[1]), int(match[2])) > MAX_VERSION:
        return f"version {version} is above what Teams renders"
    problem = _elements_problem(card.get("body", []), "body")
    if problem:
        return problem
    return _actions_problem(card.get("actions", []), "actions")


def _elements_problem(elements: object, where: str) -> str | None:
    if not isinstance(elements, list):
        return f"{where} must be an array"
    for index, element in enumerate(elements):
        at = f"{where}[{index}]"
        kind = element.get("type") if isinstance(element, dict) else None
        if kind not in _ELEMENTS:
            return f"{at}: unknown element type {kind!r}"
        if kind == "TextBlock" and not isinstance(element.get("text"), str):
            return f"{at}.text must be a string"
        if kind == "FactSet":
            facts = element.get("facts")
            if not isinstance(facts, list) or not all(
                isinstance(f, dict)
                and set(f) == {"title", "value"}
                and all(isinstance(v, str) for v in f.values())
                for f in facts
            ):
                return f"{at}.facts must be an array of {{title, value}} strings"
        if kind == "Container":
            problem = _elements_problem(element.get("items"), f"{at}.items")
            if problem:
                return problem
        if kind == "ActionSet":
            problem = _actions_problem(element.get("actions"), f"{at}.actions")
            if problem:
                return problem
    return None


def _actions_problem(actions: object, where: str) -> str | None:
    if not isinstance(actions, list):
        return f"{where} must be an array"
    for index, action in enumerate(actions):
        at = f"{where}[{index}]"
        kind = action.get("type") if isinstance(action, dict) else None
        if kind not in _ACTIONS:
            return f"{at}: action {kind!r} is not supported in a webhook card"
        if not isinstance(action.get("title"), str):
            return f"{at}.title must be a string"
        if kind == "Action.OpenUrl":
            url = action.get("url")
            parts = urlsplit(url) if isinstance(url, str) else None
            if parts is None or parts.scheme not in ("http", "https"):
                return f"{at}.url must be an absolute http(s) URL"
    return None
