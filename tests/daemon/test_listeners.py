"""The listeners, on real sockets, with the real Datadog client as sender.

Every scenario runs on both the default event loop and uvloop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat

import pytest
from datadog.dogstatsd.base import DogStatsd

from tests.daemon.conftest import NOW, RecordingSink, Sample
from tocsin.clock import ManualClock
from tocsin.daemon.dogstatsd import DogStatsDParser
from tocsin.daemon.ingest import IngestStats
from tocsin.daemon.listeners import open_udp, open_unix_dgram, open_unix_stream
from tocsin.daemon.ndjson import NdjsonDecoder
from tocsin.logs import RateLimiter

#: Upper bound of any wait; reaching it fails the test, it is not timing.
WAIT = 10.0
BUFFER = 1 << 16
DATADOG_VARIABLES = (
    "DD_AGENT_HOST",
    "DD_DOGSTATSD_PORT",
    "DD_DOGSTATSD_URL",
    "DD_DOGSTATSD_SOCKET",
    "DD_ENTITY_ID",
    "DD_ENV",
    "DD_SERVICE",
    "DD_VERSION",
    "DD_TAGS",
    "DATADOG_TAGS",
)


@pytest.fixture
def datadog_env(monkeypatch):
    for name in DATADOG_VARIABLES:
        monkeypatch.delenv(name, raising=False)


class Arrivals:
    """Parsers behind listener callbacks, and a way to wait for what they got."""

    def __init__(self) -> None:
        self.sink = RecordingSink()
        self.stats = IngestStats()
        self.clock = ManualClock(NOW)
        self.parser = DogStatsDParser(self.sink, self.stats, self.clock)
        self.connections = 0
        self.ended = 0
        self.received = 0
        self._changed = asyncio.Event()

    def on_datagram(self, data: bytes) -> None:
        self.parser.feed(data)
        self._changed.set()

    def on_connection(self):
        decoder = NdjsonDecoder(self.sink, self.stats, self.clock)
        self.connections += 1
        self._changed.set()

        def on_chunk(data: bytes) -> None:
            self.received += len(data)
            self.ended += not data
            decoder.feed(data)
            self._changed.set()

        return on_chunk

    async def until(self, condition) -> None:
        async def watch() -> None:
            while not condition():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(watch(), WAIT)


def send_everything(client: DogStatsd) -> None:
    client.increment("model.requests", tags=["env:prod", "svc_addr:10.0.0.1:443"])
    client.gauge("model.temp", -1.5, tags=["model:a"])
    client.histogram("model.batch", 32)
    client.distribution("model.latency", 0.0123)
    client.timing("model.step", 12.5)
    client.set("model.users", "user-1")
    client.event("deploy", "model a, v2", alert_type="info", tags=["model:a"])
    client.service_check("model.health", DogStatsd.OK, tags=["a"], message="fine")
    client.gauge("model.last", 1)


EVERYTHING = [
    Sample("model.requests", "c", ("env:prod", "svc_addr:10.0.0.1:443"), 1.0, 1.0, NOW),
    Sample("model.temp", "g", ("model:a",), -1.5, 1.0, NOW),
    Sample("model.batch", "h", (), 32.0, 1.0, NOW),
    Sample("model.latency", "d", (), 0.0123, 1.0, NOW),
    Sample("model.step", "ms", (), 12.5, 1.0, NOW),
    Sample("model.users", "s", (), "user-1", None, NOW),
    Sample("model.last", "g", (), 1.0, 1.0, NOW),
]


def got_everything(arrivals: Arrivals):
    def condition() -> bool:
        stats = arrivals.stats
        return (len(arrivals.sink.samples), stats.events, stats.service_checks) == (
            len(EVERYTHING),
            1,
            1,
        )

    return condition


def test_datadog_client_over_unix_datagram(run, tmp_path, datadog_env):
    path = str(tmp_path / "run" / "tocsin" / "dsd.sock")

    async def scenario():
        arrivals = Arrivals()
        listener = await open_unix_dgram(
            path, arrivals.on_datagram, receive_buffer=BUFFER
        )
        client = DogStatsd(
            socket_path=path, disable_telemetry=True, socket_timeout=None
        )
        try:
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o722
            send_everything(client)
            await arrivals.until(got_everything(arrivals))
        finally:
            client.close_socket()
            listener.close()
            await listener.wait_closed()

        assert arrivals.sink.samples == EVERYTHING
        assert arrivals.stats.parse_errors == 0
        assert (listener.name, listener.address) == ("unix_dgram", path)
        assert not os.path.exists(path)

    run(scenario)


def test_datadog_client_over_udp(run, datadog_env, caplog):
    caplog.set_level(logging.INFO, logger="tocsin.daemon")

    async def scenario():
        arrivals = Arrivals()
        listener = await open_udp(
            "127.0.0.1:0", arrivals.on_datagram, receive_buffer=BUFFER
        )
        port = int(listener.address.rpartition(":")[2])
        client = DogStatsd(host="127.0.0.1", port=port, disable_telemetry=True)
        try:
            send_everything(client)
            await arrivals.until(got_everything(arrivals))
        finally:
            client.close_socket()
            listener.close()
            listener.close()

        # UDP does not promise order, even on loopback.
        assert sorted(arrivals.sink.samples) == sorted(EVERYTHING)
        assert listener.address == f"127.0.0.1:{port}"
        assert listener.receive_buffer >= BUFFER
        return port, listener.receive_buffer

    port, obtained = run(scenario)

    opened = [r for r in caplog.records if r.getMessage() == "listening"]
    assert [(r.levelname, r.listener, r.address) for r in opened] == [
        ("INFO", "udp", f"127.0.0.1:{port}")
    ]
    assert opened[0].detail == f"receive buffer {obtained} bytes"


def test_udp_on_ipv6_loopback(run):
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")

    async def scenario():
        arrivals = Arrivals()
        listener = await open_udp(
            "[::1]:0", arrivals.on_datagram, receive_buffer=BUFFER
        )
        port = int(listener.address.rpartition(":")[2])
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"m:1|c", ("::1", port))
            await arrivals.until(lambda: arrivals.sink.samples)
        listener.close()

        assert listener.address == f"[::1]:{port}"
        assert arrivals.sink.samples == [Sample("m", "c", (), 1.0, 1.0, NOW)]

    run(scenario)


@pytest.mark.parametrize("address", ["8125", "localhost", "127.0.0.1:port", ""])
def test_udp_address_must_be_host_and_port(run, address):
    async def scenario():
        with pytest.raises(ValueError, match="expected host:port"):
            await open_udp(address, print, receive_buffer=BUFFER)

    run(scenario)


def test_a_raising_callback_does_not_stop_the_listener(run, tmp_path, caplog):
    path = str(tmp_path / "dsd.sock")
    arrivals = Arrivals()

    def on_datagram(data: bytes) -> None:
        if data == b"boom":
            raise RuntimeError("callback failed")
        arrivals.on_datagram(data)

    async def scenario():
        listener = await open_unix_dgram(path, on_datagram, receive_buffer=BUFFER)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"boom", path)
            sender.sendto(b"m:1|c", path)
            await arrivals.until(lambda: arrivals.sink.samples)
        listener.close()

    run(scenario)

    assert arrivals.sink.samples == [Sample("m", "c", (), 1.0, 1.0, NOW)]
    assert any(r.getMessage() == "a datagram callback raised" for r in caplog.records)


def test_a_datagram_longer_than_64_kib_is_dropped_whole(run, tmp_path, caplog):
    path = str(tmp_path / "dsd.sock")
    caplog.set_level(logging.WARNING, logger="tocsin.daemon")
    # 32 bytes a line: 2,048 lines fill the 64 KiB a datagram may hold.
    fits = b"model.score:1|g|#model:fraud_v3\n" * 2048
    # 30 bytes a line: cut at 64 KiB, the last line would end in "#m".
    too_long = b"model.cut:1|g|#model:fraud_v3\n" * 2200

    async def scenario():
        arrivals = Arrivals()
        listener = await open_unix_dgram(
            path, arrivals.on_datagram, receive_buffer=BUFFER
        )
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            for datagram in (fits, too_long, b"end:1|c"):
                sender.sendto(datagram, path)
            await arrivals.until(lambda: arrivals.stats.datagrams == 2)
        listener.close()

        names = {sample.name for sample in arrivals.sink.samples}
        assert names == {"model.score", "end"}
        assert len(arrivals.sink.samples) == 2049
        assert arrivals.stats.parse_errors == 0
        assert listener.too_long_datagrams == 1
        assert listener.counters() == {"too_long_datagrams": 1}

    run(scenario)

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [(r.getMessage(), r.listener, r.count) for r in warnings] == [
        ("dropped a datagram longer than 65536 bytes", "unix_dgram", 1)
    ]


def test_ndjson_stream_survives_bad_lines_and_split_writes(run, tmp_path):
    path = str(tmp_path / "ingest" / "ndjson.sock")

    def names(arrivals: Arrivals) -> list[str]:
        return [sample.name for sample in arrivals.sink.samples]

    async def scenario():
        arrivals = Arrivals()
        listener = await open_unix_stream(path, arrivals.on_connection)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o722
        reader, writer = await asyncio.open_unix_connection(path)
        pieces = [
            b'{"metric":"a","val',
            b'ue":1}\nnot json\n{"metric":',
            b'"b","value":2,"tags":{"model":"m1"}}\n{"metric":"c","value":NaN}\n',
        ]
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
        await arrivals.until(lambda: arrivals.stats.non_finite == 1)

        # The bad lines cost nothing but themselves: the connection is open.
        assert names(arrivals) == ["a", "b"]
        assert arrivals.stats.errors_by_reason == {"json": 1}
        pieces.append(b'{"metric":"d","value":4}\n{"metric":"e","value":5}')
        writer.write(pieces[-1])
        await arrivals.until(lambda: len(arrivals.sink.samples) == 3)
        assert not reader.at_eof()

        # The line left without a newline is read when the sender closes.
        writer.close()
        await arrivals.until(lambda: len(arrivals.sink.samples) == 4)

        # A second connection gets a decoder of its own; closing the listener
        # ends it and hands its unfinished line over.
        reader, writer = await asyncio.open_unix_connection(path)
        pieces.append(b'{"metric":"f","val')
        writer.write(pieces[-1])
        sent = sum(len(piece) for piece in pieces)
        await arrivals.until(lambda: arrivals.received == sent)
        listener.close()
        await asyncio.wait_for(listener.wait_closed(), WAIT)
        assert await asyncio.wait_for(reader.read(), WAIT) == b""
        writer.close()

        assert arrivals.connections == 2
        assert names(arrivals) == ["a", "b", "d", "e"]
        assert arrivals.sink.samples[1].tags == ("model:m1",)
        assert arrivals.stats.errors_by_reason == {"json": 2}
        assert not os.path.exists(path)

    run(scenario)


def test_close_hands_over_the_datagrams_already_queued(run, tmp_path):
    path = str(tmp_path / "dsd.sock")

    async def scenario():
        arrivals = Arrivals()
        listener = await open_unix_dgram(
            path, arrivals.on_datagram, receive_buffer=BUFFER
        )
        # The loop does not run between the sends and the close: every
        # datagram is still in the kernel's queue when the listener closes.
        sent = 0
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.setblocking(False)
            with pytest.raises(BlockingIOError):
                while True:
                    sender.sendto(f"queued:{sent}|c".encode(), path)
                    sent += 1
            listener.close()
        await listener.wait_closed()

        assert sent > 0
        assert arrivals.stats.datagrams == sent
        values = [sample.value for sample in arrivals.sink.samples]
        assert values == [float(number) for number in range(sent)]

    run(scenario)


def test_close_hands_over_what_open_connections_sent(run, tmp_path):
    path = str(tmp_path / "ndjson.sock")
    lines = b"".join(b'{"metric":"m","value":%d}\n' % number for number in range(500))

    async def scenario():
        arrivals = Arrivals()
        listener = await open_unix_stream(path, arrivals.on_connection)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(path)
            await arrivals.until(lambda: arrivals.connections == 1)
            # Sent and closed without the loop running in between.
            client.sendall(lines)
            listener.close()
            await asyncio.wait_for(listener.wait_closed(), WAIT)

        assert arrivals.received == len(lines)
        assert arrivals.ended == 1
        assert len(arrivals.sink.samples) == 500
        assert arrivals.stats.parse_errors == 0

    run(scenario)


def test_connections_beyond_the_most_allowed_are_closed_and_counted(
    run, tmp_path, caplog
):
    path = str(tmp_path / "ndjson.sock")
    caplog.set_level(logging.WARNING, logger="tocsin.daemon")

    async def scenario():
        arrivals = Arrivals()
        listener = await open_unix_stream(
            path, arrivals.on_connection, max_connections=2
        )
        # A clock that stands still: every refusal falls in one interval.
        listener.limiter = RateLimiter(clock=arrivals.clock.monotonic)
        held = [await asyncio.open_unix_connection(path) for _ in range(2)]
        await arrivals.until(lambda: arrivals.connections == 2)

        for _ in range(3):
            reader, writer = await asyncio.open_unix_connection(path)
            # Closed on arrival: the client reads the end of the stream.
            assert await asyncio.wait_for(reader.read(), WAIT) == b""
            writer.close()
        assert (arrivals.connections, listener.refused_connections) == (2, 3)

        # A connection that ends makes room for the next one.
        held[0][1].close()
        await arrivals.until(lambda: arrivals.ended == 1)
        _, writer = await asyncio.open_unix_connection(path)
        writer.write(b'{"metric":"late","value":1}\n')
        await arrivals.until(lambda: arrivals.sink.samples)
        writer.close()
        held[1][1].close()
        listener.close()
        await asyncio.wait_for(listener.wait_closed(), WAIT)

        assert arrivals.connections == 3
        assert listener.refused_connections == 3

    run(scenario)

    refusals = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [(r.getMessage(), r.listener, r.count) for r in refusals] == [
        ("refused a connection: 2 open, the most allowed", "unix_stream", 1)
    ]


def test_idle_connections_are_closed_and_make_room(run, tmp_path, caplog):
    path = str(tmp_path / "ndjson.sock")
    caplog.set_level(logging.WARNING, logger="tocsin.daemon")

    async def scenario():
        arrivals = Arrivals()
        listener = await open_unix_stream(
            path, arrivals.on_connection, max_connections=2, idle_timeout=0.01
        )
        listener.limiter = RateLimiter(clock=arrivals.clock.monotonic)
        # Two clients that never write hold every place, until they are closed.
        held = [await asyncio.open_unix_connection(path) for _ in range(2)]
        for reader, _ in held:
            assert await asyncio.wait_for(reader.read(), WAIT) == b""
        await arrivals.until(lambda: arrivals.ended == 2)

        # Their places are free again.
        _, late = await asyncio.open_unix_connection(path)
        late.write(b'{"metric":"late","value":1}\n')
        await arrivals.until(lambda: arrivals.sink.samples)
        for _, writer in held:
            writer.close()
        late.close()
        listener.close()
        await asyncio.wait_for(listener.wait_closed(), WAIT)

        assert [sample.name for sample in arrivals.sink.samples] == ["late"]
        assert arrivals.connections == 3
        assert listener.counters() == {
            "refused_connections": 0,
            "idle_connections": 2,
        }

    run(scenario)

    warnings = [r for r in caplog.records if r.name == "tocsin.daemon.streams"]
    assert [(r.getMessage(), r.listener, r.count) for r in warnings] == [
        ("closed a connection idle for 0.01s", "unix_stream", 1)
    ]


def test_failures_on_many_connections_are_logged_once(run, tmp_path, caplog):
    path = str(tmp_path / "ndjson.sock")
    clock = ManualClock(NOW)

    def on_connection():
        raise RuntimeError("no decoder")

    async def scenario():
        listener = await open_unix_stream(path, on_connection)
        listener.limiter = RateLimiter(clock=clock.monotonic)
        for _ in range(5):
            reader, writer = await asyncio.open_unix_connection(path)
            assert await asyncio.wait_for(reader.read(), WAIT) == b""
            writer.close()
        listener.close()
        await asyncio.wait_for(listener.wait_closed(), WAIT)

    run(scenario)

    failures = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.getMessage(), r.listener) for r in failures] == [
        ("a connection factory raised", "unix_stream")
    ]
