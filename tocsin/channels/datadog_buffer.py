"""Aggregation of ingested samples into Datadog series, one export interval at a time.

The ingest router resolves each series once with :meth:`ExportBuffer.series` and
feeds the returned :class:`ExportSeries` per sample; :meth:`ExportBuffer.drain`
turns what arrived since the previous drain into Datadog v2 ``MetricSeries``
dicts, aggregated the way a DogStatsD agent flushes:

=============  ==============================================================
kind           exported as
=============  ==============================================================
``c``          one count (type 1): the sum of ``value / rate``, with
               ``interval`` set to the export interval
``g``          one gauge (type 3): the value with the latest sample timestamp
               (the later arrival on a tie)
``ms h d``     gauges ``<name>.avg``, ``.median``, ``.max``, ``.95percentile``
               and ``<name>.count`` as a rate (type 2, per second); a sample
               at rate ``r`` counts ``1/r`` times. Percentiles come from a
               DDSketch (1 % relative accuracy), average and maximum are exact
``s``          one gauge (type 3): the number of distinct members
=============  ==============================================================

Every point carries the drain time as an integer POSIX second. A series without
samples in the interval is not sent, and an aggregate that is not finite (a sum
that overflowed) is skipped and counted, so no ``NaN`` ever leaves.

Names and tags follow one policy, applied once when a series is resolved:

* **Metric names.** ``metric_prefix`` is prepended, then every character other
  than an ASCII letter, digit, ``_`` or ``.`` becomes ``_`` and the result is
  cut to 200 characters (to 187 for timers, histograms and distributions, so
  the longest suffix fits). A name that then does not start with an ASCII
  letter is **not exported**: :meth:`ExportBuffer.series` returns ``None``, the
  refusal is counted in :attr:`ExportBuffer.refused` and logged once per name
  as a warning that suggests a ``metric_prefix``. Stripping or inventing
  leading characters would silently merge such a series into an unrelated
  metric (``модель.latency`` would become ``latency``). With a prefix such as
  ``ml.``, the same name exports as ``ml.______.latency``.
* **Tags.** Every character other than a letter, digit, ``_ - : . /`` becomes
  ``_``; leading characters up to the first letter are removed (as Datadog's own
  normalisation does) and so are trailing colons, so a ``key:`` tag exports as
  ``key``; the tag is cut to 200 characters. A tag left empty is dropped.
  Duplicates are removed and tags are sent sorted, so series differing only in
  tag order or in characters mapped to ``_`` are aggregated as one.
* Configured tags are added to every series; a configured host becomes a
  ``{"type": "host", "name": ...}`` resource.

Memory: the buffer keeps one fixed-size :class:`ExportSeries` per resolved
series (its Datadog name, tags and a few numbers). A timer's sketch and a set's
members exist only while the interval has samples and are released at every
drain. A series without samples for :data:`IDLE_DRAINS` drains is forgotten by
the buffer's lookup tables; a handle the ingest side still holds keeps working
(its next sample re-enters the drain list).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence

from ddsketch import LogCollapsingLowestDenseDDSketch

from tocsin.config import DatadogExportConfig

log = logging.getLogger(__name__)

NAME_LIMIT = 200
TAG_LIMIT = 200
#: Drains without samples after which a series leaves the lookup tables.
IDLE_DRAINS = 5

COUNT, RATE, GAUGE = 1, 2, 3
_SUFFIXES = (".avg", ".median", ".max", ".95percentile", ".count")
_SUFFIX_ROOM = max(len(suffix) for suffix in _SUFFIXES)
_NAME_INVALID = re.compile(r"[^A-Za-z0-9_.]")
_TAG_INVALID = re.compile(r"[^\w\-:./]")
_REFUSED_LOGGED_MAX = 1000


def metric_name(name: str, prefix: str = "", room: int = 0) -> str | None:
    """Return the Datadog name for ``prefix + name``, or ``None`` if it has none.

    :param room: characters to keep free at the end for a suffix.
    """
    mapped = _NAME_INVALID.sub("_", prefix + name)[: NAME_LIMIT - room]
    if not mapped or not ("a" <= mapped[0].lower() <= "z"):
        return None
    return mapped


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

    __slots__ = ("name", "kind", "tags", "_head", "_active", "_idle", "_enlist")

    def __init__(self, buffer: ExportBuffer, name: str, kind: str, head: dict) -> None:
        self.name = name
        self.kind = kind
        self.tags: list[str] = head.get("tags", [])
        self._head = head
        self._active = False
        self._idle = 0
        # The buffer's drain list never changes identity, so binding its append
        # once saves two attribute lookups on the first sample of an interval.
        self._enlist = buffer._active.append

    def add(self, value: float, rate: float, timestamp: float) -> None:
        """Record one finite value sampled at ``rate`` (0 < rate <= 1)."""

    def add_member(self, member: str, timestamp: float) -> None:
        """Record one member of a set; other kinds ignore members."""

    def _flush(self, out: list[dict], stamp: int, interval: float) -> int:
        """Append this interval's series to ``out`` and start a new interval.

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
        interval: float = 0.0,
    ) -> int:
        """Append one single-point series; return 1 if ``value`` is skipped."""
        if not math.isfinite(value):
            return 1
        series = {**self._head, "metric": name, "type": kind}
        series["points"] = [{"timestamp": stamp, "value": value}]
        if interval:
            series["interval"] = int(interval)
        out.append(series)

        return 0


