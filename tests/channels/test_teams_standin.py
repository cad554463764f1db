"""The Teams stand-in refuses what the Workflows webhook and its flow refuse."""

from __future__ import annotations

import aiohttp
import orjson
import pytest

from tests.standins.teams import SIGNATURE, SIZE_LIMIT, TeamsStandIn


def message(**card_changes: object) -> dict:
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [{"type": "TextBlock", "text": "hello", "wrap": True}],
        "actions": [
            {"type": "Action.OpenUrl", "title": "Open", "url": "https://x.example"}
        ],
    }
    card.update(card_changes)
    attachment = {
        "contentType": "application/vnd.microsoft.card.adaptive",
        "contentUrl": None,
        "content": card,
    }
    return {"type": "message", "attachments": [attachment]}


@pytest.fixture
async def teams():
    async with TeamsStandIn() as standin:
        yield standin


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as client:
        yield client


async def post(session, url: str, body: bytes) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    async with session.post(url, data=body, headers=headers) as response:
        return response.status, await response.read()


async def test_a_valid_message_gets_202_and_no_body(teams, session):
    assert await post(session, teams.url, orjson.dumps(message())) == (202, b"")
    assert teams.cards() == [message()["attachments"][0]["content"]]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"text": "hello"}, "type must be 'message'"),
        ({"type": "message", "attachments": []}, "non-empty"),
        (
            {"type": "message", "attachments": [{"contentType": "text/plain"}]},
            "contentType",
        ),
        (
            {
                "@type": "MessageCard",
                "type": "message",
                "attachments": None,
            },
            "non-empty",
        ),
        (message(type="MessageCard"), "must be 'AdaptiveCard'"),
        (message(version="1.6"), "above what Teams renders"),
        (message(version=1.4), "version must be like"),
        (
            message(actions=[{"type": "Action.Submit", "title": "Ack"}]),
            "not supported",
        ),
        (
            message(actions=[{"type": "Action.OpenUrl", "title": "x", "url": "/a"}]),
            "absolute",
        ),
        (message(body=[{"type": "TextBlock"}]), "text must be a string"),
        (message(body=[{"type": "FactSet", "facts": [{"title": "a"}]}]), "facts"),
        (message(body=[{"type": "Widget"}]), "unknown element"),
    ],
)
async def test_a_malformed_message_gets_400_with_the_reason(
    teams, session, body, reason
):
    status, answer = await post(session, teams.url, orjson.dumps(body))

    assert status == 400
    assert reason in orjson.loads(answer)["error"]["message"]
    assert teams.accepted == []


async def test_a_body_above_28_kb_gets_413(teams, session):
    text = "x" * SIZE_LIMIT
    body = orjson.dumps(message(body=[{"type": "TextBlock", "text": text}]))

    assert (await post(session, teams.url, body))[0] == 413


async def test_a_url_without_its_signature_gets_401(teams, session):
    url = teams.url.replace(SIGNATURE, "")

    assert (await post(session, url, orjson.dumps(message())))[0] == 401


async def test_scripted_answers_come_once_each_then_202(teams, session):
    teams.fail(429, headers={"Retry-After": "5"})
    teams.fail(503)
    body = orjson.dumps(message())

    statuses = [(await post(session, teams.url, body))[0] for _ in range(3)]

    assert statuses == [429, 503, 202]


async def test_legacy_mode_answers_200_with_1_or_an_error_text(session):
    async with TeamsStandIn(legacy=True) as legacy:
        legacy.fail(429)
        body = orjson.dumps(message())

        refused = await post(session, legacy.url, body)
        accepted = await post(session, legacy.url, body)

    assert refused[0] == 200 and b"HTTP error 429" in refused[1]
    assert accepted == (200, b"1")
