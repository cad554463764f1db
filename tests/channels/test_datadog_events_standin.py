"""The events endpoint of the Datadog stand-in refuses what the real API
refuses, and leaves the series endpoint as it was."""

from __future__ import annotations

import aiohttp
import orjson
import pytest

from tests.standins.datadog import DatadogStandIn
from tests.standins.datadog_events import rate_limited
from tocsin.clock import ManualClock

KEY = "standin-key-abcdef"
NOW = 1_750_000_000


def good(**changes: object) -> dict:
    event = {
        "title": "[FIRING] drift (model=a)",
        "text": "%%% \nhigh model=a: 0.31\n %%%",
        "date_happened": NOW,
        "alert_type": "error",
        "priority": "normal",
        "aggregation_key": "tocsin-0123",
        "tags": ["rule:drift", "model:a"],
        "source_type_name": "tocsin",
        "host": "gpu-1",
    }
    event.update(changes)
    return {key: value for key, value in event.items() if value is not None}


@pytest.fixture
async def standin():
    async with DatadogStandIn(KEY, clock=ManualClock(NOW)) as running:
        yield running


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as client:
        yield client


async def post(session, standin, event: object, *, key: str | None = KEY):
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["DD-API-KEY"] = key
    url = standin.url + "/api/v1/events"
    async with session.post(url, data=orjson.dumps(event), headers=headers) as reply:
        return reply.status, dict(reply.headers), orjson.loads(await reply.read())


async def test_a_valid_event_gets_202_with_its_id(standin, session):
    status, _, answer = await post(session, standin, good())

    assert status == 202
    assert answer["status"] == "ok"
    assert isinstance(answer["event"]["id"], int)
    assert answer["event"]["id_str"] == str(answer["event"]["id"])
    assert answer["event"]["title"] == good()["title"]
    assert standin.accepted_events == [good()]
    assert standin.accepted == []


@pytest.mark.parametrize("key", [None, "wrong-key"])
async def test_an_event_without_the_key_gets_403(standin, session, key):
    status, _, answer = await post(session, standin, good(), key=key)

    assert (status, answer) == (403, {"errors": ["Forbidden"]})


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (good(title=None), "title is required"),
        (good(title=""), "title is required"),
        (good(title="t" * 101), "title longer"),
        (good(text=None), "text is required"),
        (good(text="x" * 4001), "text longer than 4000"),
        (good(aggregation_key="k" * 101), "aggregation_key longer"),
        (good(alert_type="critical"), "invalid alert_type"),
        (good(priority="high"), "invalid priority"),
        (good(date_happened=float(NOW)), "must be an integer"),
        (good(date_happened=str(NOW)), "must be an integer"),
        (good(date_happened=True), "must be an integer"),
        (good(date_happened=NOW - 18 * 3600 - 1), "outside"),
        (good(date_happened=NOW + 2 * 3600 + 1), "outside"),
        (good(tags=["9lives"]), "tag rules"),
        (good(tags=["env:"]), "tag rules"),
        (good(severity="high"), "unknown fields"),
        (good(host=3), "host must be a string"),
        (["not", "an", "object"], "must be an object"),
    ],
)
async def test_a_malformed_event_gets_400_with_the_reason(
    standin, session, event, reason
):
    status, _, answer = await post(session, standin, event)

    assert status == 400
    [error] = answer["errors"]
    assert reason in error
    assert standin.accepted_events == []


@pytest.mark.parametrize(
    "changes",
    [
        {"date_happened": NOW - 18 * 3600},
        {"date_happened": NOW + 2 * 3600},
        {"date_happened": None, "priority": None, "alert_type": None},
        {"text": "x" * 4000, "aggregation_key": "k" * 100, "title": "t" * 100},
        {"alert_type": "success", "priority": "low"},
    ],
)
async def test_the_limits_themselves_are_accepted(standin, session, changes):
    assert (await post(session, standin, good(**changes)))[0] == 202


async def test_scripted_answers_come_in_order_then_202(standin, session):
    standin.pass_events()
    standin.fail_events(429, headers=rate_limited(reset=9))
    standin.fail_events(503)

    answers = [await post(session, standin, good()) for _ in range(4)]

    assert [status for status, _, _ in answers] == [202, 429, 503, 202]
    limited = answers[1][1]
    assert limited["X-RateLimit-Reset"] == "9"
    assert limited["X-RateLimit-Remaining"] == "0"
    assert answers[1][2] == {"errors": ["scripted"]}
    assert len(standin.accepted_events) == 2


async def test_a_scripted_failure_still_checks_the_event_first(standin, session):
    standin.fail_events(503)

    first, _, _ = await post(session, standin, good(alert_type="bad"))
    second, _, _ = await post(session, standin, good())

    assert (first, second) == (400, 503)
