"""The Datadog events channel: alert transitions in Datadog's event stream.

Each notification becomes ``POST /api/v1/events`` requests authenticated by
the ``DD-API-KEY`` header, **one event per alert**: a grouped message about
forty alerts sends forty events. Each event's ``aggregation_key`` comes from
its alert's uid, so Datadog folds an alert's trigger, acknowledgement and
resolve into one thread and shows each alert's story apart from its
neighbours', as Datadog's own multi-alert monitors do. One event for the
whole group would have needed a key per group, mixing alerts that fire and
resolve at different times in one thread. The alerts are sent worst first,
so that a rate limit met in the middle delays the least important ones.

The v1 events API has no idempotency key, so a repeated request is a
repeated event. A retry of a notification therefore skips the alerts whose
events Datadog already accepted in an earlier attempt of this process (kept
in a bounded memory); after a restart such a retry may repeat an event, which
the shared ``aggregation_key`` at least folds into the same thread.

An event has a ``title`` of at most 100 characters, Markdown ``text`` of at
most 4000, and a ``date_happened`` Datadog takes only within the last 18
hours: a repeat of an alert that fired a day ago is dated now.
"""

from __future__ import annotations

from collections.abc import Mapping

from tocsin.channels.base import ChannelContext, DeliverySettings, Taken
from tocsin.channels.datadog_buffer import tags
from tocsin.channels.http import HttpTarget
from tocsin.channels.payload import encode
from tocsin.channels.summary import (
    alert_headline,
    alert_line,
    alert_status,
    alerts_of,
    fit_lines,
    truncate,
)
from tocsin.schema import DatadogChannelConfig
from tocsin.state.models import OPEN_STATES, Alert, Notification

EVENTS_PATH = "/api/v1/events"
TITLE_LIMIT = 100
TEXT_LIMIT = 4000
#: An event dated further back than this is dated now: Datadog refuses one
#: older than 18 hours, and the request may wait in the outbox a while.
MAX_AGE = 17 * 3600
#: Datadog refuses an event dated more than 2 hours ahead.
MAX_AHEAD = 2 * 3600
#: Events remembered as accepted, so a retry does not send them again.
REMEMBERED = 10_000
#: Characters of an event's text kept for the other alerts of its group.
GROUP_BUDGET = 1_500
DESCRIPTION_LIMIT = 1_000

#: Markdown in an event's text is rendered only between these marks.
MARKDOWN_OPEN = "%%% \n"
MARKDOWN_CLOSE = "\n %%%"
_SEVERE = ("critical", "high")


class DatadogEventsChannel(DeliverySettings):
    """Post one Datadog event per alert of each notification.

    :param secrets: ``api_key``.
    """

    def __init__(
        self,
        config: DatadogChannelConfig,
        secrets: Mapping[str, str],
        context: ChannelContext,
    ) -> None:
        super().__init__(config)
        self.send_acknowledged = config.send_acknowledged
        base = config.base_url or f"https://api.{config.site}"
        self.url = base.rstrip("/") + EVENTS_PATH
        self._headers = {"DD-API-KEY": secrets["api_key"]}
        self._config = config
        self._context = context
        self._target = HttpTarget(
            self.name, context.session, context.clock, timeout=self.timeout
        )
        self._accepted = Taken(REMEMBERED)

    async def send(self, notification: Notification) -> int | None:
        """Post the notification's events, the worst alert's first; return
        the HTTP status of the last, or ``None`` if all were sent before.

        :raises DeliveryError: at the first event Datadog did not accept; the
            ones it accepted are not sent again on a retry.
        """
        status = None
        for alert in alerts_of(notification):
            mark = f"{notification.key} {alert.uid}"
            if mark in self._accepted:
                continue
            body = encode(self.event(notification, alert))
            reply = await self._target.request(self.url, body, self._headers)
            self._accepted.add(mark)
            status = reply.status

        return status

    def event(self, notification: Notification, alert: Alert) -> dict:
        """Return the event that tells of ``alert`` in ``notification``."""
        spec = alert.spec
        labels = spec.labels
        described = [
            *self._config.tags,
            f"rule:{spec.rule}",
            f"severity:{spec.severity}",
            *(
                f"{name}:{labels[name]}"
                for name in ("model", "project")
                if name in labels
            ),
        ]
        return {
            "title": truncate(alert_headline(notification, alert), TITLE_LIMIT),
            "text": event_text(notification, alert, self._context.alert_url(alert.uid)),
            "date_happened": self._happened(notification, alert),
            "alert_type": alert_type(notification, alert),
            "priority": self._config.priority,
            "aggregation_key": aggregation_key(alert),
            "tags": tags(described),
            "source_type_name": self._config.source_type_name,
            "host": self._context.hostname,
        }

    def _happened(self, notification: Notification, alert: Alert) -> int:
        """When the alert's news happened, as POSIX seconds Datadog takes."""
        if alert.id == notification.alert.id:
            at = notification.transition.at
        elif alert.state in OPEN_STATES:
            at = alert.spec.fired_at
        else:
            at = alert.resolved_at or notification.transition.at
        now = self._context.clock.time()
        if not now - MAX_AGE <= at <= now + MAX_AHEAD:
            at = now

        return int(at)


def aggregation_key(alert: Alert) -> str:
    """The key that folds every event of one alert into one thread.

    From the uid alone: nothing that changes during the alert's life.
    """
    return f"tocsin-{alert.uid}"[:100]


def alert_type(notification: Notification, alert: Alert) -> str:
    """``error`` for a critical or high alert firing, ``warning`` for any
    other firing, ``success`` once resolved, ``info`` when acknowledged."""
    status = alert_status(notification, alert)
    if status == "acknowledged":
        return "info"
    if status == "resolved":
        return "success"
    return "error" if alert.spec.severity in _SEVERE else "warning"


def event_text(notification: Notification, alert: Alert, link: str | None) -> str:
    """The Markdown text of one alert's event, at most :data:`TEXT_LIMIT`.

    The alert's line, why, its description and links; then the other alerts
    of a grouped message, worst first, ending with ``+N more`` when they do
    not all fit.
    """
    spec = alert.spec
    if alert.id == notification.alert.id:
        why = notification.transition.reason
        actor = notification.transition.actor
        if notification.event == "acknowledge":
            why = f"acknowledged by {actor}" + (f": {why}" if why else "")
    else:
        why = spec.reason
    parts = [alert_line(alert)]
    if why:
        parts.append(f"Reason: {why}")
    if spec.description:
        parts.append(truncate(spec.description, DESCRIPTION_LIMIT))
    is_link = spec.runbook.startswith(("http://", "https://"))
    links = [f"[Runbook]({spec.runbook})"] if is_link else []
    if link:
        links.append(f"[Alert in Tocsin]({link})")
    if links:
        parts.append(" · ".join(links))
    room = TEXT_LIMIT - len(MARKDOWN_OPEN) - len(MARKDOWN_CLOSE)
    text = truncate("\n\n".join(parts), room - GROUP_BUDGET)

    others = [other for other in alerts_of(notification) if other.id != alert.id]
    if others:
        noun = "alert" if len(others) == 1 else "alerts"
        heading = f"\n\nSent with {len(others)} other {noun}:\n"
        budget = room - len(text) - len(heading) - 2
        listing = fit_lines([alert_line(o) for o in others], budget, separator="\n- ")
        text += heading + "- " + listing

    return MARKDOWN_OPEN + text + MARKDOWN_CLOSE
