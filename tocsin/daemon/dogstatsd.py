"""DogStatsD datagrams to samples.

A datagram holds newline-separated lines of three kinds: metrics
(``name:value[:value...]|type[|@rate][|#tags][|T<seconds>]...``), events
(``_e{...}``) and service checks (``_sc|...``). Metrics become samples handed to
an :class:`~tocsin.daemon.ingest.IngestSink`; events and service checks are
checked and counted, nothing more. A bad line is counted, logged (rate-limited)
and skipped; the rest of its datagram is still read.

Decided on purpose rather than left to ``float()``:

* a value is an optional sign, digits with an optional fraction (or a bare
  fraction), and an optional exponent, in ASCII. ``nan``, ``inf``, ``1_000``,
  hex and padding spaces are parse errors; ``1e999`` is well formed but not
  finite, so it is refused and counted apart (``non_finite``);
* ``+5`` and ``-1`` are absolute values: gauges have no deltas;
* a metric name is any non-empty valid UTF-8 text without ``:``, ``|`` or a
  newline, kept exactly as sent (exporters adapt names to their destination);
* a tag ``key:`` is the bare tag ``key``; empty tag entries are dropped;
* ``|T`` is checked on every line but only honoured for counts and gauges;
* a line longer than 8 KiB, or with more than 256 tags, is refused
  (``too_long``, ``too_many_tags``): Datadog's clients and Agent stay within
  8 KiB, and the bound keeps what one series costs Tocsin small.

Memory is bounded in bytes, not only in entries: the parser's caches are
emptied when their estimated size would pass ``cache_bytes``, however long the
lines that fill them.
"""

from __future__ import annotations

import logging
import re
import sys

from tocsin.clock import Clock
from tocsin.daemon.ingest import KINDS, IngestSink, IngestStats, SeriesHandle
from tocsin.logs import RateLimiter

log = logging.getLogger(__name__)

_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_LARGEST = sys.float_info.max
_NAN = float("nan")
_UNDERSCORE = ord("_")
# A value starts with a sign, a dot or a digit and ends with a dot or a digit;
# every byte that float() strips as padding sorts below these.
_LOWEST_FIRST = ord("+")
_LOWEST_LAST = ord(".")
_METRIC_KINDS = frozenset(KINDS)
_STAMPED_KINDS = frozenset(("c", "g"))
_CHECK_STATUSES = frozenset(("0", "1", "2", "3"))
_EVENT_HEADER = re.compile(rb"_e\{([0-9]{1,9}),([0-9]{1,9})\}:")
_LOGGED_LINE = 200

#: Bytes a cached line costs beyond the bytes of its key: the key's header, the
#: dictionary slot, the entry tuple and a bound method (CPython 3.11).
_LINE_OVERHEAD = 192
#: Bytes a cached series costs beyond its characters: the dictionary slot, the
#: key tuple, the name's header and the handle the sink made for it.
_SERIES_OVERHEAD = 256
#: Bytes each tag of a cached series costs beyond its characters: a string
#: header and a slot in the tags tuple.
_TAG_OVERHEAD = 64

#: Longest line read, in bytes; longer ones are refused as ``too_long``.
MAX_LINE = 8192
#: Most tags a line may carry; more are refused as ``too_many_tags``.
MAX_TAGS = 256
#: Default bound of a parser's caches, in estimated bytes.
CACHE_BYTES = 64 * 1024 * 1024


