"""The email channel against a real local SMTP server: TLS both ways, a
checked login, the message's encoding and threading, and what each failure
means for a retry."""

from __future__ import annotations

import base64
import logging
import socket

import msgspec
import pytest

from tests.channels.test_payload import notification
from tests.standins.smtp import Certificates, SmtpStandin
from tocsin.channels.base import ChannelContext
from tocsin.channels.mail import EmailChannel
from tocsin.clock import ManualClock
from tocsin.config import EmailChannelConfig, convert, parse
from tocsin.errors import ConfigError, DeliveryError
from tocsin.state.models import Transition

PASSWORD = "s3cret-smtp-pässword"
#: What people read as the rule's name: its summary (rule names are
#: identifiers).
F16_NAME = "GPU temp > 90°C – modèle ü"
SENDER = "Tocsin Alerts <tocsin@alerts.example>"
TO = ["oncall@example.com", "ml-team@example.com"]


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Certificates:
    return Certificates(tmp_path_factory.mktemp("smtp-ca"))


@pytest.fixture
async def submission(certificates):
    """A submission server: STARTTLS required, then a login."""
    async with SmtpStandin(
        certificates, security="starttls", password=PASSWORD
    ) as server:
        yield server


def mailer(
    server: SmtpStandin,
    session,
    certificates: Certificates | None = None,
    *,
    password: str | None = PASSWORD,
    **fields,
) -> EmailChannel:
    settings = {
        "name": "mail",
        "host": server.host,
        "port": server.port,
        "security": server.security,
        "username": "tocsin" if password else "",
        "from": SENDER,
        "to": TO,
        "ca_file": str(certificates.ca_file) if certificates else "",
        "timeout": "5s",
        **fields,
    }
    config = convert(settings, EmailChannelConfig, "test")
    secrets = {"password": password} if password else {}
    context = ChannelContext(
        session, ManualClock(0), external_url="https://tocsin.example"
    )
    return EmailChannel(config, secrets, context)


def parts(mail) -> tuple:
    """Return the plain-text and the HTML parts of a received message."""
    text = mail.message.get_body(("plain",))
    html = mail.message.get_body(("html",))
    return text, html


async def test_f16_a_non_ascii_subject_is_encoded_and_decodes_exactly(
    submission, session, certificates
):
    """F16: a rule named with °, – and accented letters mails over STARTTLS
    with a login; the Subject is RFC 2047 encoded and decodes to exactly the
    headline, with no HTML entity; the bodies declare UTF-8."""
    sent = notification(rule="gpu-temp", summary=F16_NAME, series="")

    await mailer(submission, session, certificates).send(sent)

    [mail] = submission.mails
    raw_headers = mail.raw.split(b"\r\n\r\n", 1)[0]
    assert raw_headers.isascii()
    assert b"=?utf-8?" in raw_headers
    assert mail.message["Subject"] == f"[FIRING] {F16_NAME}"
    assert "&gt;" not in mail.message["Subject"]
    text, html = parts(mail)
    assert text.get_content_charset() == html.get_content_charset() == "utf-8"
    assert F16_NAME in text.get_content()
    assert "GPU temp &gt; 90°C – modèle ü" in html.get_content()
    assert (mail.tls, mail.login, mail.mechanism) == (True, "tocsin", "PLAIN")
    assert mail.rcpt_tos == TO
    assert mail.mail_from == "tocsin@alerts.example"


async def test_implicit_tls_with_auth_login(certificates, session):
    async with SmtpStandin(
        certificates, security="tls", password=PASSWORD, mechanisms=("LOGIN",)
    ) as server:
        await mailer(server, session, certificates).send(notification(summary=F16_NAME))

        [mail] = server.mails
        assert (mail.tls, mail.login, mail.mechanism) == (True, "tocsin", "LOGIN")
        assert mail.message["Subject"] == f"[FIRING] {F16_NAME} (model=a)"


async def test_a_plain_connection_without_login(session):
    async with SmtpStandin(security="none") as server:
        await mailer(server, session, password=None).send(notification())

        [mail] = server.mails
        assert (mail.tls, mail.login) == (False, None)


