"""The Microsoft Teams channel: an Adaptive Card posted to a Workflows webhook.

Teams takes messages from a Power Automate *Workflows* webhook, whose
"post to a channel" flow reads ``attachments`` of a ``message`` and renders
each Adaptive Card it finds there. Anything else (a bare ``text``, an old
``MessageCard``) makes the flow fail after the webhook already answered 202,
so the envelope is always the one the flow expects.

The card says what happened in its title, the severity and state in a fact
list, one line per alert (worst first, with its value and condition), and
links (the runbook, the alert in Tocsin) as ``Action.OpenUrl``, the only
action a card posted by a webhook can carry that works without a bot.

Teams refuses a message above about 28 KB, and some tenants less, so the
whole request body is kept within :data:`MESSAGE_LIMIT` bytes: the alert list
is cut with a visible ``+N more`` before anything else is.

Any 2xx is a success (a Workflows webhook answers 202 with no body). The
retired Office 365 connectors answered every message with 200, ``1`` in the
body on success and an error text on failure; such a 200 is a failure,
retryable when the text names a 429 or a 5xx.

The webhook URL is the credential (its ``sig`` parameter grants the right to
post), so no error or log line built here quotes it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

import orjson

from tocsin.channels.base import ChannelContext, DeliverySettings
from tocsin.channels.http import HttpTarget, Reply
from tocsin.channels.payload import encode, iso_utc
from tocsin.channels.summary import (
    alert_line,
    alerts_of,
    fit_lines,
    headline,
    status_word,
    truncate,
    truncate_to,
)
from tocsin.errors import DeliveryError
from tocsin.schema import TeamsChannelConfig
from tocsin.state.models import OPEN_STATES, Alert, Notification

log = logging.getLogger(__name__)

#: Most bytes of one request body; Teams refuses about 28 KB, some tenants
#: less, and the flow adds its own wrapping.
MESSAGE_LIMIT = 20_000
#: Most bytes of one fact or the title, as JSON (escapes included); the
#: alert list gets what the rest of the card leaves.
FACT_LIMIT = 300
#: Most bytes of an alert's description shown, as JSON.
DESCRIPTION_LIMIT = 1_000
#: Most runbook links; each is a button, and Teams shows only a few.
RUNBOOK_LINKS = 2
#: Longest link made a button; a longer one is left out rather than cut,
#: since a cut link leads nowhere.
LINK_LIMIT = 2_000

ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"
CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"

#: A status code in a legacy connector's error text that may pass later.
_RETRYABLE_TEXT = re.compile(r"\b(?:429|5\d\d)\b")
#: Hosts of the retired Office 365 connectors' webhook URLs.
_CONNECTOR_HOSTS = ("webhook.office.com", "outlook.office.com", "outlook.office365.com")
_EXCERPT_LIMIT = 160

AlertUrl = Callable[[str], str | None]


class TeamsChannel(DeliverySettings):
    """Post notifications to one Teams channel through a Workflows webhook.

    :param secrets: ``webhook_url``.
    """

    def __init__(
        self,
        config: TeamsChannelConfig,
        secrets: Mapping[str, str],
        context: ChannelContext,
    ) -> None:
        super().__init__(config)
        self._url = secrets["webhook_url"]
        self._version = config.card_version
        self._alert_url = context.alert_url
        self._target = HttpTarget(
            self.name, context.session, context.clock, timeout=self.timeout
        )
        if is_connector_url(self._url):
            # Said once, at start: every message to such a URL may be lost.
            log.warning(
                "the Teams webhook is an Office 365 connector, which Microsoft "
                "retired; create a Workflows webhook and use its URL",
                extra={"channel": self.name},
            )

    async def send(self, notification: Notification) -> int:
        """Post one card; return the HTTP status of a success.

        :raises DeliveryError: if Teams did not answer with a 2xx, or answered
            200 with an error text.
        """
        message = teams_message(
            notification, version=self._version, alert_url=self._alert_url
        )
        reply = await self._target.request(self._url, encode(message), {})
        error = self._refusal(reply)
        if error is not None:
            raise error

        return reply.status

    def _refusal(self, reply: Reply) -> DeliveryError | None:
        """Return the failure a legacy connector's 200 reports, if it does."""
        if reply.status != 200:
            return None
        text = reply.body.decode("utf-8", "replace").strip()
        if text in ("", "1"):
            return None
        retryable = _RETRYABLE_TEXT.search(text) is not None

        return self._target.refused(reply, self._excerpt(text), retryable=retryable)

    def _excerpt(self, text: str) -> str:
        """The start of an error text, on one line, without the URL."""
        text = text.replace(self._url, "[webhook]")
        query = urlsplit(self._url).query
        if query:
            text = text.replace(query, "[webhook]")
        return truncate(" ".join(text.split()), _EXCERPT_LIMIT)


