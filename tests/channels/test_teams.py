"""The Teams channel against a strict local Workflows webhook."""

from __future__ import annotations

import logging

import aiohttp
import orjson
import pytest

from tests.channels.messages import alert, big_group, grouped
from tests.channels.test_payload import notification
from tests.standins.teams import SIGNATURE, TeamsStandIn
from tocsin.channels.base import ChannelContext
from tocsin.channels.payload import encode
from tocsin.channels.summary import alert_line, alerts_of
from tocsin.channels.teams import MESSAGE_LIMIT, TeamsChannel, teams_message
from tocsin.clock import ManualClock
from tocsin.errors import DeliveryError
from tocsin.schema import TeamsChannelConfig

NOW = 1_750_000_000.0
EXTERNAL = "https://tocsin.example"


@pytest.fixture
async def teams():
    async with TeamsStandIn() as standin:
        yield standin


@pytest.fixture
async def legacy():
    async with TeamsStandIn(legacy=True) as standin:
        yield standin


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as client:
        yield client


def channel(url: str, session, **fields) -> TeamsChannel:
    config = TeamsChannelConfig(name="ops", webhook_url=url, **fields)
    context = ChannelContext(session, ManualClock(NOW), external_url=EXTERNAL)
    return TeamsChannel(config, {"webhook_url": url}, context)


def texts(card: dict) -> list[str]:
    return [item["text"] for item in card["body"] if item["type"] == "TextBlock"]


def facts(card: dict) -> dict[str, str]:
    [fact_set] = [item for item in card["body"] if item["type"] == "FactSet"]
    return {fact["title"]: fact["value"] for fact in fact_set["facts"]}


async def test_a_card_is_posted_in_the_envelope_the_flow_reads(teams, session):
    sent = notification(description="PSI of the input features rose.")

    status = await channel(teams.url, session).send(sent)

    assert status == 202
    [request] = teams.accepted
    assert request.headers["Content-Type"] == "application/json"
    assert request.json["type"] == "message"
    [attachment] = request.json["attachments"]
    assert set(attachment) == {"contentType", "contentUrl", "content"}
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert attachment["contentUrl"] is None
    card = attachment["content"]
    assert (card["type"], card["version"]) == ("AdaptiveCard", "1.4")
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    title, description, listing = texts(card)
    assert title == "[FIRING] Drift on model a (model=a)"
    assert description == "PSI of the input features rose."
    assert listing == "high model=a: 0.31 (avg(model.drift) over 5m > 0.2)"
    assert facts(card) == {
        "Severity": "high",
        "State": "firing",
        "Rule": "drift",
        "Series": "model=a",
        "Fired": "2025-06-15T15:06:40.000Z",
        "Reason": "avg 0.31 > 0.2 for 30s",
    }
    uid = sent.alert.uid
    assert card["actions"] == [
        {
            "type": "Action.OpenUrl",
            "title": "Runbook",
            "url": "https://runbooks.example/drift",
        },
        {
            "type": "Action.OpenUrl",
            "title": "Alert in Tocsin",
            "url": f"{EXTERNAL}/api/v1/alerts/{uid}",
        },
    ]


@pytest.mark.parametrize("version", ["1.2", "1.5"])
async def test_the_card_declares_the_configured_version(teams, session, version):
    await channel(teams.url, session, card_version=version).send(notification())

    assert teams.cards()[0]["version"] == version


async def test_a_resolve_says_resolved_in_green(teams, session):
    await channel(teams.url, session).send(notification("resolve"))

    [card] = teams.cards()
    assert texts(card)[0] == "[RESOLVED] Drift on model a (model=a)"
    assert card["body"][0]["color"] == "Good"
    assert facts(card)["State"] == "resolved"


def test_only_http_links_become_buttons_and_none_without_an_external_url():
    message = teams_message(notification(runbook="see the wiki"))

    assert message["attachments"][0]["content"]["actions"] == []


async def test_a_group_lists_its_alerts_worst_first(teams, session):
    alerts = [
        alert(1, severity="warning", value=0.9),
        alert(2, severity="critical", state="resolved"),
        alert(3, severity="critical", value=0.25),
        alert(4, severity="critical", value=0.5),
    ]

    await channel(teams.url, session).send(grouped(alerts))

    [card] = teams.cards()
    lines = texts(card)[-1].split("\n\n")
    assert [line.split(":")[0] for line in lines] == [
        "critical model=m004",
        "critical model=m003",
        "warning model=m001",
        "critical resolved model=m002",
    ]
    assert texts(card)[0] == "[FIRING:3] drift"
    assert card["body"][0]["color"] == "Attention"
    assert facts(card)["Alerts"] == "3 firing, 1 resolved"
    assert facts(card)["Group"] == "rule=drift"
    assert card["actions"][-1]["title"] == "Worst alert in Tocsin"
    assert card["actions"][-1]["url"].endswith(f"/alerts/{4:032x}")