async def test_the_message_has_the_headers_a_mail_reader_needs(
    submission, session, certificates
):
    sent = notification()

    await mailer(submission, session, certificates).send(sent)

    message = submission.mails[0].message
    assert message["From"] == SENDER
    assert [str(a) for a in message["To"].addresses] == TO
    assert message["Date"].datetime.timestamp() == sent.created_at
    assert message["Message-ID"] == (
        f"<tocsin-{sent.alert.uid}-{sent.channel}@alerts.example>"
    )
    assert message["Auto-Submitted"] == "auto-generated"
    assert message.get_content_type() == "multipart/alternative"


async def test_every_attempt_sends_the_same_message_id_and_date(
    submission, session, certificates
):
    channel = mailer(submission, session, certificates)
    sent = notification("resolve")
    submission.refuse("DATA", "451 4.3.0 Try again later")

    with pytest.raises(DeliveryError):
        await channel.send(sent)
    await channel.send(sent)

    [mail] = submission.mails
    assert mail.message["Message-ID"] == f"<{sent.key}@alerts.example>"
    assert submission.connections == 2


async def test_the_mails_of_one_alert_thread_together(
    submission, session, certificates
):
    channel = mailer(submission, session, certificates)
    trigger = notification()
    resolve = notification("resolve")

    await channel.send(trigger)
    await channel.send(resolve)

    first, second = (mail.message for mail in submission.mails)
    assert "In-Reply-To" not in first
    assert second["In-Reply-To"] == first["Message-ID"]
    assert second["References"] == first["Message-ID"]
    assert second["Message-ID"] != first["Message-ID"]


async def test_a_groups_first_mail_about_one_new_alert_opens_its_thread(
    submission, session, certificates
):
    # The notifier sends every message as a group's, one alert a group by
    # default: its first must start the thread its later mails refer to.
    channel = mailer(submission, session, certificates)
    group = {"group_key": 'root:{model="a"}', "group_labels": {"model": "a"}}
    first = msgspec.structs.replace(
        notification(), reason="first notification", **group
    )
    repeat = msgspec.structs.replace(
        first, key=first.key + "-repeat", reason="repeat interval elapsed"
    )

    await channel.send(first)
    await channel.send(repeat)

    opened, repeated = (mail.message for mail in submission.mails)
    assert "In-Reply-To" not in opened
    assert repeated["In-Reply-To"] == opened["Message-ID"]
    assert repeated["Message-ID"] != opened["Message-ID"]


async def test_a_grouped_mail_refers_to_each_alerts_thread(
    submission, session, certificates
):
    sent = notification()
    other = msgspec.structs.replace(
        sent.alert,
        id=8,
        uid="f" * 32,
        spec=msgspec.structs.replace(sent.alert.spec, series="model=b"),
    )
    grouped = msgspec.structs.replace(
        sent,
        key="tocsin-g-0123456789abcdef-4-mail",
        group_key='{}:{rule="drift"}',
        group_labels={"rule": "drift"},
        alerts=[sent.alert, other],
    )

    await mailer(submission, session, certificates).send(grouped)

    message = submission.mails[0].message
    threads = message["References"].split()
    assert sorted(threads) == sorted(
        f"<tocsin-{uid}-{sent.channel}@alerts.example>"
        for uid in (sent.alert.uid, other.uid)
    )
    assert message["In-Reply-To"] in threads
    assert message["Message-ID"] == f"<{grouped.key}@alerts.example>"
    text = message.get_body(("plain",)).get_content()
    assert "model=a" in text and "model=b" in text


async def test_a_later_trigger_of_the_same_alert_is_a_reply(
    submission, session, certificates
):
    sent = notification()
    escalated = msgspec.structs.replace(
        sent,
        key="tocsin-x-12-mail",
        transition=Transition(
            id=12,
            alert_id=7,
            from_state="triggered",
            to_state="escalated",
            at=sent.transition.at + 60,
            actor="escalation",
            reason="escalation step 2",
        ),
    )

    await mailer(submission, session, certificates).send(escalated)

    message = submission.mails[0].message
    assert message["In-Reply-To"] == (
        f"<tocsin-{sent.alert.uid}-{sent.channel}@alerts.example>"
    )


