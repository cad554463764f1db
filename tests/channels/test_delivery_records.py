"""Delivery when the database will not record: an attempt's outcome is kept,
never sent again, and its backoff still holds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3

import pytest

from tests.channels.test_delivery import SEED, reference_delays
from tests.state.test_alerts import T0, make_spec
from tocsin.channels.delivery import Dispatcher
from tocsin.clock import ManualClock
from tocsin.errors import DeliveryError, StateError
from tocsin.state.alerts import AlertStore
from tocsin.state.db import Database
from tocsin.state.outbox import Outbox


class Counting:
    """A channel that counts its sends and fails each with ``failure``, if any."""

    name = "ops"
    send_resolved = True
    max_attempts = 5
    backoff = 10.0
    max_backoff = 60.0
    max_age = 0.0
    concurrency = 4
    rate_limit = 0
    rate_period = 1.0
    timeout = 10.0

    def __init__(self, failure: DeliveryError | None = None) -> None:
        self.failure = failure
        self.sends = 0

    async def send(self, notification):
        self.sends += 1
        if self.failure is not None:
            raise self.failure
        return 200

    async def close(self):
        pass


@contextlib.contextmanager
def write_lock(path):
    """Hold the database's write lock from another connection, as another
    process would."""
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield
        other.execute("ROLLBACK")
    finally:
        other.close()


async def run_while_locked(dispatcher, db, clock, runs: int = 5) -> None:
    """Run the dispatcher ``runs`` times, a second apart, while another process
    holds the write lock, then once more after it lets go."""
    with write_lock(db.path):
        for _ in range(runs):
            with pytest.raises(StateError, match="locked"):
                await dispatcher.run_once(clock.time())
            clock.advance(1.0)
    await dispatcher.run_once(clock.time())


@pytest.fixture
async def impatient_db(tmp_path, clock):
    """A database whose writes fail at once while another process holds it."""
    database = await Database.open(tmp_path / "tocsin.db", clock=clock, busy_timeout=0)
    yield database
    await database.close()


async def test_a_delivery_whose_record_failed_is_recorded_not_sent_again(
    impatient_db, clock
):
    db = impatient_db
    outbox = Outbox(db, clock)
    channel = Counting()
    dispatcher = Dispatcher(outbox, {"ops": channel}, clock)
    await AlertStore(db, clock).fire(make_spec(), ["ops"])

    await run_while_locked(dispatcher, db, clock)

    # The destination acknowledged the first send: it never gets another.
    assert channel.sends == 1
    assert await db.fetchall("SELECT state, attempts, delivered_at FROM outbox") == [
        ("delivered", 1, T0)
    ]
    [row] = await db.fetchall("SELECT id FROM outbox")
    [attempt] = await outbox.attempts(row[0])
    assert (attempt.attempt, attempt.at, attempt.outcome) == (1, T0, "delivered")
    assert dispatcher.delivered == 1


async def test_a_failed_attempt_whose_record_failed_still_waits_its_backoff(
    impatient_db, clock
):
    db = impatient_db
    outbox = Outbox(db, clock)
    failure = DeliveryError("server_error", "503", retryable=True, status=503)
    channel = Counting(failure)
    dispatcher = Dispatcher(outbox, {"ops": channel}, clock, rng=random.Random(SEED))
    await AlertStore(db, clock).fire(make_spec(), ["ops"])
    [delay] = reference_delays(1, channel.backoff, channel.max_backoff)

    await run_while_locked(dispatcher, db, clock)

    # The attempt counts, and the backoff runs from the attempt, not the record.
    assert channel.sends == 1
    assert await db.fetchall("SELECT state, attempts, next_attempt_at FROM outbox") == [
        ("pending", 1, pytest.approx(T0 + delay))
    ]
    clock.set(T0 + delay)
    await dispatcher.run_once(clock.time())
    assert channel.sends == 2


class RefusingRecords(Outbox):
    """An outbox that refuses to record ``refusals`` outcomes, as a full disk does.

    Each refusal moves the clock a second and wakes the worker, so the test
    covers many seconds of retries without waiting for any of them.
    """

    def __init__(self, db, clock: ManualClock, refusals: int) -> None:
        super().__init__(db, clock)
        self.clock = clock
        self.refusals = refusals
        self.wake = lambda: None
        self.refused = asyncio.Event()
        self.recorded = asyncio.Event()

    async def record_all(self, attempts):
        if self.refusals:
            self.refusals -= 1
            self.refused.set()
            self.clock.advance(1.0)
            self.wake()
            raise StateError("state database t.db: database or disk is full")
        await super().record_all(attempts)
        self.recorded.set()


async def test_the_worker_records_again_instead_of_sending_again(
    db, clock, store, caplog
):
    outbox = RefusingRecords(db, clock, refusals=30)
    channel = Counting()
    dispatcher = Dispatcher(outbox, {"ops": channel}, clock)
    outbox.wake = dispatcher.wake
    await store.fire(make_spec(), ["ops"])

    dispatcher.start()
    await outbox.recorded.wait()
    await dispatcher.stop(timeout=5.0)

    assert channel.sends == 1
    assert await db.fetchall("SELECT state, attempts FROM outbox") == [("delivered", 1)]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.suppressed for r in warnings] == [0, 9, 9]


async def test_an_outcome_still_unrecorded_at_shutdown_is_logged(
    db, clock, store, caplog
):
    outbox = RefusingRecords(db, clock, refusals=1_000)
    channel = Counting()
    dispatcher = Dispatcher(outbox, {"ops": channel}, clock)
    alert = await store.fire(make_spec(), ["ops"])

    dispatcher.start()
    await outbox.refused.wait()
    await dispatcher.stop(timeout=5.0)

    # Still pending: the next start sends it again, under the same key.
    assert await db.fetchall("SELECT state, attempts FROM outbox") == [("pending", 0)]
    [line] = [r for r in caplog.records if "not recorded" in r.getMessage()]
    assert line.getMessage() == (
        "delivery outcome not recorded; it is sent again after restart"
    )
    assert (line.channel, line.alert, line.outcome) == ("ops", alert.uid, "delivered")
    assert "disk is full" in line.error
