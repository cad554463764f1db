"""One delivery attempt, bounded in time whatever the channel does.

A channel's ``timeout`` bounds each request it makes, but not always the
attempt: an SMTP server that answers every command just in time keeps one
conversation going for as long as it likes, and a channel that makes one
request per alert of a grouped message (PagerDuty, Datadog events) makes as
many requests as there are alerts. An attempt that never ends holds its
channel's worker, and a test of an integration that never ends holds the
person who asked. :func:`bounded_send` therefore cuts every attempt at
:func:`attempt_limit`, which a channel that keeps to its timeout never reaches,
and reports the cut as a timeout the dispatcher retries.
"""

from __future__ import annotations

import asyncio

from tocsin.channels.base import Channel
from tocsin.channels.summary import alerts_of
from tocsin.errors import DeliveryError
from tocsin.state.models import Notification

#: Added to the sum of the requests' timeouts, so that a request that times
#: out is reported by the channel itself, with its own, more precise words.
GRACE = 1.0


def attempt_limit(channel: Channel, notification: Notification) -> float:
    """Return the seconds one attempt to send ``notification`` may take.

    That is the channel's ``timeout`` for each request it may make (one per
    alert of the message, at most), plus :data:`GRACE`.
    """
    requests = len(alerts_of(notification))

    return channel.timeout * requests + GRACE


async def bounded_send(channel: Channel, notification: Notification) -> int | None:
    """Make one attempt through ``channel``; return the destination's status.

    :raises DeliveryError: if the channel failed, or (reason ``timeout``,
        retryable) if the attempt outlasted :func:`attempt_limit`.
    """
    limit = attempt_limit(channel, notification)
    try:
        async with asyncio.timeout(limit):
            return await channel.send(notification)
    except TimeoutError:
        # A TimeoutError from inside the channel is a bug of its own, but
        # it means the same to delivery: no answer in time.
        raise DeliveryError(
            "timeout",
            f"channel {channel.name}: attempt not finished within {limit:g}s",
            retryable=True,
        ) from None
