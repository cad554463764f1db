"""Personal data planted in samples and in what people type reaches no
destination, no row or byte of the state database and no log line; the
marker stands where it was."""

from __future__ import annotations

import asyncio
import socket
import sqlite3

import aiohttp
import orjson
import pytest

from tests.e2e.daemon import DAEMON_HEAD, WAIT, DaemonProcess
from tests.e2e.test_escalation import call, client_of
from tests.standins.slack import SlackStandin, signed_action
from tests.standins.webhook import WebhookStandin

MARKER = "[REDACTED]"
EMAIL = "jane.doe@example.com"
PHONE = "+44 7911 123456"
SSN = "123-45-6789"
CARD = "4111-1111-1111-1111"
CARD_DIGITS = "4111111111111111"
NINO = "AB 12 34 56 C"
#: A configured field's value, which no detector would find.
CUSTOMER = "cust-88231-zeta"
PLANTED = (EMAIL, PHONE, SSN, CARD, CARD_DIGITS, NINO, CUSTOMER)
ENV = "TOCSIN_TEST_PRIVACY_URL"
SLACK_ENV = "TOCSIN_TEST_PRIVACY_SLACK"
SLACK_SECRET = "0cc175b9c0f1b6a831c399e269772661"

CONFIG = (
    DAEMON_HEAD
    + """unix_stream = "{dir}/ingest.sock"

[privacy]
redact_fields = ["user_email", "Customer_ID"]

[[channels]]
name = "hook"
type = "webhook"
url_env = "{env}"

[[channels]]
name = "log"
type = "log"

[[channels]]
name = "team-slack"
type = "slack"
webhook_url_env = "{slack_env}"
signing_secret_env = "{slack_env}_SECRET"

[[rules]]
name = "spend"
metric = "pii.spend"
group_by = ["user_email", "customer_id", "contact", "card", "model"]
aggregation = "max"
window = "1m"
threshold = 1
summary = "{{{{ labels.contact }}}} paid with {{{{ labels.card }}}}"
channels = ["hook", "log"]

[[rules]]
name = "refunds"
metric = "pii.refunds"
group_by = ["phone", "ssn", "ni", "CUSTOMER_ID", "version"]
aggregation = "max"
window = "1m"
threshold = 1
channels = ["hook", "team-slack"]
"""
)


@pytest.fixture
async def hook():
    async with WebhookStandin() as standin:
        yield standin


@pytest.fixture
async def slack():
    async with SlackStandin() as standin:
        yield standin


def dogstatsd_tags() -> str:
    return ",".join(
        [
            f"user_email:{EMAIL}",
            f"customer_id:{CUSTOMER}",
            f"contact:{EMAIL}",
            f"card:{CARD}",
            "model:fraud-v2",
        ]
    )


def ndjson_line() -> bytes:
    tags = {
        "phone": f"call {PHONE}",
        "ssn": SSN,
        "ni": NINO,
        "CUSTOMER_ID": CUSTOMER,
        "version": "2024.11.03",
    }
    return orjson.dumps({"metric": "pii.refunds", "value": 5, "tags": tags}) + b"\n"


def database_texts(path) -> list[str]:
    """Return every value of every row of every table, as text."""
    connection = sqlite3.connect(path)
    try:
        tables = [
            name
            for (name,) in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
            )
        ]
        texts = []
        for table in tables:
            for row in connection.execute(f'SELECT * FROM "{table}"'):
                texts.extend(
                    value.decode(errors="replace")
                    if isinstance(value, bytes)
                    else str(value)
                    for value in row
                )
    finally:
        connection.close()
    return texts


def raw_files(path) -> bytes:
    """Return the bytes of the database and of its -wal and -shm files."""
    found = b""
    for suffix in ("", "-wal", "-shm"):
        part = path.with_name(path.name + suffix)
        if part.exists():
            found += part.read_bytes()
    return found


async def click(directory, uid: str, slack: SlackStandin) -> None:
    """Acknowledge an alert from Slack as a user whose name is an email."""
    action = signed_action(
        SLACK_SECRET,
        "tocsin.acknowledge",
        uid,
        username=EMAIL,
        response_url=slack.response_url(),
    )
    connector = aiohttp.UnixConnector(path=str(directory / "state" / "api.sock"))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(
            "http://tocsin/hooks/slack/team-slack",
            data=action.body,
            headers=action.headers,
        ) as response,
    ):
        assert response.status == 200


