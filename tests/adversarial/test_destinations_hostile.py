"""The destinations against unlucky receivers and hostile alert texts: answers
that trickle in or stop half way, rate-limit headers that mean a date, texts
that grow when escaped, and groups too large for one rate-limit window."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import pytest

from tests.channels.messages import alert, grouped
from tests.channels.test_payload import notification
from tests.standins.pagerduty import PagerDutyStandIn
from tests.standins.slack import SlackStandin
from tests.standins.teams import SIZE_LIMIT, TeamsStandIn
from tests.standins.webhook import WebhookStandin
from tocsin.channels.base import ChannelContext
from tocsin.channels.pagerduty import PagerDutyChannel, dedup_key
from tocsin.channels.payload import encode
from tocsin.channels.slack import SlackChannel
from tocsin.channels.teams import MESSAGE_LIMIT, TeamsChannel, teams_message
from tocsin.channels.webhook import WebhookChannel
from tocsin.clock import ManualClock
from tocsin.config import (
    PagerDutyChannelConfig,
    SlackChannelConfig,
    TeamsChannelConfig,
    WebhookChannelConfig,
)
from tocsin.errors import DeliveryError
from tocsin.state.models import Notification

NOW = 1_750_000_000.0
ROUTING_KEY = "R0utingKeyForHostileTests0123456"


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as client:
        yield client


def context(session, **fields) -> ChannelContext:
    return ChannelContext(session, ManualClock(NOW), **fields)


class RawReceiver:
    """An HTTP server on a free port that writes exactly the bytes scripted:
    a head, then body pieces with a pause between them, then maybe a close
    before the promised length was sent."""

    def __init__(self, head: bytes, pieces: list[bytes], *, gap: float = 0.0):
        self.head = head
        self.pieces = pieces
        self.gap = gap
        self.url = ""
        self.requests = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> RawReceiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader, writer) -> None:
        self.requests += 1
        with contextlib.suppress(ConnectionError):
            await _read_request(reader)
            writer.write(self.head)
            for number, piece in enumerate(self.pieces):
                if number:
                    # The receiver is slow to write the rest; a client that
                    # takes the first piece for the whole answer is wrong.
                    await asyncio.sleep(self.gap)
                writer.write(piece)
                await writer.drain()
        writer.close()


async def _read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)


def _head(length: int, content_type: bytes = b"text/html") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type + b"\r\n"
        b"Content-Length: " + str(length).encode() + b"\r\n"
        b"Connection: close\r\n\r\n"
    )


# Answers that arrive in pieces, or not whole.


async def test_a_slack_ok_written_in_two_pieces_is_a_success(session):
    async with RawReceiver(_head(2), [b"o", b"k"], gap=0.2) as receiver:
        config = SlackChannelConfig(name="alerts")
        secrets = {"webhook_url": receiver.url}
        channel = SlackChannel(config, secrets, context(session))

        status = await channel.send(notification())

    assert status == 200


async def test_an_answer_cut_off_mid_body_is_a_retryable_failure(session):
    """A receiver that promised 100 bytes and closed after 2 may not have
    taken the message: it is tried again (with the same idempotency key)."""
    async with RawReceiver(_head(100), [b"ok"]) as receiver:
        config = WebhookChannelConfig(name="ops", url=receiver.url)
        channel = WebhookChannel(config, {"url": receiver.url}, context(session))

        with pytest.raises(DeliveryError) as raised:
            await channel.send(notification())

    assert raised.value.retryable
    assert raised.value.reason == "transport"
    assert receiver.url not in str(raised.value)


# Rate-limit headers.


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"X-RateLimit-Reset": str(int(NOW) + 90)}, 90.0),
        ({"X-RateLimit-Reset": "30"}, 30.0),
        ({"Retry-After": "-5"}, 0.0),
        ({"Retry-After": "1e400"}, None),
        ({"Retry-After": "nan"}, None),
        ({"Retry-After": "Sun, 15 Jun 2025 15:08:20 GMT"}, 100.0),
        ({"Retry-After": "Sat, 01 Jan 2000 00:00:00 GMT"}, 0.0),
        ({"Retry-After": "999999999999"}, 86400.0),
        ({"Retry-After": "soon"}, None),
    ],
)
async def test_a_429_waits_as_long_as_its_headers_mean(session, headers, wait):
    """``X-RateLimit-Reset`` is seconds to wait for Datadog but a POSIX time
    for many other services: a value that can only be a time is read as one,
    instead of as a wait of a day."""
    async with WebhookStandin() as hook:
        hook.reply(429, headers=headers)
        config = WebhookChannelConfig(name="ops", url=hook.url)
        channel = WebhookChannel(config, {"url": hook.url}, context(session))

        with pytest.raises(DeliveryError) as raised:
            await channel.send(notification())

    assert raised.value.retryable
    assert raised.value.retry_after == wait


# Texts that grow when escaped.


def test_a_teams_card_stays_under_its_limit_when_escaping_doubles_the_text():
    quoted = alert(1, series="model=" + '"\\' * 20_000)
    control = alert(2, series="model=" + "\x01" * 20_000)
    message = teams_message(grouped([quoted, control, alert(3)]))

    assert len(encode(message)) <= MESSAGE_LIMIT


def test_a_teams_card_stays_under_its_limit_whatever_one_alert_holds():
    """Every fact, the description and the links of one alert are hostile."""
    huge = "\x02" * 50_000
    sent = notification(
        "acknowledge",
        series="model=" + huge,
        rule="r" + huge,
        summary=huge,
        description=huge,
        reason=huge,
        runbook="https://runbooks.example/" + "a" * 100_000,
    )
    message = teams_message(
        sent, alert_url=lambda uid: "https://tocsin.example/" + "b" * 100_000
    )

    assert len(encode(message)) <= MESSAGE_LIMIT


async def test_teams_takes_a_card_of_a_huge_runbook_link(session):
    async with TeamsStandIn() as teams:
        runbook = "https://runbooks.example/" + "a" * 100_000
        config = TeamsChannelConfig(name="ops", webhook_url=teams.url)
        channel = TeamsChannel(config, {"webhook_url": teams.url}, context(session))

        await channel.send(grouped([alert(1, runbook=runbook), alert(2)]))

        [received] = teams.accepted
    assert len(received.body) <= SIZE_LIMIT


# A group too large for one rate-limit window.


async def test_a_pagerduty_retry_sends_only_the_events_not_yet_taken(session):
    """PagerDuty takes 120 events a minute: a group of many alerts must make
    progress from one attempt to the next instead of starting over each time
    and never getting past the first window."""
    async with PagerDutyStandIn() as pd:
        config = PagerDutyChannelConfig(name="page", url=pd.url)
        channel = PagerDutyChannel(
            config, {"routing_key": ROUTING_KEY}, context(session)
        )
        alerts = [alert(number) for number in range(1, 6)]
        sent = grouped(alerts)
        # The third event meets the rate limit.
        pd.take(2)
        pd.fail(429)
        with pytest.raises(DeliveryError):
            await channel.send(sent)

        await channel.send(sent)

    keys = [request.event["dedup_key"] for request in pd.accepted]
    assert sorted(keys) == sorted(dedup_key(a) for a in alerts)
    assert len(pd.requests) == 6


@pytest.mark.parametrize(
    "body", [b"<html>captive portal</html>", b"", b"[]", b'{"dedup_key": "x"}']
)
async def test_a_pagerduty_success_status_without_its_answer_is_retried(session, body):
    """Only ``{"status": "success"}`` says PagerDuty took an event; a 2xx
    without it came from something else on the way (a proxy), and since a
    trigger is deduplicated by its key, sending it again is safe."""
    async with PagerDutyStandIn() as pd:
        config = PagerDutyChannelConfig(name="page", url=pd.url)
        channel = PagerDutyChannel(
            config, {"routing_key": ROUTING_KEY}, context(session)
        )
        pd.fail(202, body=body)

        with pytest.raises(DeliveryError) as raised:
            await channel.send(notification())
        await channel.send(notification())

    assert (raised.value.retryable, raised.value.status) == (True, 202)
    assert "an answer that is not PagerDuty's" in str(raised.value)
    assert len(pd.incidents) == 1


@pytest.mark.parametrize(
    "url",
    [
        "ftp://files.example/s3cret-token",
        "http://" + "a" * 64 + ".example/s3cret-token",
        "http://127.0.0.1:99999/s3cret-token",
        "s3cret-token",
    ],
)
async def test_a_url_no_request_can_go_to_is_a_final_error_that_quotes_nothing(
    session, url
):
    """Such a URL comes from a secret (an environment variable, a file)
    that the config check cannot read in advance; no retry will mend it."""
    config = WebhookChannelConfig(name="ops", url="https://placeholder.example/")
    channel = WebhookChannel(config, {"url": url}, context(session))

    with pytest.raises(DeliveryError) as raised:
        await channel.send(notification())

    assert (raised.value.reason, raised.value.retryable) == ("client_error", False)
    assert str(raised.value) == "channel ops: the configured URL is not valid"


HOSTILE = '<!channel> & <https://evil.example|click> "}\n{\\u0000 \U0001f525'


def hostile_group(count: int) -> Notification:
    return grouped(
        [
            alert(
                number,
                series=f"model={HOSTILE}{number}",
                labels={"model": HOSTILE},
                description="d" * 100_000,
            )
            for number in range(count)
        ]
    )


async def test_slack_takes_ten_thousand_hostile_alerts_in_one_message(session):
    async with SlackStandin() as slack:
        config = SlackChannelConfig(name="alerts")
        secrets = {"webhook_url": slack.webhook_url}
        channel = SlackChannel(config, secrets, context(session))

        await channel.send(hostile_group(10_000))

        [message] = slack.messages
    # Escaped everywhere: no mention, no link of the label's making.
    assert "<!channel>" not in str(message)
    assert "<https://evil.example" not in str(message)
    assert message["blocks"][-2]["text"]["text"].endswith(" more")


async def test_teams_takes_ten_thousand_hostile_alerts_in_one_card(session):
    async with TeamsStandIn() as teams:
        config = TeamsChannelConfig(name="ops", webhook_url=teams.url)
        channel = TeamsChannel(config, {"webhook_url": teams.url}, context(session))

        await channel.send(hostile_group(10_000))

        [received] = teams.accepted
    assert len(received.body) <= MESSAGE_LIMIT
