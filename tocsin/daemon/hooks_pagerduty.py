"""PagerDuty's webhooks: what people do to incidents there, done to the alerts.

A PagerDuty channel with a ``webhook_secret`` takes the Webhooks V3 deliveries
of its subscription at ``/hooks/pagerduty/NAME``. The incident's
``incident_key`` is the dedup key the channel sent, which names the alert (see
:func:`tocsin.channels.pagerduty.alert_uid`). Every move made here is recorded
with the actor ``pagerduty`` and a comment naming the person PagerDuty names
and the incident.

What each event does:

- ``pagey.ping`` (the subscription's test button): nothing.
- ``incident.acknowledged``: the alert is acknowledged, unless someone already
  owns it (acknowledged, investigating) or it has ended.
- ``incident.resolved``: the alert is resolved through the moves a person
  would make in Tocsin (acknowledged, investigating, resolved), never through
  escalated.
- ``incident.reopened``: a resolved alert reopens as the same alert (back to
  triggered, its routes told), as a breach within its reopen window would
  reopen it; a closed alert stays closed.
- ``incident.unacknowledged``: logged and left: Tocsin has no move back from
  acknowledged, and whoever acknowledged it still owns the alert here.
- any other event: ignored.

PagerDuty signs no time, so a delivery captured on the way could be sent
again by anyone at any time; the ``X-Webhook-Id`` of each delivery is
remembered for :data:`~tocsin.state.inbound.KEEP_FOR`, and an event whose
``occurred_at`` is older than that is answered 200 and ignored: PagerDuty
stops retrying long before, so only a replay can be that old.

A request for a channel that does not take webhooks is answered 404; a
missing or malformed signature, id or body 400; a body over 2 MB 413; a
signature that matches none of the channel's secrets 401, changing nothing.
Anything else is answered 200, an event about an alert Tocsin does not know or
a move its lifecycle refuses included: any other answer would make PagerDuty
deliver the same event again and again, to no end. A repeated delivery (the
same ``X-Webhook-Id``) is answered 200 and does nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from datetime import datetime
from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from tocsin.channels.pagerduty import ACTOR, PagerDutyChannel, alert_uid
from tocsin.channels.summary import truncate
from tocsin.daemon.backend import move_alert_to
from tocsin.errors import LifecycleError, UnknownAlertError
from tocsin.state.inbound import KEEP_FOR
from tocsin.state.models import OPEN_STATES, AlertState

if TYPE_CHECKING:
    from tocsin.daemon.hooks import Hooks

log = logging.getLogger(__name__)

#: The largest body read; PagerDuty's own are at most 55 KB.
BODY_LIMIT = 2 * 1024 * 1024
SIGNATURE_HEADER = "X-PagerDuty-Signature"
ID_HEADER = "X-Webhook-Id"
#: Longest comment a move records.
COMMENT_LIMIT = 500

#: The state each incident event asks for, and the states that already are it.
_TARGETS: dict[str, tuple[AlertState, tuple[AlertState, ...]]] = {
    "incident.acknowledged": ("acknowledged", ("acknowledged", "investigating")),
    "incident.resolved": ("resolved", ("resolved", "closed")),
    "incident.reopened": ("triggered", OPEN_STATES),
}
_VERBS = {
    "incident.acknowledged": "acknowledged",
    "incident.resolved": "resolved",
    "incident.reopened": "reopened",
}


async def receive(request: web.Request, hooks: Hooks) -> web.Response:
    """Answer one Webhooks V3 delivery for the channel the path names.

    :raises web.HTTPException: for the refusals the module describes.
    """
    name = request.match_info["channel"]
    channel = hooks.channel(name)
    if not isinstance(channel, PagerDutyChannel) or not channel.webhook_secrets:
        raise web.HTTPNotFound(reason=f"no PagerDuty webhooks for channel {name}")

    # Check what PagerDuty always sends before acting on any of it.
    signatures = parse_signatures(request.headers.get(SIGNATURE_HEADER, ""))
    if not signatures:
        raise web.HTTPBadRequest(reason=f"missing or malformed {SIGNATURE_HEADER}")
    body = await _read(request)
    if not body:
        raise web.HTTPBadRequest(reason="empty body")
    if not is_signed(body, signatures, channel.webhook_secrets):
        # Warned: a secret out of step with PagerDuty's loses every event.
        log.warning(
            "PagerDuty webhook signature does not match",
            extra={"channel": name, "reason": "signature"},
        )
        raise web.HTTPUnauthorized(reason="signature does not match")
    webhook_id = request.headers.get(ID_HEADER, "").strip()
    if not webhook_id:
        raise web.HTTPBadRequest(reason=f"missing {ID_HEADER}")
    event = _event_of(body)
    if is_stale(event, hooks.clock.time()):
        # Warned: nothing but a replay of a captured delivery is this old.
        log.warning(
            "PagerDuty webhook too old to be a delivery; ignored",
            extra={"channel": name, "event": event["event_type"], "reason": "stale"},
        )
        return _ok("stale")

    if not await hooks.seen.first_time(ACTOR, webhook_id):
        log.info(
            "PagerDuty webhook repeated; ignored",
            extra={"channel": name, "event": event.get("event_type")},
        )
        return _ok("repeated")
    try:
        outcome = await _apply(event, hooks, name)
    except Exception:
        # Not applied (the database may be busy): PagerDuty retries on the
        # error this becomes, and its retry must not be taken for a repeat.
        await hooks.seen.forget(ACTOR, webhook_id)
        raise

    return _ok(outcome)


def parse_signatures(header: str) -> list[bytes]:
    """Return the ``v1`` signatures of an ``X-PagerDuty-Signature`` value.

    Entries of other versions, and ``v1`` entries that are not hex, are left
    out; an empty list means the header is missing or malformed.
    """
    found = []
    for entry in header.split(","):
        version, _, value = entry.strip().partition("=")
        if version != "v1" or not value:
            continue
        try:
            found.append(bytes.fromhex(value))
        except ValueError:
            continue

    return found


def is_stale(event: dict, now: float) -> bool:
    """Tell whether ``event`` happened before the oldest delivery id still
    remembered, so that its id may have been forgotten.

    An event without a readable ``occurred_at`` is not judged by it.
    """
    occurred = event.get("occurred_at")
    if not isinstance(occurred, str):
        return False
    try:
        when = datetime.fromisoformat(occurred)
    except ValueError:
        return False
    if when.tzinfo is None:
        return False

    return when.timestamp() < now - KEEP_FOR


def is_signed(body: bytes, signatures: list[bytes], secrets: tuple[str, ...]) -> bool:
    """Tell whether any signature is the HMAC-SHA256 of ``body`` under any
    secret, comparing in constant time."""
    expected = [hmac.new(s.encode(), body, hashlib.sha256).digest() for s in secrets]
    # Every pair is compared, so the time taken says nothing of which matched.
    matches = [hmac.compare_digest(e, s) for e in expected for s in signatures]

    return any(matches)


async def _read(request: web.Request) -> bytes:
    """Read the body, refusing one over :data:`BODY_LIMIT` with 413."""
    if (request.content_length or 0) > BODY_LIMIT:
        raise web.HTTPRequestEntityTooLarge(
            max_size=BODY_LIMIT, actual_size=request.content_length
        )
    body = b""
    while chunk := await request.content.read(BODY_LIMIT + 1 - len(body)):
        body += chunk
        if len(body) > BODY_LIMIT:
            raise web.HTTPRequestEntityTooLarge(
                max_size=BODY_LIMIT, actual_size=len(body)
            )

    return body


def _event_of(body: bytes) -> dict:
    """Return the ``event`` object of a delivery, refusing anything else."""
    try:
        delivery = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise web.HTTPBadRequest(reason="body is not JSON") from None
    event = delivery.get("event") if isinstance(delivery, dict) else None
    if not isinstance(event, dict) or not isinstance(event.get("event_type"), str):
        raise web.HTTPBadRequest(reason="body has no event with an event_type")

    return event


async def _apply(event: dict, hooks: Hooks, channel: str) -> str:
    """Do what ``event`` asks to its alert; return what was done, in a word."""
    kind = event["event_type"]
    context = {"channel": channel, "event": kind}
    if kind == "pagey.ping":
        log.info("PagerDuty webhook ping", extra=context)
        return "pong"
    if kind not in _TARGETS:
        if kind == "incident.unacknowledged":
            log.info(
                "PagerDuty unacknowledged an incident; the alert keeps its owner",
                extra=context,
            )
        else:
            log.debug("PagerDuty webhook ignored", extra=context)
        return "ignored"

    data = event.get("data")
    incident = data if isinstance(data, dict) else {}
    key = incident.get("incident_key")
    uid = alert_uid(key) if isinstance(key, str) else None
    if uid is None:
        log.info("PagerDuty incident names no Tocsin alert", extra=context)
        return "unknown alert"
    try:
        alert = (await hooks.backend.get_alert(uid)).alert
    except UnknownAlertError:
        log.info("PagerDuty incident names no Tocsin alert", extra=context)
        return "unknown alert"
    context["alert"] = alert.uid

    target, already = _TARGETS[kind]
    if alert.state in already:
        log.info(
            "PagerDuty webhook changes nothing",
            extra={**context, "reason": f"alert is {alert.state}"},
        )
        return "unchanged"
    comment = _comment(_VERBS[kind], event, incident)
    try:
        if target == "triggered":
            # A resolved alert reopens as the same alert, as a breach within
            # the reopen window reopens it; a closed one stays closed.
            await hooks.backend.reopen_alert(alert.uid, actor=ACTOR, comment=comment)
        else:
            await move_alert_to(
                hooks.backend, alert, target, actor=ACTOR, comment=comment
            )
    except LifecycleError as error:
        # No way there from where the alert is, or someone moved it
        # meanwhile: their move stands.
        log.info(
            "PagerDuty webhook asks a move the lifecycle refuses",
            extra={**context, "reason": str(error)},
        )
        return "refused"
    log.info("alert moved from PagerDuty", extra={**context, "transition": target})

    return target


def _comment(verb: str, event: dict, incident: dict) -> str:
    """Say who did what, where: ``resolved in PagerDuty by Ada (incident #7 URL)``."""
    agent = event.get("agent")
    who = agent.get("summary") if isinstance(agent, dict) else None
    text = f"{verb} in PagerDuty"
    if isinstance(who, str) and who:
        text += f" by {who}"
    where = [
        f"#{incident['number']}" if isinstance(incident.get("number"), int) else "",
        str(incident.get("html_url") or ""),
    ]
    where_text = " ".join(part for part in where if part)

    if where_text:
        text += f" (incident {where_text})"

    return truncate(text, COMMENT_LIMIT)


def _ok(outcome: str) -> web.Response:
    return web.Response(
        body=orjson.dumps({"status": "ok", "outcome": outcome}),
        content_type="application/json",
    )
