"""The PagerDuty channel: one Events API v2 event per alert of a notification.

Every Tocsin alert is one PagerDuty alert, found again by its dedup key
``tocsin-<uid>``. The uid belongs to the alert for its whole life (a reopen
keeps it), so the trigger, acknowledgement and resolve of one alert meet in
one PagerDuty incident, and two series breaching one rule never share one.
The key holds nothing that changes while the alert lives: no severity, value
or time.

The event each alert of a notification gets follows the alert's state as the
notification recorded it: a resolved (or closed) alert is resolved; one that
someone owns (acknowledged, investigating) is acknowledged when the
notification is an acknowledgement; any other is triggered, which for an
alert PagerDuty already has open only adds a line to its log.

A trigger carries the alert's facts in ``custom_details``. The features an
alert concerns are read from its labels ``feature`` and ``features`` and from
``metadata["features"]``, each one name or several separated by commas.

The routing key authenticates the events: it travels in the body only, and no
error built here quotes it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import orjson

from tocsin.channels.base import ChannelContext, DeliverySettings, Taken
from tocsin.channels.http import HttpTarget, Reply
from tocsin.channels.payload import finite, format_duration, iso_utc
from tocsin.channels.summary import alerts_of, condition, truncate, value_text
from tocsin.logs import register_secret
from tocsin.schema import PAGERDUTY_SEVERITIES, PagerDutyChannelConfig
from tocsin.state.models import OPEN_STATES, Alert, Notification

#: The actor of every move a PagerDuty webhook makes, and its inbound source.
ACTOR = "pagerduty"

#: What every dedup key Tocsin sends starts with.
DEDUP_PREFIX = "tocsin-"
#: PagerDuty's limits on an event's ``summary`` and ``dedup_key``.
SUMMARY_LIMIT = 1024
DEDUP_LIMIT = 255

#: The most bytes one event may have; PagerDuty says 512 KB, read here as
#: the smaller of its two meanings.
REQUEST_LIMIT = 512_000
#: What ends a custom detail cut to fit :data:`REQUEST_LIMIT`.
TRIM_MARK = "…[trimmed: the event was over PagerDuty's size limit]"

#: States in which someone owns an alert: PagerDuty's "acknowledged".
_OWNED = ("acknowledged", "investigating")
#: Longest refusal detail an error carries.
_DETAIL_LIMIT = 500


def dedup_key(alert: Alert) -> str:
    """Return the PagerDuty dedup key of ``alert``: the same all its life.

    It is 39 characters, well within PagerDuty's :data:`DEDUP_LIMIT`.
    """
    return DEDUP_PREFIX + alert.uid


def alert_uid(key: str) -> str | None:
    """Return the uid of the alert whose dedup key is ``key``, or ``None`` if
    Tocsin did not make the key."""
    if not key.startswith(DEDUP_PREFIX):
        return None
    uid = key[len(DEDUP_PREFIX) :]
    # Uids are 32 hex digits; anything else (a bare number would be taken
    # for an alert id) names no alert of ours.
    if len(uid) != 32 or any(char not in "0123456789abcdef" for char in uid):
        return None
    return uid


def event_action(alert: Alert, event: str) -> str:
    """Return the PagerDuty ``event_action`` for one alert of a notification.

    :param event: the notification's event (``trigger``, ``resolve``,
        ``acknowledge``).
    """
    if alert.state not in OPEN_STATES:
        return "resolve"
    if event == "acknowledge" and alert.state in _OWNED:
        return "acknowledge"
    return "trigger"


def features(alert: Alert) -> list[str]:
    """Return the features ``alert`` concerns, in the order they are named."""
    spec = alert.spec
    given = (
        spec.labels.get("feature", ""),
        spec.labels.get("features", ""),
        spec.metadata.get("features", ""),
    )
    names = (name.strip() for text in given for name in text.split(","))
    return list(dict.fromkeys(name for name in names if name))


def summary_text(alert: Alert) -> str:
    """One line saying what breached: ``Drift (model=a): 0.31 (avg(...) > 0.2)``."""
    spec = alert.spec
    name = spec.summary or spec.rule
    where = f" ({spec.series})" if spec.series else ""
    return f"{name}{where}: {value_text(alert.value)} ({condition(alert)})"


def details(alert: Alert, notification: Notification) -> dict[str, object]:
    """Return what a trigger tells of ``alert`` beyond its summary; empty
    facts are left out."""
    spec = alert.spec
    facts: dict[str, object] = {
        "summary": summary_text(alert),
        "model": spec.labels.get("model"),
        "project": spec.labels.get("project"),
        "metric": spec.metric,
        "value": finite(alert.value),
        "threshold": finite(spec.threshold),
        "range": [finite(bound) for bound in spec.range],
        "condition": condition(alert),
        "features": features(alert),
        "window": format_duration(spec.window),
        "rule": spec.rule,
        "series": spec.series,
        "severity": spec.severity,
        "state": alert.state,
        "labels": spec.labels,
        "reason": spec.reason,
        "notification": notification.reason,
        "started_at": iso_utc(spec.started_at),
        "fired_at": iso_utc(spec.fired_at),
        "description": spec.description,
        "runbook": spec.runbook,
        "recommended_actions": spec.recommended_actions,
        "metadata": spec.metadata,
        "alert_uid": alert.uid,
    }
    return {
        key: value for key, value in facts.items() if value not in (None, "", [], {})
    }


def fit_event(event: dict, limit: int = REQUEST_LIMIT) -> bytes:
    """Encode ``event``, cutting its largest custom details until it fits.

    Each cut detail becomes text ending with :data:`TRIM_MARK`, and
    ``trimmed`` lists them, so the cut is seen rather than silent. An event
    still too large once nothing is left to cut is returned as it is, for
    PagerDuty to refuse.
    """
    body = orjson.dumps(event)
    payload = event.get("payload")
    if len(body) <= limit or not payload:
        return body

    facts = dict(payload.get("custom_details", {}))
    cut: list[str] = []
    while len(body) > limit:
        sizes = {
            key: len(orjson.dumps(value))
            for key, value in facts.items()
            if key != "trimmed" and value != TRIM_MARK
        }
        if not sizes:
            break
        key = max(sizes, key=sizes.__getitem__)
        # A value that is not text is cut as its JSON text, which escaping
        # makes longer again: one cut may fall short, and the next cuts more.
        value = facts[key]
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
        raw = text.encode()
        keep = max(len(raw) - (len(body) - limit) - len(TRIM_MARK.encode()) - 64, 0)
        facts[key] = raw[:keep].decode(errors="ignore") + TRIM_MARK
        cut.append(key)
        facts["trimmed"] = sorted(set(cut))
        body = orjson.dumps({**event, "payload": {**payload, "custom_details": facts}})

    return body


class PagerDutyChannel(DeliverySettings):
    """Send notifications to one PagerDuty service.

    :param secrets: ``routing_key``, and ``webhook_secret`` (several separated
        by commas while a secret is rotated) to take PagerDuty's webhooks.
    """

    def __init__(
        self,
        config: PagerDutyChannelConfig,
        secrets: Mapping[str, str],
        context: ChannelContext,
    ) -> None:
        super().__init__(config)
        self.send_acknowledged = config.send_acknowledged
        self._routing_key = secrets["routing_key"]
        #: The secrets a webhook from PagerDuty may be signed with.
        self.webhook_secrets = tuple(
            secret.strip()
            for secret in secrets.get("webhook_secret", "").split(",")
            if secret.strip()
        )
        for secret in self.webhook_secrets:
            register_secret(secret)
        self._url = config.url
        self._config = config
        self._severities = {**PAGERDUTY_SEVERITIES, **config.severities}
        self._context = context
        self._target = HttpTarget(
            self.name, context.session, context.clock, timeout=self.timeout
        )
        self._taken = Taken()

    async def send(self, notification: Notification) -> int | None:
        """Send one event per alert of ``notification``; return the last status,
        or ``None`` if there was nothing left to send.

        Events go one after the other. A retry sends only those PagerDuty has
        not taken yet (see :class:`~tocsin.channels.base.Taken`); after a
        restart it sends them all, which PagerDuty takes as the same events
        (same dedup keys).

        :raises DeliveryError: if PagerDuty refused an event (400 is final,
            429 and 5xx may succeed later) or could not be reached.
        """
        if (
            notification.event == "acknowledge"
            and notification.transition.actor == ACTOR
        ):
            # PagerDuty told Tocsin; telling it back would only add a log entry.
            return None
        status = None
        for alert in alerts_of(notification):
            body = fit_event(self.event(alert, notification))
            # The body too: only the very event taken before is skipped.
            digest = hashlib.sha256(body).hexdigest()
            mark = f"{notification.key} {alert.uid} {digest}"
            if mark in self._taken:
                continue
            reply = await self._target.request(
                self._url, body, {}, explain=self._explain
            )
            self._check_processed(reply)
            self._taken.add(mark)
            status = reply.status

        return status

    def event(self, alert: Alert, notification: Notification) -> dict:
        """Return the Events API v2 event about one alert of ``notification``."""
        action = event_action(alert, notification.event)
        event: dict = {
            "routing_key": self._routing_key,
            "event_action": action,
            "dedup_key": dedup_key(alert),
        }
        if action != "trigger":
            # PagerDuty reads only the key of an acknowledge or a resolve.
            return event

        spec = alert.spec
        config = self._config
        at = notification.transition.at
        if notification.transition.alert_id != alert.id:
            at = spec.fired_at
        payload = {
            "summary": truncate(summary_text(alert), SUMMARY_LIMIT),
            "source": config.source or self._context.hostname,
            "severity": self._severities.get(spec.severity, "error"),
            "timestamp": iso_utc(at),
            "component": config.component or spec.labels.get("model", ""),
            "group": config.group or spec.labels.get("project", ""),
            "class": config.event_class or spec.metric,
            "custom_details": details(alert, notification),
        }
        event["payload"] = {k: v for k, v in payload.items() if v}
        event["client"] = "Tocsin"
        alert_url = self._context.alert_url(alert.uid)
        if alert_url:
            event["client_url"] = alert_url
        links = []
        if spec.runbook.startswith(("https://", "http://")):
            links.append({"href": spec.runbook, "text": "Runbook"})
        if alert_url:
            links.append({"href": alert_url, "text": "Alert in Tocsin"})
        if links:
            event["links"] = links

        return event

    def _explain(self, reply: Reply) -> str | None:
        """Return what PagerDuty said of a refused event, without the key."""
        try:
            answer = orjson.loads(reply.body)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(answer, dict):
            return None
        said = [str(answer.get("message") or "")]
        errors = answer.get("errors")
        if isinstance(errors, list):
            said.extend(str(error) for error in errors)
        text = "; ".join(part for part in said if part)
        text = text.replace(self._routing_key, "[redacted]")

        return truncate(text, _DETAIL_LIMIT) or None

    def _check_processed(self, reply: Reply) -> None:
        """Refuse a success status whose body does not say the event was taken.

        PagerDuty answers ``{"status": "success", ...}``; another status in
        its answer is final. A body that is not PagerDuty's answer at all
        (a proxy's page, nothing) leaves it unknown whether the event
        arrived, so it is retryable: the dedup key makes a repeat harmless.
        """
        try:
            answer = orjson.loads(reply.body)
        except orjson.JSONDecodeError:
            answer = None
        status = answer.get("status") if isinstance(answer, dict) else None
        if status == "success":
            return
        if not isinstance(status, str):
            raise self._target.refused(
                reply, "an answer that is not PagerDuty's", retryable=True
            )
        said = self._explain(reply) or "no reason given"
        raise self._target.refused(reply, said, retryable=False)
