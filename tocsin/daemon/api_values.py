"""The API's values: requests decoded and checked, answers shaped as JSON.

A request body is decoded into the config's own types and checked as the
config file is, so a rule or a channel added through the API obeys exactly the
file's rules; an error names the key at fault from the body's root
(``rule.threshold``, ``channel.url``). Durations are written as in the file
(``5m``) or as seconds; answers give them in seconds, so what a ``GET``
returns may be sent back as it is.

Answers never hold a secret: a channel's URLs, keys and header values are
masked in every one.
"""

from __future__ import annotations

import pwd
import re
import socket
import struct
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from tocsin import config
from tocsin.channel_checks import check_channel
from tocsin.daemon.backend import (
    AlertDetail,
    IntegrationEntry,
    RuleEntry,
)
from tocsin.errors import ConfigError, InvalidValueError
from tocsin.logs import redact, register_secret
from tocsin.rule_checks import check_rule
from tocsin.schema import MAX_DURATION, ChannelConfig, Duration, RuleConfig
from tocsin.state.models import Alert, Silence
from tocsin.state.outbox import DeadLetter

T = TypeVar("T")

#: What stands in an answer for a secret.
MASK = "********"
_MSGSPEC_PATH = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$")
_FIELD = re.compile(r"Object (?:contains unknown|missing required) field `(.+)`")


class RequestError(Exception):
    """Raised inside the API when a request is malformed: not JSON, not an
    object, or a query parameter that cannot be read. Answered with 400."""


def is_unix(request: web.Request) -> bool:
    """Tell whether ``request`` came over the Unix socket (else over TCP)."""
    sock = request.transport.get_extra_info("socket") if request.transport else None

    return sock is not None and sock.family == socket.AF_UNIX


def actor(request: web.Request) -> str:
    """Return who makes ``request``: ``api:<user>`` over the Unix socket, the
    user being the peer process's, and ``api:token`` over TCP (whose requests
    only reach a handler with the token)."""
    if not is_unix(request):
        return "api:token"

    return f"api:{_peer_user(request.transport.get_extra_info('socket'))}"


def _peer_user(sock: socket.socket) -> str:
    """Return the user name of the process at the other end of a Unix socket."""
    try:
        credentials = sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
        )
    except (AttributeError, OSError):
        # No peer credentials on this system: the socket's mode still guards
        # who may connect, only the name in the history is lost.
        return "unknown"
    _, uid, _ = struct.unpack("3i", credentials)
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _decode_hook(kind: type, obj: object) -> object:
    if kind is Duration:
        if isinstance(obj, str):
            return Duration.parse(obj)
        if isinstance(obj, int | float) and not isinstance(obj, bool):
            if not 0 <= obj <= MAX_DURATION:
                raise ValueError("a duration is from 0 to 3650d in seconds")
            return Duration(obj)
        raise TypeError("expected a duration like '30s', '5m' or '1h', or seconds")
    raise NotImplementedError(kind)


def _encode_hook(obj: object) -> object:
    # Only Duration reaches here: msgspec encodes plain floats itself.
    if isinstance(obj, float):
        return float(obj)
    raise NotImplementedError(type(obj))


def builtins(value: object) -> Any:
    """Return ``value`` (Structs, lists, dicts of them) as plain JSON values."""
    return msgspec.to_builtins(value, enc_hook=_encode_hook)


def decode(obj: object, kind: type[T], root: str) -> T:
    """Convert a decoded JSON value into ``kind``, as the config file would be.

    :param root: the name of the value in error messages (``rule``).
    :raises InvalidValueError: naming the key at fault, if ``obj`` does not
        fit ``kind``.
    """
    try:
        return msgspec.convert(obj, kind, dec_hook=_decode_hook)
    except msgspec.ValidationError as error:
        match = _MSGSPEC_PATH.match(str(error))
        assert match is not None
        message, path = match["message"], root + (match["path"] or "")
        field = _FIELD.match(message)
        if field:
            message = "unknown key" if "unknown" in message else "missing required key"
            path = f"{path}.{field[1]}"
        message = message.replace(" | null`", "`")
        raise InvalidValueError(message, path.lstrip(".") or None) from None


def parse_duration(text: str, key: str) -> float:
    """Return the seconds of ``text`` (``2h``).

    :raises InvalidValueError: naming ``key``, if it is not a duration.
    """
    try:
        return Duration.parse(text)
    except ValueError as error:
        raise InvalidValueError(str(error), key) from None


