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

The bounds are DogStatsD's: a line longer than 8 KiB is refused as
``too_long``, one with more than 256 tags as ``too_many_tags``, and JSON nested
deeper than the decoder follows as ``json``. The decoders of one listener may
share their handle cache and their warning limiter, so a thousand connections
cost one cache and log one warning per reason.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Literal

import msgspec

from tocsin.clock import Clock
from tocsin.daemon.dogstatsd import (
    MAX_LINE,
    MAX_TAGS,
    BoundedCache,
    clean_tags,
    series_cost,
)
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
_RECORDS = msgspec.json.Decoder(list[_Record])
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

    Handles are cached under the bytes of a line's tags as sent, and under the
    series those tags name, so each spelling of a series costs one entry more.

    :param max_sample_age: seconds a ``timestamp`` may lie in the past.
    :param max_sample_skew: seconds a ``timestamp`` may lie in the future.
    :param max_line: longest line read, in bytes.
    :param max_tags: most tags a line may carry.
    :param listener: names the listener in log lines.
    :param limiter: limits the warnings about bad lines; share one among the
        decoders of a listener so their warnings are limited together.
    :param cache: keeps series handles; share one among the decoders of a
        listener (they must feed the same ``sink``). Each decoder makes its own
        when none is given.
    """

    def __init__(
        self,
        sink: IngestSink,
        stats: IngestStats,
        clock: Clock,
        *,
        max_sample_age: float = 3600,
        max_sample_skew: float = 600,
        max_line: int = MAX_LINE,
        max_tags: int = MAX_TAGS,
        listener: str = "ndjson",
        limiter: RateLimiter | None = None,
        cache: BoundedCache | None = None,
    ) -> None:
        self._sink = sink
        self._stats = stats
        self._clock = clock
        self._max_age = max_sample_age
        self._max_skew = max_sample_skew
        self._max_line = max_line
        self._max_tags = max_tags
        self._listener = listener
        self._limiter = limiter or RateLimiter(clock=clock.monotonic)
        # (metric, type, tag bytes as sent) and (metric, type, tags) -> handle;
        # the two kinds of key never compare equal, so they share one cache.
        self._cache = cache if cache is not None else BoundedCache()
        self._pending = b""
        self._is_discarding = False

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
        self._decode_block(data[:end])

    def _finish(self) -> None:
        pending, self._pending = self._pending, b""
        if pending and not self._is_discarding:
            self._decode_block(pending)
        self._is_discarding = False

    def _hold(self, partial: bytes) -> None:
        if len(partial) <= self._max_line:
            self._pending = partial
            return

        self._pending = b""
        self._is_discarding = True
        self._stats.lines += 1
        self._drop("too_long", partial)

    def _decode_block(self, block: bytes) -> None:
        """Decode the complete lines of ``block`` (newline-separated)."""
        now = self._clock.time()
        lines = block.split(b"\n")
        records: list[_Record | None] | None = self._decode_together(block, lines)
        if records is None:
            lines = [line for line in lines if line and not line.isspace()]
            records = [None] * len(lines)

        # Each line is accepted or dropped alone; a line without a record yet
        # is decoded here, so its fault is counted and logged with it.
        stats = self._stats
        stats.lines += len(lines)
        samples = 0
        for line, record in zip(lines, records, strict=True):
            try:
                self._accept(self._parse(line) if record is None else record, now)
                samples += 1
            except _Rejected as rejected:
                self._drop(rejected.reason, line)
            except Exception:
                self._consumer_failed()

        stats.samples += samples

    def _decode_together(
        self, block: bytes, lines: list[bytes]
    ) -> list[_Record] | None:
        """Decode every line of ``block`` in one call, as one JSON array.

        Returns ``None`` unless the array proves to hold exactly one record
        per line; the lines are then decoded one by one. The lines are joined
        by ``,`` and a newline, and only a block without brackets whose every
        line starts with ``{`` is tried. A raw newline is not valid inside a
        JSON string, so no value can span two lines; with every line opening
        an object, each joining comma can only separate two elements of the
        array, never two members of one object; without brackets no comma
        hides in a nested list. So the array holds one element per line at
        most, and a line of two records makes one element too many.
        """
        if (
            len(lines) < 2
            or not block.startswith(b"{")
            or block.count(b"\n{") != len(lines) - 1
            or b"[" in block
            or b"]" in block
            or len(max(lines, key=len)) > self._max_line
        ):
            return None
        try:
            records = _RECORDS.decode(b"[" + block.replace(b"\n", b",\n") + b"]")
        except (msgspec.DecodeError, RecursionError):
            return None

        return records if len(records) == len(lines) else None

    def _parse(self, line: bytes) -> _Record:
        """Decode the record of one line.

        :raises _Rejected: if the line is too long or not a record.
        """
        if len(line) > self._max_line:
            raise _Rejected("too_long")
        try:
            return _RECORD.decode(line)
        except msgspec.DecodeError as exc:
            raise _Rejected(_reason_for(line, exc)) from None
        except RecursionError:
            # msgspec follows nesting as deep as Python's recursion limit and
            # no deeper, even through values it skips; such a line is simply
            # not JSON Tocsin reads.
            raise _Rejected("json") from None

    def _accept(self, record: _Record, now: float) -> None:
        """Hand the sample of one record to its series.

        :raises _Rejected: if the record is not finite or out of range.
        """
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

        raw_tags = bytes(record.tags)
        key = (record.metric, record.type, raw_tags)
        handle = self._cache.entries.get(key)
        if handle is None:
            handle = self._resolve(record.metric, record.type, raw_tags)
            # The tags are kept as bytes here: one byte each.
            cost = series_cost(
                0, len(record.metric) + len(raw_tags), record.metric.isascii()
            )
            self._cache.put(key, handle, cost)
        handle.add(record.value, record.rate, stamp)

    def _resolve(self, metric: str, kind: str, raw_tags: bytes) -> SeriesHandle:
        """Return the handle of a series first seen under these tag bytes.

        :raises _Rejected: if the tags are neither an object of strings nor a
            list of strings, or are too many.
        """
        try:
            tags = _TAGS.decode(raw_tags)
        except (msgspec.DecodeError, RecursionError):
            raise _Rejected("tags") from None
        if tags is None:
            tags = ()
        elif isinstance(tags, dict):
            tags = [f"{key}:{value}" for key, value in tags.items()]
        cleaned = clean_tags(tags)
        if len(cleaned) > self._max_tags:
            raise _Rejected("too_many_tags")
        series = (metric, kind, cleaned)
        handle = self._cache.entries.get(series)
        if handle is None:
            handle = self._sink.resolve(*series)
            # Each character of a tag comes from at least one byte of its JSON;
            # only a \u escape can make it wider than that byte.
            is_ascii = (
                metric.isascii() and raw_tags.isascii() and b"\\u" not in raw_tags
            )
            cost = series_cost(len(cleaned), len(metric) + len(raw_tags), is_ascii)
            self._cache.put(series, handle, cost)

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