async def test_html_is_escaped_and_only_web_runbooks_are_links(
    submission, session, certificates
):
    hostile = '<script>alert("x")</script> & <b>'
    sent = notification(
        summary=hostile,
        description=hostile,
        runbook="javascript:alert(1)",
        labels={"model": "<img src=x onerror=alert(1)>"},
    )

    await mailer(submission, session, certificates).send(sent)

    text, html = parts(submission.mails[0])
    body = html.get_content()
    assert "<script>" not in body and "<img" not in body and "<b>" not in body
    assert "&lt;script&gt;" in body and "&amp;" in body
    assert 'href="javascript:' not in body
    assert "javascript:alert(1)" in body
    assert hostile in text.get_content()
    assert submission.mails[0].message["Subject"].startswith(f"[FIRING] {hostile}")


async def test_a_line_break_in_the_summary_cannot_add_a_header(
    submission, session, certificates
):
    sent = notification(summary="drift\r\nBcc: thief@evil.example\n\tmore")

    await mailer(submission, session, certificates).send(sent)

    [mail] = submission.mails
    assert mail.message["Bcc"] is None
    assert mail.rcpt_tos == TO
    assert mail.message["Subject"] == (
        "[FIRING] drift Bcc: thief@evil.example more (model=a)"
    )


async def test_a_web_runbook_and_the_alert_are_links(submission, session, certificates):
    sent = notification()

    await mailer(submission, session, certificates).send(sent)

    _, html = parts(submission.mails[0])
    body = html.get_content()
    assert f'href="{sent.alert.spec.runbook}"' in body
    assert f'href="https://tocsin.example/api/v1/alerts/{sent.alert.uid}"' in body


REFUSALS = {
    "a refused recipient": ("RCPT", "550 5.1.1 No such user", False, "client_error"),
    "a full mailbox, later": ("RCPT", "452 4.2.2 Mailbox full", True, "server_error"),
    "a refused sender": ("MAIL", "553 5.7.1 Sender denied", False, "client_error"),
    "a greylisted message": ("DATA", "451 4.7.1 Greylisted", True, "server_error"),
    "a rejected message": ("DATA", "554 5.7.1 Spam", False, "client_error"),
}


@pytest.mark.parametrize(
    ("stage", "reply", "retryable", "reason"),
    REFUSALS.values(),
    ids=REFUSALS.keys(),
)
async def test_smtp_replies_are_classified(
    submission, session, certificates, stage, reply, retryable, reason
):
    times = len(TO) if stage == "RCPT" else 1
    submission.refuse(stage, reply, times=times)

    with pytest.raises(DeliveryError) as raised:
        await mailer(submission, session, certificates).send(notification())

    code = int(reply[:3])
    assert (raised.value.retryable, raised.value.reason) == (retryable, reason)
    assert raised.value.status == code
    assert str(code) in str(raised.value)
    assert "oncall@example.com" not in str(raised.value)
    assert submission.mails == []


async def test_one_refused_recipient_of_two_is_a_warning_not_a_retry(
    submission, session, certificates, caplog
):
    submission.refuse("RCPT", "550 5.1.1 No such user")

    with caplog.at_level(logging.WARNING, logger="tocsin"):
        await mailer(submission, session, certificates).send(notification())

    [mail] = submission.mails
    assert mail.rcpt_tos == TO[1:]
    [record] = [r for r in caplog.records if r.name == "tocsin.channels.mail"]
    assert (record.refused, record.codes) == (1, [550])
    assert TO[0] not in record.getMessage() and TO[0] not in str(record.__dict__)


async def test_a_wrong_password_is_a_final_auth_error_that_never_quotes_it(
    submission, session, certificates, caplog
):
    wrong = "not-the-password-42"

    with caplog.at_level(logging.DEBUG), pytest.raises(DeliveryError) as raised:
        await mailer(submission, session, certificates, password=wrong).send(
            notification()
        )

    assert (raised.value.reason, raised.value.retryable) == ("auth", False)
    assert raised.value.status == 535
    # The client tries each mechanism the server offers; none may succeed.
    assert {ok for _, _, ok in submission.logins} == {False}
    assert submission.mails == []
    assert_never_quoted(wrong, [str(raised.value)], caplog)


async def test_the_password_reaches_no_error_and_no_log_line(
    submission, session, certificates, caplog
):
    channel = mailer(submission, session, certificates)
    submission.refuse("DATA", "451 4.3.0 Try again later")

    with caplog.at_level(logging.DEBUG):
        with pytest.raises(DeliveryError) as raised:
            await channel.send(notification())
        await channel.send(notification())

    assert submission.logins == [("tocsin", "PLAIN", True)] * 2
    assert_never_quoted(PASSWORD, [str(raised.value)], caplog)


