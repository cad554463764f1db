"""Running under systemd: readiness, status and watchdog notifications, and
the sockets socket activation passes.

Notifications follow the ``sd_notify`` protocol: one datagram of
``KEY=VALUE`` lines to the Unix socket ``$NOTIFY_SOCKET`` names (a path, or
``@name`` for an abstract socket). Without it Tocsin is not supervised and
sends nothing. ``$WATCHDOG_USEC`` asks for a ``WATCHDOG=1`` within each such
interval; pings go out from a task on the event loop, so a blocked loop stops
them and lets systemd restart the process.

Socket activation passes sockets from file descriptor 3 on, named by the
socket unit's ``FileDescriptorName=``: ``dogstatsd-udp``, ``dogstatsd``,
``ingest`` and ``api``. A passed socket replaces the one its listener would
bind, and turns that listener on even where the config leaves its address
empty: the socket unit then decides what Tocsin listens on. Its file belongs
to systemd and is never removed.

Every variable read here is removed from the environment, so that no child
process acts on it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, MutableMapping

from tocsin.daemon.tasks import cancel
from tocsin.errors import ActivationError

log = logging.getLogger(__name__)

#: The listener each socket name stands for.
LISTENER_OF = {
    "dogstatsd-udp": "udp",
    "dogstatsd": "unix_dgram",
    "ingest": "unix_stream",
    "api": "api",
}

#: The first file descriptor socket activation passes.
FIRST_FD = 3

#: How often the STATUS line is brought up to date, in seconds.
STATUS_EVERY = 5.0

#: Longest status line sent, in characters.
STATUS_LENGTH = 300

#: What each listener's socket must be: its families, and its type.
_KINDS: dict[str, tuple[tuple[int, ...], int]] = {
    "udp": ((socket.AF_INET, socket.AF_INET6), socket.SOCK_DGRAM),
    "unix_dgram": ((socket.AF_UNIX,), socket.SOCK_DGRAM),
    "unix_stream": ((socket.AF_UNIX,), socket.SOCK_STREAM),
    "api": ((socket.AF_UNIX,), socket.SOCK_STREAM),
}

_FAMILIES = {socket.AF_INET: "IPv4", socket.AF_INET6: "IPv6", socket.AF_UNIX: "Unix"}
_TYPES = {socket.SOCK_DGRAM: "datagram", socket.SOCK_STREAM: "stream"}

Environ = MutableMapping[str, str]


class Notifier:
    """Sends notifications to systemd; does nothing without a socket.

    :param address: ``$NOTIFY_SOCKET``: a path, ``@name`` for an abstract
        socket, or ``None`` when Tocsin is not supervised.
    """

    def __init__(self, address: str | None) -> None:
        self.address: str | bytes | None = None
        self._last_error: str | None = None
        if not address:
            return
        if address.startswith("@"):
            self.address = b"\0" + address[1:].encode()
        elif address.startswith("/"):
            self.address = address
        else:
            # vsock addresses serve virtual machines, which Tocsin does not
            # run as; without a socket, start-up goes on unsupervised.
            log.warning(
                "NOTIFY_SOCKET is neither a path nor an abstract socket; ignored",
                extra={"address": address},
            )

    @classmethod
    def from_environ(cls, environ: Environ | None = None) -> Notifier:
        """Take ``$NOTIFY_SOCKET`` out of the environment and notify it."""
        environ = os.environ if environ is None else environ
        return cls(environ.pop("NOTIFY_SOCKET", None))

    @property
    def is_enabled(self) -> bool:
        """Tell whether notifications go anywhere."""
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` assignments in one datagram.

        :return: whether systemd was sent them; a failure is logged, once
            per change of error, and otherwise ignored: supervision must not
            stop Tocsin.
        """
        if self.address is None:
            return False

        payload = "\n".join(assignments).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                # Never wait on the event loop: a manager too busy to read
                # its queue loses this notification, not Tocsin its loop.
                sock.setblocking(False)
                sock.sendto(payload, self.address)
        except OSError as error:
            reason = error.strerror or str(error)
            if reason != self._last_error:
                self._last_error = reason
                log.warning("cannot notify systemd", extra={"error": reason})
            return False
        self._last_error = None

        return True

    def ready(self, status: str) -> None:
        """Tell systemd start-up or a reload is done."""
        self.notify("READY=1", _status(status))

    def reloading(self) -> None:
        """Tell systemd a reload starts."""
        microseconds = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify(
            "RELOADING=1", f"MONOTONIC_USEC={microseconds}", _status("reloading")
        )

    def stopping(self) -> None:
        """Tell systemd shutdown has begun."""
        self.notify("STOPPING=1", _status("stopping"))

    def status(self, text: str) -> None:
        """Replace the status line ``systemctl status`` shows."""
        self.notify(_status(text))


