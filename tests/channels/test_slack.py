"""The Slack channel against a strict local Slack: the Block Kit it posts,
Slack's limits, and what each of Slack's answers means for delivery."""

from __future__ import annotations

import re

import aiohttp
import msgspec
import pytest

from tests.channels.test_payload import notification
from tests.standins.slack import ERROR_STATUS, SlackStandin
from tests.state.test_alerts import T0, make_spec
from tocsin.channels.base import ChannelContext
from tocsin.channels.build import build_channels
from tocsin.channels.sample import sample_notification
from tocsin.channels.slack import SlackChannel
from tocsin.channels.slack_blocks import cut, escape
from tocsin.channels.summary import alert_line
from tocsin.clock import ManualClock
from tocsin.errors import DeliveryError
from tocsin.schema import Duration, SlackChannelConfig
from tocsin.state.models import Alert, Notification

EXTERNAL = "https://tocsin.example"
UID = "0123456789abcdef0123456789abcdef"


@pytest.fixture
async def slack():
    async with SlackStandin() as standin:
        yield standin


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as client:
        yield client


def channel_for(slack, session, *, secrets=None, **fields) -> SlackChannel:
    config = SlackChannelConfig(name="alerts", **fields)
    context = ChannelContext(session, ManualClock(T0), external_url=EXTERNAL)
    given = secrets if secrets is not None else {"webhook_url": slack.webhook_url}
    return SlackChannel(config, given, context)


def of_type(message: dict, kind: str) -> list[dict]:
    return [block for block in message["blocks"] if block["type"] == kind]


def buttons(block: dict) -> list[tuple[str, str, str]]:
    return [(b["action_id"], b["text"]["text"], b["value"]) for b in block["elements"]]


async def test_a_trigger_is_posted_as_block_kit_with_buttons(slack, session):
    channel = channel_for(slack, session)

    status = await channel.send(notification())

    assert status == 200
    [request] = slack.requests
    assert request.headers["Content-Type"] == "application/json"
    [message] = slack.messages
    header, section, actions, context = message["blocks"]
    assert header == {
        "type": "header",
        "text": {
            "type": "plain_text",
            "text": "[FIRING] Drift on model a (model=a) · high",
        },
    }
    text = section["text"]["text"]
    assert text.startswith(f"*<{EXTERNAL}/api/v1/alerts/{UID}|Drift on model a>*")
    assert "<https://runbooks.example/drift|Runbook>" in text
    facts = [field["text"] for field in section["fields"]]
    assert facts[:5] == [
        "*Severity*\nhigh",
        "*State*\ntriggered",
        "*Value*\n0.31",
        "*Condition*\navg(model.drift) over 5m &gt; 0.2",
        "*Series*\nmodel=a",
    ]
    assert buttons(actions) == [
        ("tocsin.acknowledge", "Acknowledge", UID),
        ("tocsin.snooze", "Snooze 1h", UID),
        ("tocsin.resolve", "Resolve", UID),
    ]
    assert context["elements"][0]["text"].startswith(
        "avg 0.31 &gt; 0.2 for 30s · <!date^"
    )
    assert message["text"].startswith("[FIRING] Drift on model a (model=a)\n")
    assert "high model=a: 0.31" in message["text"]


async def test_without_buttons_no_actions_block_is_sent(slack, session):
    await channel_for(slack, session, buttons=False).send(notification())

    [message] = slack.messages
    assert of_type(message, "actions") == []


async def test_a_test_notification_has_no_buttons_to_act_on(slack, session):
    # Its alert is in no database: a click could only be refused.
    await channel_for(slack, session).send(sample_notification("alerts", T0))

    [message] = slack.messages
    assert of_type(message, "actions") == []
    assert "Test notification from Tocsin" in message["text"]


async def test_the_snooze_button_says_the_configured_duration(slack, session):
    channel = channel_for(slack, session, snooze=Duration(1800.0))

    await channel.send(notification())

    [actions] = of_type(slack.messages[0], "actions")
    assert buttons(actions)[1] == ("tocsin.snooze", "Snooze 30m", UID)
    assert channel.snooze == 1800.0


async def test_a_resolve_shows_the_state_and_offers_no_buttons(slack, session):
    await channel_for(slack, session).send(notification("resolve"))

    [message] = slack.messages
    assert message["blocks"][0]["text"]["text"].startswith(
        "[RESOLVED] Drift on model a"
    )
    assert of_type(message, "actions") == []
    assert "*State*\nresolved" in [f["text"] for f in message["blocks"][1]["fields"]]


