"""``tocsin.storage_failing``: decided from the state database's counters,
sent to the internal channels without being stored, and logged."""

from __future__ import annotations

import logging

import aiohttp
import pytest

from tests.channels.test_delivery import webhook
from tests.standins.webhook import WebhookStandin
from tocsin.clock import ManualClock
from tocsin.daemon.storage_watch import STORAGE_FAILING_RULE, StorageWatcher
from tocsin.schema import HealthConfig

T0 = 1_750_000_000.0
SETTINGS = HealthConfig(failures=3)


class Counters:
    """A state database's counters, as a test moves them."""

    def __init__(self) -> None:
        self.transactions = 10
        self.errors = 0


@pytest.fixture
async def hook():
    async with WebhookStandin() as standin:
        yield standin


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as session:
        yield session


def watcher_of(db, channels, internal):
    return StorageWatcher(
        db,
        SETTINGS,
        ManualClock(T0),
        channel=channels.get,
        internal_channels=lambda: internal,
    )


async def test_failing_writes_are_sent_unstored_and_resolved_by_a_commit(
    hook, session, caplog
):
    caplog.set_level(logging.ERROR, logger="tocsin.daemon.storage_watch")
    db = Counters()
    channels = {"pager": webhook("pager", hook, session, ManualClock(T0))}
    watcher = watcher_of(db, channels, ["pager", "gone"])

    db.errors = 2
    await watcher.look()
    assert hook.requests == []
    db.errors = 3
    await watcher.look()
    db.errors = 7
    await watcher.look()
    db.transactions = 11
    await watcher.look()

    fired, resolved = await hook.wait_for(2)
    assert (fired.json["event"], resolved.json["event"]) == ("trigger", "resolve")
    assert fired.json["alert"]["rule"] == STORAGE_FAILING_RULE
    assert fired.json["alert"]["severity"] == "critical"
    assert fired.json["alert"]["uid"] == resolved.json["alert"]["uid"]
    first, second = caplog.records
    assert first.getMessage() == "Tocsin's own alert sent without being stored"
    assert (first.rule, first.detail) == (STORAGE_FAILING_RULE, {"pager": "delivered"})
    assert first.reason == "3 state database errors, no write committed"
    assert second.getMessage() == "Tocsin's own alert resolved without being stored"


async def test_errors_between_committed_writes_raise_nothing(hook, session):
    db = Counters()
    channels = {"pager": webhook("pager", hook, session, ManualClock(T0))}
    watcher = watcher_of(db, channels, ["pager"])

    for _ in range(5):
        db.errors += 2
        db.transactions += 1
        await watcher.look()

    assert hook.requests == []


async def test_with_no_internal_channel_it_is_an_error_line_alone(caplog):
    caplog.set_level(logging.ERROR, logger="tocsin.daemon.storage_watch")
    db = Counters()
    watcher = watcher_of(db, {}, [])

    db.errors = 3
    await watcher.look()

    [record] = caplog.records
    assert (record.levelname, record.detail) == ("ERROR", {})
