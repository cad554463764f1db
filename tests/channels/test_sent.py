"""What an attempt sent, kept for the audit log: the bodies as they left,
secrets redacted, headers never, and nothing unless asked for."""

from __future__ import annotations

import asyncio

import pytest

from tests.channels.test_webhook import webhook
from tests.state.test_alerts import make_spec
from tocsin import logs
from tocsin.channels import sent
from tocsin.channels.delivery import Dispatcher
from tocsin.state.audit import AuditLog, AuditQuery

SECRET = "routing-key-0f1e2d3c4b5a"


def test_the_bodies_of_one_attempt_are_kept_in_order_with_secrets_redacted():
    logs.register_secret(SECRET)

    with sent.capture() as first:
        sent.note(b'{"a": 1}')
        sent.note(b'{"routing_key": "' + SECRET.encode() + b'"}')
    sent.note(b"after the attempt")

    assert first.payload() == '{"a": 1}\n{"routing_key": "[redacted]"}'


def test_nothing_is_kept_unless_asked_for():
    with sent.capture(False) as off:
        sent.note(b"x")
    with sent.capture() as empty:
        pass

    assert (off.payload(), empty.payload()) == (None, None)


async def test_attempts_side_by_side_keep_their_own_bodies():
    async def attempt(body: bytes) -> str | None:
        with sent.capture() as mine:
            await asyncio.sleep(0)
            sent.note(body)
            await asyncio.sleep(0)
        return mine.payload()

    assert await asyncio.gather(attempt(b"one"), attempt(b"two")) == ["one", "two"]


@pytest.mark.parametrize("record", [True, False])
async def test_delivery_keeps_the_body_only_when_asked(
    hook, session, db, store, outbox, clock, record
):
    channel = webhook(hook.url, session, headers={"Authorization": "Bearer h-s3cret"})
    await store.fire(make_spec(), ["ops"])
    dispatcher = Dispatcher(outbox, {"ops": channel}, clock, record_payloads=record)

    await dispatcher.run_once(clock.time())

    [request] = hook.requests
    [entry] = (await AuditLog(db).query(AuditQuery(kind="delivery"))).entries
    assert entry.payload == (request.body.decode() if record else None)
    assert "h-s3cret" not in (entry.payload or "")
