"""The generic webhook channel: Tocsin's JSON payload, or the body a template
writes, sent to one URL and signed when a secret is set.

The URL is a secret (for most chat and paging services the URL alone grants
the right to post), so no error or log line built here ever quotes it; errors
name the channel instead. Neither is the signing secret ever quoted.
"""

from __future__ import annotations

from collections.abc import Mapping

from tocsin.channels import webhook_template
from tocsin.channels.base import ChannelContext, DeliverySettings
from tocsin.channels.http import HttpTarget
from tocsin.channels.payload import alert_payload, encode
from tocsin.channels.webhook_signing import signature, signing_key
from tocsin.config import WebhookChannelConfig
from tocsin.errors import DeliveryError
from tocsin.logs import register_secret
from tocsin.state.models import Notification
from tocsin.templates import TemplateProblem

#: Header names whose configured values are treated as secrets.
_SECRET_HEADER_WORDS = ("auth", "token", "key", "secret", "signature", "cookie")


class WebhookChannel(DeliverySettings):
    """Deliver notifications to one URL.

    :param secrets: ``url``, and ``secret`` when requests are signed.
    :raises TemplateProblem: if the template does not compile (the config
        check has refused such a template already).
    :raises SecretProblem: if the signing secret is malformed (likewise).
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
        self._method = config.method
        self._content_type = config.content_type
        self._template = (
            webhook_template.compile_template(config.template)
            if config.template
            else None
        )
        secret = secrets.get("secret")
        self._key = signing_key(secret) if secret else None

    async def send(self, notification: Notification) -> int:
        """Send one notification; return the HTTP status of a success.

        :raises DeliveryError: if the template fails on this notification, or
            the destination did not answer with a 2xx.
        """
        body = self._body(notification)
        # The id and the body are the same on every attempt; the timestamp is
        # this attempt's, which Standard Webhooks receivers require to accept
        # a message at all (they compare it with their clock).
        timestamp = int(self._clock.time())
        headers = {
            **self._headers,
            "Idempotency-Key": notification.key,
            "webhook-id": notification.key,
            "webhook-timestamp": str(timestamp),
        }
        if self._key is not None:
            headers["webhook-signature"] = signature(
                self._key, notification.key, timestamp, body
            )
        reply = await self._target.request(
            self._url,
            body,
            headers,
            method=self._method,
            content_type=self._content_type,
        )

        return reply.status

    def _body(self, notification: Notification) -> bytes:
        """Return the request body: the template's, or the payload's JSON.

        :raises DeliveryError: if the template fails on this notification; it
            would fail the same way on every attempt, so it is final.
        """
        payload = alert_payload(notification)
        if self._template is None:
            return encode(payload)
        try:
            text = webhook_template.render_payload(self._template, payload)
            if webhook_template.is_json(self._content_type):
                webhook_template.check_output(text)
        except TemplateProblem as problem:
            raise DeliveryError(
                "internal",
                f"channel {self.name}: the template failed: {problem}",
                retryable=False,
            ) from None

        return text.encode()
