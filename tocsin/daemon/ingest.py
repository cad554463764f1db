"""The contract between the ingest parsers and whatever consumes samples.

Parsers resolve each distinct series once through :meth:`IngestSink.resolve`
and then feed values to the returned :class:`SeriesHandle`; a parser caches
handles so the per-line cost is a dictionary lookup, not a tag parse.
"""

from __future__ import annotations

from typing import Protocol

#: Metric kinds, with DogStatsD's type letters.
KINDS = ("c", "g", "ms", "h", "d", "s")


class SeriesHandle(Protocol):
    """Where the samples of one (name, kind, tags) series go."""

    def add(self, value: float, rate: float, timestamp: float) -> None:
        """Record one finite value sampled at ``rate`` (0 < rate <= 1)."""

    def add_member(self, member: str, timestamp: float) -> None:
        """Record one member of a set (kind ``s``)."""


class IngestSink(Protocol):
    def resolve(self, name: str, kind: str, tags: tuple[str, ...]) -> SeriesHandle:
        """Return the handle for a series; ``tags`` are ``key:value`` or bare
        ``key`` strings in the order the sender wrote them, empties removed."""


class IngestStats:
    """Counters of one listener; read by logs, the API and self-metrics."""

    __slots__ = (
        "datagrams",
        "lines",
        "samples",
        "parse_errors",
        "non_finite",
        "too_old",
        "too_new",
        "events",
        "service_checks",
        "errors_by_reason",
    )

    def __init__(self) -> None:
        self.datagrams = 0
        self.lines = 0
        self.samples = 0
        self.parse_errors = 0
        self.non_finite = 0
        self.too_old = 0
        self.too_new = 0
        self.events = 0
        self.service_checks = 0
        self.errors_by_reason: dict[str, int] = {}

    def error(self, reason: str) -> None:
        self.parse_errors += 1
        self.errors_by_reason[reason] = self.errors_by_reason.get(reason, 0) + 1

    def as_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}


def tag_labels(tags: tuple[str, ...]) -> dict[str, str]:
    """Turn ``key:value`` tags into labels; a bare tag ``key`` is ``key=""``.

    A tag splits on its first colon only, so ``addr:10.0.0.1:443`` is
    ``addr=10.0.0.1:443``. When a key repeats, the last value wins.
    """
    labels: dict[str, str] = {}
    for tag in tags:
        key, _, value = tag.partition(":")
        labels[key] = value
    return labels


class _Discard:
    """The handle of a series nothing consumes: no rule matches, no export."""

    __slots__ = ()

    def add(self, value: float, rate: float, timestamp: float) -> None:
        pass

    def add_member(self, member: str, timestamp: float) -> None:
        pass


class _Fanout:
    """Feeds one series to its export aggregate and to every rule series."""

    __slots__ = ("export", "targets", "is_counter")

    def __init__(self, export, targets, is_counter: bool) -> None:
        self.export = export
        self.targets = targets
        self.is_counter = is_counter

    def add(self, value: float, rate: float, timestamp: float) -> None:
        if self.export is not None:
            self.export.add(value, rate, timestamp)
        if self.is_counter and rate != 1.0:
            # A sampled counter stands for 1/rate increments; rules see the
            # estimate, as Datadog does.
            value = value / rate
        for target in self.targets:
            target.add(value, timestamp)

    def add_member(self, member: str, timestamp: float) -> None:
        if self.export is not None:
            self.export.add_member(member, timestamp)


class _Direct:
    """Hands the samples of a series straight to its one rule series.

    The common case — one rule, no export, not a counter — then costs the
    parser a single call per sample instead of a fan-out in between.
    """

    __slots__ = ("add",)

    def __init__(self, series) -> None:
        self.add = series.add_sampled

    def add_member(self, member: str, timestamp: float) -> None:
        pass


DISCARD = _Discard()


class IngestRouter:
    """The :class:`IngestSink` of the daemon: samples to export and to rules.

    :param engine: the rule engine; ``engine.targets()`` is asked once per
        distinct series, and ``engine.evaluate_dirty()`` after every batch.
    :param buffer: the Datadog export buffer, or ``None`` when export is off.
    :param on_decisions: called with the decisions of each evaluation that
        produced any.
    :param redactor: replaces personal data in the tags of each new series,
        before any series key, label or exported tag is made of them; a
        :class:`~tocsin.redaction.Redactor`, or ``None`` to keep tags as sent.
    """

    def __init__(self, engine, buffer, on_decisions, redactor=None) -> None:
        self.engine = engine
        self.buffer = buffer
        self.on_decisions = on_decisions
        self.redactor = redactor

    def resolve(self, name: str, kind: str, tags: tuple[str, ...]) -> SeriesHandle:
        if self.redactor is not None:
            # Once per new series: the parsers cache the handle this returns.
            tags = self.redactor.tags(tags)
        export = (
            self.buffer.series(name, kind, tags) if self.buffer is not None else None
        )
        # Sets carry members, not numbers; no rule aggregates them.
        targets = [] if kind == "s" else self.engine.targets(name, tag_labels(tags))
        if export is None and not targets:
            return DISCARD
        if export is None and len(targets) == 1 and kind != "c":
            return _Direct(targets[0])
        return _Fanout(export, tuple(targets), kind == "c")

    def evaluate(self, now: float) -> None:
        """Evaluate the series that received samples since the last call."""
        decisions = self.engine.evaluate_dirty(now)
        if decisions:
            self.on_decisions(decisions)
