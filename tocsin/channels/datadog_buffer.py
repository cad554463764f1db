"""Aggregation of ingested samples into Datadog series, one export interval at a time.

The ingest router resolves each series once with :meth:`ExportBuffer.series` and
feeds the returned :class:`ExportSeries` per sample; :meth:`ExportBuffer.drain`
turns what arrived since the previous drain into Datadog v2 ``MetricSeries``
dicts, aggregated the way the Datadog Agent flushes DogStatsD metrics:

=============  ==============================================================
kind           exported as
=============  ==============================================================
``c``          one rate (type 2): the sum of ``value / rate`` divided by the
               interval, with ``interval`` set to it
``g``          one gauge (type 3): the value with the latest sample timestamp
               (the later arrival on a tie)
``ms h d``     gauges ``<name>.avg``, ``.median``, ``.max``, ``.95percentile``
               and a rate (type 2) ``<name>.count``: the number of samples
               divided by the interval, with ``interval`` set to it; a sample
               at rate ``r`` counts ``1/r`` times. Percentiles come from a
               DDSketch (1 % relative accuracy), average and maximum are exact.
               The three kinds export alike, so they share one aggregate
``s``          one gauge (type 3): the number of distinct members, exact up
               to :data:`SET_EXACT` members per interval, estimated beyond
               (about 1.6 % standard error)
=============  ==============================================================

**The interval is the drained one.** The caller says how long the drained
interval lasted, as measured: a drain at shutdown covers part of an interval,
one after an export that overran covers several. The v2 API wants whole
seconds, so the ``interval`` sent is that length rounded to the nearest second
and at least 1, and a rate is its total divided by that same ``interval``, so
the rate times its ``interval`` (the count Datadog derives from a rate) is the
total that arrived.

**Distributions are not Datadog distributions.** The Agent sends a ``d``
metric to Datadog's separate distribution intake, as a sketch aggregated
server-side; the v2 series API has no such type, so here it exports like a
histogram, under the suffixed names above.

Every point carries the drain time as an integer POSIX second. A series without
samples in the interval is not sent, and an aggregate that is not finite (a sum
that overflowed) is skipped and counted, so no ``NaN`` ever leaves.

Names and tags follow one policy, applied once when a series is resolved. A
series the policy refuses is **not exported**: :meth:`ExportBuffer.series`
returns ``None``, the refusal is counted in :attr:`ExportBuffer.refused` and
logged as a warning once per metric name.

* **Metric names.** ``metric_prefix`` is prepended, then every character other
  than an ASCII letter, digit, ``_`` or ``.`` becomes ``_``. A name that then
  does not start with an ASCII letter, or is longer than 200 characters (187
  for timers, histograms and distributions, so the longest suffix fits), is
  refused. Stripping, inventing or cutting characters would silently merge the
  series into an unrelated metric (``модель.latency`` would become
  ``latency``); with a prefix such as ``ml.`` that name exports as
  ``ml.______.latency``.
* **Tags.** Every character other than a letter, digit, ``_ - : . /`` becomes
  ``_``; leading characters up to the first letter are removed (as Datadog's own
  normalisation does) and so are trailing colons, so a ``key:`` tag exports as
  ``key``; the tag is cut to 200 characters. A tag left empty is dropped.
  Duplicates are removed and tags are sent sorted, so series differing only in
  tag order or in characters mapped to ``_`` are aggregated as one. A series
  with more than :data:`MAX_TAGS` tags or :data:`MAX_TAG_CHARS` characters of
  tags, as sent and with the configured tags, is refused: dropping some tags
  would merge it with its neighbours.
* Configured tags are added to every series; a configured host becomes a
  ``{"type": "host", "name": ...}`` resource.

**One aggregate per Datadog series.** Whatever handles callers hold, the samples
of one (Datadog name, kind, tags) land in one aggregate. The buffer keeps each
series in a table; one without samples for :data:`IDLE_DRAINS` drains leaves
the table. A caller may still hold it: its next sample registers it again, or,
if another object took its place meanwhile, goes to that object. A forgotten
series holds no samples, so nothing is split or lost either way.

**At most** ``max_series`` **series.** Beyond it :meth:`ExportBuffer.series`
creates no new series: it returns an unregistered handle, counted in
:attr:`ExportBuffer.series_over_limit`. Each sample such a handle receives tries
to register it, so the series is exported as soon as forgotten series free
room; until then its samples are counted in
:attr:`ExportBuffer.samples_over_limit`, and each drain that saw any logs one
warning with the counts.

Memory: a registered series costs about 330 bytes plus the name and tag
strings no other series shares (one copy of each string is kept): about 400
bytes for a series with one tag of its own, at most about 7.5 KB for one at the
tag limits, and there are at most ``max_series`` of them. A timer's sketch
(bounded bins) and a set's member hashes (at most :data:`SET_EXACT`) exist
only while the interval has samples and are released at every drain.
"""