async def test_planted_personal_data_is_stored_sent_and_logged_nowhere(
    tmp_path, hook, slack
):
    text = CONFIG.format(dir=tmp_path, env=ENV, slack_env=SLACK_ENV)
    env = {
        ENV: hook.url,
        SLACK_ENV: slack.webhook_url,
        f"{SLACK_ENV}_SECRET": SLACK_SECRET,
    }
    daemon = DaemonProcess(tmp_path, text, env)
    await daemon.start()
    try:
        # A bad line first, quoted in a warning, then the good one, in one
        # datagram: the warning is logged before the alert fires.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.connect(str(tmp_path / "dsd.sock"))
            sender.send(
                f"pii.spend:oops|g|#{dogstatsd_tags()}\n"
                f"pii.spend:5|g|#{dogstatsd_tags()}".encode()
            )
        _, writer = await asyncio.open_unix_connection(str(tmp_path / "ingest.sock"))
        writer.write(ndjson_line())
        await writer.drain()
        await daemon.wait_for_log("alert fired", rule="spend")
        await daemon.wait_for_log("alert fired", rule="refunds")
        writer.close()

        client = client_of(daemon)
        [spend] = [
            alert
            for alert in await call(client.list_alerts)
            if alert["spec"]["rule"] == "spend"
        ]
        comment = f"called {EMAIL} on {PHONE}, card {CARD}"
        await call(client.acknowledge, spend["id"], comment)
        silence = await call(
            client.create_silence,
            [f'customer_id="{CUSTOMER}"', f'contact="{EMAIL}"'],
            "1h",
            comment=f"per {EMAIL}, SSN {SSN}",
            created_by=EMAIL,
        )
        added = await call(
            client.create_alert_rule,
            "owned",
            "pii.owned",
            threshold=1,
            labels={"owner": EMAIL},
            metadata={"customer_id": CUSTOMER, "ni": NINO},
            summary=f"ask {PHONE}",
        )
        detail = await call(client.get_alert, spend["id"])
        await hook.wait_for(2)
        [message] = await slack.wait_for_messages(1, timeout=WAIT)
        [refunds] = [
            alert
            for alert in await call(client.list_alerts)
            if alert["spec"]["rule"] == "refunds"
        ]
        await click(tmp_path, refunds["uid"], slack)
        [update] = await slack.wait_for_updates(1, timeout=WAIT)
        clicked = await call(client.get_alert, refunds["id"])
        digest = await call(
            client.configure_digest,
            interval="1h",
            matchers=[f'customer_id="{CUSTOMER}"'],
        )
    finally:
        await daemon.stop()
        await daemon.close()

    # The marker stands where each value was.
    labels = detail["spec"]["labels"]
    assert labels == {
        "user_email": MARKER,
        "customer_id": MARKER,
        "contact": MARKER,
        "card": MARKER,
        "model": "fraud-v2",
    }
    assert detail["history"][-1]["comment"] == (
        f"called {MARKER} on {MARKER}, card {MARKER}"
    )
    assert silence["matchers"] == [
        f'customer_id="{MARKER}"',
        f'contact="{MARKER}"',
    ]
    assert silence["comment"] == f"per {MARKER}, SSN {MARKER}"
    assert silence["created_by"] == MARKER
    assert digest["matchers"] == [f'customer_id="{MARKER}"']
    assert added["rule"]["labels"] == {"owner": MARKER}
    assert added["rule"]["metadata"] == {"customer_id": MARKER, "ni": MARKER}
    assert added["rule"]["summary"] == f"ask {MARKER}"
    bodies = [request.json for request in hook.requests]
    by_rule = {body["alert"]["rule"]: body["alert"] for body in bodies}
    assert by_rule["spend"]["name"] == f"{MARKER} paid with {MARKER}"
    assert by_rule["refunds"]["labels"] == {
        "phone": f"call {MARKER}",
        "ssn": MARKER,
        "ni": MARKER,
        "CUSTOMER_ID": MARKER,
        "version": "2024.11.03",
    }
    assert clicked["history"][-1]["actor"] == f"slack:{MARKER}"
    redrawn = orjson.dumps(update.json).decode()
    assert f"Acknowledged by slack:{MARKER}" in redrawn
    [warning] = daemon.find_prefix("dropped a DogStatsD line")
    assert f"user_email:{MARKER}" in warning["message"]

    # And the values themselves are nowhere.
    sent = [
        *(request.body.decode() for request in hook.requests),
        *(str(dict(request.headers)) for request in hook.requests),
        *(orjson.dumps(message).decode() for message in slack.messages),
        *(orjson.dumps(update.json).decode() for update in slack.updates),
    ]
    database = tmp_path / "state" / "tocsin.db"
    before_checkpoint = raw_files(database)
    connection = sqlite3.connect(database)
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    after_checkpoint = raw_files(database)
    rows = database_texts(database)
    log = "\n".join(daemon.raw_stderr)
    assert MARKER in log and any(MARKER in row for row in rows)
    for value in PLANTED:
        assert not [body for body in sent if value in body], value
        assert not [row for row in rows if value in row], value
        assert value.encode() not in before_checkpoint, value
        assert value.encode() not in after_checkpoint, value
        assert value not in log, value