def watchdog_interval(environ: Environ | None = None) -> float | None:
    """Take the watchdog's variables out of the environment.

    :return: seconds between pings (half the timeout), or ``None`` when
        systemd watches no process, or another process than this one.
    """
    environ = os.environ if environ is None else environ
    usec = environ.pop("WATCHDOG_USEC", "")
    pid = environ.pop("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        timeout = int(usec)
    except ValueError:
        return None

    return timeout / 2e6 if timeout > 0 else None


def passed_sockets(
    environ: Environ | None = None, *, first_fd: int = FIRST_FD
) -> dict[str, socket.socket]:
    """Take the sockets socket activation passed, by listener name.

    Passed sockets are left to the process that passed them when
    ``$LISTEN_PID`` names another process. Either way the variables leave
    the environment.

    :param first_fd: the descriptor of the first socket; systemd's is 3.

    :raises ActivationError: if a socket has no known name, is passed twice,
        or is not of its listener's family and type; every passed socket is
        closed then.
    """
    environ = os.environ if environ is None else environ
    pid = environ.pop("LISTEN_PID", "")
    count = environ.pop("LISTEN_FDS", "")
    names = environ.pop("LISTEN_FDNAMES", "")
    if not pid or pid != str(os.getpid()):
        return {}
    if not count.isdigit() or int(count) == 0:
        return {}

    fds = range(first_fd, first_fd + int(count))
    given = names.split(":") if names else []
    given += ["unknown"] * (len(fds) - len(given))
    sockets = [_adopt(fd) for fd in fds]
    try:
        return _by_listener(zip(given, fds, sockets, strict=False))
    except ActivationError:
        for sock in sockets:
            sock.close()
        raise


def _adopt(fd: int) -> socket.socket:
    sock = socket.socket(fileno=fd)
    # Passed without close-on-exec: no child of Tocsin may hold them.
    sock.set_inheritable(False)
    return sock


def _by_listener(passed) -> dict[str, socket.socket]:
    found: dict[str, socket.socket] = {}
    for name, fd, sock in passed:
        listener = LISTENER_OF.get(name)
        if listener is None:
            known = ", ".join(LISTENER_OF)
            raise ActivationError(
                name, fd, f"an unknown name; FileDescriptorName= is one of {known}"
            )
        if listener in found:
            raise ActivationError(name, fd, "passed twice")
        families, kind = _KINDS[listener]
        if sock.family not in families or sock.type != kind:
            got = _describe((sock.family,), sock.type)
            expected = _describe(families, kind)
            raise ActivationError(name, fd, f"{got}, expected {expected}")
        found[listener] = sock

    return found


def _describe(families: tuple[int, ...], kind: int) -> str:
    named = "/".join(_FAMILIES.get(family, str(family)) for family in families)
    return f"{named} {_TYPES.get(kind, str(kind))}"


def _status(text: str) -> str:
    # One line: a newline would start an assignment of its own. Short, so
    # that a long reload error cannot pass the manager's 4 KiB buffer.
    line = " ".join(text.split())
    if len(line) > STATUS_LENGTH:
        line = line[: STATUS_LENGTH - 3] + "..."

    return "STATUS=" + line


class StatusFigures:
    """The live figures of the status line: series, open alerts, queued
    notifications, and samples per second since the last call.

    :param daemon: the running daemon, with its ``engine``, ``stats``,
        ``parts.store``, ``parts.outbox`` and ``clock``.
    """

    def __init__(self, daemon) -> None:
        self._daemon = daemon
        self._counted = (daemon.clock.monotonic(), self._samples())

    async def __call__(self) -> str:
        daemon = self._daemon
        open_alerts = await daemon.parts.store.open_count()
        queued = await daemon.parts.outbox.pending_count()
        now, samples = daemon.clock.monotonic(), self._samples()
        then, before = self._counted
        self._counted = (now, samples)
        rate = (samples - before) / (now - then) if now > then else 0.0

        return (
            f"{_count(daemon.engine.series_count, 'series', 'series')},"
            f" {_count(open_alerts, 'open alert', 'open alerts')},"
            f" {_count(queued, 'notification', 'notifications')} queued,"
            f" {rate:.0f} samples/s"
        )

    def _samples(self) -> int:
        return sum(stats.samples for stats in self._daemon.stats.values())


def _count(number: int, one: str, many: str) -> str:
    return f"{number} {one if number == 1 else many}"


class Supervision:
    """What systemd is told while Tocsin runs: readiness, reloads, stop, a
    status line kept up to date, and watchdog pings.

    :param notifier: where notifications go.
    :param watchdog_every: seconds between watchdog pings, or ``None``.
    """

    def __init__(self, notifier: Notifier, watchdog_every: float | None) -> None:
        self.notifier = notifier
        self.watchdog_every = watchdog_every
        self._tasks: list[asyncio.Task] = []
        self._reload_note = ""

    @classmethod
    def from_environ(cls) -> Supervision:
        """Take what systemd set out of the environment."""
        return cls(Notifier.from_environ(), watchdog_interval())

    def start_watchdog(self) -> None:
        """Ping the watchdog from now on, if systemd asked for it."""
        if self.watchdog_every is None or not self.notifier.is_enabled:
            return

        log.info(
            "pinging the systemd watchdog",
            extra={"detail": f"every {self.watchdog_every:g}s"},
        )
        self._spawn(self._ping(self.watchdog_every), "systemd-watchdog")

    async def ready(self, figures: Callable[[], Awaitable[str]]) -> None:
        """Tell systemd Tocsin is ready, then keep its status line current.

        :param figures: returns the live figures for the status line.
        """
        if not self.notifier.is_enabled:
            return

        self.notifier.ready(await self._figures(figures))
        self._spawn(self._report(figures), "systemd-status")

    def reloading(self) -> None:
        self.notifier.reloading()

    def reloaded(self, error: str | None) -> None:
        """Tell systemd a reload is over, and whether it was applied.

        A refusal stays on the status line until the next reload.
        """
        if error is None:
            self._reload_note = ""
            self.notifier.ready("reloaded")
        else:
            self._reload_note = "; last reload refused"
            self.notifier.ready(f"reload refused: {error}")

    def stopping(self) -> None:
        self.notifier.stopping()

    async def close(self) -> None:
        """Stop the pings and the status updates; safe to call twice."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            await cancel(task)

    def _spawn(self, coroutine, name: str) -> None:
        self._tasks.append(asyncio.create_task(coroutine, name=name))

    async def _ping(self, every: float) -> None:
        while True:
            self.notifier.notify("WATCHDOG=1")
            await asyncio.sleep(every)

    async def _report(self, figures: Callable[[], Awaitable[str]]) -> None:
        while True:
            await asyncio.sleep(STATUS_EVERY)
            self.notifier.status(await self._figures(figures))

    async def _figures(self, figures: Callable[[], Awaitable[str]]) -> str:
        try:
            text = await figures()
        except Exception as error:
            # The status line is a convenience: a failing query (a locked
            # database) says so there and is tried again next time. The
            # error's kind only: its message is for the logs.
            text = f"figures unavailable ({type(error).__name__})"

        return text + self._reload_note