async def test_a_200_alert_group_stays_under_the_limit_and_says_how_many_more(
    teams, session
):
    group = big_group(200)

    await channel(teams.url, session).send(group)

    [request] = teams.accepted
    assert len(request.body) <= MESSAGE_LIMIT
    lines = texts(teams.cards()[0])[-1].split("\n\n")
    shown, marker = lines[:-1], lines[-1]
    assert 10 < len(shown) < 200
    assert marker == f"+{200 - len(shown)} more"
    # The worst come first: every critical alert before any other.
    expected = [alert_line(a) for a in alerts_of(group)]
    assert shown == expected[: len(shown)]
    assert [line.split()[0] for line in shown[:50]] == ["critical"] * 50


@pytest.mark.parametrize("limit", [3_000, 8_000, MESSAGE_LIMIT])
def test_the_encoded_message_never_exceeds_its_limit(limit):
    message = teams_message(big_group(300, name_length=150), limit=limit)

    size = len(encode(message))
    assert limit - 200 < size <= limit
    assert texts(message["attachments"][0]["content"])[-1].endswith(" more")


@pytest.mark.parametrize(
    ("status", "headers", "reason", "retryable", "retry_after"),
    [
        (429, {}, "rate_limited", True, None),
        (429, {"Retry-After": "12"}, "rate_limited", True, 12.0),
        (500, {}, "server_error", True, None),
        (502, {}, "server_error", True, None),
        (503, {"Retry-After": "3"}, "server_error", True, 3.0),
        (400, {}, "client_error", False, None),
        (404, {}, "client_error", False, None),
    ],
)
async def test_failures_are_classified_and_never_quote_the_url(
    teams, session, status, headers, reason, retryable, retry_after
):
    teams.fail(status, headers=headers, body=f"refused {teams.url}".encode())

    with pytest.raises(DeliveryError) as caught:
        await channel(teams.url, session).send(notification())

    error = caught.value
    assert (error.reason, error.retryable, error.status) == (reason, retryable, status)
    assert error.retry_after == retry_after
    assert SIGNATURE not in str(error) and "/workflows/" not in str(error)


async def test_a_wrong_signature_is_a_final_auth_failure(teams, session):
    url = teams.url.replace(SIGNATURE, "sig-forged")

    with pytest.raises(DeliveryError) as caught:
        await channel(url, session).send(notification())

    assert (caught.value.reason, caught.value.retryable) == ("auth", False)
    assert "sig-forged" not in str(caught.value)


async def test_a_slow_webhook_is_a_retryable_timeout(teams, session):
    teams.fail(202, delay=1.0)

    with pytest.raises(DeliveryError) as caught:
        await channel(teams.url, session, timeout=0.2).send(notification())

    assert (caught.value.reason, caught.value.retryable) == ("timeout", True)


async def test_a_legacy_connector_answering_1_is_a_success(legacy, session):
    assert await channel(legacy.url, session).send(notification()) == 200
    assert legacy.accepted[0].status == 200


@pytest.mark.parametrize(
    ("status", "retryable"), [(429, True), (500, True), (503, True), (413, False)]
)
async def test_a_legacy_200_with_an_error_text_is_a_failure(
    legacy, session, status, retryable
):
    legacy.fail(status)

    with pytest.raises(DeliveryError) as caught:
        await channel(legacy.url, session).send(notification())

    error = caught.value
    assert (error.status, error.retryable) == (200, retryable)
    assert f"returned HTTP error {status}" in str(error)


@pytest.mark.parametrize(
    "body",
    [
        b"Webhook Bad Request - Null or empty event",
        b'{"error": "no such flow"}',
    ],
)
async def test_any_other_text_in_a_200_is_a_final_failure(teams, session, body):
    teams.fail(200, body=body)

    with pytest.raises(DeliveryError) as caught:
        await channel(teams.url, session).send(notification())

    assert (caught.value.status, caught.value.retryable) == (200, False)
    assert caught.value.reason == "client_error"


async def test_a_200_error_text_quoting_the_url_is_not_repeated(teams, session):
    teams.fail(200, body=f"HTTP error 429 posting to {teams.url}".encode())

    with pytest.raises(DeliveryError) as caught:
        await channel(teams.url, session).send(notification())

    assert caught.value.retryable is True
    assert SIGNATURE not in str(caught.value)
    assert "[webhook]" in str(caught.value)


@pytest.mark.parametrize("status", [201, 202, 204])
async def test_any_2xx_but_200_is_a_success_whatever_its_body(teams, session, status):
    teams.fail(status, body=b"" if status == 204 else b'{"accepted": true}')

    assert await channel(teams.url, session).send(notification()) == status


def test_an_office_365_connector_url_is_warned_about_without_quoting_it(
    caplog, session
):
    url = "https://contoso.webhook.office.com/webhookb2/abc@def/IncomingWebhook/x/y"
    with caplog.at_level(logging.WARNING, logger="tocsin.channels.teams"):
        channel(url, session)
        channel("https://prod-01.westus.logic.azure.com/workflows/1?sig=s", session)

    [record] = caplog.records
    assert "Workflows" in record.getMessage()
    assert "webhook.office.com" not in record.getMessage()
    assert record.channel == "ops"


def test_every_message_is_json_without_nan():
    message = teams_message(notification(value=float("nan"), threshold=0.2))

    body = encode(message)
    assert b"NaN" not in body
    assert orjson.loads(body) == message
