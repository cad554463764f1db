"""Fixtures of the channel tests: a clock and an HTTP session; for delivery, a
state database and a webhook stand-in; for the Datadog export, a stand-in
intake and an exporter."""

from __future__ import annotations

import os
import random
import time

import aiohttp
import pytest

from tests.standins.datadog import DatadogStandIn, RecordingSleep
from tests.standins.webhook import WebhookStandin
from tocsin.channels.datadog_metrics import DatadogExporter, ExportBuffer
from tocsin.clock import ManualClock
from tocsin.config import DatadogExportConfig, Duration
from tocsin.state.alerts import AlertStore
from tocsin.state.db import Database
from tocsin.state.outbox import Outbox

KEY = "dd-secret-key-9f8e7d6c5b4a"
NOW = 1_750_000_000
INTERVAL = 10.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
async def standin(clock):
    async with DatadogStandIn(KEY, clock=clock) as running:
        yield running


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
async def db(tmp_path, clock):
    database = await Database.open(tmp_path / "tocsin.db", clock=clock)
    yield database
    await database.close()


@pytest.fixture
def store(db, clock):
    return AlertStore(db, clock)


@pytest.fixture
def outbox(db, clock):
    return Outbox(db, clock)


@pytest.fixture
async def hook():
    async with WebhookStandin() as standin:
        yield standin


@pytest.fixture
def make(standin, session, clock):
    """Build an exporter aimed at the stand-in; options override the config."""

    def build(buffer=None, *, key=KEY, sleep=None, **options):
        settings = {"base_url": standin.url, "interval": Duration(INTERVAL)}
        config = DatadogExportConfig(**{**settings, **options})
        return DatadogExporter(
            config,
            key,
            buffer or ExportBuffer(),
            clock=clock,
            session=session,
            rng=random.Random(7),
            sleep=sleep or RecordingSleep(clock),
        )

    return build


def values(series: list[dict]) -> dict[str, tuple[int, float]]:
    return {s["metric"]: (s["type"], s["points"][0]["value"]) for s in series}


def one_gauge() -> list[dict]:
    return [{"metric": "g", "type": 3, "points": [{"timestamp": NOW, "value": 2.0}]}]


@pytest.fixture
def seoul_host():
    """Run the test with the process's local zone at UTC+9, then restore it."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Seoul"
    time.tzset()
    yield
    if saved is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = saved
    time.tzset()