from __future__ import annotations

import heapq
import logging
import math
import re
import sys
from collections.abc import Sequence

from ddsketch import LogCollapsingLowestDenseDDSketch

from tocsin.config import DatadogExportConfig
from tocsin.datadog_names import NAME_LIMIT, metric_name

log = logging.getLogger(__name__)

TAG_LIMIT = 200
#: Most tags a series may have as sent, the configured ones included.
MAX_TAGS = 64
#: Most characters its tags may have in all, as sent, the configured ones included.
MAX_TAG_CHARS = 2_000
#: Drains without samples after which a series leaves the buffer's table.
IDLE_DRAINS = 5
#: Distinct set members per interval counted exactly; more are estimated.
SET_EXACT = 4096

RATE, GAUGE = 2, 3
_SUFFIXES = (".avg", ".median", ".max", ".95percentile", ".count")
_SUFFIX_ROOM = max(len(suffix) for suffix in _SUFFIXES)
_TAG_INVALID = re.compile(r"[^\w\-:./]")
_HASH_MASK = (1 << 64) - 1
# Refused names (or metrics with too many tags) logged, at most this many.
_REFUSED_LOGGED_MAX = 1000
_EXTRA = {"channel": "datadog"}
_LONG_NAME = "metric %.80r... is longer than %d characters and is not exported"
_INVALID_NAME = (
    "metric %r has no valid Datadog name and is not exported; "
    "set export.datadog.metric_prefix to one that starts with a letter"
)
_TAGS_OVER = (
    f"a series of metric %r has more than {MAX_TAGS} tags or {MAX_TAG_CHARS} "
    "characters of tags (configured tags included) and is not exported"
)


def whole_seconds(seconds: float) -> int:
    """Return the ``interval`` sent for an interval of ``seconds``.

    The nearest whole second (a half rounds up), and at least 1: the v2 API
    takes an integer, and a rate divided by 0 would not be finite.
    """
    return max(1, math.floor(seconds + 0.5))


def tag(text: str) -> str | None:
    """Return ``text`` as a valid Datadog tag, or ``None`` if nothing is left."""
    mapped = _TAG_INVALID.sub("_", text)
    start = 0
    while start < len(mapped) and not mapped[start].isalpha():
        start += 1
    mapped = mapped[start : start + TAG_LIMIT].rstrip(":")
    return mapped or None


def tags(texts: Sequence[str]) -> list[str]:
    """Return the valid, distinct tags of ``texts``, sorted."""
    return sorted({t for t in map(tag, texts) if t is not None})


class ExportSeries:
    """The current interval's aggregate of one series; fed by the ingest side."""

    __slots__ = ("_key", "_buffer", "_active", "_placed", "_idle")

    def __init__(self, buffer: ExportBuffer, key: tuple) -> None:
        #: ``(Datadog name, aggregate class, tags)``: the series' identity.
        self._key = key
        self._buffer = buffer
        #: On this interval's drain list.
        self._active = False
        #: In the buffer's table; a handle outside it registers on its next sample.
        self._placed = False
        #: Drains since the last one that found samples.
        self._idle = 0

    @property
    def name(self) -> str:
        """Return the Datadog metric name (without a timer's suffixes)."""
        return self._key[0]

    @property
    def tags(self) -> tuple[str, ...]:
        """Return the exported tags, sorted."""
        return self._key[2]

    def add(self, value: float, rate: float, timestamp: float) -> None:
        """Record one finite value sampled at ``rate`` (0 < rate <= 1)."""

    def add_member(self, member: str, timestamp: float) -> None:
        """Record one member of a set; other kinds ignore members."""

    def _join(self, method: str, *sample: object) -> bool:
        """Enlist for this interval; return whether this object takes ``sample``.

        If another object is the live aggregate of this series, ``sample`` goes
        there; if the buffer is full, it is counted and left out.
        """
        live = self._buffer._enlist(self)
        if live is self:
            return True
        if live is not None:
            getattr(live, method)(*sample)
        return False

    def _start(self) -> None:
        """Prepare the state of a new interval (called when enlisted)."""

    def _flush(self, out: list[dict], stamp: int, interval: int) -> int:
        """Append this interval's series to ``out`` and start a new interval.

        :param interval: the drained interval in whole seconds, at least 1.
        :return: the number of aggregates skipped because they are not finite.
        """
        raise NotImplementedError

    def _point(
        self,
        out: list[dict],
        name: str,
        kind: int,
        value: float,
        stamp: int,
        interval: int = 0,
    ) -> int:
        """Append one single-point series; return 1 if ``value`` is skipped."""
        if not math.isfinite(value):
            return 1
        series: dict = {"metric": name, "type": kind}
        series["points"] = [{"timestamp": stamp, "value": value}]
        if interval:
            series["interval"] = interval
        if self._key[2]:
            series["tags"] = list(self._key[2])
        resources = self._buffer._resources
        if resources:
            series["resources"] = resources
        out.append(series)

        return 0


