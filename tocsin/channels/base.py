"""What a channel is, and how the configured channels are built.

A channel turns one notification into one request to one destination. It knows
nothing of retries, backoff or the outbox: it makes one attempt and either
returns or raises :class:`~tocsin.errors.DeliveryError`, and
:mod:`tocsin.channels.delivery` decides what happens next.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import aiohttp

from tocsin.channels.log import LogChannel
from tocsin.channels.webhook import WebhookChannel
from tocsin.clock import Clock
from tocsin.config import ChannelConfig, LogChannelConfig, WebhookChannelConfig
from tocsin.state.models import Notification


class Channel(Protocol):
    """One configured destination of notifications."""

    name: str
    #: Whether resolve notifications are queued for this channel.
    send_resolved: bool
    #: Attempts before a notification is dead-lettered.
    max_attempts: int
    #: Seconds before the first retry; doubled on every further attempt.
    backoff: float
    #: Longest pause between two attempts (unless the destination asks more).
    max_backoff: float

    async def send(self, notification: Notification) -> int | None:
        """Make one delivery attempt; return the HTTP status, if there is one.

        :raises DeliveryError: if the attempt failed.
        """

    async def close(self) -> None:
        """Release what the channel holds."""


def build_channels(
    configs: Sequence[ChannelConfig],
    session: aiohttp.ClientSession,
    urls: Mapping[str, str],
    *,
    clock: Clock | None = None,
) -> dict[str, Channel]:
    """Build one channel per config entry, by name.

    :param session: the HTTP session every HTTP channel shares.
    :param urls: the webhook URL of every webhook channel, by name (see
        :func:`tocsin.secrets.read_secrets`).
    """
    channels: dict[str, Channel] = {}
    for config in configs:
        if isinstance(config, WebhookChannelConfig):
            channel = WebhookChannel(config, urls[config.name], session, clock=clock)
            channels[config.name] = channel
        elif isinstance(config, LogChannelConfig):
            channels[config.name] = LogChannel(config)
        else:
            raise TypeError(f"no channel is built from {type(config).__name__}")

    return channels
