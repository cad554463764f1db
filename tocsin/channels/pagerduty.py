"""Placeholder until the PagerDuty channel is written."""

from __future__ import annotations

from collections.abc import Mapping

from tocsin.channels.base import ChannelContext, DeliverySettings
from tocsin.errors import DeliveryError
from tocsin.schema import PagerDutyChannelConfig
from tocsin.state.models import Notification


class PagerDutyChannel(DeliverySettings):
    def __init__(
        self,
        config: PagerDutyChannelConfig,
        secrets: Mapping[str, str],
        context: ChannelContext,
    ) -> None:
        super().__init__(config)

    async def send(self, notification: Notification) -> int | None:
        raise DeliveryError("internal", "not written yet", retryable=False)
