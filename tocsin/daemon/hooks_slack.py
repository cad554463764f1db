"""Slack's button clicks: acknowledge, snooze or resolve an alert from its
message.

Slack posts a click to ``/hooks/slack/NAME`` as a form with one field,
``payload``, holding ``block_actions`` JSON, and signs it: the
``X-Slack-Signature`` header is ``v0=`` and the hex HMAC-SHA256, under the
channel's signing secret, of ``v0:{X-Slack-Request-Timestamp}:{raw body}``.
A request whose signature does not match, or whose timestamp is more than
:data:`WINDOW` seconds away from Tocsin's clock (either way), is answered 401
and changes nothing; a captured request replayed later is refused that way.

Slack shows the person an error unless it hears ``200`` within three
seconds, so the answer is sent as soon as the request is known to be
Slack's; the action is applied afterwards, and its outcome goes back through
the click's ``response_url``: the message redrawn in the alert's new state
(in a grouped message, only that alert's part), naming who acted, with the
buttons of the moves still open; or, when the
lifecycle refuses the move, a message only the clicker sees, saying why.
A click is applied once: a repeat of the same ``action_ts`` by the same
person is dropped.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping
from urllib.parse import parse_qs

import aiohttp
import msgspec
from aiohttp import web

from tocsin.channels.matchers import Matcher
from tocsin.channels.payload import format_duration
from tocsin.channels.slack import SlackChannel
from tocsin.channels.slack_blocks import ACKNOWLEDGE, RESOLVE, SNOOZE
from tocsin.daemon.backend import AlertDetail, move_alert_to
from tocsin.errors import InvalidValueError, LifecycleError, UnknownAlertError
from tocsin.state.models import OPEN_STATES

log = logging.getLogger(__name__)

#: Most seconds between a request's timestamp and Tocsin's clock, either way.
WINDOW = 300.0
#: The source inbound clicks are remembered under.
SOURCE = "slack"
#: Seconds a post to a ``response_url`` may take.
RESPONSE_TIMEOUT = 10.0
#: What every transition and silence made from Slack says about itself.
COMMENT = "from Slack"

_VERBS = {ACKNOWLEDGE: "acknowledge", SNOOZE: "snooze", RESOLVE: "resolve"}


class _User(msgspec.Struct):
    id: str
    username: str = ""


class _Action(msgspec.Struct):
    action_id: str
    action_ts: str
    value: str = ""


class _Payload(msgspec.Struct):
    type: str
    user: _User
    actions: list[_Action] = []
    response_url: str = ""
    #: The message the button was on, as Slack keeps it.
    message: dict | None = None


class _Refused(Exception):
    """Raised when an action cannot be applied; the message says why."""


async def receive(request: web.Request, hooks) -> web.StreamResponse:
    """Take one signed click for the Slack channel the path names.

    :raises HTTPNotFound: if the channel is unknown, not Slack's, or takes
        no actions (it has no signing secret).
    :raises HTTPUnauthorized: if the signature or the timestamp is wrong.
    :raises HTTPBadRequest: if the payload is not a ``block_actions`` click.
    """
    name = request.match_info["channel"]
    channel = hooks.channel(name)
    if not isinstance(channel, SlackChannel) or channel.signing_secret is None:
        # The name is not echoed: it comes decoded from the path, and a
        # reason phrase may not hold what a path can.
        raise web.HTTPNotFound(reason="no Slack channel of that name takes actions")
    body = await request.read()
    problem = check_signature(
        request.headers, body, channel.signing_secret, hooks.clock.time()
    )
    if problem is not None:
        # Warned: a wrong signing secret or a skewed clock otherwise shows
        # only as buttons that do nothing.
        log.warning("slack request refused", extra={"channel": name, "reason": problem})
        raise web.HTTPUnauthorized(reason=f"the request is not Slack's: {problem}")
    payload = _parse(body)
    ours = [action for action in payload.actions if action.action_id in _VERBS]
    if payload.type != "block_actions" or not ours:
        return web.Response(status=200)

    # Answer now. The action, and what Slack shows of it, follow in this
    # handler rather than a loose task, so stopping the API waits for them
    # as it waits for any request in progress.
    response = web.Response(status=200)
    await response.prepare(request)
    await response.write_eof()
    for action in ours:
        try:
            await _apply(hooks, channel, payload, action)
        except Exception:
            log.exception(
                "slack action failed",
                extra={"channel": name, "alert": action.value[:64]},
            )

    return response


def check_signature(
    headers: Mapping[str, str], body: bytes, secret: str, now: float
) -> str | None:
    """Return why a request is not Slack's, or ``None`` if it is.

    :param now: Tocsin's time; the request's may differ by :data:`WINDOW`.
    """
    stamp = headers.get("X-Slack-Request-Timestamp", "")
    given = headers.get("X-Slack-Signature", "")
    if not stamp or not given:
        return "unsigned"
    if not (stamp.isdigit() and len(stamp) <= 12):
        return "bad timestamp"
    if abs(now - int(stamp)) > WINDOW:
        return "timestamp outside the window"
    base = b"v0:" + stamp.encode() + b":" + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    expected = f"v0={digest}".encode()
    if not hmac.compare_digest(expected, given.encode("utf-8", "replace")):
        return "bad signature"

    return None


def _parse(body: bytes) -> _Payload:
    """Read the ``payload`` field of a form body.

    :raises HTTPBadRequest: if there is no such field or it is not a click.
    """
    try:
        fields = parse_qs(body.decode(), strict_parsing=True)
        [text] = fields["payload"]
        return msgspec.json.decode(text, type=_Payload)
    except (UnicodeDecodeError, ValueError, KeyError, msgspec.ValidationError):
        raise web.HTTPBadRequest(reason="expected a block_actions payload") from None


async def _apply(hooks, channel: SlackChannel, payload: _Payload, action: _Action):
    """Apply one click once, then tell Slack what came of it."""
    user = payload.user
    if not await hooks.seen.first_time(SOURCE, f"{action.action_ts}:{user.id}"):
        log.info(
            "slack action repeated",
            extra={"channel": channel.name, "alert": action.value[:64]},
        )
        return

    # Redacted here, not only where it is stored: it is also sent back to
    # Slack in the redrawn message.
    actor = hooks.redactor.text(f"slack:{(user.username or user.id)[:100]}")
    verb = _VERBS[action.action_id]
    try:
        detail, note = await _act(hooks, channel, action.action_id, action.value, actor)
    except LifecycleError as error:
        # Someone (or the engine) may have done it first: then the click's
        # intent holds, and the message is redrawn to say so.
        detail = await hooks.backend.get_alert(action.value)
        state = detail.alert.state
        if state in _DONE.get(action.action_id, ()):
            note, refusal = f"Already {state}", None
        else:
            refusal = error
    except (_Refused, UnknownAlertError, InvalidValueError) as error:
        refusal = error
    else:
        refusal = None
    if refusal is not None:
        log.info(
            "slack action refused",
            extra={"channel": channel.name, "alert": action.value[:64], "reason": verb},
        )
        answer = {
            "response_type": "ephemeral",
            "replace_original": False,
            "text": f"Tocsin could not {verb} this alert: {refusal}",
        }
    else:
        log.info(
            "slack action applied",
            extra={"channel": channel.name, "alert": detail.alert.uid, "reason": actor},
        )
        message = channel.render_alert(
            detail.alert, note=note, at=hooks.clock.time(), original=payload.message
        )
        answer = {**message, "replace_original": True}
    await _respond(hooks.session, payload.response_url, answer, channel.name)


#: The states in which each move's purpose already holds.
_DONE = {
    ACKNOWLEDGE: frozenset({"acknowledged", "investigating", "resolved", "closed"}),
    RESOLVE: frozenset({"resolved", "closed"}),
}


async def _act(
    hooks, channel: SlackChannel, action_id: str, uid: str, actor: str
) -> tuple[AlertDetail, str]:
    """Apply one action to the alert ``uid``; return it and what was done.

    :raises LifecycleError: if its lifecycle refuses the move.
    :raises UnknownAlertError: if there is no such alert.
    :raises _Refused: if there is nothing to snooze.
    """
    backend = hooks.backend
    if action_id == ACKNOWLEDGE:
        detail = await backend.move_alert(
            uid, "acknowledged", actor=actor, comment=COMMENT
        )
        return detail, f"Acknowledged by {actor}"
    if action_id == RESOLVE:
        return await _resolve(backend, uid, actor), f"Resolved by {actor}"

    detail = await backend.get_alert(uid)
    alert = detail.alert
    if alert.state not in OPEN_STATES:
        raise _Refused(f"alert {alert.id} is {alert.state}: there is nothing to snooze")
    # Exactly this alert: its rule and each of its labels, but not its
    # severity, so that the snooze holds if the alert changes level.
    labels = {**alert.spec.labels, "rule": alert.spec.rule}
    matchers = [
        str(Matcher(name, "=", value)) for name, value in sorted(labels.items())
    ]
    now = hooks.clock.time()
    duration = format_duration(channel.snooze)
    await backend.add_silence(
        matchers=matchers,
        starts_at=now,
        ends_at=now + channel.snooze,
        created_by=actor,
        comment=f"Snoozed {COMMENT} for {duration}",
    )

    return detail, f"Snoozed for {duration} by {actor}"


async def _resolve(backend, uid: str, actor: str) -> AlertDetail:
    """Resolve an alert through the moves a person would make, each recorded.

    :raises LifecycleError: if it is resolved already or cannot get there.
    """
    alert = (await backend.get_alert(uid)).alert
    return await move_alert_to(backend, alert, "resolved", actor=actor, comment=COMMENT)


async def _respond(
    session: aiohttp.ClientSession, url: str, answer: dict, channel: str
) -> None:
    """Post ``answer`` to a click's ``response_url``; a failure is logged.

    The URL lets anyone post into the conversation for a while, so it is
    never logged.
    """
    if not url.startswith(("https://", "http://")):
        log.warning("slack response not sent", extra={"channel": channel})
        return
    try:
        async with session.post(
            url,
            json=answer,
            timeout=aiohttp.ClientTimeout(total=RESPONSE_TIMEOUT),
            allow_redirects=False,
        ) as reply:
            status = reply.status
    except (TimeoutError, aiohttp.ClientError) as error:
        log.warning(
            "slack response failed",
            extra={"channel": channel, "error": type(error).__name__},
        )
        return
    if not 200 <= status < 300:
        log.warning(
            "slack response refused", extra={"channel": channel, "status": status}
        )