async def test_label_values_cannot_mention_people_or_forge_links(slack, session):
    sent = notification(series="model=<!channel> & <https://evil.example|click>")

    await channel_for(slack, session).send(sent)

    # Only mrkdwn is read for mentions and links; the header is plain text.
    [message] = slack.messages
    for text in [message["text"], *texts(message)]:
        assert "<!channel>" not in text and "<https://evil" not in text
    series = slack.messages[0]["blocks"][1]["fields"][4]["text"]
    assert series == (
        "*Series*\nmodel=&lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;"
    )


def grouped(count: int, rule: str) -> Notification:
    """A grouped trigger of ``count`` series of ``rule``: series 7, 23 and 41
    are critical, the rest high; values rise with the series number."""
    alerts = []
    for number in range(count):
        severity = "critical" if number in (7, 23, 41) else "high"
        series = f"model=fraud-detector-{number:02d},region=eu-west-{number % 3},"
        series += "shard=" + "s" * 90
        spec = make_spec(
            rule=rule, series=series, severity=severity, value=0.3 + number / 100
        )
        alert = Alert(
            id=number + 1,
            uid=f"{number:032x}",
            state="triggered",
            spec=spec,
            value=spec.value,
        )
        alerts.append(alert)
    first = notification()
    return msgspec.structs.replace(
        first, alert=alerts[0], alerts=alerts, reason="new alerts"
    )


def texts(message: dict) -> list[str]:
    """Every text of a message's sections and contexts, fields included."""
    found = []
    for block in message["blocks"]:
        if "text" in block and block["type"] == "section":
            found.append(block["text"]["text"])
        found.extend(f["text"] for f in block.get("fields", []))
        found.extend(
            e["text"] for e in block.get("elements", []) if "action_id" not in e
        )
    return found


async def test_sixty_grouped_series_fit_slacks_limits_worst_first(slack, session):
    """F15: 60 grouped series (about 9,000 characters of list) and a
    200-character rule name make one message Slack accepts: every section at
    most 3,000 characters, the header at most 150, at most 50 blocks, the
    worst series first and a visible count of those left out."""
    rule = "r" * 191 + "-drift-ok"
    sent = grouped(60, rule)
    assert len(rule) == 200
    assert sum(len(alert_line(alert)) for alert in sent.alerts) > 9000

    await channel_for(slack, session).send(sent)

    [message] = slack.messages
    assert slack.requests[0].status == 200
    blocks = message["blocks"]
    assert len(blocks) <= 50
    header = blocks[0]["text"]["text"]
    assert len(header) <= 150
    assert header.startswith("[FIRING:60] rrrr") and header.endswith("… · critical")
    assert all(len(text) <= 3000 for text in texts(message))
    assert len(message["text"]) <= 4000
    # The criticals first (largest value first), then the highest highs.
    order = [41, 23, 7, 59, 58]
    actions = of_type(message, "actions")
    assert [buttons(block)[0][2] for block in actions] == [f"{n:032x}" for n in order]
    sections = [b["text"]["text"] for b in blocks if b["type"] == "section"]
    for section, number in zip(sections, order, strict=False):
        assert f"fraud-detector-{number:02d}" in section
    # The rest in one list, from the worst down, with what did not fit counted.
    *lines, marker = sections[-1].split("\n")
    assert re.fullmatch(r"\+\d+ more", marker)
    assert lines[0].startswith("high model=fraud-detector-57,")
    assert len(lines) + int(marker[1:].split()[0]) == 60 - len(order)
    assert re.search(r"\n\+\d+ more", message["text"])


@pytest.mark.parametrize("error", sorted(set(ERROR_STATUS) - {"rollup_error"}))
async def test_slacks_error_strings_are_final_and_quoted(slack, session, error):
    slack.fail(error)

    with pytest.raises(DeliveryError) as caught:
        await channel_for(slack, session).send(notification())

    status = ERROR_STATUS[error]
    assert (caught.value.retryable, caught.value.status) == (False, status)
    assert str(caught.value).startswith(f"channel alerts: HTTP {status} ")
    assert str(caught.value).endswith(f": {error}")
    assert slack.webhook_url not in str(caught.value)
    assert slack.webhook_url.rsplit("/", 1)[1] not in str(caught.value)


async def test_a_slack_server_error_may_pass_later(slack, session):
    slack.fail("rollup_error")

    with pytest.raises(DeliveryError) as caught:
        await channel_for(slack, session).send(notification())

    error = caught.value
    assert (error.reason, error.retryable, error.status) == ("server_error", True, 500)
    assert str(error) == "channel alerts: HTTP 500 Internal Server Error: rollup_error"