def is_connector_url(url: str) -> bool:
    """Whether ``url`` is a retired Office 365 connector's webhook."""
    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError:
        return False
    return any(host == h or host.endswith("." + h) for h in _CONNECTOR_HOSTS)


def teams_message(
    notification: Notification,
    *,
    version: str = "1.4",
    alert_url: AlertUrl = lambda uid: None,
    limit: int = MESSAGE_LIMIT,
) -> dict:
    """Build the Workflows message of one notification.

    The alert list gets what the rest of the message leaves of ``limit``
    bytes, so the whole body, as encoded, never exceeds it.

    :param version: the Adaptive Card version the card declares.
    :param alert_url: the link to an alert in Tocsin, by uid, if there is one.
    """
    alerts = alerts_of(notification)
    items: list[dict] = [
        {
            "type": "TextBlock",
            "text": truncate_to(headline(notification), FACT_LIMIT, _json_size),
            "size": "Large",
            "weight": "Bolder",
            "color": _color(notification, alerts[0]),
            "wrap": True,
        },
        {"type": "FactSet", "facts": _facts(notification, alerts)},
    ]
    description = alerts[0].spec.description if len(alerts) == 1 else ""
    if description:
        text = truncate_to(description, DESCRIPTION_LIMIT, _json_size)
        items.append({"type": "TextBlock", "text": text, "wrap": True})
    listing = {"type": "TextBlock", "text": "", "wrap": True, "separator": True}
    items.append(listing)
    card = {
        "$schema": CARD_SCHEMA,
        "type": "AdaptiveCard",
        "version": version,
        "body": items,
        "actions": _actions(alerts, alert_url),
    }
    message = {
        "type": "message",
        "attachments": [
            {"contentType": ADAPTIVE_CARD, "contentUrl": None, "content": card}
        ],
    }

    # Separate paragraphs: Teams joins lines that one newline separates.
    room = limit - len(encode(message))
    lines = [alert_line(alert) for alert in alerts]
    listing["text"] = fit_lines(lines, room, separator="\n\n", size=_json_size)

    return message


def _json_size(text: str) -> int:
    """Bytes ``text`` takes inside a JSON string, escapes included."""
    return len(orjson.dumps(text)) - 2


def _color(notification: Notification, worst: Alert) -> str:
    if notification.event == "resolve":
        return "Good"
    if notification.event == "acknowledge":
        return "Accent"
    return "Attention" if worst.spec.severity in ("critical", "high") else "Warning"


def _facts(notification: Notification, alerts: list[Alert]) -> list[dict]:
    worst = alerts[0]
    spec = worst.spec
    facts = [("Severity", spec.severity), ("State", status_word(notification))]
    rules = sorted({alert.spec.rule for alert in alerts})
    facts.append(("Rule", ", ".join(rules)))
    if len(alerts) == 1:
        if spec.series:
            facts.append(("Series", spec.series))
    else:
        firing = sum(1 for alert in alerts if alert.state in OPEN_STATES)
        counts = f"{firing} firing, {len(alerts) - firing} resolved"
        facts.append(("Alerts", counts))
    if notification.group_labels:
        labels = notification.group_labels.items()
        facts.append(("Group", ", ".join(f"{k}={v}" for k, v in labels)))
    fired = iso_utc(spec.fired_at)
    if fired:
        facts.append(("Fired", fired))
    transition = notification.transition
    if notification.event == "acknowledge":
        facts.append(("By", transition.actor))
    reason = notification.reason or transition.reason
    if reason:
        facts.append(("Reason", reason))

    return [
        {"title": title, "value": truncate_to(value, FACT_LIMIT, _json_size)}
        for title, value in facts
    ]


def _actions(alerts: list[Alert], alert_url: AlertUrl) -> list[dict]:
    """Links as buttons: the worst alerts' runbooks, then the worst alert in
    Tocsin. Only absolute http(s) links: Teams drops a card with any other."""
    runbooks: list[str] = []
    for alert in alerts:
        runbook = alert.spec.runbook
        if _is_link(runbook) and runbook not in runbooks:
            runbooks.append(runbook)
    runbooks = runbooks[:RUNBOOK_LINKS]
    actions = [
        _open_url("Runbook" if len(runbooks) == 1 else f"Runbook {n}", url)
        for n, url in enumerate(runbooks, 1)
    ]
    link = alert_url(alerts[0].uid)
    if link and _is_link(link):
        title = "Alert in Tocsin" if len(alerts) == 1 else "Worst alert in Tocsin"
        actions.append(_open_url(title, link))

    return actions


def _open_url(title: str, url: str) -> dict:
    return {"type": "Action.OpenUrl", "title": title, "url": url}


def _is_link(text: str) -> bool:
    if len(text) > LINK_LIMIT:
        return False
    try:
        parts = urlsplit(text)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)
