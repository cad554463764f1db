"""One breach through the running daemon to two destinations: a mail over
STARTTLS with a login, and a templated, signed webhook."""

from __future__ import annotations

import base64

import orjson
import pytest
from standardwebhooks.webhooks import Webhook

from tests.e2e.daemon import DAEMON_HEAD, DaemonProcess
from tests.e2e.test_lifecycle import sender
from tests.standins.smtp import Certificates, SmtpStandin
from tests.standins.webhook import WebhookStandin

PASSWORD = "e2e-smtp-password-7c1d"
SECRET = "whsec_" + base64.b64encode(bytes(range(40, 72))).decode()
#: Rule names are identifiers; what people read is the summary.
SUMMARY = "GPU temp > 90°C – modèle ü"
ENV = "TOCSIN_TEST_MAIL_WEBHOOK"

CONFIG = (
    DAEMON_HEAD
    + """
[[channels]]
name = "mail"
type = "email"
host = "127.0.0.1"
port = {smtp_port}
security = "starttls"
username = "tocsin"
password_env = "{env}_PASSWORD"
from = "Tocsin <tocsin@alerts.example>"
to = ["oncall@example.com"]
ca_file = "{ca_file}"

[[channels]]
name = "hook"
type = "webhook"
url_env = "{env}_URL"
secret_env = "{env}_SECRET"
method = "PUT"
template = '''
{{"text": {{{{ alert.name ~ ": " ~ status }}}}, "value": {{{{ alert.value }}}},
  "key": {{{{ idempotency_key }}}}}}
'''

[[rules]]
name = "gpu-temp"
summary = "{summary}"
metric = "gpu.temp"
aggregation = "max"
window = "1m"
threshold = 90
channels = ["mail", "hook"]
"""
)


@pytest.fixture
async def smtp(tmp_path):
    certificates = Certificates(tmp_path)
    async with SmtpStandin(certificates, password=PASSWORD) as server:
        server.ca_file = certificates.ca_file
        yield server


@pytest.fixture
async def hook():
    async with WebhookStandin(signing_secret=SECRET) as standin:
        yield standin


async def test_a_breach_is_mailed_and_posted_signed(tmp_path, smtp, hook):
    text = CONFIG.format(
        dir=tmp_path,
        env=ENV,
        smtp_port=smtp.port,
        ca_file=smtp.ca_file,
        summary=SUMMARY,
    )
    env = {
        f"{ENV}_PASSWORD": PASSWORD,
        f"{ENV}_URL": hook.url,
        f"{ENV}_SECRET": SECRET,
    }
    daemon = DaemonProcess(tmp_path, text, env)
    await daemon.start()
    try:
        sender(tmp_path).gauge("gpu.temp", 97.5)

        [mail] = await smtp.wait_for(1)
        [request] = await hook.wait_for(1)
        await daemon.wait_for_log("alert fired", rule="gpu-temp")
    finally:
        await daemon.stop()
        await daemon.close()

    # The mail: over TLS, logged in, its Subject decoding to the summary.
    assert (mail.tls, mail.login) == (True, "tocsin")
    assert mail.message["Subject"] == f"[FIRING] {SUMMARY}"
    assert b"=?utf-8?" in mail.raw.split(b"\r\n\r\n", 1)[0]
    assert "97.5" in mail.message.get_body(("plain",)).get_content()

    # The webhook: the template's body, signed, accepted by the official
    # verifier and by the stand-in.
    assert request.method == "PUT"
    assert request.signature_error is None and request.status == 200
    body = Webhook(SECRET).verify(request.body, request.headers)
    assert body == {
        "text": f"{SUMMARY}: firing",
        "value": 97.5,
        "key": request.headers["webhook-id"],
    }
    assert orjson.loads(request.body) == body

    # Both went through at the first attempt, and no secret reached the log.
    assert not daemon.find("delivery failed; retrying")
    log = "\n".join(daemon.raw_stderr)
    for secret in (PASSWORD, SECRET, SECRET.removeprefix("whsec_"), hook.url):
        assert secret not in log