class _Count(ExportSeries):
    __slots__ = ("_sum",)

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self._sum = 0.0

    def add(self, value: float, rate: float, timestamp: float) -> None:
        if not self._active:
            self._active = True
            self._enlist(self)
        self._sum += value / rate

    def _flush(self, out: list[dict], stamp: int, interval: float) -> int:
        self._sum, total = 0.0, self._sum
        return self._point(out, self.name, COUNT, total, stamp, interval)


class _Gauge(ExportSeries):
    __slots__ = ("_value", "_stamp")

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self._value = 0.0
        self._stamp = -math.inf

    def add(self, value: float, rate: float, timestamp: float) -> None:
        if not self._active:
            self._active = True
            self._enlist(self)
        if timestamp >= self._stamp:
            self._value = value
            self._stamp = timestamp

    def _flush(self, out: list[dict], stamp: int, interval: float) -> int:
        self._stamp = -math.inf
        return self._point(out, self.name, GAUGE, self._value, stamp)


class _Distribution(ExportSeries):
    __slots__ = ("_sketch", "_max")

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self._sketch: LogCollapsingLowestDenseDDSketch | None = None
        self._max = -math.inf

    def add(self, value: float, rate: float, timestamp: float) -> None:
        if not self._active:
            self._active = True
            self._enlist(self)
            # A bounded sketch: its bins cannot grow past the bin limit.
            self._sketch = LogCollapsingLowestDenseDDSketch(0.01, 2048)
        self._sketch.add(value, 1.0 / rate)
        if value > self._max:
            self._max = value

    def _flush(self, out: list[dict], stamp: int, interval: float) -> int:
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


class _Set(ExportSeries):
    __slots__ = ("_members",)

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self._members: set[str] | None = None

    def add_member(self, member: str, timestamp: float) -> None:
        if not self._active:
            self._active = True
            self._enlist(self)
            # TODO: a set keeps every distinct member of the interval; a sender
            # with millions of members per interval costs that much memory
            # until the drain. A HyperLogLog would bound it at ~1 % error.
            self._members = set()
        self._members.add(member)

    def add(self, value: float, rate: float, timestamp: float) -> None:
        self.add_member(repr(value), timestamp)

    def _flush(self, out: list[dict], stamp: int, interval: float) -> int:
        members, self._members = self._members, None
        return self._point(out, self.name, GAUGE, len(members), stamp)