def assert_never_quoted(password: str, errors: list[str], caplog) -> None:
    """Check ``password``, and its base64 forms as AUTH sends them, appear in
    no error and no log record of Tocsin or of the SMTP client."""
    forms = [
        password,
        base64.b64encode(password.encode()).decode(),
        base64.b64encode(f"\0tocsin\0{password}".encode()).decode(),
    ]
    ours = [
        f"{record.getMessage()} {record.__dict__}"
        for record in caplog.records
        if record.name.startswith(("tocsin", "aiosmtplib"))
    ]
    for text in errors + ours:
        for form in forms:
            assert form not in text


async def test_a_refused_connection_is_a_retryable_transport_error(session):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = SmtpStandin(security="none")
    server.port = port

    with pytest.raises(DeliveryError) as raised:
        await mailer(server, session, password=None).send(notification())

    assert (raised.value.reason, raised.value.retryable) == ("transport", True)


async def test_a_server_that_does_not_answer_is_a_retryable_timeout(
    submission, session, certificates
):
    submission.hold()

    with pytest.raises(DeliveryError) as raised:
        await mailer(submission, session, certificates, timeout="500ms").send(
            notification()
        )

    assert (raised.value.reason, raised.value.retryable) == ("timeout", True)


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_an_untrusted_certificate_is_a_final_error(
    certificates, session, security
):
    async with SmtpStandin(certificates, security=security) as server:
        # No ca_file: the system's CAs do not know the test's private CA.
        channel = mailer(server, session, None, password=None)

        with pytest.raises(DeliveryError) as raised:
            await channel.send(notification())

    assert raised.value.retryable is False
    assert "certificate is not trusted" in str(raised.value)
    assert server.mails == []


async def test_starttls_required_but_not_offered_is_a_final_error(session):
    async with SmtpStandin(security="none") as server:
        channel = mailer(server, session, password=None, security="starttls")

        with pytest.raises(DeliveryError) as raised:
            await channel.send(notification())

    assert (raised.value.reason, raised.value.retryable) == ("client_error", False)
    assert "STARTTLS" in str(raised.value)
    assert server.mails == []


def email_config(**fields) -> str:
    lines = {
        "name": "mail",
        "type": "email",
        "from": SENDER,
        "to": TO,
        **fields,
    }
    body = "\n".join(
        f"{key} = {msgspec.json.encode(value).decode()}" for key, value in lines.items()
    )
    return f"[[channels]]\n{body}\n"


BAD_CONFIGS = {
    "a To without a domain": (
        {"to": ["oncall@example.com", "nobody"]},
        "channels[0].to[1]",
    ),
    "two addresses in one entry": (
        {"to": ["a@example.com, b@example.com"]},
        "channels[0].to[0]",
    ),
    "a header injection": (
        {"to": ["a@example.com\r\nBcc: x@evil.example"]},
        "channels[0].to[0]",
    ),
    "a From that is no address": ({"from": "Tocsin"}, "channels[0].from"),
    "a non-ASCII address": ({"to": ["ü@example.com"]}, "channels[0].to[0]"),
    "a login over a plain connection": (
        {"security": "none", "username": "tocsin", "password": "x"},
        "channels[0].username",
    ),
    "a missing CA file": ({"ca_file": "/nonexistent/ca.pem"}, "channels[0].ca_file"),
    "a password without a username": (
        {"password_env": "SMTP_PASSWORD"},
        "channels[0].password_env",
    ),
}


@pytest.mark.parametrize(("fields", "key"), BAD_CONFIGS.values(), ids=BAD_CONFIGS)
def test_a_bad_email_config_names_the_key(fields, key):
    with pytest.raises(ConfigError) as raised:
        parse(email_config(**fields), "tocsin.toml")

    assert (raised.value.path, raised.value.key) == ("tocsin.toml", key)


def test_a_display_name_in_any_language_is_accepted():
    text = email_config(**{"from": "Tocsin – modèle <tocsin@alerts.example>"})

    assert parse(text, "tocsin.toml").channels[0].sender.startswith("Tocsin –")
