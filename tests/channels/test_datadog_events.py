"""The Datadog events channel against the strict local intake."""

from __future__ import annotations

import msgspec
import pytest

from tests.channels.conftest import KEY, NOW
from tests.channels.messages import alert, big_group, grouped
from tests.channels.test_payload import notification
from tests.standins.datadog_events import TEXT_LIMIT, rate_limited
from tocsin.channel_checks import check_channel
from tocsin.channels.base import ChannelContext
from tocsin.channels.datadog_events import DatadogEventsChannel
from tocsin.errors import ConfigError, DeliveryError
from tocsin.schema import DatadogChannelConfig

HOST = "gpu-box-1"
EXTERNAL = "https://tocsin.example"


@pytest.fixture
def make(standin, session, clock):
    def build(key: str = KEY, **fields) -> DatadogEventsChannel:
        settings = {"name": "dd", "api_key": key, "base_url": standin.url, **fields}
        config = DatadogChannelConfig(**settings)
        context = ChannelContext(session, clock, external_url=EXTERNAL, hostname=HOST)
        return DatadogEventsChannel(config, {"api_key": key}, context)

    return build


async def test_a_trigger_is_one_event_with_every_field(standin, make):
    sent = notification(labels={"model": "a", "project": "fraud", "team": "ml"})
    channel = make(tags=["env:prod", "team:ml"], priority="low")

    status = await channel.send(sent)

    assert status == 202
    [received] = standin.events
    assert received.headers["DD-API-KEY"] == KEY
    event = received.event
    uid = sent.alert.uid
    text = event.pop("text")
    assert event == {
        "title": "[FIRING] Drift on model a (model=a)",
        "date_happened": NOW,
        "alert_type": "error",
        "priority": "low",
        "aggregation_key": f"tocsin-{uid}",
        "tags": [
            "env:prod",
            "model:a",
            "project:fraud",
            "rule:drift",
            "severity:high",
            "team:ml",
        ],
        "source_type_name": "tocsin",
        "host": HOST,
    }
    assert text == (
        "%%% \n"
        "high model=a: 0.31 (avg(model.drift) over 5m > 0.2)\n\n"
        "Reason: avg 0.31 > 0.2 for 30s\n\n"
        "[Runbook](https://runbooks.example/drift) · "
        f"[Alert in Tocsin]({EXTERNAL}/api/v1/alerts/{uid})"
        "\n %%%"
    )


@pytest.mark.parametrize(
    ("event", "severity", "expected"),
    [
        ("trigger", "critical", "error"),
        ("trigger", "high", "error"),
        ("trigger", "warning", "warning"),
        ("trigger", "low", "warning"),
        ("trigger", "info", "warning"),
        ("resolve", "critical", "success"),
        ("acknowledge", "critical", "info"),
    ],
)
async def test_the_alert_type_follows_the_state_and_severity(
    standin, make, event, severity, expected
):
    await make().send(notification(event, severity=severity))

    assert standin.accepted_events[0]["alert_type"] == expected


async def test_an_alerts_transitions_share_one_key_and_its_neighbours_do_not(
    standin, make
):
    channel = make()
    a, b = alert(1), alert(2)
    a_later = msgspec.structs.replace(
        a,
        state="resolved",
        value=0.01,
        spec=msgspec.structs.replace(a.spec, severity="critical", value=0.9),
    )

    await channel.send(grouped([a, b], key="first"))
    await channel.send(grouped([a_later], event="resolve", key="second"))

    keys = [(e["title"], e["aggregation_key"]) for e in standin.accepted_events]
    assert keys == [
        ("[FIRING] drift (model=m001)", f"tocsin-{1:032x}"),
        ("[FIRING] drift (model=m002)", f"tocsin-{2:032x}"),
        ("[RESOLVED] drift (model=m001)", f"tocsin-{1:032x}"),
    ]


async def test_a_200_alert_group_is_200_events_within_the_limits(standin, make):
    group = big_group(200)

    await make().send(group)

    events = standin.accepted_events
    assert len(events) == 200
    assert len({e["aggregation_key"] for e in events}) == 200
    # Worst first: the critical alerts' events went out before any other.
    severities = [e["tags"][-1] for e in events]
    assert severities[:50] == ["severity:critical"] * 50
    assert [e["alert_type"] for e in events[:100]] == ["error"] * 100
    for event in events:
        assert len(event["text"]) <= TEXT_LIMIT
        body = event["text"].removesuffix("\n %%%")
        _, listing = body.split("Sent with 199 other alerts:\n- ")
        items = listing.split("\n- ")
        shown = len(items) - 1
        assert items[-1] == f"+{199 - shown} more"
        assert 10 < shown < 199


