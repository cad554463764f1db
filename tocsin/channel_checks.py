"""The checks of a ``[[channels]]`` entry that its schema cannot express.

A channel is checked the same way from the config file and from the API
(:func:`check_channel`): its timings, which of a secret's three keys is given,
URLs that could never be reached, headers aiohttp would refuse, a webhook's
template rendered against sample notifications, and an email's addresses.
Errors name the key and never quote a secret.
"""

from __future__ import annotations

import ipaddress
import os
import re
from urllib.parse import urlsplit

from tocsin.channels import webhook_template
from tocsin.channels.mail_message import address_problem
from tocsin.channels.webhook_signing import SecretProblem, signing_key
from tocsin.datadog_names import is_tag
from tocsin.errors import ConfigError
from tocsin.keypaths import toml_key
from tocsin.schema import (
    ChannelConfig,
    DatadogChannelConfig,
    EmailChannelConfig,
    LogChannelConfig,
    WebhookChannelConfig,
)
from tocsin.templates import TemplateProblem


def check_channel(channel: ChannelConfig, source: str, where: str) -> None:
    """Check one channel; ``where`` is its key path, like ``channels[0]``.

    Checks between channels (unique names) are the caller's.

    :raises ConfigError: naming ``source`` and the key at fault, if the
        channel cannot work as given.
    """
    _check_retries(channel, source, where)
    if isinstance(channel, LogChannelConfig):
        return
    if channel.timeout <= 0:
        raise ConfigError(source, "must be longer than 0s", f"{where}.timeout")
    if channel.rate_limit and channel.rate_period <= 0:
        raise ConfigError(source, "must be longer than 0s", f"{where}.rate_period")
    for name in channel.secrets:
        keys = (name, f"{name}_env", f"{name}_file")
        given = [key for key in keys if getattr(channel, key)]
        if len(given) > 1 or (not given and name in channel.required_secrets):
            raise ConfigError(
                source, f"set exactly one of {', '.join(keys)}", f"{where}.{name}"
            )
    # Written in the file, a URL is checked here; read from elsewhere, when
    # it is read (see tocsin.secrets).
    for name in (*channel.secrets, "url", "base_url"):
        value = getattr(channel, name, "")
        problem = url_problem(value) if name.endswith("url") and value else None
        if problem:
            raise ConfigError(source, problem, f"{where}.{name}")
    if isinstance(channel, WebhookChannelConfig):
        for name, value in channel.headers.items():
            _check_header(name, value, source, f"{where}.headers.{toml_key(name)}")
        _check_webhook(channel, source, where)
    elif isinstance(channel, DatadogChannelConfig):
        _check_datadog_channel(channel, source, where)
    elif isinstance(channel, EmailChannelConfig):
        if not channel.sender:
            raise ConfigError(source, "the From address is required", f"{where}.from")
        if not channel.to:
            raise ConfigError(source, "name at least one address", f"{where}.to")
        _check_email(channel, source, where)


def url_problem(url: str) -> str | None:
    """Say what makes ``url`` unusable as a destination, or return ``None``.

    The answer never quotes the URL: for most chat and paging services the
    URL is the credential. ``urlsplit`` silently drops tabs and newlines and
    accepts any port, so both are checked before and after it.
    """
    if not url.startswith(("http://", "https://")):
        return "must start with http:// or https://"
    if not url.isprintable() or " " in url:
        return "must not hold white space or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "has a port that is not a number from 0 to 65535"
    host = parts.hostname or ""
    if not (is_host_name(host) or is_ip_address(host)):
        return "must name a host (a name such as hooks.example.com, or an address)"
    if port == 0:
        return "has a port that is not a number from 1 to 65535"

    return None


