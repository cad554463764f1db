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
import errno
import logging
import os
import socket
import stat
import sys
from pathlib import Path

from tocsin.daemon.datagrams import (
    BatchCallback,
    DatagramCallback,
    DatagramListener,
    DatagramReader,
)
from tocsin.daemon.sockets import SOCKET_MODE, Listener, OwnedPath
from tocsin.daemon.streams import (
    IDLE_TIMEOUT,
    MAX_CONNECTIONS,
    ConnectionFactory,
    StreamListener,
    StreamProtocol,
)

log = logging.getLogger(__name__)


class Binding:
    """A listener's socket, bound but not yet listened on.

    Datagrams that arrive meanwhile wait in the kernel's queue; a stream
    connection is refused until the listener opens. An ``open_*`` function
    takes the socket over (``sock=``); until then :meth:`close` releases it.

    :ivar name: ``udp``, ``unix_dgram`` or ``unix_stream``.
    :ivar address: where the socket is bound, printable.
    """

    def __init__(
        self, name: str, sock: socket.socket, owned_path: OwnedPath | None
    ) -> None:
        self.name = name
        self.address = _printable(sock)
        self._sock: socket.socket | None = sock
        self._owned_path = owned_path

    def take(self) -> tuple[socket.socket, OwnedPath | None]:
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


def bind(name: str, address: str, *, mode: int = SOCKET_MODE) -> Binding:
    """Bind the socket of listener ``name`` at ``address``, without listening.

    :param name: ``udp`` (``address`` is ``host:port``), ``unix_dgram`` or
        ``unix_stream`` (``address`` is a path, handled as by
        :func:`open_unix_dgram`).
    :param mode: the permissions of a Unix socket's file.
    :raises ValueError: if a UDP address is not ``host:port``.
    :raises OSError: if the address cannot be bound.
    """
    if name == "udp":
        return Binding(name, _bind_udp(address), None)
    kind = socket.SOCK_DGRAM if name == "unix_dgram" else socket.SOCK_STREAM
    sock = socket.socket(socket.AF_UNIX, kind)
    try:
        owned_path = _bind_unix(sock, address, mode)
    except BaseException:
        sock.close()
        raise

    return Binding(name, sock, owned_path)


def _acquire(
    name: str, address: str, given: socket.socket | Binding | None
) -> tuple[socket.socket, OwnedPath | None]:
    """Return the socket to listen on, and the file to remove at close.

    A socket handed over as it is was bound by someone else, who owns its file.
    """
    if given is None:
        given = bind(name, address)
    if isinstance(given, Binding):
        return given.take()

    return given, None


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
    listener = StreamListener(
        "unix_stream",
        _printable(sock),
        max(1, max_connections),
        idle_timeout,
        owned_path,
    )
    loop = asyncio.get_running_loop()
    try:
        listener.server = await loop.create_unix_server(
            lambda: StreamProtocol(listener, on_connection), sock=sock
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
    owned_path: OwnedPath | None,
) -> Listener:
    sock.setblocking(False)
    obtained = _set_receive_buffer(sock, receive_buffer, name)
    address = _printable(sock)
    try:
        reader = DatagramReader(name, sock, on_datagram, on_batch)
    except BaseException:
        sock.close()
        if owned_path is not None:
            owned_path.remove()
        raise
    listener = DatagramListener(name, address, reader, owned_path)
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


def _bind_unix(sock: socket.socket, path: str, mode: int = SOCKET_MODE) -> OwnedPath:
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
    os.chmod(path, mode)

    return OwnedPath(path)


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
