"""The v1 events endpoint of the Datadog stand-in, as strict as the contract.

``POST /api/v1/events`` needs the API key (403 otherwise), a JSON object
with a ``title`` and a ``text`` of at most 4000 characters, an
``aggregation_key`` of at most 100, an ``alert_type`` and a ``priority``
from their enums, and an integer ``date_happened`` no more than 18 hours
back nor 2 hours ahead of the intake's clock; anything else is 400 with the
reason. An accepted event gets 202 with ``status: ok`` and the event, its
new ``id`` included.

Where the contract leaves room the stand-in is stricter than Datadog: a
title above 100 characters (Datadog's old documented limit), an unknown
field and a tag that breaks the tag rules are refused too.

Tests script 429 (with Datadog's ``X-RateLimit-*`` headers), 5xx or a delay
with :meth:`EventsIntake.fail_events`; events are recorded apart from the
series requests, so either endpoint's tests see only their own.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from dataclasses import dataclass

import orjson
from aiohttp import web

from tocsin.clock import Clock

TITLE_LIMIT = 100
TEXT_LIMIT = 4000
KEY_LIMIT = 100
TAG_LIMIT = 200
#: How far back and ahead of the intake's clock ``date_happened`` may be.
EVENT_PAST = 18 * 3600
EVENT_FUTURE = 2 * 3600
ALERT_TYPES = frozenset(
    {
        "error",
        "warning",
        "info",
        "success",
        "user_update",
        "recommendation",
        "snapshot",
    }
)
PRIORITIES = frozenset({"normal", "low"})
_TAG = re.compile(r"[^\W\d_][\w\-:./]*")
_STRINGS = ("aggregation_key", "source_type_name", "host", "device_name")
_FIELDS = frozenset(
    {
        "title",
        "text",
        "date_happened",
        "alert_type",
        "priority",
        "tags",
        "related_event_id",
        *_STRINGS,
    }
)


@dataclass(frozen=True)
class EventAnswer:
    """One scripted answer to a valid event, instead of 202."""

    status: int
    headers: dict[str, str]
    body: bytes
    delay: float = 0.0


@dataclass
class EventReceived:
    """One events request, as it arrived and as the stand-in judged it."""

    status: int
    reason: str
    headers: dict[str, str]
    #: The parsed body, or ``None`` if it was not JSON.
    event: dict | None
    #: The id given to an accepted event.
    id: int | None = None


def rate_limited(reset: int = 7, *, limit: int = 1000) -> dict[str, str]:
    """The headers Datadog sends with a 429 of its API rate limit."""
    return {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Period": "60",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(reset),
        "X-RateLimit-Name": "events_submission",
    }


class EventsIntake:
    """What the stand-in adds for events; mixed into ``DatadogStandIn``."""

    api_key: str
    clock: Clock

    def _init_events(self) -> None:
        #: Answers to the next valid events; ``None`` accepts one.
        self.event_script: deque[EventAnswer | None] = deque()
        self.events: list[EventReceived] = []
        self._events_changed = asyncio.Condition()
        self._next_event_id = 5_000_000_000

    @property
    def accepted_events(self) -> list[dict]:
        """Every accepted event's body, in arrival order."""
        return [r.event for r in self.events if r.status == 202 and r.event]

    def fail_events(
        self,
        status: int,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        delay: float = 0.0,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` valid events with ``status``."""
        text = body if body is not None else orjson.dumps({"errors": ["scripted"]})
        answer = EventAnswer(status, headers or {}, text, delay)
        self.event_script.extend([answer] * times)

    def pass_events(self, times: int = 1) -> None:
        """Accept the next ``times`` valid events before a later scripted
        answer is used."""
        self.event_script.extend([None] * times)

    async def wait_events(self, count: int, timeout: float = 10.0) -> None:
        """Wait until ``count`` events were accepted (a guard, not a measure)."""
        async with asyncio.timeout(timeout), self._events_changed:
            await self._events_changed.wait_for(
                lambda: len(self.accepted_events) >= count
            )

    async def _event(self, request: web.Request) -> web.Response:
        raw = await request.read()
        received = EventReceived(202, "accepted", dict(request.headers), None)
        headers: dict[str, str] = {}
        try:
            if request.headers.get("DD-API-KEY") != self.api_key:
                raise _Refused(403, "Forbidden")
            if request.content_type != "application/json":
                raise _Refused(400, "Content-Type must be application/json")
            received.event = self._check_event(raw)
            scripted = self.event_script.popleft() if self.event_script else None
            if scripted is None:
                received.id = self._next_event_id
                self._next_event_id += 1
                body = orjson.dumps(_accepted(received.event, received.id))
            else:
                await asyncio.sleep(scripted.delay)
                received.status, received.reason = scripted.status, "scripted"
                body, headers = scripted.body, scripted.headers
        except _Refused as error:
            received.status, received.reason = error.status, error.reason
            body = orjson.dumps({"errors": [error.reason]})
        async with self._events_changed:
            self.events.append(received)
            self._events_changed.notify_all()

        return web.Response(
            status=received.status,
            body=body,
            headers=headers,
            content_type="application/json",
        )

    def _check_event(self, raw: bytes) -> dict:
        """Return the event of a body, or raise :class:`_Refused`."""
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            raise _Refused(400, f"invalid JSON: {error}") from None
        if not isinstance(event, dict):
            raise _Refused(400, "the body must be an object")
        problem = _event_problem(event, self.clock.time())
        if problem:
            raise _Refused(400, problem)

        return event


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(reason)


def _event_problem(event: dict, now: float) -> str | None:
    """Return what is wrong with one event, or ``None``."""
    unknown = set(event) - _FIELDS
    if unknown:
        return f"unknown fields {sorted(unknown)}"
    title, text = event.get("title"), event.get("text")
    if not isinstance(title, str) or not title:
        return "title is required"
    if len(title) > TITLE_LIMIT:
        return f"title longer than {TITLE_LIMIT} characters"
    if not isinstance(text, str):
        return "text is required"
    if len(text) > TEXT_LIMIT:
        return f"text longer than {TEXT_LIMIT} characters: {len(text)}"
    for name in _STRINGS:
        if name in event and not isinstance(event[name], str):
            return f"{name} must be a string"
    if len(event.get("aggregation_key", "")) > KEY_LIMIT:
        return f"aggregation_key longer than {KEY_LIMIT} characters"
    if event.get("alert_type", "info") not in ALERT_TYPES:
        return f"invalid alert_type {event['alert_type']!r}"
    if event.get("priority") not in (*PRIORITIES, None):
        return f"invalid priority {event['priority']!r}"
    if "related_event_id" in event and not _is_int(event["related_event_id"]):
        return "related_event_id must be an integer"
    if "date_happened" in event:
        stamp = event["date_happened"]
        if not _is_int(stamp):
            return f"date_happened must be an integer: {stamp!r}"
        if not now - EVENT_PAST <= stamp <= now + EVENT_FUTURE:
            return f"date_happened {stamp} outside -18h..+2h of {now:.0f}"
    return _tags_problem(event.get("tags", []))


def _tags_problem(tags: object) -> str | None:
    if not isinstance(tags, list):
        return "tags must be an array"
    for tag in tags:
        valid = (
            isinstance(tag, str)
            and len(tag) <= TAG_LIMIT
            and _TAG.fullmatch(tag) is not None
            and not tag.endswith(":")
        )
        if not valid:
            return f"tag breaks the tag rules: {tag!r}"
    return None


def _accepted(event: dict, number: int) -> dict:
    shown = {
        key: event.get(key)
        for key in ("title", "text", "date_happened", "priority", "alert_type")
    }
    shown.update(
        id=number,
        id_str=str(number),
        tags=event.get("tags", []),
        url=f"/event/event?id={number}",
    )
    return {"status": "ok", "event": shown}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