class _Counter(ExportSeries):
    __slots__ = ("_sum",)

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self._sum = 0.0

    def add(self, value: float, rate: float, timestamp: float) -> None:
        if not self._active and not self._join("add", value, rate, timestamp):
            return
        self._sum += value / rate

    def _flush(self, out: list[dict], stamp: int, interval: int) -> int:
        self._sum, total = 0.0, self._sum
        return self._point(out, self.name, RATE, total / interval, stamp, interval)


class _Gauge(ExportSeries):
    __slots__ = ("_value", "_stamp")

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self._value = 0.0
        self._stamp = -math.inf

    def add(self, value: float, rate: float, timestamp: float) -> None:
        if not self._active and not self._join("add", value, rate, timestamp):
            return
        if timestamp >= self._stamp:
            self._value = value
            self._stamp = timestamp

    def _flush(self, out: list[dict], stamp: int, interval: int) -> int:
        self._stamp = -math.inf
        return self._point(out, self.name, GAUGE, self._value, stamp)


class _Distribution(ExportSeries):
    __slots__ = ("_sketch", "_max")

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self._sketch: LogCollapsingLowestDenseDDSketch | None = None
        self._max = -math.inf

    def _start(self) -> None:
        # A bounded sketch: its bins cannot grow past the bin limit.
        # TODO: the store is dense, so a few samples far apart (1e-300 and
        # 1e300) fill all 2 x 2048 bins: about 34 KB for the interval, against
        # 2 KB for one sample. max_series bounds the total (3.4 GB at 100,000
        # such series); a store keyed by bin would make it grow with samples.
        self._sketch = LogCollapsingLowestDenseDDSketch(0.01, 2048)

    def add(self, value: float, rate: float, timestamp: float) -> None:
        if not self._active and not self._join("add", value, rate, timestamp):
            return
        self._sketch.add(value, 1.0 / rate)
        if value > self._max:
            self._max = value

    def _flush(self, out: list[dict], stamp: int, interval: int) -> int:
        sketch, self._sketch = self._sketch, None
        top, self._max = self._max, -math.inf
        name = self.name
        median = sketch.get_quantile_value(0.5)
        p95 = sketch.get_quantile_value(0.95)
        rate = sketch.count / interval
        return (
            self._point(out, name + ".avg", GAUGE, sketch.avg, stamp)
            + self._point(out, name + ".median", GAUGE, median, stamp)
            + self._point(out, name + ".max", GAUGE, top, stamp)
            + self._point(out, name + ".95percentile", GAUGE, p95, stamp)
            + self._point(out, name + ".count", RATE, rate, stamp, interval)
        )


