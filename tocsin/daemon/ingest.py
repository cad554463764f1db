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
