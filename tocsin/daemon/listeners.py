"""The sockets samples arrive on.

DogStatsD comes over UDP and over a Unix datagram socket, one callback call per
datagram; every datagram waiting on the socket is read in one wake-up of the
loop, and an optional second callback runs after each such batch. NDJSON
comes over a Unix stream socket; each connection gets a callback of its own,
called with every chunk the connection delivers. A stream listener holds at
most ``max_connections`` connections: one more is accepted and closed at once,
counted and warned about; a connection that sends nothing for ``idle_timeout``
is closed, counted and warned about too, so idle clients cannot take every
connection or file descriptor for good.
Callbacks run on the event loop and must not block.

Each ``open_*`` function binds its socket itself, or takes one already bound
(``sock=``): a :class:`Binding` from :func:`bind`, or a socket such as systemd
socket activation hands over. It returns a :class:`Listener` to close it with.
Binding first lets the daemon find a port in use before it creates any state.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import socket
import stat
import struct
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

from tocsin.logs import RateLimiter

log = logging.getLogger(__name__)

#: Called with the payload of every datagram received.
DatagramCallback = Callable[[bytes], None]

#: Called after each batch of datagrams read in one wake-up.
BatchCallback = Callable[[], None]

#: Most datagrams read in one wake-up, so other work on the loop (timers,
#: deliveries) still runs promptly under a flood.
_BATCH = 64

#: Largest datagram accepted; DogStatsD clients send at most 8 KiB. A Unix
#: datagram may be larger: one byte more is asked for on every read, so a
#: longer one, which the kernel cuts to the size asked for, shows itself and is
#: dropped whole rather than parsed with its last line cut.
_MAX_DATAGRAM = 65536

#: Longest a listener spends at close on what the kernel already holds for it,
#: by default.
DRAIN_TIME = 1.0

#: Socket files the listeners create: others may connect and send, not read.
SOCKET_MODE = 0o722


#: Called with every chunk a stream connection delivers, in order, and once
#: with ``b""`` when the connection ends (as a read returns at end of file).
ChunkCallback = Callable[[bytes], None]

#: Called once per accepted connection for the callback of its chunks.
ConnectionFactory = Callable[[], ChunkCallback]

#: Most connections a stream listener holds open at once, by default.
MAX_CONNECTIONS = 1024

#: Seconds a stream connection may send nothing before it is closed, by default.
IDLE_TIMEOUT = 300.0


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
        self, name: str, address: str, owned_path: _OwnedPath | None = None
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


class Binding:
    """A listener's socket, bound but not yet listened on.

    Datagrams that arrive meanwhile wait in the kernel's queue; a stream
    connection is refused until the listener opens. An ``open_*`` function
    takes the socket over (``sock=``); until then :meth:`close` releases it.

    :ivar name: ``udp``, ``unix_dgram`` or ``unix_stream``.
    :ivar address: where the socket is bound, printable.
    """

    def __init__(
        self, name: str, sock: socket.socket, owned_path: _OwnedPath | None
    ) -> None:
        self.name = name
        self.address = _printable(sock)
        self._sock: socket.socket | None = sock
        self._owned_path = owned_path

    def take(self) -> tuple[socket.socket, _OwnedPath | None]:
        """Hand the socket, and the file to remove with it, to a listener.

        :raises RuntimeError: if the socket was taken or closed already.
        """
        if self._sock is None:
            raise RuntimeError(f"the {self.name} socket was taken or closed")
        sock, self._sock = self._sock, None

        return sock, self._owned_path

    def close(self) -> None:
        """Close the socket and remove its file, unless a listener took them;
        safe to call twice."""
        if self._sock is None:
            return

        self._sock.close()
        self._sock = None
        if self._owned_path is not None:
            self._owned_path.remove()


def bind(name: str, address: str) -> Binding:
    """Bind the socket of listener ``name`` at ``address``, without listening.

    :param name: ``udp`` (``address`` is ``host:port``), ``unix_dgram`` or
        ``unix_stream`` (``address`` is a path, handled as by
        :func:`open_unix_dgram`).
    :raises ValueError: if a UDP address is not ``host:port``.
    :raises OSError: if the address cannot be bound.
    """
    if name == "udp":
        return Binding(name, _bind_udp(address), None)
    kind = socket.SOCK_DGRAM if name == "unix_dgram" else socket.SOCK_STREAM
    sock = socket.socket(socket.AF_UNIX, kind)
    try:
        owned_path = _bind_unix(sock, address)
    except BaseException:
        sock.close()
        raise

    return Binding(name, sock, owned_path)


def _acquire(
    name: str, address: str, given: socket.socket | Binding | None
) -> tuple[socket.socket, _OwnedPath | None]:
    """Return the socket to listen on, and the file to remove at close.

    A socket handed over as it is was bound by someone else, who owns its file.
    """
    if given is None:
        given = bind(name, address)
    if isinstance(given, Binding):
        return given.take()

    return given, None


class _DatagramListener(Listener):
    """A datagram listener.

    :ivar too_long_datagrams: datagrams longer than 64 KiB, dropped whole.
    """

    def __init__(
        self,
        name: str,
        address: str,
        reader: _DatagramReader,
        owned_path: _OwnedPath | None = None,
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


class _StreamListener(Listener):
    def __init__(
        self,
        name: str,
        address: str,
        max_connections: int,
        idle_timeout: float,
        owned_path: _OwnedPath | None = None,
    ) -> None:
        super().__init__(name, address, owned_path)
        self.server: asyncio.AbstractServer | None = None
        self.connections: dict[asyncio.BaseTransport, _StreamProtocol] = {}
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


class _OwnedPath:
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


class _DatagramReader:
    """Reads every datagram waiting on a non-blocking socket when it turns
    readable, up to :data:`_BATCH`, then calls the batch callback once.

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
        #: Datagrams dropped for being longer than :data:`_MAX_DATAGRAM`.
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
        for _ in range(_BATCH):
            try:
                batch.append(receive(_MAX_DATAGRAM + 1))
            except (BlockingIOError, InterruptedError):
                break
            except OSError as error:
                self._socket_error(error)
                break

        on_datagram = self._on_datagram
        for data in batch:
            if len(data) > _MAX_DATAGRAM:
                self._drop_too_long()
                continue
            try:
                on_datagram(data)
            except Exception:
                _log_failure(self._limiter, self._name, "a datagram callback raised")
        if self._on_batch is not None:
            try:
                self._on_batch()
            except Exception:
                _log_failure(self._limiter, self._name, "a batch callback raised")

        return len(batch)

    def _drop_too_long(self) -> None:
        # Only the kernel saw the end of the datagram: what was read ends in
        # a line cut anywhere, which would parse as another series or value.
        self.too_long += 1
        allowed, suppressed = self._limiter.allow("too_long")
        if allowed:
            log.warning(
                "dropped a datagram longer than %d bytes",
                _MAX_DATAGRAM,
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
        while self._read() == _BATCH:
            if time.monotonic() >= deadline:
                log.warning(
                    "stopped reading queued datagrams: out of time",
                    extra={"listener": self._name},
                )
                break
        self._sock.close()
        self.closed.set_result(None)


class _StreamProtocol(asyncio.Protocol):
    def __init__(self, listener: _StreamListener, factory: ConnectionFactory) -> None:
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
            _log_failure(
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
            _log_failure(self._limiter, self._listener.name, "a chunk callback raised")

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
            _log_failure(self._limiter, self._listener.name, "a chunk callback raised")


def _queued_bytes(fd: int) -> int:
    """Return how many bytes are queued for reading on the stream socket ``fd``."""
    answer = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    return struct.unpack("i", answer)[0]


def _log_failure(limiter: RateLimiter, name: str, message: str) -> None:
    allowed, suppressed = limiter.allow("callback")
    if allowed:
        log.exception(message, extra={"listener": name, "suppressed": suppressed})


async def open_udp(
    address: str,
    on_datagram: DatagramCallback,
    *,
    receive_buffer: int,
    sock: socket.socket | Binding | None = None,
    on_batch: BatchCallback | None = None,
) -> Listener:
    """Listen for DogStatsD datagrams on UDP ``host:port`` (``[::1]:8125``).

    :param sock: a UDP socket bound already (a :class:`Binding` or a socket),
        to use instead of binding ``address``.
    :param on_batch: called after each batch of datagrams read together.
    :raises ValueError: if ``address`` is not ``host:port``.
    :raises OSError: if the address cannot be bound.
    """
    sock, owned_path = _acquire("udp", address, sock)
    return await _open_datagram(
        "udp", sock, on_datagram, on_batch, receive_buffer, owned_path
    )


async def open_unix_dgram(
    path: str,
    on_datagram: DatagramCallback,
    *,
    receive_buffer: int,
    sock: socket.socket | Binding | None = None,
    on_batch: BatchCallback | None = None,
) -> Listener:
    """Listen for DogStatsD datagrams on a Unix datagram socket at ``path``.

    The parent directory is created; a stale socket file left by a dead
    process is replaced. The socket file is made writable by everyone and
    readable by the owner only.

    :param sock: a socket bound already, to use instead of binding ``path``:
        a :class:`Binding`, whose file is removed at close, or a socket whose
        file is left alone.
    :param on_batch: called after each batch of datagrams read together.
    :raises OSError: if ``path`` exists and is not a socket, another process
        is listening on it, or it cannot be bound.
    """
    sock, owned_path = _acquire("unix_dgram", path, sock)
    return await _open_datagram(
        "unix_dgram", sock, on_datagram, on_batch, receive_buffer, owned_path
    )


async def open_unix_stream(
    path: str,
    on_connection: ConnectionFactory,
    *,
    sock: socket.socket | Binding | None = None,
    max_connections: int = MAX_CONNECTIONS,
    idle_timeout: float = IDLE_TIMEOUT,
) -> Listener:
    """Accept NDJSON connections on a Unix stream socket at ``path``.

    ``on_connection()`` is called for each accepted connection; the callback it
    returns is called with every chunk in order, then once with ``b""`` when
    the connection ends. The socket file is handled as by :func:`open_unix_dgram`.

    :param sock: a stream socket bound already, to use instead of binding
        ``path``, as for :func:`open_unix_dgram`.
    :param max_connections: most connections open at once; one more is closed
        on arrival and counted in ``refused_connections``, without a call to
        ``on_connection``.
    :param idle_timeout: seconds a connection may send nothing; then it is
        closed, ended as if the client had closed it, and counted in
        ``idle_connections``.
    :raises OSError: if the socket cannot be bound, as for
        :func:`open_unix_dgram`.
    """
    sock, owned_path = _acquire("unix_stream", path, sock)
    sock.setblocking(False)
    listener = _StreamListener(
        "unix_stream",
        _printable(sock),
        max(1, max_connections),
        idle_timeout,
        owned_path,
    )
    loop = asyncio.get_running_loop()
    try:
        listener.server = await loop.create_unix_server(
            lambda: _StreamProtocol(listener, on_connection), sock=sock
        )
    except BaseException:
        sock.close()
        if owned_path is not None:
            owned_path.remove()
        raise
    log.info(
        "listening",
        extra={"listener": listener.name, "address": listener.address},
    )

    return listener


async def _open_datagram(
    name: str,
    sock: socket.socket,
    on_datagram: DatagramCallback,
    on_batch: BatchCallback | None,
    receive_buffer: int,
    owned_path: _OwnedPath | None,
) -> Listener:
    sock.setblocking(False)
    obtained = _set_receive_buffer(sock, receive_buffer, name)
    address = _printable(sock)
    try:
        reader = _DatagramReader(name, sock, on_datagram, on_batch)
    except BaseException:
        sock.close()
        if owned_path is not None:
            owned_path.remove()
        raise
    listener = _DatagramListener(name, address, reader, owned_path)
    listener.receive_buffer = obtained
    log.info(
        "listening",
        extra={
            "listener": name,
            "address": address,
            "detail": f"receive buffer {obtained} bytes",
        },
    )

    return listener


def _bind_udp(address: str) -> socket.socket:
    host, colon, port = address.rpartition(":")
    if not colon or not port.isdigit():
        raise ValueError(f"expected host:port, got {address!r}")
    host = host.removeprefix("[").removesuffix("]")
    family, kind, proto, _, sockaddr = socket.getaddrinfo(
        host or None, int(port), type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.bind(sockaddr)
    except BaseException:
        sock.close()
        raise

    return sock


def _bind_unix(sock: socket.socket, path: str) -> _OwnedPath:
    """Bind ``sock`` to ``path``, replacing a stale socket file only."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(status.st_mode):
            raise FileExistsError(errno.EEXIST, "exists and is not a socket", path)
        if _is_served(path, sock.type):
            raise OSError(
                errno.EADDRINUSE, "another process listens on this socket", path
            )
        os.unlink(path)

    sock.bind(path)
    os.chmod(path, SOCKET_MODE)

    return _OwnedPath(path)


def _is_served(path: str, kind: int) -> bool:
    """Tell whether a live socket answers at ``path``, as opposed to a stale file.

    Only a refused connection proves the file stale: a live socket of the other
    type answers with EPROTOTYPE, and removing it would cut off its senders.
    """
    probe = socket.socket(socket.AF_UNIX, kind)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError:
        return True
    finally:
        probe.close()

    return True


def _set_receive_buffer(sock: socket.socket, size: int, name: str) -> int:
    """Ask for a ``size``-byte receive buffer; return what the kernel granted."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    except OSError as exc:
        log.warning(
            "cannot set the receive buffer: %s",
            exc,
            extra={"listener": name},
        )
    obtained = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    # Linux reports twice what it granted: the rest is its bookkeeping.
    granted = obtained // 2 if sys.platform == "linux" else obtained
    if granted < size:
        # Linux caps the request at net.core.rmem_max; bursts beyond the
        # buffer are lost in the kernel, which the operator should know.
        log.warning(
            "receive buffer is %d bytes, %d asked for; raise net.core.rmem_max",
            granted,
            size,
            extra={"listener": name},
        )

    return obtained


def _printable(sock: socket.socket) -> str:
    """Return where ``sock`` is bound as ``host:port``, ``[v6]:port`` or a path."""
    name = sock.getsockname()
    if isinstance(name, tuple):
        host, port = name[0], name[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(name, bytes):
        name = name.decode(errors="replace")
    # An abstract socket's name starts with a NUL byte, written @ by convention.
    return "@" + name[1:] if name.startswith("\0") else name