class DistinctCount:
    """Count distinct strings in bounded memory, exactly up to ``limit`` of them.

    Members are kept as 64-bit hashes, never as the strings themselves. Past
    ``limit`` distinct hashes only the ``limit`` smallest are kept and the count
    is estimated from the largest of them (a k-minimum-values sketch), with a
    relative standard error of about ``1 / sqrt(limit)``.
    """

    __slots__ = ("_kept", "_heap", "_limit")

    def __init__(self, limit: int = SET_EXACT) -> None:
        if limit < 2:
            raise ValueError("a distinct count keeps at least 2 hashes")
        # Hashes are stored negated, so the heap's first item is the largest.
        self._kept: set[int] = set()
        #: The kept hashes as a heap, made when the first one too many arrives.
        self._heap: list[int] | None = None
        self._limit = limit

    def add(self, member: str) -> None:
        """Count ``member``."""
        # The string hash is keyed per process: a sender can neither make
        # members collide nor pick hashes that skew the estimate.
        key = -(hash(member) & _HASH_MASK)
        kept = self._kept
        if key in kept:
            return
        if len(kept) < self._limit:
            kept.add(key)
            return
        heap = self._heap
        if heap is None:
            heap = self._heap = list(kept)
            heapq.heapify(heap)
        if key > heap[0]:
            kept.remove(heapq.heapreplace(heap, key))
            kept.add(key)

    def count(self) -> float:
        """Return the number of distinct members, estimated past ``limit``."""
        if self._heap is None:
            return len(self._kept)
        largest = -self._heap[0]
        return (self._limit - 1) * 2.0**64 / (largest + 1)


class _Set(ExportSeries):
    __slots__ = ("_members",)

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self._members: DistinctCount | None = None

    def _start(self) -> None:
        self._members = DistinctCount()

    def add_member(self, member: str, timestamp: float) -> None:
        if not self._active and not self._join("add_member", member, timestamp):
            return
        self._members.add(member)

    def add(self, value: float, rate: float, timestamp: float) -> None:
        self.add_member(repr(value), timestamp)

    def _flush(self, out: list[dict], stamp: int, interval: int) -> int:
        members, self._members = self._members, None
        return self._point(out, self.name, GAUGE, members.count(), stamp)


_KINDS: dict[str, type[ExportSeries]] = {
    "c": _Counter,
    "g": _Gauge,
    "ms": _Distribution,
    "h": _Distribution,
    "d": _Distribution,
    "s": _Set,
}