class _Rejected(Exception):
    """Raised inside the full parse of a line to drop it for ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BoundedCache:
    """A dictionary emptied whenever it would pass a count or a size.

    Readers look keys up in :attr:`entries` directly, so a hit stays one
    dictionary lookup; writers go through :meth:`put` with what the entry costs.
    Emptying the whole cache rather than evicting entries one by one keeps
    ``put`` constant-time; the entries still wanted come back on their next use.

    :param max_entries: most entries held.
    :param max_bytes: most bytes held, as the sum of the costs given to ``put``.
    """

    __slots__ = ("entries", "max_entries", "max_bytes", "size")

    def __init__(self, max_entries: int = 65536, max_bytes: int = CACHE_BYTES):
        self.entries: dict = {}
        self.max_entries = max(1, max_entries)
        self.max_bytes = max_bytes
        self.size = 0

    def put(self, key, value, cost: int) -> None:
        """Keep ``value`` under ``key``, emptying the cache first if it is full."""
        entries = self.entries
        if key in entries:
            entries[key] = value
            return
        if cost > self.max_bytes:
            return
        if len(entries) >= self.max_entries or self.size + cost > self.max_bytes:
            # clear() rather than a new dictionary: a reader may hold this one.
            entries.clear()
            self.size = 0
        entries[key] = value
        self.size += cost

    def clear(self) -> None:
        """Empty the cache; a reader holding :attr:`entries` sees it empty."""
        self.entries.clear()
        self.size = 0


def series_cost(tag_count: int, chars: int, is_ascii: bool) -> int:
    """Estimate the bytes a cache entry keyed by a series holds.

    Counted from lengths the caller has at hand, so a new series costs no walk
    over its tags.

    :param tag_count: how many tags the series has.
    :param chars: at least the characters of its name and tags together.
    :param is_ascii: whether they are all ASCII; if not, a character may take
        four bytes (one outside the BMP widens its whole string).
    """
    return _SERIES_OVERHEAD + _TAG_OVERHEAD * tag_count + chars * (1 if is_ascii else 4)


def clean_tags(tags) -> tuple[str, ...]:
    """Return ``tags`` without empty entries, a trailing ``:`` making a bare key."""
    cleaned = []
    for tag in tags:
        key, colon, value = tag.partition(":")
        if colon and not value:
            tag = key
        if tag:
            cleaned.append(tag)

    return tuple(cleaned)


def _number(text: str, reason: str) -> float:
    """Return the finite number ``text`` spells.

    :raises _Rejected: with ``reason`` if ``text`` breaks the value grammar, or
        with ``non_finite`` if it overflows.
    """
    if _NUMBER.fullmatch(text) is None:
        raise _Rejected(reason)
    number = float(text)
    if not -_LARGEST <= number <= _LARGEST:
        raise _Rejected("non_finite")

    return number


class DogStatsDParser:
    """Turn DogStatsD datagrams into samples for ``sink``.

    Each distinct series is resolved once; the handle is cached under the bytes
    of the line without its value, so a line of an already-seen series costs a
    dictionary lookup and a ``float()``. The line cache and the series cache
    each hold at most ``cache_size`` entries and half of ``cache_bytes``, and
    are emptied when full (the sink then sees ``resolve`` again for the series
    still sending).

    :param max_sample_age: seconds a ``|T`` stamp may lie in the past.
    :param max_sample_skew: seconds a ``|T`` stamp may lie in the future.
    :param max_line: longest line read, in bytes.
    :param max_tags: most tags a line may carry.
    :param cache_bytes: estimated bytes both caches together may hold.
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
        max_line: int = MAX_LINE,
        max_tags: int = MAX_TAGS,
        cache_size: int = 65536,
        cache_bytes: int = CACHE_BYTES,
        listener: str = "dogstatsd",
    ) -> None:
        self._sink = sink
        self._stats = stats
        self._clock = clock
        self._max_age = max_sample_age
        self._max_skew = max_sample_skew
        self._max_line = max_line
        self._max_tags = max_tags
        self._listener = listener
        self._limiter = RateLimiter(clock=clock.monotonic)
        # Line without its value -> (handle.add, rate), or (handle.add_member,
        # 0.0) for a set.
        self._lines = BoundedCache(cache_size, cache_bytes // 2)
        # (name, kind, tags) -> handle.
        self._series = BoundedCache(cache_size, cache_bytes // 2)

    def clear_caches(self) -> None:
        """Forget every cached handle, so each series is resolved again.

        Called when the rules change: a cached handle still feeds the rule
        series it was resolved to.
        """
        self._lines.clear()
        self._series.clear()

    def feed(self, datagram: bytes) -> None:
        """Parse one datagram received now; never raise."""
        now = self._clock.time()
        known = self._lines.entries
        lines = datagram.split(b"\n")
        if len(datagram) > self._max_line:
            # Only a datagram longer than max_line can hold a line that long,
            # so the usual small datagram pays nothing for the check.
            lines = self._without_long_lines(lines)
        count = len(lines)
        # A line that takes the fast path yields exactly one sample; the others
        # are tallied apart so the loop keeps no per-line counter.
        slow = slow_samples = failed = 0
        for line in lines:
            if not line:
                count -= 1
                continue

            head, _, tail = line.partition(b"|")
            name, _, value = head.partition(b":")
            key = name + b"|" + tail
            entry = known.get(key)
            if entry is not None:
                add, rate = entry
                if rate:
                    try:
                        number = float(value)
                    except ValueError:
                        number = _NAN
                    # float() also takes nan, inf, 1_000 and padded values; they
                    # and packed values go through the full parse instead.
                    if (
                        -_LARGEST <= number <= _LARGEST
                        and _UNDERSCORE not in value
                        and value[0] >= _LOWEST_FIRST
                        and value[-1] >= _LOWEST_LAST
                    ):
                        try:
                            add(number, rate, now)
                        except Exception:
                            failed += 1
                            self._consumer_failed()
                        continue
                else:
                    try:
                        member = value.decode()
                    except UnicodeDecodeError:
                        member = ""
                    if member:
                        try:
                            add(member, now)
                        except Exception:
                            failed += 1
                            self._consumer_failed()
                        continue

            produced = self._parse_line(line, key, now)
            if produced < 0:
                count -= 1
            else:
                slow += 1
                slow_samples += produced

        stats = self._stats
        stats.datagrams += 1
        stats.lines += count
        stats.samples += count - slow - failed + slow_samples

    def _without_long_lines(self, lines: list[bytes]) -> list[bytes]:
        """Return ``lines`` less those above ``max_line``, counted and dropped."""
        limit = self._max_line
        kept = [line for line in lines if len(line) <= limit]
        if len(kept) < len(lines):
            for line in lines:
                if len(line) > limit:
                    self._stats.lines += 1
                    self._drop("too_long", line)

        return kept

    def _parse_line(self, line: bytes, key: bytes, now: float) -> int:
        """Parse one line in full; return its samples, or -1 if it is blank."""
        if line[-1:] == b"\r":
            line = line[:-1]
            if not line:
                return -1

        try:
            if line.startswith(b"_e{"):
                self._check_event(line)
                self._stats.events += 1
                return 0
            if line.startswith(b"_sc|"):
                self._check_service_check(line)
                self._stats.service_checks += 1
                return 0
            return self._metric(line, key, now)
        except _Rejected as rejected:
            self._drop(rejected.reason, line)
        except Exception:
            self._consumer_failed()

        return 0

    def _metric(self, line: bytes, key: bytes, now: float) -> int:
        """Deliver the samples of one metric line.

        :raises _Rejected: if the line is malformed, not finite or out of range.
        """
        try:
            text = line.decode()
        except UnicodeDecodeError:
            raise _Rejected("utf8") from None
        head, pipe, tail = text.partition("|")
        name, colon, value = head.partition(":")
        if not pipe or not colon:
            raise _Rejected("syntax")
        if not name:
            raise _Rejected("name")
        if not value:
            raise _Rejected("value")

        fields = tail.split("|")
        kind = fields[0]
        if kind not in _METRIC_KINDS:
            raise _Rejected("type")
        rate = 1.0
        stamp = None
        is_stamped = False
        tags: tuple[str, ...] = ()
        for field in fields[1:]:
            if field.startswith("@"):
                rate = _number(field[1:], "rate")
                if not 0.0 < rate <= 1.0:
                    raise _Rejected("rate")
            elif field.startswith("#"):
                tags = clean_tags(field[1:].split(","))
                if len(tags) > self._max_tags:
                    raise _Rejected("too_many_tags")
            elif field.startswith("T"):
                stamp = self._stamp(field[1:], kind, now)
                is_stamped = True
            # Container ids, external data, cardinality and fields of later
            # protocol versions do not change what Tocsin does with a sample.

        if kind == "s":
            values: list = [value]
        else:
            values = [_number(item, "value") for item in value.split(":") if item]
            if not values:
                raise _Rejected("value")

        handle = self._handle(name, kind, tags, text)
        # A stamped line differs from the next one of its series by the stamp:
        # caching it would fill the cache with lines never seen again.
        if not is_stamped:
            entry = (handle.add_member, 0.0) if kind == "s" else (handle.add, rate)
            self._lines.put(key, entry, _LINE_OVERHEAD + len(key))
        return self._deliver(
            handle, kind, values, rate, now if stamp is None else stamp
        )

    def _stamp(self, digits: str, kind: str, now: float) -> float | None:
        """Return the time a ``|T`` field sets, or ``None`` if ``kind`` ignores it.

        :raises _Rejected: if the field is not a positive integer, or the time
            lies outside the accepted window.
        """
        if not (digits.isascii() and digits.isdigit()):
            raise _Rejected("timestamp")
        try:
            seconds = int(digits)
        except ValueError:
            raise _Rejected("timestamp") from None
        if seconds < 1:
            raise _Rejected("timestamp")
        if kind not in _STAMPED_KINDS:
            return None
        if seconds < now - self._max_age:
            raise _Rejected("too_old")
        if seconds > now + self._max_skew:
            raise _Rejected("too_new")

        return float(seconds)

    def _handle(
        self, name: str, kind: str, tags: tuple[str, ...], text: str
    ) -> SeriesHandle:
        """Return the handle of a series; ``text`` is the line that names it."""
        series = (name, kind, tags)
        handle = self._series.entries.get(series)
        if handle is None:
            handle = self._sink.resolve(name, kind, tags)
            cost = series_cost(len(tags), len(text), text.isascii())
            self._series.put(series, handle, cost)

        return handle

    def _deliver(self, handle, kind, values, rate, stamp) -> int:
        """Hand ``values`` to ``handle``; return how many it took."""
        delivered = 0
        try:
            if kind == "s":
                handle.add_member(values[0], stamp)
                return 1
            for value in values:
                handle.add(value, rate, stamp)
                delivered += 1
        except Exception:
            self._consumer_failed()

        return delivered

    def _check_event(self, line: bytes) -> None:
        """Check an event line: ``_e{title_len,text_len}:title|text[|fields]``.

        Lengths count UTF-8 bytes. Optional fields are not interpreted.

        :raises _Rejected: if the line is not a well-formed event.
        """
        header = _EVENT_HEADER.match(line)
        if header is None:
            raise _Rejected("event")
        title_len, text_len = int(header[1]), int(header[2])
        body = line[header.end() :]
        end = title_len + 1 + text_len
        if (
            title_len < 1
            or len(body) < end
            or body[title_len : title_len + 1] != b"|"
            or body[end : end + 1] not in (b"", b"|")
        ):
            raise _Rejected("event")
        try:
            line.decode()
        except UnicodeDecodeError:
            raise _Rejected("utf8") from None

    def _check_service_check(self, line: bytes) -> None:
        """Check a service check line: ``_sc|name|status[|fields]``.

        :raises _Rejected: if the name is empty or the status is not 0-3.
        """
        try:
            parts = line.decode().split("|", 3)
        except UnicodeDecodeError:
            raise _Rejected("utf8") from None
        if len(parts) < 3 or not parts[1] or parts[2] not in _CHECK_STATUSES:
            raise _Rejected("service_check")

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
                "dropped a DogStatsD line (%s): %r",
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