def parse_time(value: object, key: str) -> float:
    """Return the POSIX seconds of an ISO 8601 time or a number of seconds.

    A time without a zone is read as UTC, whatever the host's zone.

    :raises InvalidValueError: naming ``key``, if it is neither.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return moment.timestamp()
    raise InvalidValueError(
        "expected an ISO 8601 time like 2026-01-31T12:00:00Z", key
    ) from None


def check_new_rule(obj: object) -> RuleConfig:
    """Decode a rule sent to the API and check it as the file's rules are.

    :raises InvalidValueError: naming the key at fault (``rule.window``).
    """
    rule = decode(obj, RuleConfig, "rule")
    if rule.name.startswith(config.RESERVED_RULE_PREFIX):
        raise InvalidValueError(
            f"rule names starting with {config.RESERVED_RULE_PREFIX!r} are"
            " Tocsin's own",
            "rule.name",
        )
    try:
        check_rule(rule, "api", "rule")
    except ConfigError as error:
        raise InvalidValueError(error.detail, error.key) from None

    return rule


def check_new_channel(obj: object) -> ChannelConfig:
    """Decode a channel sent to the API and check it as the file's channels are.

    :raises InvalidValueError: naming the key at fault (``channel.url``); for
        a type Tocsin cannot deliver to, saying which types it can.
    """
    kind = obj.get("type") if isinstance(obj, dict) else None
    known = sorted(config.CHANNEL_TYPES)
    if isinstance(kind, str) and kind not in known:
        raise InvalidValueError(
            f"Tocsin cannot deliver to {kind!r} channels; known types:"
            f" {', '.join(known)}",
            "channel.type",
        )
    channel = decode(obj, ChannelConfig, "channel")
    # Before any check that could quote it: from here on, no log line shows
    # the channel's secrets, whatever happens to them.
    for secret in _secrets(channel, builtins(channel)):
        register_secret(secret)
    try:
        check_channel(channel, "api", "channel")
    except ConfigError as error:
        raise InvalidValueError(error.detail, error.key) from None

    return channel


def _secrets(channel: ChannelConfig, shown: dict[str, Any]) -> list[str]:
    """Return the values of ``shown`` (``channel`` as JSON) that are secrets:
    those the channel's kind declares, and every header value."""
    found = [
        value
        for key, value in shown.items()
        if key in channel.secrets and isinstance(value, str) and value
    ]
    headers = shown.get("headers")
    if isinstance(headers, dict):
        found += [value for value in headers.values() if isinstance(value, str)]

    return found


def masked(channel: ChannelConfig) -> dict[str, Any]:
    """Return ``channel`` as JSON with every secret in it replaced by a mask.

    Where a secret is read from (``url_env``, ``routing_key_file``) is shown;
    so are URLs that are no secret (PagerDuty's endpoint, a base URL).
    """
    shown = builtins(channel)
    for key, value in shown.items():
        if key in channel.secrets and isinstance(value, str) and value:
            shown[key] = MASK
    # Header values are credentials as often as not (Authorization).
    if isinstance(shown.get("headers"), dict):
        shown["headers"] = dict.fromkeys(shown["headers"], MASK)

    return shown


def alert_json(alert: Alert) -> dict[str, Any]:
    """Return one alert as the API shows it."""
    return builtins(alert)


def alert_detail_json(detail: AlertDetail) -> dict[str, Any]:
    """Return an alert with its ``history`` and ``escalation``."""
    shown = alert_json(detail.alert)
    shown["history"] = builtins(detail.history)
    shown["escalation"] = builtins(detail.escalation)

    return shown


def silence_json(silence: Silence, now: float) -> dict[str, Any]:
    """Return one silence with its ``state`` at ``now``."""
    shown = builtins(silence)
    shown["state"] = silence.state(now)

    return shown


def rule_json(entry: RuleEntry) -> dict[str, Any]:
    """Return one rule with where it comes from."""
    return {
        "name": entry.rule.name,
        "source": entry.source,
        "created_at": entry.created_at,
        "created_by": entry.created_by,
        "rule": builtins(entry.rule),
    }


def integration_json(entry: IntegrationEntry) -> dict[str, Any]:
    """Return one channel with where it comes from, its secrets masked."""
    return {
        "name": entry.channel.name,
        "type": builtins(entry.channel)["type"],
        "source": entry.source,
        "created_at": entry.created_at,
        "created_by": entry.created_by,
        "settings": masked(entry.channel),
        **({} if entry.health is None else {"health": builtins(entry.health)}),
    }


def dead_letter_json(letter: DeadLetter) -> dict[str, Any]:
    """Return one dead letter as the API shows it.

    Its error was kept free of secrets when it was recorded; it is redacted
    again, since a secret added later may have been quoted before.
    """
    shown = builtins(letter)
    if letter.last_error is not None:
        shown["last_error"] = redact(letter.last_error)

    return shown
