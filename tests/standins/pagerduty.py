"""A local PagerDuty for tests: the Events API v2, as strict as its contract,
and the Webhooks V3 deliveries a person's action there would cause.

``POST /v2/enqueue`` checks an event the way PagerDuty does (a 32-character
routing key, the enums, the summary and dedup key limits, the size limit, a
payload on every trigger) and answers 400 with PagerDuty's error body when it
breaks them. An accepted event moves the incident of its (routing key, dedup
key) pair: a trigger opens one, or adds to the log of the one open; an
acknowledge or resolve without an open incident is dropped, still with 202; a
trigger after a resolve opens a new incident. A trigger without a dedup key
gets a new UUID, returned in the answer.

Where the contract leaves room the stand-in is stricter, so that a client bug
shows here: an unknown field at the top of an event or in its payload is
refused with 400, a body that is not declared JSON too, and a body over the
size limit is refused with 413. The limit is 512,000 bytes, the smaller
reading of PagerDuty's "512 KB" (``size_limit`` changes it).

Answers can be scripted (:meth:`PagerDutyStandIn.fail`): 429 as PagerDuty
sends it (no ``Retry-After``), 5xx, or an answer held back until
:meth:`PagerDutyStandIn.release`, for client timeouts. A scripted answer is
given to a valid event only, which is then not ingested.

:meth:`PagerDutyStandIn.act` stands for a person acting on an incident in
PagerDuty: it changes the incident and returns the webhook PagerDuty would
deliver, which :func:`signed` signs as PagerDuty does.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from aiohttp import web

SIZE_LIMIT = 512_000
ROUTING_KEY_LENGTH = 32
SUMMARY_LIMIT = 1024
DEDUP_LIMIT = 255
ACTIONS = ("trigger", "acknowledge", "resolve")
SEVERITIES = ("critical", "error", "warning", "info")
OPEN = ("triggered", "acknowledged")

_EVENT_FIELDS = frozenset(
    {
        "routing_key",
        "event_action",
        "dedup_key",
        "payload",
        "client",
        "client_url",
        "links",
        "images",
    }
)
_PAYLOAD_FIELDS = frozenset(
    {
        "summary",
        "source",
        "severity",
        "timestamp",
        "component",
        "group",
        "class",
        "custom_details",
    }
)
_JSON = "application/json"
_ACCEPTED = {"status": "success", "message": "Event processed"}
_SCRIPTED_BODIES = {429: b"429 - Request Limit Exceeded"}


@dataclass(frozen=True)
class Scripted:
    """One scripted answer, given to the next valid event instead of 202."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    #: Do not answer until released.
    hold: bool = False
    #: Take the event as PagerDuty would, answering 202 (a place in the
    #: script before the failures that follow it).
    take: bool = False


@dataclass
class Incident:
    """One PagerDuty incident, opened by a trigger."""

    id: str
    number: int
    routing_key: str
    dedup_key: str
    status: str
    summary: str
    severity: str
    created_at: str
    #: The actions of every event applied to it, in order.
    log: list[str] = field(default_factory=list)

    @property
    def html_url(self) -> str:
        return f"https://tocsin-test.pagerduty.com/incidents/{self.id}"


@dataclass
class Received:
    """One request as it arrived and as the stand-in judged it."""

    status: int
    #: ``accepted``, ``dropped: ...``, ``scripted 429``, or what was wrong.
    reason: str
    headers: dict[str, str]
    body: bytes
    #: The parsed event, or ``None`` if it was not JSON.
    event: dict | None
    #: The incident it applied to, if any.
    incident: Incident | None = None


class Rejected(Exception):
    """Raised inside the stand-in when an event breaks the contract."""

    def __init__(self, status: int, error: str) -> None:
        self.status = status
        self.error = error
        super().__init__(error)