class ExportBuffer:
    """Per-interval aggregates of every exported series.

    :param metrics: the ingested metric names to export; empty exports all.
    :param prefix: prepended to every Datadog metric name.
    :param tags: added to every series.
    :param host: reported as every series' ``host`` resource; empty sends none.
    :param max_series: the most series held at once; see the module docs.
    """

    def __init__(
        self,
        metrics: Sequence[str] = (),
        *,
        prefix: str = "",
        tags: Sequence[str] = (),
        host: str = "",
        max_series: int = 100_000,
    ) -> None:
        self._selected = frozenset(metrics)
        self._prefix = prefix
        self._tags = list(tags)
        self._tag_chars = sum(map(len, self._tags))
        self._resources = [{"type": "host", "name": host}] if host else None
        self.max_series = max_series
        self._series: dict[tuple, ExportSeries] = {}
        self._active: list[ExportSeries] = []
        self._refused: set[object] = set()
        #: Resolutions refused by the name and tag policy.
        self.refused = 0
        #: Aggregates skipped because they were not finite.
        self.non_finite = 0
        #: New series turned away because ``max_series`` series were held.
        self.series_over_limit = 0
        #: Samples left out because their series could not be registered.
        self.samples_over_limit = 0
        self._reported = (0, 0)

    @classmethod
    def from_config(cls, config: DatadogExportConfig) -> ExportBuffer:
        """Build the buffer ``config`` (``export.datadog``) describes."""
        return cls(
            config.metrics,
            prefix=config.metric_prefix,
            tags=config.tags,
            host=config.host,
            max_series=config.max_series,
        )

    def __len__(self) -> int:
        return len(self._series)

    def counters(self) -> dict[str, int]:
        """Return the series held and what was refused or skipped, for logs."""
        return {
            "series": len(self._series),
            "refused": self.refused,
            "non_finite": self.non_finite,
            "series_over_limit": self.series_over_limit,
            "samples_over_limit": self.samples_over_limit,
        }

    def series(
        self, name: str, kind: str, tags: tuple[str, ...]
    ) -> ExportSeries | None:
        """Return the series to feed, or ``None`` if it is not exported.

        The same object comes back for the same series while the buffer holds
        it; callers cache it. When ``max_series`` are held, a new series gets
        a handle that registers itself once there is room (see the module docs).
        """
        if self._selected and name not in self._selected:
            return None
        factory = _KINDS[kind]
        room = _SUFFIX_ROOM if factory is _Distribution else 0
        exported = metric_name(name, self._prefix, room)
        if exported is None and len(self._prefix) + len(name) > NAME_LIMIT - room:
            # Logged and remembered by its start: any name that long is refused.
            shown = name[: NAME_LIMIT + 1]
            self._refuse(shown, "invalid_name", _LONG_NAME, shown, NAME_LIMIT - room)
            return None
        if exported is None:
            self._refuse(name, "invalid_name", _INVALID_NAME, name)
            return None
        # Checked as sent, before any work proportional to the tags.
        count = len(tags) + len(self._tags)
        if count > MAX_TAGS or sum(map(len, tags)) + self._tag_chars > MAX_TAG_CHARS:
            self._refuse((exported, "tags"), "too_many_tags", _TAGS_OVER, exported)
            return None
        key = (exported, factory, _merge_tags(tags, self._tags))
        found = self._series.get(key)
        if found is not None:
            return found
        found = factory(self, key)
        if len(self._series) < self.max_series:
            self._place(found)
        else:
            self.series_over_limit += 1

        return found

    def drain(self, now: float, seconds: float) -> list[dict]:
        """Return the interval's series as Datadog v2 dicts and start a new one.

        :param now: the drain time, POSIX seconds; points carry it as an int.
        :param seconds: how long the interval lasted, since the previous drain;
            rates are per second of it (see the module docs).
        """
        stamp = int(now)
        interval = whole_seconds(seconds)
        active, self._active = self._active, []
        out: list[dict] = []
        skipped = 0
        for series in active:
            series._active = False
            series._idle = 0
            skipped += series._flush(out, stamp, interval)
        self.non_finite += skipped
        self._forget_idle()
        self._report_over_limit()

        return out

    def _enlist(self, series: ExportSeries) -> ExportSeries | None:
        """Put ``series`` on the drain list; return the object to feed instead.

        A handle outside the table registers again, unless another object is
        the series' aggregate now (that one is returned) or the buffer is full
        (``None``: the sample is counted and left out).
        """
        if not series._placed:
            live = self._series.get(series._key)
            if live is not None:
                return live
            if len(self._series) >= self.max_series:
                self.samples_over_limit += 1
                return None
            self._place(series)
        series._active = True
        series._start()
        self._active.append(series)

        return series

    def _place(self, series: ExportSeries) -> None:
        """Register ``series`` in the table."""
        name, factory, tags = series._key
        # Most series share most tag strings (env:prod, the model's name): one
        # copy of each is kept. Only registered series are interned, so a flood
        # of refused ones does not grow the interpreter's table.
        series._key = (sys.intern(name), factory, tuple(map(sys.intern, tags)))
        series._placed = True
        series._idle = 0
        self._series[series._key] = series

    def _forget_idle(self) -> None:
        """Age every series by one drain and drop the long-idle ones."""
        idle = []
        for key, series in self._series.items():
            series._idle += 1
            if series._idle > IDLE_DRAINS:
                idle.append(key)
        for key in idle:
            self._series.pop(key)._placed = False

    def _report_over_limit(self) -> None:
        counts = (self.series_over_limit, self.samples_over_limit)
        if counts == self._reported:
            return
        new_series = counts[0] - self._reported[0]
        samples = counts[1] - self._reported[1]
        self._reported = counts
        # Once per interval at most: the cause is a flood of distinct series,
        # which a line per series or per sample would only repeat.
        log.warning(
            "Datadog export reached export.datadog.max_series (%d); "
            "%d new series and %d samples were left out this interval",
            self.max_series,
            new_series,
            samples,
            extra={
                **_EXTRA,
                "reason": "max_series",
                "series_count": len(self._series),
                "count": samples,
            },
        )

    def _refuse(self, seen: object, reason: str, message: str, *args) -> None:
        """Count a refused resolution; log it the first time ``seen`` is."""
        self.refused += 1
        if seen in self._refused or len(self._refused) >= _REFUSED_LOGGED_MAX:
            return
        self._refused.add(seen)
        # Once per metric: the sender keeps sending it, but the cause is fixed
        # by configuration or by the sender, not by anything this process does.
        log.warning(message, *args, extra={**_EXTRA, "reason": reason})


def _merge_tags(own: Sequence[str], configured: Sequence[str]) -> tuple[str, ...]:
    """Return the exported tags of a series: sorted and distinct."""
    return tuple(tags([*own, *configured]) if configured else tags(own))
