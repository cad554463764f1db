"""A sink that records what the ingest parsers hand it."""

from __future__ import annotations

import asyncio
from typing import NamedTuple

import pytest
import uvloop

from tests.daemon.fake_backend import Served
from tocsin.clock import ManualClock
from tocsin.daemon.ingest import IngestStats

#: The wall-clock time of every test's ManualClock.
NOW = 1_750_000_000.0
#: The event loops every listener scenario runs on.
LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(params=list(LOOPS))
def run(request):
    """Run a scenario coroutine function on a fresh loop of each kind."""

    def run(scenario):
        with asyncio.Runner(loop_factory=LOOPS[request.param]) as runner:
            return runner.run(scenario())

    return run


class Sample(NamedTuple):
    name: str
    kind: str
    tags: tuple[str, ...]
    value: float | str
    rate: float | None
    timestamp: float


class RecordingHandle:
    def __init__(self, sink: RecordingSink, series: tuple) -> None:
        self._sink = sink
        self._series = series

    def add(self, value: float, rate: float, timestamp: float) -> None:
        self._sink.samples.append(Sample(*self._series, value, rate, timestamp))

    def add_member(self, member: str, timestamp: float) -> None:
        self._sink.samples.append(Sample(*self._series, member, None, timestamp))


class RecordingSink:
    """Keep every resolve call and every sample, in arrival order."""

    def __init__(self) -> None:
        self.resolved: list[tuple[str, str, tuple[str, ...]]] = []
        self.samples: list[Sample] = []

    def resolve(self, name: str, kind: str, tags: tuple[str, ...]) -> RecordingHandle:
        assert isinstance(tags, tuple)
        self.resolved.append((name, kind, tags))
        return RecordingHandle(self, (name, kind, tags))


def counters(stats: IngestStats) -> dict[str, object]:
    """Return the stats that do not depend on how input was cut into datagrams."""
    values = stats.as_dict()
    del values["datagrams"]
    return values


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
def stats() -> IngestStats:
    return IngestStats()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
async def served_api(tmp_path):
    """The API over a fake backend, on a temp Unix socket and a free TCP port."""
    served = Served(tmp_path)
    await served.start()
    yield served
    await served.stop()
