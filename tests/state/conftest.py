"""Fixtures of the state tests: a manual clock and a fresh database."""

from __future__ import annotations

import pytest

from tests.state.test_alerts import T0
from tocsin.clock import ManualClock
from tocsin.state.db import Database


@pytest.fixture
def clock():
    return ManualClock(T0)


@pytest.fixture
async def db(tmp_path, clock):
    database = await Database.open(tmp_path / "state" / "tocsin.db", clock=clock)
    yield database
    await database.close()
