"""Pacing: how many attempts a destination may take now, and when it may take more.

Every paging and chat service publishes a rate limit (PagerDuty's events API
takes about 120 events a minute per integration, a Slack webhook one message a
second, a Teams workflow a few a second). Going over it earns a 429 and a
pause the service chooses; staying under it costs nothing. Each channel
therefore gets a :class:`SlidingWindow` of its ``rate_limit`` attempts per
``rate_period`` seconds, and the dispatcher takes only as many due
notifications as the window has room for. An attempt that would not fit waits
for room: it is neither dropped nor counted as a failure.

The window reads the clock's monotonic time, so a wall clock stepped back by
an administrator or NTP never holds deliveries for the size of the step.
"""

from __future__ import annotations

from collections import deque

from tocsin.clock import Clock


class SlidingWindow:
    """At most ``limit`` attempts in any ``period`` seconds.

    A ``limit`` or ``period`` of ``0`` sets no limit.

    :param limit: most attempts per period.
    :param period: length of the window, in seconds.
    """

    def __init__(self, limit: int, period: float, clock: Clock) -> None:
        if limit < 0 or period < 0:
            raise ValueError("a rate limit and its period are never negative")
        self.limit = limit
        self.period = period
        self._clock = clock
        # When each attempt of the last ``period`` seconds started, oldest first.
        self._starts: deque[float] = deque()

    @property
    def is_limited(self) -> bool:
        """Tell whether the window limits anything at all."""
        return self.limit > 0 and self.period > 0

    def room(self) -> int | None:
        """Return how many attempts may start now; ``None`` when unlimited."""
        if not self.is_limited:
            return None
        self._forget(self._clock.monotonic())

        return self.limit - len(self._starts)

    def take(self, count: int = 1) -> None:
        """Count ``count`` attempts starting now.

        :raises ValueError: if the window has no room for them.
        """
        if not self.is_limited:
            return
        room = self.room()
        if room is not None and count > room:
            raise ValueError(f"{count} attempts do not fit in a window with {room}")
        now = self._clock.monotonic()
        self._starts.extend([now] * count)

    def wait(self) -> float:
        """Return the seconds until one more attempt may start; ``0`` if now."""
        room = self.room()
        if room is None or room > 0:
            return 0.0

        return max(0.0, self._starts[0] + self.period - self._clock.monotonic())

    def _forget(self, now: float) -> None:
        # An attempt that started exactly ``period`` ago no longer counts, so
        # that one attempt per second is one attempt every second, not every
        # second and a bit.
        starts = self._starts
        while starts and starts[0] <= now - self.period:
            starts.popleft()
