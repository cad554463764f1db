"""A test of an integration against destinations that do not answer in time:
the answer comes from the daemon, bounded by the channel's timeout, never a
client that gave up first nor a call that waits as long as the destination
likes; and a channel whose name is all dots can be tested like any other."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest

from tests.e2e.daemon import DAEMON_HEAD, DaemonProcess
from tests.e2e.test_lifecycle import tocsin
from tests.standins.webhook import Reply, WebhookStandin
from tocsin.client import Client

HOOK_ENV = "TOCSIN_TEST_BOUNDS_HOOK"
#: Each answer of the trickling SMTP server comes this late: well inside the
#: channel's timeout, so no single answer ever times out.
TRICKLE = 0.3
#: Recipients of the mail: one RCPT each, so the whole conversation takes
#: several times the channel's timeout.
RECIPIENTS = 20

CONFIG = (
    DAEMON_HEAD
    + """
[[channels]]
name = "hanging"
type = "webhook"
url_env = "{hook_env}"
timeout = "1500ms"

[[channels]]
name = "trickling"
type = "email"
host = "127.0.0.1"
port = {smtp_port}
security = "none"
from = "tocsin@example.com"
to = {recipients}
timeout = "1s"
"""
)


class TricklingSmtp:
    """An SMTP server that takes every message, answering each line late.

    No answer is ever later than :data:`TRICKLE`, yet a conversation with
    many commands lasts as long as the server likes.
    """

    def __init__(self) -> None:
        self.commands: list[str] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> TricklingSmtp:
        self._server = await asyncio.start_server(self._talk, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 1.0)

    async def _talk(self, reader, writer) -> None:
        async def say(line: str) -> None:
            await asyncio.sleep(TRICKLE)
            writer.write(line.encode() + b"\r\n")
            await writer.drain()

        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            await say("220 trickle ESMTP")
            in_data = False
            while line := await reader.readline():
                text = line.decode().strip()
                if in_data:
                    if text == ".":
                        in_data = False
                        await say("250 2.0.0 queued")
                    continue
                command = text.split(" ")[0].upper()
                self.commands.append(command)
                if command == "DATA":
                    in_data = True
                    await say("354 go on")
                elif command == "QUIT":
                    await say("221 bye")
                    break
                else:
                    await say("250 ok")
        writer.close()


@pytest.fixture
async def daemon(tmp_path):
    recipients = json.dumps([f"r{n}@example.com" for n in range(RECIPIENTS)])
    async with WebhookStandin(Reply(200, hold=True)) as hook, TricklingSmtp() as smtp:
        text = CONFIG.format(
            dir=tmp_path,
            hook_env=HOOK_ENV,
            smtp_port=smtp.port,
            recipients=recipients,
        )
        process = DaemonProcess(tmp_path, text, {HOOK_ENV: hook.url})
        process.hook, process.smtp = hook, smtp
        await process.start()
        yield process
        await process.close()


async def call(function, *args):
    return await asyncio.to_thread(function, *args)


async def test_a_test_of_a_silent_receiver_answers_even_past_the_clients_timeout(
    tmp_path, daemon
):
    # The client's own timeout is shorter than the channel's: it must still
    # wait for the daemon's answer, which the channel's timeout bounds.
    with Client(socket=str(tmp_path / "state" / "api.sock"), timeout=0.5) as client:
        result = await call(client.test_integration, "hanging")

    assert (result["ok"], result["reason"]) == (False, "timeout")
    assert result["error"] == "channel hanging: no response within 1.5s"
    assert len(daemon.hook.requests) == 1


async def test_a_test_ends_at_the_channel_timeout_though_each_answer_is_in_time(
    tmp_path, daemon
):
    with Client(socket=str(tmp_path / "state" / "api.sock")) as client:
        result = await call(client.test_integration, "trickling")

    # Cut by the bound on the whole attempt, not by a timeout of one answer
    # (none came late), long before the conversation could have ended.
    assert (result["ok"], result["reason"]) == (False, "timeout")
    assert result["error"] == "channel trickling: attempt not finished within 2s"
    assert "DATA" not in daemon.smtp.commands
    [logged] = daemon.find("integration test sent", channel="trickling")
    assert logged["reason"] == "timeout"


async def test_a_channel_named_with_dots_is_refused_at_start_up(tmp_path):
    # ".." and "." cannot be a path segment of the API: every client and
    # proxy folds them into the path around them.
    text = DAEMON_HEAD.format(dir=tmp_path) + (
        '\n[[channels]]\nname = ".."\ntype = "log"\n'
    )
    process = DaemonProcess(tmp_path, text)
    await process.start(wait_ready=False)
    try:
        assert await process.wait_exit() != 0
    finally:
        await process.close()
    assert any("channels[0].name" in line for line in process.raw_stderr)


async def test_odd_references_never_reach_another_path_of_the_api(daemon):
    # A reference is one path segment, whatever it holds: "../status" must
    # not read the status, nor "1?x" alert 1.
    for ref in ("../status", "1?x=1", "a/b", "%2e%2e"):
        code, out, err = await tocsin(daemon, "show", ref)
        assert (code, out) == (1, ""), ref
        assert "no alert" in err, (ref, err)
    code, _, err = await tocsin(daemon, "integrations", "test", "../rules")
    assert code == 1
    assert "no integration ../rules" in err
