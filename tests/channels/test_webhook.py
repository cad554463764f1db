"""The webhook channel against a real local receiver."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from email.utils import format_datetime

import aiohttp
import pytest

from tests.channels.test_payload import notification
from tests.standins.webhook import WebhookStandin
from tocsin import __version__
from tocsin.channels.base import ChannelContext
from tocsin.channels.build import build_channels
from tocsin.channels.http import parse_retry_after, requested_wait
from tocsin.channels.log import LogChannel
from tocsin.channels.webhook import WebhookChannel
from tocsin.clock import ManualClock
from tocsin.config import LogChannelConfig, WebhookChannelConfig
from tocsin.errors import DeliveryError

NOW = 1_750_000_000.0


@pytest.fixture
async def hook():
    async with WebhookStandin() as standin:
        yield standin


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as client:
        yield client


def webhook(
    url: str, session, timeout: float = 5.0, clock=None, **fields
) -> WebhookChannel:
    config = WebhookChannelConfig(name="ops", url=url, timeout=timeout, **fields)
    context = ChannelContext(session, clock or ManualClock(NOW))
    return WebhookChannel(config, {"url": url}, context)


async def test_a_notification_is_posted_as_json_with_idempotency_headers(hook, session):
    sent = notification()
    channel = webhook(hook.url, session, headers={"X-Team": "ml"})

    status = await channel.send(sent)

    assert status == 200
    [request] = hook.requests
    assert request.method == "POST"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == f"tocsin/{__version__}"
    assert request.headers["Idempotency-Key"] == sent.key
    assert request.headers["webhook-id"] == sent.key
    assert request.headers["webhook-timestamp"] == "1750000000"
    assert request.headers["X-Team"] == "ml"
    assert request.json["idempotency_key"] == sent.key
    assert request.json["alert"]["uid"] == sent.alert.uid
    assert request.json["status"] == "firing"


async def test_each_attempt_has_its_own_timestamp_and_the_same_body(hook, session):
    clock = ManualClock(NOW + 0.75)
    channel = webhook(hook.url, session, clock=clock)
    sent = notification()

    await channel.send(sent)
    clock.advance(30.5)
    await channel.send(sent)

    first, second = hook.requests
    assert first.headers["webhook-timestamp"] == "1750000000"
    assert second.headers["webhook-timestamp"] == "1750000031"
    assert second.headers["webhook-id"] == first.headers["webhook-id"]
    assert second.body == first.body


@pytest.mark.parametrize(
    ("status", "headers", "reason", "retryable", "retry_after"),
    [
        (301, {"Location": "/elsewhere"}, "client_error", False, None),
        (400, {}, "client_error", False, None),
        (401, {}, "auth", False, None),
        (403, {}, "auth", False, None),
        (404, {}, "client_error", False, None),
        (408, {}, "timeout", True, None),
        (429, {}, "rate_limited", True, None),
        (429, {"Retry-After": "7"}, "rate_limited", True, 7.0),
        (
            429,
            {"Retry-After": "Sun, 15 Jun 2025 15:08:40 GMT"},
            "rate_limited",
            True,
            120.0,
        ),
        (500, {}, "server_error", True, None),
        (503, {}, "server_error", True, None),
        (503, {"Retry-After": "30"}, "server_error", True, 30.0),
    ],
)
async def test_failures_are_classified(
    hook, session, status, headers, reason, retryable, retry_after
):
    hook.reply(status, headers=headers)
    channel = webhook(hook.url, session)

    with pytest.raises(DeliveryError) as caught:
        await channel.send(notification())

    error = caught.value
    assert (error.reason, error.retryable, error.status) == (reason, retryable, status)
    assert error.retry_after == retry_after
    assert str(error).startswith(f"channel ops: HTTP {status} ")
    assert hook.url not in str(error) and "secret-token" not in str(error)
    # Redirects are not followed: one request, to the configured path only.
    assert [r.path for r in hook.requests] == ["/hook/secret-token-0123456789"]


@pytest.mark.parametrize("status", [200, 201, 202, 204])
async def test_every_2xx_is_a_success(hook, session, status):
    hook.reply(status)

    assert await webhook(hook.url, session).send(notification()) == status


async def test_a_receiver_slower_than_the_timeout_is_a_retryable_timeout(hook, session):
    hook.reply(200, hold=True)
    channel = webhook(hook.url, session, timeout=0.2)

    with pytest.raises(DeliveryError) as caught:
        await channel.send(notification())

    assert (caught.value.reason, caught.value.retryable) == ("timeout", True)
    assert caught.value.status is None
    assert str(caught.value) == "channel ops: no response within 0.2s"
    assert len(hook.requests) == 1


async def test_a_refused_connection_is_a_retryable_transport_error(session):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hook/secret-token-0123456789"

    with pytest.raises(DeliveryError) as caught:
        await webhook(url, session).send(notification())

    assert (caught.value.reason, caught.value.retryable) == ("transport", True)
    assert str(caught.value).startswith("channel ops: cannot connect")
    assert "secret-token" not in str(caught.value)
    assert str(port) not in str(caught.value)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("0", 0.0),
        ("120", 120.0),
        (" 5 ", 5.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("9999999", 86400.0),
        ("soon", None),
        ("nan", None),
        (format_datetime(datetime.fromtimestamp(NOW + 60, UTC), usegmt=True), 60.0),
        (format_datetime(datetime.fromtimestamp(NOW - 60, UTC), usegmt=True), 0.0),
        ("Sunday, 15-Jun-25 15:07:40 GMT", 60.0),
    ],
)
def test_retry_after_is_read_in_both_forms(header, expected):
    assert parse_retry_after(header, NOW) == expected


async def test_build_channels_builds_each_channel_with_its_url(hook, session):
    configs = [
        WebhookChannelConfig(name="ops", url_env="TOCSIN_TEST_HOOK", max_attempts=3),
        LogChannelConfig(name="audit", send_resolved=False),
    ]

    context = ChannelContext(session, ManualClock(NOW))
    channels = build_channels(configs, {"ops": {"url": hook.url}}, context)

    assert set(channels) == {"ops", "audit"}
    assert isinstance(channels["audit"], LogChannel)
    assert channels["audit"].send_resolved is False
    assert channels["ops"].max_attempts == 3
    assert await channels["ops"].send(notification()) == 200
    assert len(hook.requests) == 1


@pytest.mark.parametrize(("status", "wait"), [(429, 3600.0), (503, None)])
def test_a_rate_limit_reset_is_a_wait_only_on_a_429(status, wait):
    # Datadog sends its window's reset on every answer, errors included.
    headers = {"X-RateLimit-Reset": "3600"}

    assert requested_wait(headers, NOW, status) == wait