@pytest.mark.parametrize(
    ("headers", "retry_after"), [({"Retry-After": "3"}, 3.0), ({}, None)]
)
async def test_rate_limited_posts_are_retried_after_what_slack_asks(
    slack, session, headers, retry_after
):
    slack.reply(429, b"rate_limited", headers=headers)

    with pytest.raises(DeliveryError) as caught:
        await channel_for(slack, session).send(notification())

    error = caught.value
    assert (error.reason, error.retryable, error.retry_after) == (
        "rate_limited",
        True,
        retry_after,
    )


@pytest.mark.parametrize(
    ("status", "body", "detail"),
    [
        (200, b"invalid_token", "invalid_token"),
        (200, b"<html>proxy says hello</html>", "an answer that is not ok"),
        (204, b"", "an answer that is not ok"),
    ],
)
async def test_only_200_ok_is_a_success(slack, session, status, body, detail):
    slack.reply(status, body)

    with pytest.raises(DeliveryError) as caught:
        await channel_for(slack, session).send(notification())

    assert caught.value.retryable is False
    assert str(caught.value) == (
        f"channel alerts: HTTP {status} with an error: {detail}"
    )


async def test_a_slow_slack_is_a_retryable_timeout(slack, session):
    slack.hold()

    with pytest.raises(DeliveryError) as caught:
        await channel_for(slack, session, timeout=Duration(0.2)).send(notification())

    assert (caught.value.reason, caught.value.retryable) == ("timeout", True)


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({"text": "x", "blocks": [{"type": "divider"}] * 51}, "invalid_blocks"),
        (
            {
                "blocks": [
                    {
                        "type": "header",
                        "text": {"type": "plain_text", "text": "h" * 151},
                    }
                ]
            },
            "invalid_blocks",
        ),
        (
            {
                "blocks": [
                    {"type": "section", "text": {"type": "mrkdwn", "text": "s" * 3001}}
                ]
            },
            "invalid_blocks",
        ),
        (
            {
                "blocks": [
                    {
                        "type": "section",
                        "fields": [{"type": "mrkdwn", "text": "f"}] * 11,
                    }
                ]
            },
            "invalid_blocks",
        ),
        ({"blocks": []}, "no_text"),
        ({"attachments": [{}] * 101}, "too_many_attachments"),
        ([1, 2], "invalid_payload"),
    ],
)
async def test_the_standin_refuses_what_slack_refuses(slack, session, message, error):
    async with session.post(slack.webhook_url, json=message) as response:
        assert (response.status, await response.text()) == (ERROR_STATUS[error], error)
    assert slack.messages == []


def test_an_acknowledged_alert_is_redrawn_with_who_acted_and_the_moves_left():
    channel = SlackChannel(
        SlackChannelConfig(name="alerts"),
        {"webhook_url": "https://hooks.slack.invalid/x"},
        ChannelContext(None, ManualClock(T0), external_url=EXTERNAL),
    )
    alert = msgspec.structs.replace(notification().alert, state="acknowledged")

    message = channel.render_alert(alert, note="Acknowledged by slack:alice", at=T0)

    header = message["blocks"][0]["text"]["text"]
    assert header == "[ACKNOWLEDGED] Drift on model a (model=a) · high"
    [actions] = of_type(message, "actions")
    assert [b[0] for b in buttons(actions)] == ["tocsin.snooze", "tocsin.resolve"]
    context = message["blocks"][-1]["elements"][0]["text"]
    assert context.startswith("Acknowledged by slack:alice · <!date^1750000000^")

    resolved = msgspec.structs.replace(alert, state="resolved")
    redrawn = channel.render_alert(resolved, note="Resolved by slack:alice", at=T0)
    assert of_type(redrawn, "actions") == []


def test_the_signing_secret_is_read_from_the_channels_secrets(session):
    context = ChannelContext(session, ManualClock(T0))
    configs = [
        SlackChannelConfig(name="signed", webhook_url="https://hooks.slack.invalid/a"),
        SlackChannelConfig(name="plain", webhook_url="https://hooks.slack.invalid/b"),
    ]
    secrets = {
        "signed": {"webhook_url": "https://x.invalid/a", "signing_secret": "8f3a9c"},
        "plain": {"webhook_url": "https://x.invalid/b"},
    }

    built = build_channels(configs, secrets, context)

    assert built["signed"].signing_secret == "8f3a9c"
    assert built["plain"].signing_secret is None


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("a & b", 10, "a &amp; b"),
        ("abc & def", 8, "abc …"),
        ("abc & def", 10, "abc &amp;…"),
        ("<<<<", 9, "&lt;&lt;…"),
    ],
)
def test_a_cut_never_leaves_half_an_entity(text, limit, expected):
    assert cut(escape(text), limit) == expected
