"""Building the configured channels, one module per kind of destination."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from tocsin.channels.base import Channel, ChannelContext
from tocsin.channels.datadog_events import DatadogEventsChannel
from tocsin.channels.log import LogChannel
from tocsin.channels.mail import EmailChannel
from tocsin.channels.pagerduty import PagerDutyChannel
from tocsin.channels.slack import SlackChannel
from tocsin.channels.teams import TeamsChannel
from tocsin.channels.webhook import WebhookChannel
from tocsin.schema import (
    ChannelConfig,
    DatadogChannelConfig,
    EmailChannelConfig,
    LogChannelConfig,
    PagerDutyChannelConfig,
    SlackChannelConfig,
    TeamsChannelConfig,
    WebhookChannelConfig,
)

_KINDS = {
    WebhookChannelConfig: WebhookChannel,
    PagerDutyChannelConfig: PagerDutyChannel,
    SlackChannelConfig: SlackChannel,
    TeamsChannelConfig: TeamsChannel,
    EmailChannelConfig: EmailChannel,
    DatadogChannelConfig: DatadogEventsChannel,
    LogChannelConfig: LogChannel,
}


def build_channels(
    configs: Sequence[ChannelConfig],
    secrets: Mapping[str, Mapping[str, str]],
    context: ChannelContext,
) -> dict[str, Channel]:
    """Build one channel per config entry, by name.

    :param secrets: each channel's secrets by name (see
        :func:`tocsin.secrets.read_secrets`).
    """
    return {
        config.name: _KINDS[type(config)](config, secrets.get(config.name, {}), context)
        for config in configs
    }
