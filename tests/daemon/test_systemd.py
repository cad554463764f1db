"""The systemd notifications and the sockets socket activation passes, against
sockets the tests own."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from types import SimpleNamespace

import pytest

from tocsin.clock import ManualClock
from tocsin.daemon import systemd
from tocsin.daemon.ingest import IngestStats
from tocsin.daemon.systemd import (
    Notifier,
    StatusFigures,
    Supervision,
    passed_sockets,
    watchdog_interval,
)
from tocsin.errors import ActivationError

#: Where the tests put passed sockets: far above what pytest holds open.
FIRST_FD = 200


@pytest.fixture
def manager(tmp_path):
    """A datagram socket in the role of systemd's notification socket."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        yield SimpleNamespace(address=str(path), sock=sock)


def received(manager) -> list[str]:
    return manager.sock.recv(4096).decode().split("\n")


def test_a_notification_is_one_datagram_to_the_socket_path(manager):
    notifier = Notifier(manager.address)

    notifier.ready("12 series")

    assert received(manager) == ["READY=1", "STATUS=12 series"]


def test_an_abstract_socket_is_named_with_an_at_sign():
    name = f"tocsin-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        Notifier("@" + name).stopping()

        assert sock.recv(4096) == b"STOPPING=1\nSTATUS=stopping"


def test_the_socket_leaves_the_environment_so_children_do_not_inherit_it(manager):
    environ = {"NOTIFY_SOCKET": manager.address, "PATH": "/bin"}

    notifier = Notifier.from_environ(environ)

    assert notifier.is_enabled
    assert environ == {"PATH": "/bin"}


def test_without_a_socket_nothing_is_sent():
    notifier = Notifier.from_environ({})

    assert not notifier.is_enabled
    assert notifier.notify("READY=1") is False


def test_a_reload_carries_the_monotonic_clock_in_microseconds(manager):
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    Notifier(manager.address).reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000

    lines = received(manager)

    assert lines[0] == "RELOADING=1"
    assert lines[1].startswith("MONOTONIC_USEC=")
    assert before <= int(lines[1].removeprefix("MONOTONIC_USEC=")) <= after
    assert lines[2] == "STATUS=reloading"


def test_a_status_is_one_short_line(manager):
    Notifier(manager.address).status("reload refused:\nrules[1]: bad\n" + "x" * 5000)

    (line,) = received(manager)

    assert line.startswith("STATUS=reload refused: rules[1]: bad x")
    assert len(line) == len("STATUS=") + systemd.STATUS_LENGTH


def test_a_missing_manager_is_warned_about_once_and_does_not_raise(tmp_path, caplog):
    notifier = Notifier(str(tmp_path / "gone.sock"))

    with caplog.at_level(logging.WARNING, logger="tocsin.daemon.systemd"):
        sent = [notifier.notify("WATCHDOG=1") for _ in range(3)]

    assert sent == [False, False, False]
    assert [record.message for record in caplog.records] == ["cannot notify systemd"]


@pytest.mark.parametrize(
    ("usec", "pid", "every"),
    [
        ("30000000", "", 15.0),
        ("30000000", "self", 15.0),
        ("30000000", "1", None),
        ("", "", None),
        ("0", "", None),
        ("soon", "", None),
    ],
)
def test_the_watchdog_is_pinged_at_half_its_timeout_when_it_watches_us(
    usec, pid, every
):
    environ = {"WATCHDOG_USEC": usec, "WATCHDOG_PID": pid, "HOME": "/root"}
    if pid == "self":
        environ["WATCHDOG_PID"] = str(os.getpid())

    assert watchdog_interval(environ) == every
    assert environ == {"HOME": "/root"}


def test_the_watchdog_pings_from_the_event_loop(manager):
    async def scenario():
        supervision = Supervision(Notifier(manager.address), watchdog_every=0.001)
        supervision.start_watchdog()
        loop = asyncio.get_running_loop()
        manager.sock.setblocking(False)
        pings = [await loop.sock_recv(manager.sock, 4096) for _ in range(3)]
        await supervision.close()
        await supervision.close()

        return pings

    assert asyncio.run(scenario()) == [b"WATCHDOG=1"] * 3


def test_ready_sends_the_figures_and_a_refused_reload_stays_on_the_status(manager):
    async def figures():
        return "3 series"

    async def scenario():
        supervision = Supervision(Notifier(manager.address), watchdog_every=None)
        await supervision.ready(figures)
        first = received(manager)
        supervision.reloading()
        received(manager)
        supervision.reloaded("tocsin.toml: rules[0].window: must be positive")
        refused = received(manager)
        status = await supervision._figures(figures)
        supervision.reloading()
        received(manager)
        supervision.reloaded(None)
        applied = received(manager)
        status_after = await supervision._figures(figures)
        await supervision.close()

        return first, refused, status, applied, status_after

    first, refused, status, applied, status_after = asyncio.run(scenario())

    assert first == ["READY=1", "STATUS=3 series"]
    assert refused == [
        "READY=1",
        "STATUS=reload refused: tocsin.toml: rules[0].window: must be positive",
    ]
    assert status == "3 series; last reload refused"
    assert applied == ["READY=1", "STATUS=reloaded"]
    assert status_after == "3 series"


