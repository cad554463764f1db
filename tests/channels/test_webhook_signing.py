"""Standard Webhooks signatures: checked by the official verifier and by the
stand-in's own, stable ids across retries, stale timestamps refused, and
malformed secrets refused without being quoted."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.channels.test_payload import notification
from tests.standins.webhook import WebhookStandin, verify_signature
from tocsin.channels.base import ChannelContext
from tocsin.channels.webhook import WebhookChannel
from tocsin.channels.webhook_signing import SecretProblem, signature, signing_key
from tocsin.clock import ManualClock
from tocsin.config import WebhookChannelConfig, parse
from tocsin.errors import ConfigError, DeliveryError
from tocsin.secrets import channel_secrets

KEY = bytes(range(32))
SECRET = "whsec_" + base64.b64encode(KEY).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(bytes(range(1, 33))).decode()


@pytest.fixture
def clock() -> ManualClock:
    # The official verifier compares with the real clock, so the channel's
    # clock starts there; the test moves it by whole minutes only.
    return ManualClock(time.time())


@pytest.fixture
async def signed_hook(clock):
    async with WebhookStandin(signing_secret=SECRET, clock=clock.time) as standin:
        yield standin


def signing_channel(url, session, clock, secret=SECRET, **fields) -> WebhookChannel:
    config = WebhookChannelConfig(name="ops", url=url, **fields)
    secrets = {"url": url, "secret": secret}
    return WebhookChannel(config, secrets, ChannelContext(session, clock))


def official(request) -> object:
    """Verify a received request with the standardwebhooks package."""
    return Webhook(SECRET).verify(request.body, request.headers)


async def test_a_signed_request_passes_the_official_verifier(
    signed_hook, session, clock
):
    sent = notification()

    await signing_channel(signed_hook.url, session, clock).send(sent)

    [request] = signed_hook.requests
    assert request.status == 200 and request.signature_error is None
    assert official(request)["idempotency_key"] == sent.key
    assert request.headers["webhook-id"] == sent.key
    assert request.headers["webhook-signature"].startswith("v1,")


async def test_retries_keep_the_id_and_sign_their_own_timestamp(
    signed_hook, session, clock
):
    channel = signing_channel(signed_hook.url, session, clock)
    sent = notification()

    await channel.send(sent)
    clock.advance(120)
    await channel.send(sent)

    first, second = signed_hook.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == sent.key
    assert int(second.headers["webhook-timestamp"]) == (
        int(first.headers["webhook-timestamp"]) + 120
    )
    assert first.body == second.body
    assert first.headers["webhook-signature"] != second.headers["webhook-signature"]
    for request in (first, second):
        assert official(request)["idempotency_key"] == sent.key


async def test_a_stale_timestamp_is_refused_by_both_verifiers(
    signed_hook, session, clock
):
    behind = ManualClock(clock.time() - 600)
    channel = signing_channel(signed_hook.url, session, behind)

    with pytest.raises(DeliveryError) as raised:
        await channel.send(notification())

    [request] = signed_hook.requests
    assert request.signature_error == "timestamp too old"
    assert (raised.value.status, raised.value.reason) == (401, "auth")
    assert raised.value.retryable is False
    with pytest.raises(WebhookVerificationError, match="too old"):
        official(request)


async def test_a_signature_under_another_secret_is_refused(signed_hook, session, clock):
    channel = signing_channel(signed_hook.url, session, clock, secret=OTHER_SECRET)

    with pytest.raises(DeliveryError) as raised:
        await channel.send(notification())

    [request] = signed_hook.requests
    assert request.signature_error == "no matching signature"
    assert raised.value.status == 401
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        official(request)
    assert OTHER_SECRET not in str(raised.value)


async def test_a_templated_body_is_signed_byte_for_byte(signed_hook, session, clock):
    template = '{"text": {{ alert.name ~ " – ü" }}}'
    channel = signing_channel(signed_hook.url, session, clock, template=template)

    await channel.send(notification())

    [request] = signed_hook.requests
    assert request.signature_error is None
    assert official(request) == {"text": "Drift on model a – ü"}


async def test_without_a_secret_nothing_is_signed(hook, session, clock):
    config = WebhookChannelConfig(name="ops", url=hook.url)
    channel = WebhookChannel(config, {"url": hook.url}, ChannelContext(session, clock))

    await channel.send(notification())

    [request] = hook.requests
    assert "webhook-signature" not in {name.lower() for name in request.headers}
    assert verify_signature(SECRET, request.headers, request.body, clock.time()) == (
        "missing headers"
    )


def test_the_signature_is_the_one_the_official_library_computes():
    body = b'{"a": "\xc3\xbc"}'
    moment = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)

    ours = signature(KEY, "msg_1", int(moment.timestamp()), body)

    assert ours == Webhook(SECRET).sign("msg_1", moment, body)


def test_an_unpadded_secret_gives_the_same_key():
    assert signing_key(SECRET.rstrip("=")) == KEY == signing_key(SECRET)


MALFORMED = {
    "no prefix": base64.b64encode(KEY).decode(),
    "not base64": "whsec_not*base64!!",
    "a short key": "whsec_" + base64.b64encode(b"short").decode(),
    "an empty key": "whsec_",
}


@pytest.mark.parametrize("secret", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_secret_in_the_file_is_refused_without_quoting_it(secret):
    text = f"""
[[channels]]
name = "hook"
type = "webhook"
url = "https://example.com/hook"
secret = "{secret}"
"""

    with pytest.raises(ConfigError) as raised:
        parse(text, "tocsin.toml")

    assert raised.value.key == "channels[0].secret"
    assert "signing secret" in raised.value.detail
    if secret.removeprefix("whsec_"):
        assert secret.removeprefix("whsec_") not in str(raised.value)


@pytest.mark.parametrize("secret", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_secret_from_the_environment_names_its_key(secret, monkeypatch):
    monkeypatch.setenv("TOCSIN_TEST_SIGNING", secret)
    config = parse(
        """
[[channels]]
name = "hook"
type = "webhook"
url = "https://example.com/hook"
secret_env = "TOCSIN_TEST_SIGNING"
""",
        "tocsin.toml",
    )

    with pytest.raises(ConfigError) as raised:
        channel_secrets(config.channels[0], "tocsin.toml", "channels[0]")

    assert raised.value.key == "channels[0].secret_env"
    if secret.removeprefix("whsec_"):
        assert secret.removeprefix("whsec_") not in str(raised.value)


def test_signing_key_refusals_never_quote_the_secret():
    for secret in MALFORMED.values():
        with pytest.raises(SecretProblem) as raised:
            signing_key(secret)
        body = secret.removeprefix("whsec_")
        assert not body or body not in str(raised.value)


def test_the_signature_header_cannot_be_configured():
    text = """
[[channels]]
name = "hook"
type = "webhook"
url = "https://example.com/hook"
headers = { "Webhook-Signature" = "v1,forged" }
"""

    with pytest.raises(ConfigError) as raised:
        parse(text, "tocsin.toml")

    assert raised.value.key == "channels[0].headers.Webhook-Signature"
    assert "v1,forged" not in str(raised.value)
