"""Placeholder until the DatadogEvents channel is written."""

from __future__ import annotations

from collections.abc import Mapping

from tocsin.channels.base import ChannelContext, DeliverySettings
from tocsin.errors import DeliveryError
from tocsin.schema import DatadogChannelConfig
from tocsin.state.models import Notification


class DatadogEventsChannel(DeliverySettings):
    def __init__(
        self,
        config: DatadogChannelConfig,
        secrets: Mapping[str, str],
        context: ChannelContext,
    ) -> None:
        super().__init__(config)

    async def send(self, notification: Notification) -> int | None:
        raise DeliveryError("internal", "not written yet", retryable=False)
