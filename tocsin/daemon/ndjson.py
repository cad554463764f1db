"""NDJSON samples from a stream connection.

One JSON object per line::

    {"metric": "err_ratio", "value": 0.02, "timestamp": 1750000000,
     "tags": {"model": "a"}, "type": "g", "rate": 1}

``timestamp`` (POSIX seconds) defaults to the arrival time, ``tags`` may be an
object or a list of ``key:value`` strings, ``type`` is one of ``g`` (the
default), ``c``, ``ms``, ``h``, ``d`` and ``rate`` lies in (0, 1]. Unknown
fields are ignored. A bad line is counted and skipped; the connection stays
open. JSON has no NaN or Infinity: a line that carries them as bare tokens, or
a number too large for a float, is counted as ``non_finite`` rather than as a
syntax error, so a sender with that bug can be told apart.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Literal

import msgspec

from tocsin.clock import Clock
from tocsin.daemon.dogstatsd import clean_tags
from tocsin.daemon.ingest import IngestSink, IngestStats, SeriesHandle
from tocsin.logs import RateLimiter

log = logging.getLogger(__name__)

_LARGEST = sys.float_info.max
_LOGGED_LINE = 200


class _Record(msgspec.Struct):
    metric: str
    value: float
    timestamp: float | None = None
    # Kept as raw JSON: the bytes of a series' tags key the handle cache, so
    # they are only decoded the first time a series is seen.
    tags: msgspec.Raw = msgspec.Raw(b"null")
    type: Literal["g", "c", "ms", "h", "d"] = "g"
    rate: float = 1.0


_RECORD = msgspec.json.Decoder(_Record)
_TAGS = msgspec.json.Decoder(dict[str, str] | list[str] | None)


class _Rejected(Exception):
    """Raised inside the decoding of a line to drop it for ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NdjsonDecoder:
    """Decode the NDJSON samples of one connection for ``sink``.

    Feed it the connection's chunks in order; a line split across chunks is
    held until its newline arrives. A line longer than ``max_line`` bytes is
    dropped and counted, and at most that much is ever held.

    :param max_sample_age: seconds a ``timestamp`` may lie in the past.
    :param max_sample_skew: seconds a ``timestamp`` may lie in the future.
    :param cache_size: series handles kept; the cache is emptied when full.
    :param listener: names the listener in log lines.
    """

    def __init__(
        self,
        sink: IngestSink,
        stats: IngestStats,
        clock: Clock,
        *,
        max_sample_age: float = 3600,
        max_sample_skew: float = 600,
        max_line: int = 65536,
        cache_size: int = 65536,
        listener: str = "ndjson",
    ) -> None:
        self._sink = sink
        self._stats = stats
        self._clock = clock
        self._max_age = max_sample_age
        self._max_skew = max_sample_skew
        self._max_line = max_line
        self._cache_size = max(1, cache_size)
        self._listener = listener
        self._limiter = RateLimiter(clock=clock.monotonic)
        self._pending = b""
        self._is_discarding = False
        self._handles: dict[tuple[str, str, bytes], SeriesHandle] = {}
        self._series: dict[tuple[str, str, tuple[str, ...]], SeriesHandle] = {}

    def feed(self, chunk: bytes) -> None:
        """Decode every line ``chunk`` completes; never raise.

        An empty ``chunk`` marks the end of the connection: a last line the
        sender did not end with a newline is decoded then.
        """
        if not chunk:
            self._finish()
            return
        if self._is_discarding:
            newline = chunk.find(b"\n")
            if newline < 0:
                return
            chunk = chunk[newline + 1 :]
            self._is_discarding = False

        data = self._pending + chunk if self._pending else chunk
        end = data.rfind(b"\n")
        if end < 0:
            self._hold(data)
            return

        self._hold(data[end + 1 :])
        self._decode_lines(data[:end].split(b"\n"))

    def _finish(self) -> None:
        pending, self._pending = self._pending, b""
        if pending and not self._is_discarding:
            self._decode_lines([pending])
        self._is_discarding = False

    def _hold(self, partial: bytes) -> None:
        if len(partial) <= self._max_line:
            self._pending = partial
            return

        self._pending = b""
        self._is_discarding = True
        self._stats.lines += 1
        self._drop("too_long", partial)

    def _decode_lines(self, lines: list[bytes]) -> None:
        now = self._clock.time()
        stats = self._stats
        samples = 0
        for line in lines:
            if line.isspace() or not line:
                continue

            stats.lines += 1
            try:
                self._decode(line, now)
                samples += 1
            except _Rejected as rejected:
                self._drop(rejected.reason, line)
            except Exception:
                self._consumer_failed()

        stats.samples += samples

    def _decode(self, line: bytes, now: float) -> None:
        """Hand the sample of one line to its series.

        :raises _Rejected: if the line is malformed, not finite or out of range.
        """
        if len(line) > self._max_line:
            raise _Rejected("too_long")
        try:
            record = _RECORD.decode(line)
        except msgspec.DecodeError as exc:
            raise _Rejected(_reason_for(line, exc)) from None
        if not record.metric:
            raise _Rejected("name")
        # msgspec refuses out-of-range numbers today; this keeps the promise
        # that nothing non-finite reaches a series if that ever changes.
        if not -_LARGEST <= record.value <= _LARGEST:
            raise _Rejected("non_finite")
        if not 0.0 < record.rate <= 1.0:
            raise _Rejected("rate")

        stamp = record.timestamp
        if stamp is None:
            stamp = now
        elif stamp < now - self._max_age:
            raise _Rejected("too_old")
        elif stamp > now + self._max_skew:
            raise _Rejected("too_new")

        key = (record.metric, record.type, bytes(record.tags))
        handle = self._handles.get(key)
        if handle is None:
            handle = self._resolve(record.metric, record.type, record.tags)
            if len(self._handles) >= self._cache_size:
                self._handles.clear()
            self._handles[key] = handle
        handle.add(record.value, record.rate, stamp)

    def _resolve(self, metric: str, kind: str, raw_tags: msgspec.Raw) -> SeriesHandle:
        """Return the handle of a series first seen under these tag bytes.

        :raises _Rejected: if the tags are neither an object of strings nor a
            list of strings.
        """
        try:
            tags = _TAGS.decode(raw_tags)
        except msgspec.DecodeError:
            raise _Rejected("tags") from None
        if tags is None:
            tags = ()
        elif isinstance(tags, dict):
            tags = [f"{key}:{value}" for key, value in tags.items()]
        series = (metric, kind, clean_tags(tags))
        handle = self._series.get(series)
        if handle is None:
            if len(self._series) >= self._cache_size:
                self._series.clear()
            handle = self._sink.resolve(*series)
            self._series[series] = handle

        return handle

    def _drop(self, reason: str, line: bytes) -> None:
        stats = self._stats
        if reason == "non_finite":
            stats.non_finite += 1
        elif reason == "too_old":
            stats.too_old += 1
        elif reason == "too_new":
            stats.too_new += 1
        else:
            stats.error(reason)

        # A flood of bad lines must not become a flood of log lines.
        allowed, suppressed = self._limiter.allow(reason)
        if allowed:
            log.warning(
                "dropped an NDJSON line (%s): %r",
                reason,
                line[:_LOGGED_LINE],
                extra={
                    "listener": self._listener,
                    "reason": reason,
                    "suppressed": suppressed,
                },
            )

    def _consumer_failed(self) -> None:
        self._stats.error("internal")
        allowed, suppressed = self._limiter.allow("internal")
        if allowed:
            log.exception(
                "ingesting a line failed; its samples are lost",
                extra={"listener": self._listener, "suppressed": suppressed},
            )


def _reason_for(line: bytes, exc: msgspec.DecodeError) -> str:
    """Return why msgspec refused ``line``: ``non_finite``, ``schema`` or ``json``.

    Python's own JSON reader takes the NaN and Infinity tokens and reads an
    overflowing number as infinity, which tells a non-finite value apart from
    any other fault.
    """
    try:
        loose = json.loads(line)
    except Exception:
        loose = None
    if isinstance(loose, dict):
        value = loose.get("value")
        if isinstance(value, float) and not -_LARGEST <= value <= _LARGEST:
            return "non_finite"
    if isinstance(exc, msgspec.ValidationError):
        return "schema"

    return "json"