def test_the_figures_count_series_alerts_queue_and_samples_per_second():
    clock = ManualClock()
    stats = {"udp": IngestStats(), "unix_dgram": IngestStats()}

    async def count(value):
        return value

    daemon = SimpleNamespace(
        clock=clock,
        stats=stats,
        engine=SimpleNamespace(series_count=1),
        parts=SimpleNamespace(
            store=SimpleNamespace(open_count=lambda: count(2)),
            outbox=SimpleNamespace(pending_count=lambda: count(1)),
        ),
    )
    figures = StatusFigures(daemon)
    stats["udp"].samples, stats["unix_dgram"].samples = 300, 200
    clock.advance(5)

    text = asyncio.run(figures())

    assert text == "1 series, 2 open alerts, 1 notification queued, 100 samples/s"


def pass_sockets(*sockets: socket.socket) -> list[int]:
    """Place ``sockets`` at consecutive descriptors from FIRST_FD."""
    fds = []
    for offset, sock in enumerate(sockets):
        fd = FIRST_FD + offset
        os.dup2(sock.fileno(), fd)
        sock.close()
        fds.append(fd)
    return fds


def activation(names: str, count: int, pid: int | None = None) -> dict[str, str]:
    return {
        "LISTEN_PID": str(os.getpid() if pid is None else pid),
        "LISTEN_FDS": str(count),
        "LISTEN_FDNAMES": names,
    }


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_passed_sockets_are_taken_by_name(tmp_path):
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    port = udp.getsockname()[1]
    stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stream.bind(str(tmp_path / "api.sock"))
    fds = pass_sockets(udp, stream)
    environ = {**activation("dogstatsd-udp:api", 2), "HOME": "/root"}

    passed = passed_sockets(environ, first_fd=FIRST_FD)

    try:
        assert sorted(passed) == ["api", "udp"]
        assert passed["udp"].getsockname() == ("127.0.0.1", port)
        assert passed["api"].getsockname() == str(tmp_path / "api.sock")
        assert [passed["udp"].fileno(), passed["api"].fileno()] == fds
        assert not passed["udp"].get_inheritable()
        assert environ == {"HOME": "/root"}
    finally:
        for sock in passed.values():
            sock.close()


def test_sockets_passed_to_another_process_are_left_alone():
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    (fd,) = pass_sockets(udp)
    environ = activation("dogstatsd-udp", 1, pid=os.getpid() + 1)

    try:
        assert passed_sockets(environ, first_fd=FIRST_FD) == {}
        assert environ == {}
        assert is_open(fd)
    finally:
        os.close(fd)


def test_without_activation_nothing_is_passed():
    assert passed_sockets({}, first_fd=FIRST_FD) == {}


@pytest.mark.parametrize(
    ("names", "family", "kind", "error"),
    [
        (
            "dogstatsd",
            socket.AF_UNIX,
            socket.SOCK_STREAM,
            "systemd passed the socket 'dogstatsd' (fd 200): Unix stream,"
            " expected Unix datagram",
        ),
        (
            "ingest",
            socket.AF_UNIX,
            socket.SOCK_DGRAM,
            "systemd passed the socket 'ingest' (fd 200): Unix datagram,"
            " expected Unix stream",
        ),
        (
            "dogstatsd-udp",
            socket.AF_INET,
            socket.SOCK_STREAM,
            "systemd passed the socket 'dogstatsd-udp' (fd 200): IPv4 stream,"
            " expected IPv4/IPv6 datagram",
        ),
        (
            "api",
            socket.AF_INET,
            socket.SOCK_STREAM,
            "systemd passed the socket 'api' (fd 200): IPv4 stream,"
            " expected Unix stream",
        ),
        (
            "statsd",
            socket.AF_INET,
            socket.SOCK_DGRAM,
            "systemd passed the socket 'statsd' (fd 200): an unknown name;"
            " FileDescriptorName= is one of dogstatsd-udp, dogstatsd, ingest, api",
        ),
        (
            "",
            socket.AF_INET,
            socket.SOCK_DGRAM,
            "systemd passed the socket 'unknown' (fd 200): an unknown name;"
            " FileDescriptorName= is one of dogstatsd-udp, dogstatsd, ingest, api",
        ),
    ],
)
def test_a_socket_of_the_wrong_kind_or_name_is_refused_and_closed(
    names, family, kind, error
):
    (fd,) = pass_sockets(socket.socket(family, kind))

    with pytest.raises(ActivationError) as raised:
        passed_sockets(activation(names, 1), first_fd=FIRST_FD)

    assert str(raised.value) == error
    assert not is_open(fd)


def test_a_name_passed_twice_is_refused():
    fds = pass_sockets(
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM),
    )

    with pytest.raises(ActivationError, match="'dogstatsd-udp' .fd 201.: passed"):
        passed_sockets(activation("dogstatsd-udp:dogstatsd-udp", 2), first_fd=200)

    assert not any(is_open(fd) for fd in fds)
