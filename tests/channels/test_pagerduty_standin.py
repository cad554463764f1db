"""The PagerDuty stand-in refuses what PagerDuty refuses and keeps incidents as
PagerDuty does, so the channel's tests can trust it."""

from __future__ import annotations

import hashlib
import hmac

import orjson
import pytest

from tests.standins.pagerduty import (
    PagerDutyStandIn,
    ping_body,
    signature,
    signed,
)

KEY = "0123456789abcdef0123456789abcdef"
GOOD = {
    "routing_key": KEY,
    "event_action": "trigger",
    "dedup_key": "k1",
    "payload": {"summary": "s", "source": "h", "severity": "error"},
}


@pytest.fixture
async def pd():
    async with PagerDutyStandIn(size_limit=4096) as standin:
        yield standin


async def post(session, pd, event, content_type="application/json"):
    body = event if isinstance(event, bytes) else orjson.dumps(event)
    headers = {"Content-Type": content_type}
    async with session.post(pd.url, data=body, headers=headers) as response:
        return response.status, await response.read()


def changed(**fields) -> dict:
    event = {**GOOD, "payload": dict(GOOD["payload"])}
    for name, value in fields.items():
        if name.startswith("payload_"):
            event["payload"][name.removeprefix("payload_")] = value
        elif value is None:
            event.pop(name, None)
        else:
            event[name] = value
    return event


@pytest.mark.parametrize(
    ("event", "error"),
    [
        (changed(routing_key=None), "'routing_key' is missing or blank"),
        (
            changed(routing_key="short"),
            "Length of 'routing_key' is incorrect (should be 32 characters)",
        ),
        (changed(event_action="snooze"), "'event_action' is missing or invalid"),
        (changed(dedup_key="k" * 256), "at most 255"),
        (changed(event_action="resolve", dedup_key=None), "required to resolve"),
        (changed(payload=None), "'payload' is missing"),
        (changed(payload_summary="s" * 1025), "longer than 1024"),
        (changed(payload_summary=" "), "'payload.summary' is missing"),
        (changed(payload_source=""), "'payload.source' is missing"),
        (changed(payload_severity="high"), "'payload.severity'"),
        (changed(payload_timestamp="yesterday"), "not ISO 8601"),
        (changed(payload_custom_details=[1]), "must be an object"),
        (changed(payload_extra="x"), "unknown payload fields"),
        (changed(dedupe_key="k"), "unknown fields"),
        (changed(links=[{"text": "no href"}]), "'href'"),
        (changed(images=[{"src": "http://x/y.png"}]), "https 'src'"),
    ],
)
async def test_a_broken_event_is_refused_with_pagerdutys_body(
    pd, session, event, error
):
    status, body = await post(session, pd, event)

    assert status == 400
    answer = orjson.loads(body)
    assert answer["status"] == "invalid event"
    assert answer["message"] == "Event object is invalid"
    assert error in answer["errors"][0]
    assert pd.incidents == []


async def test_not_json_too_large_and_nan_are_refused(pd, session):
    assert (await post(session, pd, GOOD, "text/plain"))[0] == 400
    assert (await post(session, pd, b'{"routing_key": NaN}'))[0] == 400
    big = changed(payload_custom_details={"x": "y" * 5000})
    assert (await post(session, pd, big))[0] == 413


async def test_the_dedup_state_machine(pd, session):
    ack = {"routing_key": KEY, "event_action": "acknowledge", "dedup_key": "k1"}
    resolve = {**ack, "event_action": "resolve"}
    other_key = {**ack, "routing_key": "f" * 32}

    answers = [
        await post(session, pd, event)
        for event in (ack, GOOD, GOOD, other_key, ack, resolve, resolve, GOOD)
    ]

    assert {status for status, _ in answers} == {202}
    assert [r.reason.split(":")[0] for r in pd.requests] == [
        "dropped",
        "accepted",
        "accepted",
        "dropped",
        "accepted",
        "accepted",
        "dropped",
        "accepted",
    ]
    first, second = pd.incidents
    assert (first.status, first.log) == (
        "resolved",
        ["trigger", "trigger", "acknowledge", "resolve"],
    )
    assert (second.status, second.log) == ("triggered", ["trigger"])
    assert orjson.loads(answers[1][1]) == {
        "status": "success",
        "message": "Event processed",
        "dedup_key": "k1",
    }


async def test_a_trigger_without_a_key_gets_a_new_uuid_each_time(pd, session):
    keyless = changed(dedup_key=None)

    keys = [orjson.loads((await post(session, pd, keyless))[1])["dedup_key"]]
    keys.append(orjson.loads((await post(session, pd, keyless))[1])["dedup_key"])

    assert keys[0] != keys[1] and all(len(key) == 36 for key in keys)
    assert len(pd.incidents) == 2


async def test_a_scripted_429_has_no_retry_after_and_ingests_nothing(pd, session):
    pd.fail(429)

    async with session.post(pd.url, json=GOOD) as response:
        assert response.status == 429
        assert "Retry-After" not in response.headers
    assert pd.incidents == []


def test_a_signature_has_one_v1_entry_per_secret():
    body = ping_body()
    expected = [
        "v1=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        for secret in (b"one", b"two")
    ]

    assert signature(body, "one", "two") == ",".join(expected)
    assert signed(body, "one")["X-PagerDuty-Signature"] == expected[0]
