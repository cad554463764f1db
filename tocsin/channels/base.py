"""What a channel is, and how the configured channels are built.

A channel turns one notification into one request to one destination. It knows
nothing of retries, backoff or the outbox: it makes one attempt and either
returns or raises :class:`~tocsin.errors.DeliveryError`, and
:mod:`tocsin.channels.delivery` decides what happens next.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import aiohttp

from tocsin.channels.log import LogChannel
from tocsin.channels.webhook import WebhookChannel
from tocsin.clock import Clock
from tocsin.config import ChannelConfig, LogChannelConfig, WebhookChannelConfig
from tocsin.errors import ConfigError
from tocsin.secrets import read_secret
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
    *,
    clock: Clock | None = None,
    source: str = "config",
) -> dict[str, Channel]:
    """Build one channel per config entry, by name.

    :param session: the HTTP session every HTTP channel shares.
    :param source: the config file's path, named in errors.
    :raises ConfigError: if a webhook URL cannot be read or is not http(s).
    """
    channels: dict[str, Channel] = {}
    for index, config in enumerate(configs):
        if isinstance(config, WebhookChannelConfig):
            url = _webhook_url(config, f"channels[{index}]", source)
            channels[config.name] = WebhookChannel(config, url, session, clock=clock)
        elif isinstance(config, LogChannelConfig):
            channels[config.name] = LogChannel(config)
        else:
            raise ConfigError(source, "unknown channel type", f"channels[{index}]")

    return channels


def _webhook_url(config: WebhookChannelConfig, where: str, source: str) -> str:
    url = read_secret(
        value=config.url,
        env=config.url_env,
        file=config.url_file,
        what=f"webhook URL of channel {config.name}",
    )
    if url is None:
        given = (
            "url_env" if config.url_env else "url_file" if config.url_file else "url"
        )
        detail = repr(config.url_env) if config.url_env else "the file"
        raise ConfigError(
            source, f"no webhook URL: {detail} is empty or not set", f"{where}.{given}"
        )
    if not url.startswith(("http://", "https://")):
        # Not quoted: even a malformed URL may hold the secret part.
        raise ConfigError(
            source, "the webhook URL must start with http:// or https://", where
        )

    return url
