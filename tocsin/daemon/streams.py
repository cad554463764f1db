"""Stream listeners: each connection gets a callback of its own, called with
every chunk the connection delivers; the listener bounds how many connections
it holds and closes those that stay idle.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import struct
import termios
import time
from collections.abc import Callable

from tocsin.daemon.sockets import Listener, OwnedPath, log_failure
from tocsin.logs import RateLimiter

log = logging.getLogger(__name__)

#: Called with every chunk a stream connection delivers, in order, and once
#: with ``b""`` when the connection ends (as a read returns at end of file).
ChunkCallback = Callable[[bytes], None]

#: Called once per accepted connection for the callback of its chunks.
ConnectionFactory = Callable[[], ChunkCallback]

#: Most connections a stream listener holds open at once, by default.
MAX_CONNECTIONS = 1024

#: Seconds a stream connection may send nothing before it is closed, by default.
IDLE_TIMEOUT = 300.0


class StreamListener(Listener):
    def __init__(
        self,
        name: str,
        address: str,
        max_connections: int,
        idle_timeout: float,
        owned_path: OwnedPath | None = None,
    ) -> None:
        super().__init__(name, address, owned_path)
        self.server: asyncio.AbstractServer | None = None
        self.connections: dict[asyncio.BaseTransport, StreamProtocol] = {}
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        # One limiter for every connection: a thousand clients that each fail
        # once must not make a thousand log lines.
        self.limiter = RateLimiter()

    def _close_transports(self, deadline: float) -> None:
        if self.server is not None:
            self.server.close()
        unread = 0
        for transport, connection in list(self.connections.items()):
            if time.monotonic() < deadline:
                connection.drain()
            else:
                unread += 1
            transport.close()
        if unread:
            log.warning(
                "closed connections without reading what they had sent: out of time",
                extra={"listener": self.name, "count": unread},
            )

    def counters(self) -> dict[str, int]:
        return {
            "refused_connections": self.refused_connections,
            "idle_connections": self.idle_connections,
        }

    async def wait_closed(self) -> None:
        if self.server is not None:
            await self.server.wait_closed()
        if self.connections:
            await asyncio.gather(
                *(connection.closed for connection in self.connections.values())
            )


class StreamProtocol(asyncio.Protocol):
    def __init__(self, listener: StreamListener, factory: ConnectionFactory) -> None:
        self._listener = listener
        self._factory = factory
        self._on_chunk: ChunkCallback | None = None
        self._transport: asyncio.BaseTransport | None = None
        self._limiter = listener.limiter
        self._loop = asyncio.get_running_loop()
        self.closed = self._loop.create_future()
        self._last_received = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        if len(self._listener.connections) >= self._listener.max_connections:
            self._refuse(transport)
            return
        self._listener.connections[transport] = self
        try:
            self._on_chunk = self._factory()
        except Exception:
            log_failure(
                self._limiter, self._listener.name, "a connection factory raised"
            )
            transport.close()
            return
        self._last_received = self._loop.time()
        self._idle_timer = self._loop.call_at(
            self._last_received + self._listener.idle_timeout, self._check_idle
        )
        log.debug("connection opened", extra={"listener": self._listener.name})

    def data_received(self, data: bytes) -> None:
        if self._on_chunk is None:
            return
        # One timer per connection, moved only when it fires: rescheduling it
        # on every chunk would cost a heap push per chunk on the ingest path.
        self._last_received = self._loop.time()
        try:
            self._on_chunk(data)
        except Exception:
            log_failure(self._limiter, self._listener.name, "a chunk callback raised")

    def eof_received(self) -> bool:
        self._finish()
        # Returning False closes our side too: the peer has nothing more to say
        # and we never write.
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._finish()
        if self._listener.connections.pop(self._transport, None) is None:
            # A refused connection: it was never counted as open.
            return
        if not self.closed.done():
            self.closed.set_result(None)
        log.debug("connection closed", extra={"listener": self._listener.name})

    def _check_idle(self) -> None:
        listener = self._listener
        due = self._last_received + listener.idle_timeout
        if self._loop.time() < due:
            self._idle_timer = self._loop.call_at(due, self._check_idle)
            return

        self._idle_timer = None
        if self._transport is None or self._transport.is_closing():
            return
        self._transport.close()
        listener.idle_connections += 1
        allowed, suppressed = self._limiter.allow("idle")
        if allowed:
            log.warning(
                "closed a connection idle for %gs",
                listener.idle_timeout,
                extra={
                    "listener": listener.name,
                    "count": listener.idle_connections,
                    "suppressed": suppressed,
                },
            )

    def drain(self) -> None:
        """Hand over what the peer has sent and the loop has not read yet.

        Reads at most what is queued on the socket now: a peer that goes on
        writing cannot hold the listener's close.
        """
        if self._on_chunk is None or self._transport is None:
            return
        sock = self._transport.get_extra_info("socket")
        if sock is None:
            return
        fd = sock.fileno()
        try:
            queued = _queued_bytes(fd)
            while queued > 0:
                data = os.read(fd, queued)
                if not data:
                    break
                queued -= len(data)
                self.data_received(data)
        except OSError:
            # The peer reset the connection, or nothing was left to read.
            pass

    def _refuse(self, transport: asyncio.BaseTransport) -> None:
        # Accepting and closing, rather than leaving the connection in the
        # backlog, tells the client at once and frees its descriptor.
        transport.close()
        listener = self._listener
        listener.refused_connections += 1
        allowed, suppressed = self._limiter.allow("refused")
        if allowed:
            log.warning(
                "refused a connection: %d open, the most allowed",
                len(listener.connections),
                extra={
                    "listener": listener.name,
                    "count": listener.refused_connections,
                    "suppressed": suppressed,
                },
            )

    def _finish(self) -> None:
        on_chunk, self._on_chunk = self._on_chunk, None
        if on_chunk is None:
            return
        try:
            on_chunk(b"")
        except Exception:
            log_failure(self._limiter, self._listener.name, "a chunk callback raised")


def _queued_bytes(fd: int) -> int:
    """Return how many bytes are queued for reading on the stream socket ``fd``."""
    answer = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    return struct.unpack("i", answer)[0]
