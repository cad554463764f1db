"""The webhook payload: its shape, timestamps, and no NaN on the wire."""

from __future__ import annotations

import math

import orjson
import pytest

from tests.state.test_alerts import T0, make_spec
from tocsin.channels.payload import alert_payload, encode, format_duration, iso_utc
from tocsin.state.models import Alert, Notification, Transition


def notification(event: str = "trigger", **spec_fields) -> Notification:
    spec = make_spec(**spec_fields)
    resolved = event == "resolve"
    alert = Alert(
        id=7,
        uid="0123456789abcdef0123456789abcdef",
        state="resolved" if resolved else "triggered",
        spec=spec,
        value=0.05 if resolved else spec.value,
        resolved_at=T0 + 90.25 if resolved else None,
    )
    transition = Transition(
        id=11,
        alert_id=7,
        from_state="triggered" if resolved else None,
        to_state="resolved" if resolved else "triggered",
        at=T0 + 90.25 if resolved else T0,
        actor="engine",
        reason="avg 0.05 <= 0.2" if resolved else spec.reason,
    )
    return Notification(
        id=3,
        key=f"tocsin-{alert.uid}-11-ops",
        channel="ops",
        event=event,
        alert=alert,
        transition=transition,
        attempts=0,
        created_at=T0,
    )


def test_trigger_payload_has_every_field():
    payload = alert_payload(notification())

    body = {
        "id": 7,
        "uid": "0123456789abcdef0123456789abcdef",
        "name": "Drift on model a",
        "rule": "drift",
        "series": "model=a",
        "state": "triggered",
        "severity": "high",
        "labels": {"model": "a", "team": "ml"},
        "model": "a",
        "project": None,
        "metric": "model.drift",
        "aggregation": "avg",
        "window": "5m",
        "window_seconds": 300.0,
        "op": ">",
        "threshold": 0.2,
        "range": None,
        "value": 0.31,
        "samples": 12,
        "started_at": "2025-06-15T15:06:10.000Z",
        "fired_at": "2025-06-15T15:06:40.000Z",
        "resolved_at": None,
        "summary": "Drift on model a",
        "description": "",
        "runbook": "https://runbooks.example/drift",
        "recommended_actions": ["retrain"],
        "metadata": {"owner": "ml-platform"},
    }
    assert payload == {
        "version": "1",
        "idempotency_key": "tocsin-0123456789abcdef0123456789abcdef-11-ops",
        "event": "trigger",
        "status": "firing",
        "alert": body,
        "transition": {
            "from": None,
            "to": "triggered",
            "at": "2025-06-15T15:06:40.000Z",
            "actor": "engine",
            "reason": "avg 0.31 > 0.2 for 30s",
        },
        "reason": "avg 0.31 > 0.2 for 30s",
        "group_key": None,
        "group_labels": {},
        "alerts": [{**body, "status": "firing"}],
        "firing": 1,
        "resolved": 0,
    }


def test_resolve_payload_carries_the_resolve_value_and_time():
    payload = alert_payload(notification("resolve"))

    assert (payload["event"], payload["status"]) == ("resolve", "resolved")
    assert payload["alert"]["state"] == "resolved"
    assert payload["alert"]["value"] == 0.05
    assert payload["alert"]["resolved_at"] == "2025-06-15T15:08:10.250Z"
    assert payload["transition"]["from"] == "triggered"
    assert payload["transition"]["to"] == "resolved"


def test_name_falls_back_to_the_rule_and_project_comes_from_labels():
    payload = alert_payload(
        notification(summary="", labels={"model": "b", "project": "fraud"})
    )

    assert payload["alert"]["name"] == "drift"
    assert (payload["alert"]["model"], payload["alert"]["project"]) == ("b", "fraud")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_become_null(bad):
    body = encode(alert_payload(notification(value=bad, threshold=bad)))

    assert b"NaN" not in body and b"Infinity" not in body
    decoded = orjson.loads(body)
    assert decoded["alert"]["value"] is None
    assert decoded["alert"]["threshold"] is None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (300.0, "5m"),
        (3600.0, "1h"),
        (86400.0, "1d"),
        (172800.0, "2d"),
        (90.0, "90s"),
        (1.0, "1s"),
        (5400.0, "90m"),
        (0.25, "250ms"),
        (1.5, "1500ms"),
        (0.0001, "0.0001s"),
    ],
)
def test_windows_are_written_like_the_config(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("timestamp", "text"),
    [
        (0.0, "1970-01-01T00:00:00.000Z"),
        (T0, "2025-06-15T15:06:40.000Z"),
        (T0 + 0.1234, "2025-06-15T15:06:40.123Z"),
        (None, None),
        (math.nan, None),
    ],
)
def test_timestamps_are_iso_8601_utc_with_z(timestamp, text):
    assert iso_utc(timestamp) == text


def test_the_encoded_payload_round_trips():
    payload = alert_payload(notification())

    assert orjson.loads(encode(payload)) == payload


def test_a_range_alert_carries_its_range_and_no_threshold():
    payload = alert_payload(
        notification(op="outside", threshold=None, range=[0.1, 0.9])
    )

    assert payload["alert"]["op"] == "outside"
    assert payload["alert"]["threshold"] is None
    assert payload["alert"]["range"] == [0.1, 0.9]
