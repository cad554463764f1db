"""How late the event loop runs: a callback asked for every ``interval``
seconds, and how much later than asked it ran.

Everything Tocsin does shares one loop: a parser that holds it, a slow
template or a blocking call delays every listener and delivery alike. The lag
measured here is that delay as a sample arrival would have felt it.
"""

from __future__ import annotations

import asyncio
import bisect

#: Upper bounds, in seconds, of the lag histogram's buckets.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

#: Seconds between two measurements, by default.
INTERVAL = 0.5


class LoopLag:
    """The lag of the running loop: the last one, the largest, and a histogram.

    :param interval: seconds between two measurements.
    """

    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        #: The last lag measured, in seconds.
        self.last = 0.0
        #: The largest lag measured since start, in seconds.
        self.max = 0.0
        #: Measurements per bucket of :data:`BUCKETS`, and over the last bound.
        self.counts = [0] * (len(BUCKETS) + 1)
        #: Sum of every lag measured, in seconds.
        self.sum = 0.0

    @property
    def count(self) -> int:
        """Return how many lags were measured."""
        return sum(self.counts)

    def observe(self, lag: float) -> None:
        """Record one lag of ``lag`` seconds (a negative one counts as 0)."""
        lag = max(0.0, lag)
        self.last = lag
        self.max = max(self.max, lag)
        self.sum += lag
        self.counts[bisect.bisect_left(BUCKETS, lag)] += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """Return the histogram as Prometheus buckets: ``(le, count)``, the
        count of lags at or below ``le``, ending with ``+Inf``."""
        bounds = [f"{bound:g}" for bound in BUCKETS] + ["+Inf"]
        buckets = []
        total = 0
        for bound, count in zip(bounds, self.counts, strict=True):
            total += count
            buckets.append((bound, total))
        return buckets

    async def run(self) -> None:
        """Measure until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            # The loop's own clock: this measures the loop, not the domain's
            # time, so no test clock belongs here.
            asked = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            self.observe(loop.time() - asked)
