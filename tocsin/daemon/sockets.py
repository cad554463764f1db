"""What every listener has: its lifecycle, the socket file it owns, and how a
failing callback is logged. The kinds of listener are in
:mod:`tocsin.daemon.datagrams` and :mod:`tocsin.daemon.streams`; they are
opened by :mod:`tocsin.daemon.listeners`.
"""

from __future__ import annotations

import logging
import os
import time

from tocsin.logs import RateLimiter

log = logging.getLogger(__name__)

#: Longest a listener spends at close on what the kernel already holds for it,
#: by default.
DRAIN_TIME = 1.0

#: Socket files the listeners create: others may connect and send, not read.
SOCKET_MODE = 0o722


class Listener:
    """An open listener.

    :ivar name: ``udp``, ``unix_dgram`` or ``unix_stream``.
    :ivar address: where it listens, printable (``127.0.0.1:8125``, a path).
    :ivar receive_buffer: the kernel receive buffer obtained, for datagram
        sockets (Linux reports twice the size asked for).
    :ivar refused_connections: connections closed on arrival because the
        listener held its most already (stream listeners only).
    :ivar idle_connections: connections closed for sending nothing for
        ``idle_timeout`` (stream listeners only).
    """

    def __init__(
        self, name: str, address: str, owned_path: OwnedPath | None = None
    ) -> None:
        self.name = name
        self.address = address
        self.receive_buffer: int | None = None
        self.refused_connections = 0
        self.idle_connections = 0
        self._owned_path = owned_path
        self._is_closed = False

    def close(self, *, drain_for: float = DRAIN_TIME) -> None:
        """Stop listening and remove the socket file this listener created.

        What senders had already handed to the kernel is read first and passed
        to the callbacks as usual: the datagrams queued on the socket, the
        bytes each open connection has sent. Nothing sent after the call is
        read: a Unix datagram sender gets EPIPE, a connection is closed once
        read. UDP goes on queueing until the socket closes, so ``drain_for``
        bounds the reading; what it leaves unread is logged.

        :param drain_for: most seconds spent reading what is queued.
        """
        if self._is_closed:
            return

        self._is_closed = True
        self._close_transports(time.monotonic() + drain_for)
        if self._owned_path is not None:
            self._owned_path.remove()
        log.info(
            "stopped listening",
            extra={"listener": self.name, "address": self.address},
        )

    async def wait_closed(self) -> None:
        """Wait until the socket and its connections are closed."""

    def counters(self) -> dict[str, int]:
        """Return what the listener itself dropped or closed, by name."""
        return {}

    def _close_transports(self, deadline: float) -> None:
        raise NotImplementedError


class OwnedPath:
    """A socket file this process created, removed only while still its own."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._identity = self._identify()

    def remove(self) -> None:
        try:
            # A newer process may already have replaced the file with its own;
            # the change time tells them apart should the inode be reused.
            if self._identify() == self._identity:
                os.unlink(self.path)
        except FileNotFoundError:
            pass

    def _identify(self) -> tuple[int, int, int]:
        status = os.lstat(self.path)
        return status.st_dev, status.st_ino, status.st_ctime_ns


def log_failure(limiter: RateLimiter, name: str, message: str) -> None:
    allowed, suppressed = limiter.allow("callback")
    if allowed:
        log.exception(message, extra={"listener": name, "suppressed": suppressed})