async def test_a_long_name_is_cut_to_a_100_character_title(standin, make):
    await make().send(notification(summary="GPU temperature " * 20))

    [event] = standin.accepted_events
    assert len(event["title"]) == 100
    assert event["title"].startswith("[FIRING] GPU temperature GPU")
    assert event["title"].endswith("…")


async def test_a_repeat_of_a_day_old_alert_is_dated_now(standin, make, clock):
    clock.advance(24 * 3600)

    await make().send(notification())

    assert standin.accepted_events[0]["date_happened"] == NOW + 24 * 3600


@pytest.mark.parametrize(
    ("status", "headers", "reason", "retryable", "retry_after"),
    [
        (429, rate_limited(reset=7), "rate_limited", True, 7.0),
        (429, {}, "rate_limited", True, None),
        (500, {}, "server_error", True, None),
        (503, {}, "server_error", True, None),
        (400, {}, "client_error", False, None),
    ],
)
async def test_failures_are_classified(
    standin, make, status, headers, reason, retryable, retry_after
):
    standin.fail_events(status, headers=headers)

    with pytest.raises(DeliveryError) as caught:
        await make().send(notification())

    error = caught.value
    assert (error.reason, error.retryable, error.status) == (reason, retryable, status)
    assert error.retry_after == retry_after
    assert KEY not in str(error)


async def test_a_wrong_api_key_is_a_final_auth_failure(standin, make):
    with pytest.raises(DeliveryError) as caught:
        await make(key="dd-wrong-key-000000").send(notification())

    assert (caught.value.reason, caught.value.retryable) == ("auth", False)
    assert caught.value.status == 403
    assert "dd-wrong-key" not in str(caught.value)


async def test_a_retry_sends_only_the_events_not_yet_accepted(standin, make):
    channel = make()
    group = grouped([alert(1, severity="critical"), alert(2), alert(3)])
    await channel.send(grouped([alert(9)], key="earlier"))
    # The group's first event is accepted, its second meets the rate limit.
    standin.pass_events()
    standin.fail_events(429, headers=rate_limited(reset=1))

    with pytest.raises(DeliveryError):
        await channel.send(group)
    await channel.send(group)

    titles = [e["title"].split()[-1] for e in standin.accepted_events]
    assert titles == ["(model=m009)", "(model=m001)", "(model=m002)", "(model=m003)"]
    assert [r.status for r in standin.events] == [202, 202, 429, 202, 202]


def test_the_url_comes_from_the_site_unless_a_url_is_given(session, clock):
    context = ChannelContext(session, clock)

    def url(**fields) -> str:
        config = DatadogChannelConfig(name="dd", api_key=KEY, **fields)
        return DatadogEventsChannel(config, {"api_key": KEY}, context).url

    assert url() == "https://api.datadoghq.com/api/v1/events"
    assert url(site="datadoghq.eu") == "https://api.datadoghq.eu/api/v1/events"
    assert url(base_url="http://127.0.0.1:9/") == "http://127.0.0.1:9/api/v1/events"


def test_acknowledgements_are_sent_only_when_asked(session, clock):
    context = ChannelContext(session, clock)

    def channel(**fields) -> DatadogEventsChannel:
        config = DatadogChannelConfig(name="dd", api_key=KEY, **fields)
        return DatadogEventsChannel(config, {"api_key": KEY}, context)

    assert channel().send_acknowledged is False
    assert channel(send_acknowledged=True).send_acknowledged is True


@pytest.mark.parametrize(
    ("fields", "key", "message"),
    [
        ({"site": "https://datadoghq.eu"}, "channels[2].site", "host name"),
        ({"tags": ["env:prod", "9lives"]}, "channels[2].tags[1]", "not a Datadog tag"),
        ({"tags": ["env:"]}, "channels[2].tags[0]", "not a Datadog tag"),
        ({"tags": ["team ml"]}, "channels[2].tags[0]", "not a Datadog tag"),
    ],
)
def test_a_bad_site_or_tag_is_a_config_error_naming_the_key(fields, key, message):
    config = DatadogChannelConfig(name="dd", api_key_env="DD_KEY", **fields)

    with pytest.raises(ConfigError) as caught:
        check_channel(config, "tocsin.toml", "channels[2]")

    assert caught.value.key == key
    assert message in str(caught.value)
    assert str(caught.value).startswith(f"tocsin.toml: {key}: ")
