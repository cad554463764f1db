"""The ``[dedup]`` caps: notifications that say the same thing, counted per
channel and key, and dropped past the caps.

Two messages say the same thing when their alerts have the same values of
``dedup.keys``. The caps remember what each channel was sent under each key for
as long as the longer of ``window`` and ``suppress_for``; the notifier writes
the same record to the dedup log in each flush's transaction, so that after a
restart :meth:`DedupCaps.remember` is fed the log again and the caps hold.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping

from tocsin.logs import RateLimiter
from tocsin.schema import DedupConfig

log = logging.getLogger(__name__)


class DedupCaps:
    """Decide whether a message is dropped by the dedup caps.

    :param limiter: rate-limits the log line of a drop, per key and channel.
    """

    def __init__(self, config: DedupConfig, limiter: RateLimiter) -> None:
        #: Messages dropped.
        self.dropped = 0
        self.config = config
        self._limiter = limiter
        #: Messages sent, by (channel, key): (event, sent_at).
        self._recent: dict[tuple[str, str], deque[tuple[str, float]]] = {}

    def key(self, labels: Mapping[str, str]) -> str:
        """Return the dedup key of a message about ``labels``; empty when the
        caps are off."""
        if not self.config.keys:
            return ""
        return ",".join(f"{name}={labels.get(name, '')!r}" for name in self.config.keys)

    def is_capped(
        self, channel: str, key: str, event: str, now: float, context: dict
    ) -> bool:
        """Return whether the caps drop a message; count and log it.

        :param context: the route and group, for the log line.
        """
        if not key:
            return False
        config = self.config
        history = self._recent.get((channel, key), deque())
        suppress_for = float(config.suppress_for)
        window = float(config.window)
        why = None
        if event == "trigger" and any(
            kind == "trigger" and now - at < suppress_for for kind, at in history
        ):
            why = "suppress_for"
        elif config.max_per_window and (
            sum(1 for _, at in history if now - at < window) >= config.max_per_window
        ):
            why = "max_per_window"
        if why is None:
            return False
        self.dropped += 1
        # Once per key and channel a while: a flapping model must not turn
        # every dropped message into a log line.
        allowed, held = self._limiter.allow(f"dedup:{channel}:{key}")
        if allowed:
            log.info(
                "notification dropped by the dedup caps",
                extra={
                    **context,
                    "channel": channel,
                    "reason": why,
                    "key": key,
                    "suppressed": held,
                },
            )
        return True

    def remember(self, channel: str, key: str, event: str, at: float) -> None:
        """Count a message sent to ``channel`` under ``key`` at ``at``."""
        horizon = self.horizon()
        if not key or horizon is None:
            return
        history = self._recent.setdefault((channel, key), deque())
        history.append((event, at))
        while history and history[0][1] < at - horizon:
            history.popleft()

    def horizon(self) -> float | None:
        """Return how far back the caps look, or ``None`` when they are off."""
        config = self.config
        if not config.keys:
            return None
        return max(float(config.window), float(config.suppress_for))

    def forget_before(self, now: float) -> float | None:
        """Return the time before which the dedup log is no longer needed."""
        horizon = self.horizon()
        return None if horizon is None else now - horizon
