"""One HTTP request to a destination, and what its answer means for delivery.

Every HTTP channel sends through :class:`HttpTarget`: it makes exactly one
request, never follows a redirect (that would send the payload somewhere
nobody configured), reads a bounded part of the answer, and turns anything but
a success into a :class:`~tocsin.errors.DeliveryError` that says whether the
same request may succeed later and how long the destination asked us to wait.

A destination URL is often the credential itself (Slack, Teams, webhooks), so
no error built here ever quotes a URL or an exception that may hold one; errors
name the channel instead.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import NamedTuple

import aiohttp
from multidict import CIMultiDictProxy

from tocsin import __version__
from tocsin.channels.sent import note as note_sent
from tocsin.clock import Clock
from tocsin.errors import DeliveryError

#: A destination asking for a longer pause than this is waited on only this long.
MAX_RETRY_AFTER = 86400.0

#: How much of a response body is read, so the connection can be reused and
#: a reply that is a success status with an error in it can be recognised.
BODY_LIMIT = 64 * 1024

USER_AGENT = f"tocsin/{__version__}"


class Reply(NamedTuple):
    """A destination's answer to one request."""

    status: int
    headers: CIMultiDictProxy[str]
    #: The first :data:`BODY_LIMIT` bytes of the body.
    body: bytes


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Return the seconds a ``Retry-After`` header asks for, or ``None``.

    Both forms are read: delay-seconds and an HTTP date (then relative to
    ``now``). A date in the past means no wait; anything unreadable is ignored.
    """
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now
    if not math.isfinite(seconds):
        return None

    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def parse_reset(value: str | None, now: float) -> float | None:
    """Return the seconds an ``X-RateLimit-Reset`` header asks for, or ``None``.

    Datadog gives the seconds until its window resets; many other services
    give the POSIX time at which it resets. A number larger than any wait
    Tocsin honours can only be such a time, and is read as one.
    """
    try:
        seconds = float((value or "").strip())
    except ValueError:
        return None
    if not math.isfinite(seconds):
        return None
    if seconds > MAX_RETRY_AFTER:
        seconds -= now

    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def requested_wait(
    headers: Mapping[str, str], now: float, status: int = 429
) -> float | None:
    """Return how long a refusing destination asked us to wait, if it did.

    ``Retry-After`` is the standard; Datadog and others say it with
    ``X-RateLimit-Reset`` instead (see :func:`parse_reset`). They send that
    header on every answer, so it is read only on a 429: a 5xx is retried on
    Tocsin's own backoff, not at the end of a rate-limit window.
    """
    wait = parse_retry_after(headers.get("Retry-After"), now)
    if wait is None and status == 429:
        wait = parse_reset(headers.get("X-RateLimit-Reset"), now)

    return wait


def classify(
    channel: str,
    status: int,
    retry_after: float | None = None,
    detail: str | None = None,
) -> DeliveryError | None:
    """Return the error an HTTP status means for a delivery, or ``None`` if it
    succeeded.

    408, 429 and 5xx may succeed later; every other 4xx, and any redirect, is
    final.

    :param detail: what the destination said about the failure, if the
        channel could read it safely (Slack's ``channel_not_found``).
    """
    if 200 <= status < 300:
        return None
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "unknown status"
    message = f"channel {channel}: HTTP {status} {phrase}"
    if detail:
        message += f": {detail}"
    if retry_after is not None:
        message += f" (retry after {retry_after:g}s)"
    if status == 408:
        reason, retryable = "timeout", True
    elif status == 429:
        reason, retryable = "rate_limited", True
    elif status >= 500:
        reason, retryable = "server_error", True
    elif status in (401, 403):
        reason, retryable = "auth", False
    elif 300 <= status < 400:
        reason, retryable = "client_error", False
        message += "; redirects are not followed"
    else:
        reason, retryable = "client_error", False

    return DeliveryError(
        reason, message, retryable=retryable, status=status, retry_after=retry_after
    )


class HttpTarget:
    """Requests to one destination on behalf of one channel.

    :param channel: the channel's name, which errors carry instead of the URL.
    :param session: shared by every channel; owned by the daemon.
    :param timeout: seconds one request may take, from connect to body.
    """

    def __init__(
        self,
        channel: str,
        session: aiohttp.ClientSession,
        clock: Clock,
        *,
        timeout: float,
    ) -> None:
        self.channel = channel
        self.timeout = timeout
        self._session = session
        self._clock = clock
        self._client_timeout = aiohttp.ClientTimeout(total=timeout)

    async def request(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        method: str = "POST",
        content_type: str = "application/json",
        explain: Callable[[Reply], str | None] | None = None,
    ) -> Reply:
        """Make one request; return the reply if it was a success (2xx).

        :param explain: reads a failed reply's body and returns what the
            error should quote of it, or ``None``; it must return nothing
            that may hold a secret.
        :raises DeliveryError: on a transport error, a timeout, or any other
            status, with what it means for a retry.
        """
        sent = {"Content-Type": content_type, "User-Agent": USER_AGENT, **headers}
        # For the audit log: the body as it leaves, never the headers.
        note_sent(body)
        try:
            async with self._session.request(
                method,
                url,
                data=body,
                headers=sent,
                timeout=self._client_timeout,
                allow_redirects=False,
            ) as response:
                body = await _read_body(response.content)
                reply = Reply(response.status, response.headers, body)
        except TimeoutError:
            raise DeliveryError(
                "timeout",
                f"channel {self.channel}: no response within {self.timeout:g}s",
                retryable=True,
            ) from None
        except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError, ValueError):
            # A URL that is not http(s), or whose host cannot be written as a
            # host name (a label over 63 characters fails IDNA with a
            # UnicodeError, a ValueError), will be no better on a retry.
            raise DeliveryError(
                "client_error",
                f"channel {self.channel}: the configured URL is not valid",
                retryable=False,
            ) from None
        except aiohttp.ClientError as error:
            raise DeliveryError(
                "transport",
                f"channel {self.channel}: {describe(error)}",
                retryable=True,
            ) from None
        wait = requested_wait(reply.headers, self._clock.time(), reply.status)
        failed = not 200 <= reply.status < 300
        detail = explain(reply) if explain is not None and failed else None
        error = classify(self.channel, reply.status, wait, detail)
        if error is not None:
            raise error

        return reply

    def refused(self, reply: Reply, detail: str, *, retryable: bool) -> DeliveryError:
        """Return the error of a reply whose status said success but whose
        body said otherwise (``detail`` says what it said)."""
        return DeliveryError(
            "server_error" if retryable else "client_error",
            f"channel {self.channel}: HTTP {reply.status} with an error: {detail}",
            retryable=retryable,
            status=reply.status,
        )


async def _read_body(content: aiohttp.StreamReader) -> bytes:
    """Read the body up to :data:`BODY_LIMIT` bytes.

    One ``read`` returns whatever has arrived so far, which for a slow
    destination is a first piece only (``o`` of ``ok``); reading goes on to
    the end, and an answer cut off before its promised length raises.

    :raises aiohttp.ClientPayloadError: if the connection closed mid-body.
    """
    pieces: list[bytes] = []
    size = 0
    while size < BODY_LIMIT:
        piece = await content.read(BODY_LIMIT - size)
        if not piece:
            break
        pieces.append(piece)
        size += len(piece)

    return b"".join(pieces)


def describe(error: aiohttp.ClientError) -> str:
    """Say what failed without quoting the exception, which may hold the URL."""
    if isinstance(error, aiohttp.ClientConnectorError):
        # Not strerror: asyncio writes the address into it.
        os_error = getattr(error, "os_error", None)
        number = getattr(os_error, "errno", None)
        cause = os.strerror(number) if number else type(os_error).__name__
        return f"cannot connect ({cause})"
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without answering"
    if isinstance(error, aiohttp.ClientPayloadError):
        # The status came, the body did not: the destination may or may not
        # have taken the message, and only a retry (same key) makes sure.
        return "the answer was cut off before its end"

    return f"request failed ({type(error).__name__})"
