"""The sample notification: a labelled test alert, shaped like a real trigger."""

from __future__ import annotations

import msgspec
import orjson

from tocsin.channels.payload import alert_payload, encode
from tocsin.channels.sample import TEST_RULE, TEST_SUMMARY, sample_notification
from tocsin.channels.summary import headline
from tocsin.state.models import Notification

NOW = 1_750_000_000.0


def test_the_sample_says_it_is_a_test_and_names_the_integration():
    notification = sample_notification("ml-oncall", NOW)
    spec = notification.alert.spec

    assert (notification.event, notification.channel) == ("trigger", "ml-oncall")
    assert (spec.rule, spec.summary, spec.severity) == (
        TEST_RULE,
        "Test notification from Tocsin",
        "info",
    )
    assert spec.labels == {"integration": "ml-oncall", "tocsin_test": "true"}
    assert "ml-oncall" in spec.description
    assert (spec.fired_at, notification.transition.at) == (NOW, NOW)
    assert TEST_SUMMARY == "Test notification from Tocsin"


def test_each_sample_is_a_new_alert_unless_its_uid_is_given():
    first, second = (sample_notification("hook", NOW) for _ in range(2))
    fixed = [sample_notification("hook", NOW, uid="0" * 32) for _ in range(2)]

    assert first.alert.uid != second.alert.uid
    assert first.key != second.key
    assert fixed[0] == fixed[1]
    assert fixed[0].key == f"tocsin-test-{'0' * 32}-hook"


def test_the_sample_is_a_valid_notification_every_payload_takes():
    notification = sample_notification("hook", NOW, uid="a" * 32)

    # It survives the round trip the outbox would give a real one.
    raw = msgspec.json.encode(notification)
    assert msgspec.json.decode(raw, type=Notification) == notification
    payload = orjson.loads(encode(alert_payload(notification)))
    assert payload["status"] == "firing"
    assert payload["alert"]["rule"] == TEST_RULE
    assert headline(notification) == (
        "[FIRING] Test notification from Tocsin (integration=hook)"
    )
