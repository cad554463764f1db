"""Load generators of the ingest benchmark, each run as a process of its own.

``bench/ingest.py`` starts them as ``python bench/_senders.py MODE ADDRESS
...``; a sender prints one JSON line describing what it sent, then exits. Every
payload is built before the first send, so a sender spends its time in system
calls rather than in formatting. Datagrams go out with ``sendmmsg`` in batches
(one system call per batch, through ctypes) where libc has it, otherwise with
one ``send`` per datagram. Sends block: over a Unix socket the kernel holds the
sender back when the receiver lags, so nothing is lost; over UDP nothing holds
it back, and what the receiver cannot keep up with is dropped by the kernel.

Modes:

* ``dgram PATH``: DogStatsD datagrams to a Unix datagram socket.
* ``udp HOST:PORT``: DogStatsD datagrams over UDP, at ``--rate`` datagrams/s.
* ``stream PATH``: NDJSON blocks to a Unix stream socket, sent with ``sendall``.

With ``--prime`` a sender sends every series once, gently, instead of a timed
run; with ``--marker TAG`` it ends with one marker sample (``bench.marker``
tagged ``run:TAG``) that the receiver recognises.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import random
import resource
import socket
import sys
import time

#: Distinct series: one per shard.
SERIES = 10_000
LINES_PER_DATAGRAM = 20
RECORDS_PER_BLOCK = 600
MARKER_METRIC = "bench.marker"
#: How a marker datagram starts; receivers test for it.
MARKER_PREFIX = MARKER_METRIC.encode() + b":"


def statsd_datagrams(cycles: int, seed: int = 7) -> list[bytes]:
    """Return datagrams that carry every series once per cycle, shuffled."""
    rng = random.Random(seed)
    datagrams = []
    for _ in range(cycles):
        shards = list(range(SERIES))
        rng.shuffle(shards)
        for start in range(0, SERIES, LINES_PER_DATAGRAM):
            lines = [
                b"mlmon.latency_ms:%.4f|g|#env:prod,model:fraud_v3,shard:%d"
                % (rng.uniform(0.05, 0.95), shard)
                for shard in shards[start : start + LINES_PER_DATAGRAM]
            ]
            datagrams.append(b"\n".join(lines))

    return datagrams


def statsd_marker(tag: str) -> bytes:
    return b"%s1|g|#run:%s" % (MARKER_PREFIX, tag.encode())


def ndjson_blocks(cycles: int, seed: int = 7) -> list[bytes]:
    """Return blocks of whole NDJSON lines carrying every series once per cycle.

    Records carry no ``timestamp``, so they are stamped on arrival, as the
    DogStatsD lines are: a stamp written when the blocks are built would age
    during a run and send a varying share of samples down the slower path of
    samples stamped before the window's newest bin.
    """
    rng = random.Random(seed)
    records = []
    for _ in range(cycles):
        shards = list(range(SERIES))
        rng.shuffle(shards)
        records.extend(
            b'{"metric":"mlmon.latency_ms","value":%.4f,'
            b'"tags":{"env":"prod","model":"fraud_v3","shard":"%d"}}\n'
            % (rng.uniform(0.05, 0.95), shard)
            for shard in shards
        )

    return [
        b"".join(records[start : start + RECORDS_PER_BLOCK])
        for start in range(0, len(records), RECORDS_PER_BLOCK)
    ]


def ndjson_marker(tag: str) -> bytes:
    record = {"metric": MARKER_METRIC, "value": 1, "tags": {"run": tag}}
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.POINTER(_IoVec)),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", _MsgHdr), ("len", ctypes.c_uint)]


def _libc_sendmmsg():
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    sendmmsg = getattr(libc, "sendmmsg", None)
    if sendmmsg is not None:
        sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
        sendmmsg.restype = ctypes.c_int
    return sendmmsg


class DatagramSender:
    """Send pre-built datagrams on a connected socket, ``batch`` at a time.

    :param plain: use one ``send`` per datagram even where ``sendmmsg`` exists.
    """

    def __init__(
        self, sock: socket.socket, datagrams: list[bytes], batch: int, plain: bool
    ) -> None:
        self.sock = sock
        self.batch = batch
        usable = len(datagrams) - len(datagrams) % batch
        self._datagrams = datagrams[:usable]
        self._sendmmsg = None if plain else _libc_sendmmsg()
        self.method = "send" if self._sendmmsg is None else f"sendmmsg x{batch}"
        self._groups = [
            self._datagrams[start : start + batch] for start in range(0, usable, batch)
        ]
        # The headers point into the bytes objects, which stay referenced by
        # self._datagrams for as long as the sender lives.
        self._vectors = [self._headers(group) for group in self._groups]
        self._next = 0

    @staticmethod
    def _headers(group: list[bytes]):
        iovs = (_IoVec * len(group))()
        headers = (_MMsgHdr * len(group))()
        for index, data in enumerate(group):
            iovs[index].base = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p)
            iovs[index].len = len(data)
            headers[index].hdr.iov = ctypes.pointer(iovs[index])
            headers[index].hdr.iovlen = 1
        return iovs, headers

    def send_batch(self) -> None:
        """Send the next ``batch`` datagrams of the cycle; block while needed."""
        index = self._next
        self._next = (index + 1) % len(self._groups)
        if self._sendmmsg is None:
            send = self.sock.send
            for data in self._groups[index]:
                send(data)
            return

        _, headers = self._vectors[index]
        fd = self.sock.fileno()
        size = ctypes.sizeof(_MMsgHdr)
        done = 0
        while done < self.batch:
            sent = self._sendmmsg(
                fd, ctypes.addressof(headers) + done * size, self.batch - done, 0
            )
            if sent < 0:
                code = ctypes.get_errno()
                if code == 4:  # EINTR: nothing was sent, try again
                    continue
                raise OSError(code, os.strerror(code))
            done += sent


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _timed_datagrams(sender: DatagramSender, seconds: float, rate: float) -> dict:
    """Send batches for ``seconds``; at most ``rate`` datagrams/s if rate > 0."""
    batch = sender.batch
    sent = 0
    cpu = _cpu_seconds()
    first = now = time.monotonic()
    deadline = first + seconds
    while now < deadline:
        if rate > 0:
            ahead = sent / rate - (now - first)
            if ahead > 0:
                time.sleep(min(ahead, 0.001))
                now = time.monotonic()
                continue
        sender.send_batch()
        sent += batch
        now = time.monotonic()

    return {
        "datagrams": sent,
        "lines": sent * LINES_PER_DATAGRAM,
        "first": first,
        "last": now,
        "cpu": _cpu_seconds() - cpu,
    }


def _prime_datagrams(sender: DatagramSender, datagrams: int, pause: float) -> dict:
    """Send ``datagrams`` (one cycle of series), pausing between batches."""
    sent = 0
    first = time.monotonic()
    while sent < datagrams:
        sender.send_batch()
        sent += sender.batch
        if pause:
            time.sleep(pause)

    return {
        "datagrams": sent,
        "lines": sent * LINES_PER_DATAGRAM,
        "first": first,
        "last": time.monotonic(),
        "cpu": 0.0,
    }


def run_datagrams(args: argparse.Namespace) -> dict:
    if args.mode == "udp":
        host, _, port = args.address.rpartition(":")
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect((host, int(port)))
        batch = 16
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.connect(args.address)
        batch = 32
    cycles = 1 if args.prime else 4
    sender = DatagramSender(sock, statsd_datagrams(cycles), batch, args.plain)
    if args.prime:
        # A gentle pace keeps an idle UDP receiver's buffer from overflowing.
        pause = 0.004 if args.mode == "udp" else 0.0
        result = _prime_datagrams(sender, SERIES // LINES_PER_DATAGRAM, pause)
    else:
        result = _timed_datagrams(sender, args.seconds, args.rate)
    if args.marker:
        sock.send(statsd_marker(args.marker))
    sock.close()
    result["method"] = sender.method

    return result


def run_stream(args: argparse.Namespace) -> dict:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(args.address)
    blocks = ndjson_blocks(1 if args.prime else 2)
    per_block = [block.count(b"\n") for block in blocks]
    sent_blocks = records = 0
    cpu = _cpu_seconds()
    first = now = time.monotonic()
    deadline = first + args.seconds
    # A prime sends every block once; a timed run cycles them until the deadline.
    while (sent_blocks < len(blocks)) if args.prime else (now < deadline):
        index = sent_blocks % len(blocks)
        sock.sendall(blocks[index])
        sent_blocks += 1
        records += per_block[index]
        now = time.monotonic()
    if args.marker:
        sock.sendall(ndjson_marker(args.marker))
    last = time.monotonic()
    sock.shutdown(socket.SHUT_WR)
    sock.close()

    return {
        "blocks": sent_blocks,
        "lines": records,
        "bytes": sum(len(blocks[i % len(blocks)]) for i in range(sent_blocks)),
        "first": first,
        "last": last,
        "cpu": _cpu_seconds() - cpu,
        "method": f"sendall of {RECORDS_PER_BLOCK}-record blocks",
    }


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__)
    options.add_argument("mode", choices=("dgram", "udp", "stream"))
    options.add_argument("address")
    options.add_argument("--seconds", type=float, default=3.0)
    options.add_argument("--rate", type=float, default=0.0, help="datagrams/s")
    options.add_argument("--prime", action="store_true")
    options.add_argument("--marker", default="")
    options.add_argument("--plain", action="store_true", help="never use sendmmsg")
    args = options.parse_args()
    result = run_stream(args) if args.mode == "stream" else run_datagrams(args)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
