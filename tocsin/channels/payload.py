"""The generic webhook payload: one JSON object per notification.

The shape follows what receivers of alerting webhooks already parse: a
``status`` of ``firing`` or ``resolved``, an ``alert`` object with labels and
the numbers that decided, and the transition that caused the message. The
``alert`` is the one the outbox kept with the notification: the alert as it was
at that transition (a trigger delivered after its alert resolved still says
``state: triggered``), so every attempt of a notification is the same bytes.

Version ``1`` fields only ever get added to, never renamed or removed.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import orjson

from tocsin.state.models import OPEN_STATES, Alert, Notification

#: Version of the payload's shape, sent as ``version``.
PAYLOAD_VERSION = "1"

_STATUS = {"trigger": "firing", "resolve": "resolved"}
_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def iso_utc(timestamp: float | None) -> str | None:
    """Format POSIX seconds as ISO 8601 UTC with milliseconds and a ``Z``."""
    if timestamp is None or not math.isfinite(timestamp):
        return None
    stamp = datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def format_duration(seconds: float) -> str:
    """Write seconds the way the config does: ``5m``, ``1h``, ``90s``, ``250ms``."""
    if not math.isfinite(seconds):
        return str(seconds)
    if seconds > 0 and seconds == int(seconds):
        for unit, size in _UNITS:
            if seconds % size == 0:
                return f"{int(seconds // size)}{unit}"
    milliseconds = seconds * 1000
    if milliseconds == int(milliseconds):
        return f"{int(milliseconds)}ms"
    return f"{seconds:g}s"


def finite(value: float | None) -> float | None:
    """Return ``value``, or ``None`` for NaN and the infinities.

    JSON has no token for them; a bare ``NaN`` breaks most receivers' parsers.
    """
    if value is None or not math.isfinite(value):
        return None
    return value


def alert_payload(notification: Notification) -> dict:
    """Describe one notification as the webhook JSON object.

    ``alert`` and ``transition`` are the first alert's; a grouped message
    also lists every alert in ``alerts``, each with its own ``status``, with
    the group, the reason and the counts of firing and resolved alerts.
    """
    alerts = notification.alerts or [notification.alert]
    bodies = [_alert_body(alert) for alert in alerts]
    transition = notification.transition
    firing = sum(1 for body in bodies if body["status"] == "firing")

    return {
        "version": PAYLOAD_VERSION,
        "idempotency_key": notification.key,
        "event": notification.event,
        "status": _STATUS[notification.event],
        "alert": _alert_body(notification.alert, status=False),
        "transition": {
            "from": transition.from_state,
            "to": transition.to_state,
            "at": iso_utc(transition.at),
            "actor": transition.actor,
            "reason": transition.reason,
        },
        "reason": notification.reason or transition.reason,
        "group_key": notification.group_key or None,
        "group_labels": notification.group_labels,
        "alerts": bodies,
        "firing": firing,
        "resolved": len(bodies) - firing,
    }


def _alert_body(alert: Alert, *, status: bool = True) -> dict:
    """Describe one alert; with its ``status`` (``firing`` while it is open)."""
    spec = alert.spec
    body = {
        "id": alert.id,
        "uid": alert.uid,
        "name": spec.summary or spec.rule,
        "rule": spec.rule,
        "series": spec.series,
        "state": alert.state,
        "severity": spec.severity,
        "labels": spec.labels,
        "model": spec.labels.get("model"),
        "project": spec.labels.get("project"),
        "metric": spec.metric,
        "aggregation": spec.aggregation,
        "window": format_duration(spec.window),
        "window_seconds": finite(spec.window),
        "op": spec.op,
        "threshold": finite(spec.threshold),
        "range": [finite(bound) for bound in spec.range] or None,
        "value": finite(alert.value),
        "samples": spec.samples,
        "started_at": iso_utc(spec.started_at),
        "fired_at": iso_utc(spec.fired_at),
        "resolved_at": iso_utc(alert.resolved_at),
        "summary": spec.summary,
        "description": spec.description,
        "runbook": spec.runbook,
        "recommended_actions": spec.recommended_actions,
        "metadata": spec.metadata,
    }
    if status:
        body["status"] = "firing" if alert.state in OPEN_STATES else "resolved"

    return body


def encode(payload: dict) -> bytes:
    """Encode a payload as compact JSON bytes."""
    return orjson.dumps(payload)
