"""Bare uvloop receivers: the baselines of the ingest benchmark.

Each does the least a receiver can do on the same transport as Tocsin, on
uvloop, in a process of its own: the datagram receiver splits each datagram on
newlines and counts the non-empty lines; the stream receiver counts newlines.
They print JSON lines on stdout: one when ready, one per marker datagram
(``dgram``) or per connection that ends (``stream``), with the counts so far.

Run by ``bench/ingest.py`` as ``python bench/_receivers.py MODE PATH``; stop it
with SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import sys

import uvloop

#: Asked for on the datagram socket, as Tocsin's ``ingest.receive_buffer``.
RECEIVE_BUFFER = 4 * 1024 * 1024
MARKER_PREFIX = b"bench.marker:"


def report(**fields) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


class LineCounter(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.datagrams = 0
        self.lines = 0

    def datagram_received(self, data: bytes, addr) -> None:
        if data.startswith(MARKER_PREFIX):
            report(marker=data.decode(), datagrams=self.datagrams, lines=self.lines)
            return

        count = 0
        for line in data.split(b"\n"):
            if line:
                count += 1
        self.lines += count
        self.datagrams += 1


class NewlineCounter(asyncio.Protocol):
    def connection_made(self, transport) -> None:
        self.newlines = 0

    def data_received(self, data: bytes) -> None:
        self.newlines += data.count(b"\n")

    def eof_received(self) -> bool:
        report(eof=True, newlines=self.newlines)
        return False


async def serve(mode: str, path: str) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if mode == "dgram":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        obtained = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        transport, _ = await loop.create_datagram_endpoint(LineCounter, sock=sock)
        report(ready=True, receive_buffer=obtained)
        await stop.wait()
        transport.close()
    else:
        server = await loop.create_unix_server(NewlineCounter, path=path)
        report(ready=True)
        await stop.wait()
        server.close()


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__)
    options.add_argument("mode", choices=("dgram", "stream"))
    options.add_argument("path")
    args = options.parse_args()
    uvloop.run(serve(args.mode, args.path))


if __name__ == "__main__":
    main()