class PagerDutyStandIn:
    """The Events API v2 on ``127.0.0.1`` and a free port; :attr:`url` is its
    ``/v2/enqueue``."""

    def __init__(self, *, size_limit: int = SIZE_LIMIT) -> None:
        self.size_limit = size_limit
        self.requests: list[Received] = []
        self.incidents: list[Incident] = []
        self.script: deque[Scripted] = deque()
        self._changed = asyncio.Condition()
        self._released = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> PagerDutyStandIn:
        app = web.Application(client_max_size=4 * self.size_limit)
        app.router.add_post("/v2/enqueue", self._enqueue)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/v2/enqueue"

        return self

    async def stop(self) -> None:
        """Answer every held request and stop the server."""
        self.release()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> PagerDutyStandIn:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # What tests script and read.

    def fail(
        self,
        status: int,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        hold: bool = False,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` valid events with ``status``, unapplied."""
        if body is None:
            body = _SCRIPTED_BODIES.get(status, b"")
        self.script.extend([Scripted(status, headers or {}, body, hold)] * times)

    def take(self, times: int = 1) -> None:
        """Take the next ``times`` valid events as usual, before what the
        script says after them."""
        self.script.extend([Scripted(202, take=True)] * times)

    def release(self) -> None:
        """Let every held answer (now and later) be sent."""
        self._released.set()

    @property
    def accepted(self) -> list[Received]:
        return [request for request in self.requests if request.status == 202]

    def actions(self, dedup_key: str) -> list[str]:
        """Return the actions of the accepted events with ``dedup_key``."""
        return [
            request.event["event_action"]
            for request in self.accepted
            if request.event and request.event.get("dedup_key") == dedup_key
        ]

    def incident(self, dedup_key: str) -> Incident:
        """Return the latest incident of ``dedup_key``.

        :raises LookupError: if no trigger ever opened one.
        """
        for incident in reversed(self.incidents):
            if incident.dedup_key == dedup_key:
                return incident
        raise LookupError(dedup_key)

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Wait until ``count`` requests were answered (a guard, not a measure)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.requests) >= count)
        return list(self.requests)

    # The Events API.

    async def _enqueue(self, request: web.Request) -> web.Response:
        body = await request.read()
        received = Received(202, "accepted", dict(request.headers), body, None)
        scripted = None
        try:
            received.event = self._parse(request, body)
            _check(received.event)
            if self.script and not self.script[0].take:
                scripted = self.script.popleft()
                received.status = scripted.status
                received.reason = f"scripted {scripted.status}"
            else:
                if self.script:
                    self.script.popleft()
                answer = self._apply(received.event, received)
        except Rejected as error:
            received.status, received.reason = error.status, error.error
            answer = {
                "status": "invalid event",
                "message": "Event object is invalid",
                "errors": [error.error],
            }
        async with self._changed:
            self.requests.append(received)
            self._changed.notify_all()
        if scripted is not None:
            if scripted.hold:
                await self._released.wait()
            return web.Response(
                status=scripted.status, headers=scripted.headers, body=scripted.body
            )

        return web.json_response(answer, status=received.status)

    def _parse(self, request: web.Request, body: bytes) -> dict:
        if len(body) > self.size_limit:
            raise Rejected(413, f"request of {len(body)} bytes over {self.size_limit}")
        if request.content_type != _JSON:
            raise Rejected(400, f"Content-Type must be {_JSON}")
        try:
            # orjson refuses NaN and Infinity, as a strict JSON parser must.
            event = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise Rejected(400, "Event object is not valid JSON") from None
        if not isinstance(event, dict):
            raise Rejected(400, "Event object must be a JSON object")

        return event

    def _apply(self, event: dict, received: Received) -> dict:
        """Apply a valid event to the incidents; return the 202 body."""
        routing_key, action = event["routing_key"], event["event_action"]
        key = event.get("dedup_key") or str(uuid.uuid4())
        incident = next(
            (
                incident
                for incident in self.incidents
                if (incident.routing_key, incident.dedup_key) == (routing_key, key)
                and incident.status in OPEN
            ),
            None,
        )
        if action == "trigger" and incident is None:
            payload = event["payload"]
            incident = Incident(
                id=f"Q{len(self.incidents) + 1:06d}",
                number=len(self.incidents) + 1,
                routing_key=routing_key,
                dedup_key=key,
                status="triggered",
                summary=payload["summary"],
                severity=payload["severity"],
                created_at=_now(),
            )
            self.incidents.append(incident)
        elif incident is None:
            received.reason = f"dropped: no open alert to {action}"
        elif action == "acknowledge":
            incident.status = "acknowledged"
        elif action == "resolve":
            incident.status = "resolved"
        if incident is not None:
            incident.log.append(action)
            received.incident = incident

        return {**_ACCEPTED, "dedup_key": key}

    # A person in PagerDuty.

    def act(self, dedup_key: str, event_type: str, *, agent: str | None) -> bytes:
        """Change the incident of ``dedup_key`` as a person would; return the
        Webhooks V3 body PagerDuty would deliver about it.

        :param event_type: ``incident.acknowledged``, ``incident.resolved``,
            ``incident.unacknowledged`` or ``incident.reopened``.
        :param agent: the person's name; ``None`` for PagerDuty itself.
        """
        incident = self.incident(dedup_key)
        incident.status = {
            "incident.acknowledged": "acknowledged",
            "incident.resolved": "resolved",
            "incident.unacknowledged": "triggered",
            "incident.reopened": "triggered",
        }[event_type]
        incident.log.append(event_type)

        return webhook_body(incident, event_type, agent=agent)


def _check(event: dict) -> None:
    """Raise :class:`Rejected` with PagerDuty's words for a broken event."""
    unknown = set(event) - _EVENT_FIELDS
    if unknown:
        raise Rejected(400, f"unknown fields {sorted(unknown)}")
    routing_key = event.get("routing_key")
    if not isinstance(routing_key, str) or not routing_key:
        raise Rejected(400, "'routing_key' is missing or blank")
    if len(routing_key) != ROUTING_KEY_LENGTH:
        raise Rejected(
            400, "Length of 'routing_key' is incorrect (should be 32 characters)"
        )
    action = event.get("event_action")
    if action not in ACTIONS:
        raise Rejected(400, "'event_action' is missing or invalid")
    key = event.get("dedup_key")
    if key is not None and (not isinstance(key, str) or len(key) > DEDUP_LIMIT):
        raise Rejected(400, "'dedup_key' must be a string of at most 255 characters")
    if action != "trigger" and not key:
        raise Rejected(400, f"'dedup_key' is required to {action}")
    for name in ("client", "client_url"):
        if not isinstance(event.get(name, ""), str):
            raise Rejected(400, f"'{name}' must be a string")
    _check_links(event.get("links", []), event.get("images", []))
    if action == "trigger":
        _check_payload(event.get("payload"))


def _check_payload(payload: object) -> None:
    if not isinstance(payload, dict):
        raise Rejected(400, "'payload' is missing or not an object")
    unknown = set(payload) - _PAYLOAD_FIELDS
    if unknown:
        raise Rejected(400, f"unknown payload fields {sorted(unknown)}")
    summary = payload.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        raise Rejected(400, "'payload.summary' is missing or blank")
    if len(summary) > SUMMARY_LIMIT:
        raise Rejected(400, "'payload.summary' is longer than 1024 characters")
    source = payload.get("source")
    if not isinstance(source, str) or not source.strip():
        raise Rejected(400, "'payload.source' is missing or blank")
    if payload.get("severity") not in SEVERITIES:
        raise Rejected(400, "'payload.severity' is missing or invalid")
    stamp = payload.get("timestamp")
    if stamp is not None:
        try:
            datetime.fromisoformat(stamp)
        except (TypeError, ValueError):
            raise Rejected(400, "'payload.timestamp' is not ISO 8601") from None
    for name in ("component", "group", "class"):
        if not isinstance(payload.get(name, ""), str):
            raise Rejected(400, f"'payload.{name}' must be a string")
    if not isinstance(payload.get("custom_details", {}), dict):
        raise Rejected(400, "'payload.custom_details' must be an object")


def _check_links(links: object, images: object) -> None:
    if not isinstance(links, list) or not isinstance(images, list):
        raise Rejected(400, "'links' and 'images' must be arrays")
    for link in links:
        if not isinstance(link, dict) or not isinstance(link.get("href"), str):
            raise Rejected(400, "every link needs an 'href'")
        if not isinstance(link.get("text", ""), str):
            raise Rejected(400, "a link's 'text' must be a string")
    for image in images:
        src = image.get("src") if isinstance(image, dict) else None
        if not isinstance(src, str) or not src.startswith("https://"):
            raise Rejected(400, "every image needs an https 'src'")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# Webhooks V3, as PagerDuty delivers them.


def webhook_body(
    incident: Incident,
    event_type: str,
    *,
    agent: str | None,
    occurred_at: str | None = None,
) -> bytes:
    """Return the Webhooks V3 body of ``event_type`` about ``incident``.

    :param occurred_at: when it happened (ISO 8601); now by default.
    """
    person = None
    if agent is not None:
        person = {
            "html_url": "https://tocsin-test.pagerduty.com/users/PUSER01",
            "id": "PUSER01",
            "self": "https://api.pagerduty.com/users/PUSER01",
            "summary": agent,
            "type": "user_reference",
        }
    data = {
        "id": incident.id,
        "type": "incident",
        "self": f"https://api.pagerduty.com/incidents/{incident.id}",
        "html_url": incident.html_url,
        "number": incident.number,
        "status": incident.status,
        "incident_key": incident.dedup_key,
        "created_at": incident.created_at,
        "title": incident.summary,
        "service": {
            "id": "PSERV01",
            "summary": "ML models",
            "type": "service_reference",
        },
        "assignees": [],
        "escalation_policy": {"id": "PESC01", "type": "escalation_policy_reference"},
        "teams": [],
        "priority": None,
        "urgency": "high",
        "conference_bridge": None,
        "resolve_reason": None,
        "incident_type": {"name": "incident_default"},
    }
    return _event(event_type, "incident", person, data, occurred_at)


def ping_body() -> bytes:
    """Return the body of the webhook PagerDuty's test button sends."""
    data = {"type": "ping", "message": "Hello from your friend Pagey!"}
    return _event("pagey.ping", "pagey", None, data)


def _event(
    kind: str,
    resource: str,
    agent: dict | None,
    data: dict,
    occurred_at: str | None = None,
) -> bytes:
    event = {
        "id": uuid.uuid4().hex.upper()[:26],
        "event_type": kind,
        "resource_type": resource,
        "occurred_at": occurred_at or _now(),
        "agent": agent,
        "client": None,
        "data": data,
    }
    return orjson.dumps({"event": event})


def signature(body: bytes, *secrets: str) -> str:
    """Return the ``X-PagerDuty-Signature`` of ``body``: one ``v1=`` per secret."""
    return ",".join(
        "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        for secret in secrets
    )


def signed(body: bytes, *secrets: str, webhook_id: str | None = None) -> dict:
    """Return the headers PagerDuty sends with ``body``, signed with ``secrets``."""
    return {
        "Content-Type": _JSON,
        "User-Agent": "PagerDuty-Webhook/V3.0",
        "X-Webhook-Id": webhook_id or str(uuid.uuid4()),
        "X-Webhook-Subscription": "PSUB01",
        "X-PagerDuty-Signature": signature(body, *secrets),
    }