def _check_datadog_channel(
    channel: DatadogChannelConfig, source: str, where: str
) -> None:
    if not is_host_name(channel.site):
        raise ConfigError(
            source,
            f"expected a host name like datadoghq.eu, got {channel.site!r}",
            f"{where}.site",
        )
    if "?" in channel.base_url or "#" in channel.base_url:
        raise ConfigError(
            source,
            "must not have a query or a fragment: the API path is appended to it",
            f"{where}.base_url",
        )
    for index, tag in enumerate(channel.tags):
        if not is_tag(tag):
            raise ConfigError(
                source,
                f"{tag!r} is not a Datadog tag: start with a letter, then use "
                "letters, digits and _ - : . / (at most 200, no final ':')",
                f"{where}.tags[{index}]",
            )


def _check_webhook(channel: WebhookChannelConfig, source: str, where: str) -> None:
    """Render the template against sample notifications, and check a signing
    secret written in the file (one read from elsewhere is checked when it
    is read, see :mod:`tocsin.secrets`)."""
    if channel.template:
        try:
            webhook_template.check_template(channel.template, channel.content_type)
        except TemplateProblem as problem:
            raise ConfigError(source, str(problem), f"{where}.template") from None
    if channel.secret:
        try:
            signing_key(channel.secret)
        except SecretProblem as problem:
            message = f"the webhook signing secret {problem}"
            raise ConfigError(source, message, f"{where}.secret") from None


def _check_email(channel: EmailChannelConfig, source: str, where: str) -> None:
    problem = address_problem(channel.sender)
    if problem:
        raise ConfigError(source, problem, f"{where}.from")
    for index, address in enumerate(channel.to):
        problem = address_problem(address)
        if problem:
            raise ConfigError(source, problem, f"{where}.to[{index}]")
    if channel.ca_file and not os.path.isfile(channel.ca_file):
        raise ConfigError(source, "no such file", f"{where}.ca_file")
    password = next(
        (
            key
            for key in ("password", "password_env", "password_file")
            if getattr(channel, key)
        ),
        None,
    )
    if password and not channel.username:
        raise ConfigError(source, "a password needs a username", f"{where}.{password}")
    if channel.security == "none" and channel.username:
        # AUTH over a plain connection would send the password in the clear.
        raise ConfigError(
            source,
            "a username (and its password) needs security starttls or tls",
            f"{where}.username",
        )


_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*")


def is_host_name(text: str) -> bool:
    return len(text) <= 253 and _HOST_NAME.fullmatch(text) is not None


def is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False

    return True


#: An HTTP field name: a token (RFC 9110, section 5.1).
# Headers that frame the request or carry Tocsin's delivery identity: a
# configured Content-Length cut bodies short while the receiver answered 200.
_RESERVED_HEADERS = frozenset(
    (
        "connection",
        "content-length",
        "expect",
        "host",
        "idempotency-key",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "webhook-id",
        "webhook-signature",
        "webhook-timestamp",
    )
)
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: What an HTTP field value may not hold: control characters other than tab.
_HEADER_VALUE_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _check_header(name: str, value: str, source: str, where: str) -> None:
    """Refuse a header aiohttp would refuse to send, on every attempt.

    The value may be a credential: the error says what is wrong with it and
    never quotes it.
    """
    if not _HEADER_NAME.fullmatch(name):
        raise ConfigError(
            source,
            "not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)",
            where,
        )
    if _HEADER_VALUE_FORBIDDEN.search(value):
        raise ConfigError(
            source,
            "the value holds a line break or another control character",
            where,
        )
    if name.lower() in _RESERVED_HEADERS:
        raise ConfigError(
            source,
            f"{name} is set by Tocsin for every request and cannot be configured",
            where,
        )


def _check_retries(channel: ChannelConfig, source: str, where: str) -> None:
    if channel.backoff <= 0:
        raise ConfigError(source, "must be longer than 0s", f"{where}.backoff")
    if channel.max_backoff < channel.backoff:
        raise ConfigError(
            source, "must not be shorter than backoff", f"{where}.max_backoff"
        )
