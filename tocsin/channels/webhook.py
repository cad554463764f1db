"""The generic webhook channel: the alert payload POSTed as JSON.

The URL is a secret (for most chat and paging services the URL alone grants
the right to post), so no error or log line built here ever quotes it; errors
name the channel instead.
"""

from __future__ import annotations

import math
import os
from datetime import UTC
from email.utils import parsedate_to_datetime
from http import HTTPStatus

import aiohttp

from tocsin import __version__
from tocsin.channels.payload import alert_payload, encode
from tocsin.clock import Clock, SystemClock
from tocsin.config import WebhookChannelConfig
from tocsin.errors import DeliveryError
from tocsin.logs import register_secret
from tocsin.state.models import Notification

#: A destination asking for a longer pause than this is waited on only this long.
MAX_RETRY_AFTER = 86400.0

#: How much of a response body is read, so the connection can be reused.
_BODY_LIMIT = 64 * 1024

#: Header names whose configured values are treated as secrets.
_SECRET_HEADER_WORDS = ("auth", "token", "key", "secret", "signature", "cookie")


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


def classify(
    channel: str, status: int, retry_after: float | None = None
) -> DeliveryError | None:
    """Return the error an HTTP status means for a delivery, or ``None`` if it
    succeeded."""
    if 200 <= status < 300:
        return None
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "unknown status"
    message = f"channel {channel}: HTTP {status} {phrase}"
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
        # A redirect would send the payload somewhere nobody configured.
        reason, retryable = "client_error", False
        message += "; redirects are not followed"
    else:
        reason, retryable = "client_error", False

    return DeliveryError(
        reason, message, retryable=retryable, status=status, retry_after=retry_after
    )


class WebhookChannel:
    """Deliver notifications to one URL.

    :param url: the destination, already read from wherever the config said.
    :param session: shared by every channel; owned by the daemon.
    """

    def __init__(
        self,
        config: WebhookChannelConfig,
        url: str,
        session: aiohttp.ClientSession,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.name = config.name
        self.send_resolved = config.send_resolved
        self.max_attempts = config.max_attempts
        self.backoff = float(config.backoff)
        self.max_backoff = float(config.max_backoff)
        self.timeout = float(config.timeout)
        self._url = url
        self._session = session
        self._clock = clock or SystemClock()
        self._client_timeout = aiohttp.ClientTimeout(total=self.timeout)
        for header, value in config.headers.items():
            if any(word in header.lower() for word in _SECRET_HEADER_WORDS):
                register_secret(value)
        self._headers = {
            **config.headers,
            "Content-Type": "application/json",
            "User-Agent": f"tocsin/{__version__}",
        }

    async def send(self, notification: Notification) -> int:
        """POST one notification; return the HTTP status of a success.

        :raises DeliveryError: if the destination did not answer with a 2xx.
        """
        body = encode(alert_payload(notification))
        # The id and the body are the same on every attempt; the timestamp is
        # this attempt's, which Standard Webhooks receivers require to accept
        # a message at all (they compare it with their clock).
        headers = {
            **self._headers,
            "Idempotency-Key": notification.key,
            "webhook-id": notification.key,
            "webhook-timestamp": str(int(self._clock.time())),
        }
        try:
            async with self._session.post(
                self._url,
                data=body,
                headers=headers,
                timeout=self._client_timeout,
                allow_redirects=False,
            ) as response:
                status = response.status
                retry_after = parse_retry_after(
                    response.headers.get("Retry-After"), self._clock.time()
                )
                await response.content.read(_BODY_LIMIT)
        except TimeoutError:
            raise DeliveryError(
                "timeout",
                f"channel {self.name}: no response within {self.timeout:g}s",
                retryable=True,
            ) from None
        except aiohttp.InvalidURL:
            raise DeliveryError(
                "client_error",
                f"channel {self.name}: the configured URL is not valid",
                retryable=False,
            ) from None
        except aiohttp.ClientError as error:
            raise DeliveryError(
                "transport",
                f"channel {self.name}: {_describe(error)}",
                retryable=True,
            ) from None
        error = classify(self.name, status, retry_after)
        if error is not None:
            raise error

        return status

    async def close(self) -> None:
        """Release nothing: the session belongs to the daemon."""


def _describe(error: aiohttp.ClientError) -> str:
    """Say what failed without quoting the exception, which may hold the URL."""
    if isinstance(error, aiohttp.ClientConnectorError):
        # Not strerror: asyncio writes the address into it.
        os_error = getattr(error, "os_error", None)
        number = getattr(os_error, "errno", None)
        cause = os.strerror(number) if number else type(os_error).__name__
        return f"cannot connect ({cause})"
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without answering"

    return f"request failed ({type(error).__name__})"
