"""Datagram listeners: every datagram waiting on the socket is read in one
wake-up of the loop, then each is handed to the callback, and an optional
second callback runs after each such batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable

from tocsin.daemon.sockets import Listener, OwnedPath, log_failure
from tocsin.logs import RateLimiter

log = logging.getLogger(__name__)

#: Called with the payload of every datagram received.
DatagramCallback = Callable[[bytes], None]

#: Called after each batch of datagrams read in one wake-up.
BatchCallback = Callable[[], None]

#: Most datagrams read in one wake-up, so other work on the loop (timers,
#: deliveries) still runs promptly under a flood.
BATCH = 64

#: Largest datagram accepted; DogStatsD clients send at most 8 KiB. A Unix
#: datagram may be larger: one byte more is asked for on every read, so a
#: longer one, which the kernel cuts to the size asked for, shows itself and is
#: dropped whole rather than parsed with its last line cut.
MAX_DATAGRAM = 65536


class DatagramListener(Listener):
    """A datagram listener.

    :ivar too_long_datagrams: datagrams longer than 64 KiB, dropped whole.
    """

    def __init__(
        self,
        name: str,
        address: str,
        reader: DatagramReader,
        owned_path: OwnedPath | None = None,
    ) -> None:
        super().__init__(name, address, owned_path)
        self._reader = reader

    def _close_transports(self, deadline: float) -> None:
        self._reader.close(deadline)

    async def wait_closed(self) -> None:
        await asyncio.shield(self._reader.closed)

    @property
    def too_long_datagrams(self) -> int:
        return self._reader.too_long

    def counters(self) -> dict[str, int]:
        return {"too_long_datagrams": self.too_long_datagrams}


class DatagramReader:
    """Reads every datagram waiting on a non-blocking socket when it turns
    readable, up to :data:`BATCH`, then calls the batch callback once.

    Reading a batch per wake-up instead of one datagram per wake-up is what
    lets a busy listener keep up: a full socket queue wakes the loop once for
    many datagrams, and the rules are evaluated once per batch.
    """

    def __init__(
        self,
        name: str,
        sock: socket.socket,
        on_datagram: DatagramCallback,
        on_batch: BatchCallback | None,
    ) -> None:
        self._name = name
        self._sock = sock
        self._on_datagram = on_datagram
        self._on_batch = on_batch
        self._limiter = RateLimiter()
        #: Datagrams dropped for being longer than :data:`MAX_DATAGRAM`.
        self.too_long = 0
        self._loop = asyncio.get_running_loop()
        self.closed = self._loop.create_future()
        self._loop.add_reader(sock.fileno(), self._read)

    def _read(self) -> int:
        """Read and hand over one batch; return how many datagrams it held."""
        # Empty the queue first, then parse: a sender blocked on a full Unix
        # socket queue is woken by the first read and refills the queue on the
        # other core while this one parses. Reading one datagram per parse
        # would instead pay a full wake-up of the sender on every read.
        receive = self._sock.recv
        batch = []
        for _ in range(BATCH):
            try:
                batch.append(receive(MAX_DATAGRAM + 1))
            except (BlockingIOError, InterruptedError):
                break
            except OSError as error:
                self._socket_error(error)
                break

        on_datagram = self._on_datagram
        for data in batch:
            if len(data) > MAX_DATAGRAM:
                self._drop_too_long()
                continue
            try:
                on_datagram(data)
            except Exception:
                log_failure(self._limiter, self._name, "a datagram callback raised")
        if self._on_batch is not None:
            try:
                self._on_batch()
            except Exception:
                log_failure(self._limiter, self._name, "a batch callback raised")

        return len(batch)

    def _drop_too_long(self) -> None:
        # Only the kernel saw the end of the datagram: what was read ends in
        # a line cut anywhere, which would parse as another series or value.
        self.too_long += 1
        allowed, suppressed = self._limiter.allow("too_long")
        if allowed:
            log.warning(
                "dropped a datagram longer than %d bytes",
                MAX_DATAGRAM,
                extra={
                    "listener": self._name,
                    "count": self.too_long,
                    "suppressed": suppressed,
                },
            )

    def _socket_error(self, error: OSError) -> None:
        # Errors a receiving socket reports are transient; one line per
        # interval keeps them visible without drowning the log.
        allowed, suppressed = self._limiter.allow("socket")
        if allowed:
            log.warning(
                "socket error: %s",
                error,
                extra={"listener": self._name, "suppressed": suppressed},
            )

    def close(self, deadline: float) -> None:
        """Hand over the datagrams queued until ``deadline``, then close."""
        if self.closed.done():
            return

        self._loop.remove_reader(self._sock.fileno())
        # Shut for reading, a Unix socket refuses further datagrams, so the
        # queue only shrinks; UDP raises ENOTCONN and queues on regardless.
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RD)
        while self._read() == BATCH:
            if time.monotonic() >= deadline:
                log.warning(
                    "stopped reading queued datagrams: out of time",
                    extra={"listener": self._name},
                )
                break
        self._sock.close()
        self.closed.set_result(None)
