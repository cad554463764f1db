"""The Slack channel: Block Kit messages through an incoming webhook.

The webhook URL is the credential (anyone holding it may post), so no error
or log line built here quotes it. Slack answers a message it takes with
``200`` and the body ``ok``; one it refuses with a short error string
(``invalid_blocks``, ``channel_not_found``) and a 4xx, which no retry can
change, and which the error quotes so that people see what to fix. A 429
(``Retry-After``) or a 5xx may pass later and is left to the dispatcher.

The same channel object serves the buttons' actions: the inbound handler
(:mod:`tocsin.daemon.hooks_slack`) reads its :attr:`SlackChannel.signing_secret`
and :attr:`SlackChannel.snooze`, and redraws a message with
:meth:`SlackChannel.render_alert` after acting on it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import orjson

from tocsin.channels.base import ChannelContext, DeliverySettings
from tocsin.channels.http import HttpTarget, Reply
from tocsin.channels.slack_blocks import MessageBuilder
from tocsin.schema import SlackChannelConfig
from tocsin.state.models import Alert, Notification

#: What Slack's error strings look like; anything else is not quoted.
_ERROR_STRING = re.compile(rb"[a-z][a-z0-9_]{0,63}")


class SlackChannel(DeliverySettings):
    """Post notifications to one Slack channel.

    :param secrets: ``webhook_url``, and ``signing_secret`` to take the
        buttons' actions.
    """

    def __init__(
        self,
        config: SlackChannelConfig,
        secrets: Mapping[str, str],
        context: ChannelContext,
    ) -> None:
        super().__init__(config)
        self._url = secrets["webhook_url"]
        #: The Slack app's signing secret; ``None`` takes no actions.
        self.signing_secret: str | None = secrets.get("signing_secret") or None
        #: Seconds the Snooze button silences an alert for.
        self.snooze = float(config.snooze)
        self._builder = MessageBuilder(
            context.alert_url, buttons=config.buttons, snooze=self.snooze
        )
        self._target = HttpTarget(
            self.name, context.session, context.clock, timeout=self.timeout
        )

    def render(self, notification: Notification) -> dict:
        """Return the message a notification is posted as."""
        return self._builder.notification(notification)

    def render_alert(
        self, alert: Alert, *, note: str, at: float, original: dict | None = None
    ) -> dict:
        """Return the message of an alert in its current state, with the
        buttons of the moves still open to it.

        :param note: what was done to it and by whom, shown with time ``at``.
        :param original: the message the click was on; a grouped one keeps
            its other alerts and their buttons.
        """
        return self._builder.redraw(original, alert, note=note, at=at)

    async def send(self, notification: Notification) -> int:
        """Post one notification; return the HTTP status of a success.

        :raises DeliveryError: if Slack did not answer ``200 ok``; final for
            its error strings, retryable for a 429 or a 5xx.
        """
        body = orjson.dumps(self.render(notification))
        reply = await self._target.request(self._url, body, {}, explain=_error_string)
        if reply.status != 200 or reply.body.strip() != b"ok":
            detail = _error_string(reply) or "an answer that is not ok"
            raise self._target.refused(reply, detail, retryable=False)

        return reply.status


def _error_string(reply: Reply) -> str | None:
    """Return Slack's error string in a reply, or ``None`` if the body is
    not one (it could be anything a proxy wrote, so it is not quoted)."""
    body = reply.body.strip()
    if _ERROR_STRING.fullmatch(body):
        return body.decode()

    return None
