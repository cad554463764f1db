"""The generic webhook channel: the alert payload POSTed as JSON.

The URL is a secret (for most chat and paging services the URL alone grants
the right to post), so no error or log line built here ever quotes it; errors
name the channel instead.
"""

from __future__ import annotations

from collections.abc import Mapping

from tocsin.channels.base import ChannelContext, DeliverySettings
from tocsin.channels.http import HttpTarget
from tocsin.channels.payload import alert_payload, encode
from tocsin.config import WebhookChannelConfig
from tocsin.logs import register_secret
from tocsin.state.models import Notification

#: Header names whose configured values are treated as secrets.
_SECRET_HEADER_WORDS = ("auth", "token", "key", "secret", "signature", "cookie")


class WebhookChannel(DeliverySettings):
    """Deliver notifications to one URL.

    :param secrets: ``url``, and ``secret`` when requests are signed.
    """

    def __init__(
        self,
        config: WebhookChannelConfig,
        secrets: Mapping[str, str],
        context: ChannelContext,
    ) -> None:
        super().__init__(config)
        self._url = secrets["url"]
        self._clock = context.clock
        self._target = HttpTarget(
            self.name, context.session, context.clock, timeout=self.timeout
        )
        for header, value in config.headers.items():
            if any(word in header.lower() for word in _SECRET_HEADER_WORDS):
                register_secret(value)
        self._headers = dict(config.headers)

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
        reply = await self._target.request(self._url, body, headers)

        return reply.status
