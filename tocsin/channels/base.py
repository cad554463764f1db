"""What a channel is, and what every channel is built with.

A channel turns one notification into requests to one destination. It knows
nothing of retries, backoff, rate limits or the outbox: it makes one attempt
and either returns or raises :class:`~tocsin.errors.DeliveryError`, and
:mod:`tocsin.channels.delivery` decides what happens next. One attempt may be
several requests (a PagerDuty event per alert of a grouped message); they are
all repeated on a retry, which is harmless because each carries the same
deduplication or idempotency key every time.
"""

from __future__ import annotations

import socket
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp

from tocsin.clock import Clock, SystemClock
from tocsin.schema import ChannelConfig
from tocsin.state.models import Notification


class Channel(Protocol):
    """One configured destination of notifications."""

    name: str
    #: Whether resolve notifications are queued for this channel.
    send_resolved: bool
    #: Whether acknowledgements made in Tocsin are sent to this channel.
    send_acknowledged: bool
    #: Attempts before a notification is dead-lettered.
    max_attempts: int
    #: Seconds after queueing at which a notification is dead-lettered.
    max_age: float
    #: Seconds before the first retry; doubled on every further attempt.
    backoff: float
    #: Longest pause between two attempts (unless the destination asks more).
    max_backoff: float
    #: Most attempts in flight at once.
    concurrency: int
    #: Most attempts per ``rate_period`` seconds; ``0`` has no limit.
    rate_limit: int
    rate_period: float
    #: Seconds one request may take (see :mod:`tocsin.channels.attempt`).
    timeout: float

    async def send(self, notification: Notification) -> int | None:
        """Make one delivery attempt; return the HTTP status, if there is one.

        :raises DeliveryError: if the attempt failed.
        """

    async def close(self) -> None:
        """Release what the channel holds."""


@dataclass
class ChannelContext:
    """What the daemon lends every channel it builds."""

    #: Shared by every HTTP channel; owned by the daemon.
    session: aiohttp.ClientSession
    clock: Clock = field(default_factory=SystemClock)
    #: Where people reach Tocsin's API, for links; empty leaves them out.
    external_url: str = ""
    #: This host's name, the default source of an event.
    hostname: str = field(default_factory=socket.gethostname)

    def alert_url(self, uid: str) -> str | None:
        """Return the link to one alert in Tocsin's API, if Tocsin has a URL."""
        if not self.external_url:
            return None
        return f"{self.external_url.rstrip('/')}/api/v1/alerts/{uid}"


class DeliverySettings:
    """The delivery settings every channel config has, as a channel's
    attributes (see :class:`Channel`)."""

    send_acknowledged = False

    def __init__(self, config: ChannelConfig) -> None:
        self.name = config.name
        self.send_resolved = config.send_resolved
        self.max_attempts = config.max_attempts
        self.max_age = float(config.max_age)
        self.backoff = float(config.backoff)
        self.max_backoff = float(config.max_backoff)
        self.concurrency = config.concurrency
        self.rate_limit = config.rate_limit
        self.rate_period = float(config.rate_period)
        self.timeout = float(config.timeout)

    async def close(self) -> None:
        """Release nothing: the session belongs to the daemon."""


class Taken:
    """The requests of a notification a destination has taken, remembered
    so that a retry sends only the rest.

    A notification about a group is one request per alert for some
    destinations (PagerDuty, Datadog events), and those limit requests per
    minute: a retry that started over from the first alert would spend each
    window on the alerts already taken and never reach the last ones. The
    memory is bounded and not kept across a restart, after which a retry
    sends everything again, under the same keys.

    :param size: marks remembered at most; the oldest are forgotten first.
    """

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._marks: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, mark: str) -> bool:
        return mark in self._marks

    def add(self, mark: str) -> None:
        """Remember that the request ``mark`` names was taken."""
        self._marks[mark] = None
        self._marks.move_to_end(mark)
        while len(self._marks) > self._size:
            self._marks.popitem(last=False)
