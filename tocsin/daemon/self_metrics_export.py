"""Tocsin's own metrics sent to Datadog with the export
(``export.datadog.self_metrics = true``).

Each export carries the figures of ``/metrics`` at that moment, named
``tocsin.`` followed by the Prometheus name without its ``tocsin_`` prefix
and ``_total`` suffix (``tocsin_ingest_samples_total`` is
``tocsin.ingest_samples``, ``process_open_fds`` is ``tocsin.process_open_fds``);
labels become ``key:value`` tags after the export's own ``tags``. A gauge is
sent as a gauge; a counter as a count of what it gained since the previous
export; a histogram as the counts of its ``_sum`` and ``_count``, its buckets
left out.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from tocsin.daemon.self_metrics import SelfMetrics
from tocsin.errors import StateError
from tocsin.logs import RateLimiter

log = logging.getLogger(__name__)

#: Datadog's v2 series types.
_COUNT, _GAUGE = 1, 3

#: The Datadog type of each Prometheus type sent; a histogram's ``_sum`` and
#: ``_count`` are counts.
_KINDS = {"gauge": _GAUGE, "info": _GAUGE, "counter": _COUNT, "histogram": _COUNT}


class SelfMetricsExport:
    """Turn the self-metrics into Datadog v2 series, one export at a time.

    :param metrics: the daemon's self-metrics.
    :param tags: added to every series before its labels.
    :param host: sent as the ``host`` resource; empty sends none.
    """

    def __init__(
        self, metrics: SelfMetrics, *, tags: Sequence[str] = (), host: str = ""
    ) -> None:
        self.metrics = metrics
        self._tags = list(tags)
        self._resources = [{"type": "host", "name": host}] if host else None
        #: Each counter's value at the previous export, by (name, tags).
        self._previous: dict[tuple[str, tuple[str, ...]], float] = {}
        self._limiter = RateLimiter(clock=metrics.clock.monotonic)

    async def series(self, stamp: int) -> list[dict]:
        """Return the series of one export, its points stamped ``stamp``.

        When the state database cannot be read, the alerts by state and the
        outbox's depth go out as last read, and a warning says so.
        """
        try:
            await self.metrics.read_state()
        except StateError as error:
            allowed, suppressed = self._limiter.allow("state")
            if allowed:
                # WARNING: the export goes on with figures that may be stale.
                log.warning(
                    "self-metrics exported without fresh state figures",
                    extra={"error": str(error), "suppressed": suppressed},
                )
        out: list[dict] = []
        for family in self.metrics.registry.collect():
            kind = _KINDS.get(family.type)
            if kind is None:
                continue
            for sample in family.samples:
                if sample.name.endswith(("_bucket", "_created")):
                    continue
                labels = (f"{key}:{value}" for key, value in sample.labels.items())
                tags = (*self._tags, *labels)
                self._add(out, _name(sample.name), kind, sample.value, tags, stamp)
        return out

    def _add(
        self,
        out: list[dict],
        name: str,
        kind: int,
        value: float,
        tags: tuple[str, ...],
        stamp: int,
    ) -> None:
        if not math.isfinite(value):
            return

        if kind == _COUNT:
            key = (name, tags)
            before = self._previous.get(key, 0.0)
            self._previous[key] = value
            # A rule a reload changed counts again from 0: its new total is
            # what it gained since.
            value = value - before if value >= before else value
        series: dict = {
            "metric": name,
            "type": kind,
            "points": [{"timestamp": stamp, "value": value}],
        }
        if tags:
            series["tags"] = list(tags)
        if self._resources:
            series["resources"] = self._resources
        out.append(series)


def _name(prometheus_name: str) -> str:
    """Return the Datadog name of a Prometheus sample name."""
    name = prometheus_name.removeprefix("tocsin_").removesuffix("_total")
    return f"tocsin.{name}"