_KINDS: dict[str, type[ExportSeries]] = {
    "c": _Count,
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
    :param interval: the export interval in seconds (a count's ``interval``
        and the divisor of a timer's ``.count`` rate).
    """

    def __init__(
        self,
        metrics: Sequence[str] = (),
        *,
        prefix: str = "",
        tags: Sequence[str] = (),
        host: str = "",
        interval: float = 60.0,
    ) -> None:
        self._selected = frozenset(metrics)
        self._prefix = prefix
        self._tags = list(tags)
        self._resources = [{"type": "host", "name": host}] if host else None
        self.interval = float(interval)
        self._by_key: dict[tuple[str, str, tuple[str, ...]], ExportSeries] = {}
        self._by_series: dict[tuple[str, str, tuple[str, ...]], ExportSeries] = {}
        self._active: list[ExportSeries] = []
        self._refused_names: set[str] = set()
        #: Resolutions refused because the name has no valid Datadog form.
        self.refused = 0
        #: Aggregates skipped because they were not finite.
        self.non_finite = 0

    @classmethod
    def from_config(cls, config: DatadogExportConfig) -> ExportBuffer:
        """Build the buffer ``config`` (``export.datadog``) describes."""
        return cls(
            config.metrics,
            prefix=config.metric_prefix,
            tags=config.tags,
            host=config.host,
            interval=config.interval,
        )

    def __len__(self) -> int:
        return len(self._by_series)

    def series(
        self, name: str, kind: str, tags: tuple[str, ...]
    ) -> ExportSeries | None:
        """Return the series to feed, or ``None`` if it is not exported.

        The same object comes back for the same arguments, so callers cache it.
        """
        key = (name, kind, tags)
        found = self._by_key.get(key)
        if found is not None:
            return found
        if self._selected and name not in self._selected:
            return None
        if name in self._refused_names:
            self.refused += 1
            return None
        factory = _KINDS[kind]
        room = _SUFFIX_ROOM if factory is _Distribution else 0
        exported = metric_name(name, self._prefix, room)
        if exported is None:
            self._refuse(name)
            return None
        exported_tags = _merge_tags(tags, self._tags)
        identity = (exported, kind, tuple(exported_tags))
        found = self._by_series.get(identity)
        if found is None:
            head: dict = {}
            if exported_tags:
                head["tags"] = exported_tags
            if self._resources:
                head["resources"] = self._resources
            found = factory(self, exported, kind, head)
            self._by_series[identity] = found
        self._by_key[key] = found

        return found

    def drain(self, now: float) -> list[dict]:
        """Return the interval's series as Datadog v2 dicts and start a new one.

        :param now: the drain time, POSIX seconds; points carry it as an int.
        """
        stamp = int(now)
        active = self._active.copy()
        self._active.clear()
        out: list[dict] = []
        skipped = 0
        for series in active:
            series._active = False
            series._idle = 0
            skipped += series._flush(out, stamp, self.interval)
        self.non_finite += skipped
        self._forget_idle()

        return out

    def _forget_idle(self) -> None:
        """Age every series by one drain and drop the long-idle ones."""
        idle: list[ExportSeries] = []
        for series in self._by_series.values():
            series._idle += 1
            if series._idle > IDLE_DRAINS:
                idle.append(series)
        if not idle:
            return
        gone = {id(series) for series in idle}
        self._by_key = {k: s for k, s in self._by_key.items() if id(s) not in gone}
        self._by_series = {
            k: s for k, s in self._by_series.items() if id(s) not in gone
        }

    def _refuse(self, name: str) -> None:
        self.refused += 1
        if len(self._refused_names) >= _REFUSED_LOGGED_MAX:
            return
        self._refused_names.add(name)
        # Once per name: the sender keeps sending it, but the cause is fixed by
        # configuration, not by anything this process can do.
        log.warning(
            "metric %r has no valid Datadog name and is not exported; "
            "set export.datadog.metric_prefix to one that starts with a letter",
            name,
            extra={"channel": "datadog", "reason": "invalid_name"},
        )


def _merge_tags(own: Sequence[str], configured: Sequence[str]) -> list[str]:
    if not configured:
        return tags(own)
    return tags([*own, *configured])
