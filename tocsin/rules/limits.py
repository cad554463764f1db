"""A rule's rate guards: when a fire that is due has to wait.

Three guards, checked in this order:

- the *cooldown* runs per series key from the series' last fire;
- the *daily cap* counts the rule's fires per UTC calendar day (``utc_day``,
  POSIX day ``floor(t / 86400)``, since POSIX time has no leap seconds) or
  within any 24 hours ending now (``rolling_24h``);
- the *window cap* counts the rule's fires within any span of ``window``
  seconds ending now.

Fires restored after a restart count towards all three. Memory is bounded by
the caps (the latest ``cap`` fire times of each rolling guard) and by the
cooldown (series that fired less than a cooldown ago), once :meth:`forget`
has run.
"""

from __future__ import annotations

from bisect import insort
from collections import deque
from collections.abc import Sequence
from math import floor

DAY = 86400.0
#: How the daily cap counts a day.
PERIODS = ("utc_day", "rolling_24h")


class RecentFires:
    """The latest ``cap`` fire times of a rule, for a cap over a rolling span.

    At most ``cap`` fires may lie within any ``span`` seconds: a new fire is
    blocked while the oldest of the latest ``cap`` is less than ``span`` ago.
    Only the latest ``cap`` times can decide that, so no more are kept.
    """

    __slots__ = ("cap", "span", "_times")

    def __init__(self, cap: int, span: float) -> None:
        self.cap = cap
        self.span = span
        # Sorted, oldest first.
        self._times: deque[float] = deque(maxlen=cap)

    def __len__(self) -> int:
        return len(self._times)

    def blocks(self, now: float) -> bool:
        """Return whether a fire at ``now`` would exceed the cap."""
        times = self._times
        return len(times) == self.cap and now - times[0] < self.span

    def add(self, at: float) -> None:
        """Count a fire at ``at``; O(1) unless it is older than the newest."""
        times = self._times
        if not times or at >= times[-1]:
            # The deque's maxlen drops the oldest once the cap is reached.
            times.append(at)
            return

        # A fire restored out of order: keep the times sorted, and keep it
        # only if it is among the latest ``cap``.
        if len(times) == self.cap:
            if at <= times[0]:
                return
            times.popleft()
        insort(times, at)

    def forget(self, now: float) -> None:
        """Drop the fires that are at least ``span`` before ``now``."""
        times = self._times
        while times and now - times[0] >= self.span:
            times.popleft()


class FireLimits:
    """A rule's cooldown, daily cap and window cap.

    :param cooldown: seconds a series waits after its last fire; 0: none.
    :param daily_cap: most fires of the rule per day; 0: no cap.
    :param period: ``utc_day`` or ``rolling_24h``, how the daily cap counts.
    :param window: the span of the window cap, in seconds.
    :param window_cap: most fires of the rule within any ``window``; 0: no cap.
    :raises ValueError: if a setting is negative, ``period`` is unknown, or
        ``window_cap`` is set without a positive ``window``.
    """

    __slots__ = (
        "cooldown",
        "daily_cap",
        "period",
        "window",
        "window_cap",
        "_last_fire",
        "_fires_by_day",
        "_day",
        "_window",
    )

    def __init__(
        self,
        cooldown: float,
        daily_cap: int,
        *,
        period: str = "utc_day",
        window: float = 0.0,
        window_cap: int = 0,
    ) -> None:
        if period not in PERIODS:
            raise ValueError(
                f"daily cap period must be utc_day or rolling_24h: {period}"
            )
        if cooldown < 0 or daily_cap < 0 or window < 0 or window_cap < 0:
            raise ValueError("cooldown, caps and window must not be negative")
        if window_cap and not window > 0:
            raise ValueError("a window cap needs a positive window")
        self.cooldown = cooldown
        self.daily_cap = daily_cap
        self.period = period
        self.window = window
        self.window_cap = window_cap
        # Last fire per series key, kept while it can still hold a fire back.
        self._last_fire: dict[str, float] = {}
        # utc_day: fires per POSIX day, kept for today and days ahead of it.
        self._fires_by_day: dict[int, int] = {}
        self._day: RecentFires | None = None
        if daily_cap and period == "rolling_24h":
            self._day = RecentFires(daily_cap, DAY)
        self._window: RecentFires | None = None
        if window_cap:
            self._window = RecentFires(window_cap, window)

    def blocker(self, key: str, now: float) -> str | None:
        """Return the guard that holds a fire of ``key`` at ``now`` back, if any.

        :return: ``cooldown``, ``daily_cap``, ``window_cap`` or ``None``.
        """
        if self.cooldown > 0:
            last = self._last_fire.get(key)
            if last is not None and now - last < self.cooldown:
                return "cooldown"
        if self.daily_cap:
            if self._day is not None:
                if self._day.blocks(now):
                    return "daily_cap"
            elif self._fires_by_day.get(floor(now / DAY), 0) >= self.daily_cap:
                return "daily_cap"
        if self._window is not None and self._window.blocks(now):
            return "window_cap"
        return None

    def record(self, key: str | None, at: float) -> None:
        """Count a fire of series ``key`` (``None``: of an unknown series)."""
        if self.daily_cap:
            if self._day is not None:
                self._day.add(at)
            else:
                day = floor(at / DAY)
                self._fires_by_day[day] = self._fires_by_day.get(day, 0) + 1
        if self._window is not None:
            self._window.add(at)
        self.cooled(key, at)

    def record_all(self, fired_at: Sequence[float], keys: Sequence[str]) -> None:
        """Count earlier fires; ``keys`` names the series of the first ones."""
        for index, at in enumerate(fired_at):
            self.record(keys[index] if index < len(keys) else None, at)

    def cooled(self, key: str | None, fired_at: float) -> None:
        """Start the cooldown of series ``key`` at ``fired_at`` (if later)."""
        if key is not None and self.cooldown > 0:
            self._last_fire[key] = max(fired_at, self._last_fire.get(key, fired_at))

    def forget(self, now: float) -> None:
        """Drop fires that can no longer hold a fire back."""
        if self._last_fire:
            cooldown = self.cooldown
            expired = [k for k, t in self._last_fire.items() if now - t >= cooldown]
            for key in expired:
                del self._last_fire[key]
        if self._fires_by_day:
            today = floor(now / DAY)
            for day in [day for day in self._fires_by_day if day < today]:
                del self._fires_by_day[day]
        if self._day is not None:
            self._day.forget(now)
        if self._window is not None:
            self._window.forget(now)

    def remembered(self) -> int:
        """Return how many fire times and cooldowns are kept (for tests, stats)."""
        kept = len(self._last_fire) + len(self._fires_by_day)
        for recent in (self._day, self._window):
            if recent is not None:
                kept += len(recent)
        return kept
