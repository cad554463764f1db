"""How well each integration delivers: its status, and what Tocsin watches to
raise its own alerts about one.

:func:`integration_health` turns the figures the state database keeps (see
:mod:`tocsin.state.health`) into an integration's :class:`IntegrationHealth`.
The status follows one rule, with ``N`` = ``health.failures`` and ``W`` =
``health.window``:

``failing``
    the last ``N`` attempts all failed; or notifications are pending, the
    oldest has waited longer than ``W``, and no attempt succeeded within ``W``.
``degraded``
    not failing, and an attempt failed within ``W``; or ``health.backlog`` or
    more notifications are pending; or the oldest pending one has waited
    longer than ``W`` (the destination takes them, but slower than they come).
``healthy``
    everything else, an integration that never sent anything included.

:class:`DeliveryWatch` is what the delivery workers tell of every outcome as
it is recorded; Tocsin's own alerts about integrations are decided from it in
memory, without reading the database on every turn.
"""

from __future__ import annotations

import asyncio
import statistics
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import msgspec

from tocsin.schema import HealthConfig
from tocsin.state.health import DeliveryFigures

#: Tocsin's own alert: an integration failed ``health.failures`` times within
#: ``health.window`` and has not delivered since.
INTEGRATION_FAILING_RULE = "tocsin.integration_failing"
#: Tocsin's own alert: notifications of an integration were dead-lettered
#: within ``health.window``.
DEAD_LETTERS_RULE = "tocsin.dead_letters"
#: Tocsin's own alerts that are about one integration, named by their
#: ``channel`` label: they never go to that integration.
CHANNEL_RULES = (INTEGRATION_FAILING_RULE, DEAD_LETTERS_RULE)
#: Tocsin's own alert: the Datadog export has had no request accepted for
#: ``health.export_intervals`` intervals since one failed, or dropped series
#: within ``health.window``.
EXPORT_BEHIND_RULE = "tocsin.export_behind"
#: Every alert about Tocsin's own delivery and export: each goes to
#: ``alerts.internal_channels`` only, less the integration it is about.
DELIVERY_RULES = (*CHANNEL_RULES, EXPORT_BEHIND_RULE)

Status = Literal["healthy", "degraded", "failing"]


def destinations(channels: Iterable[str], labels: Mapping[str, str]) -> list[str]:
    """Return where one of Tocsin's alerts about an integration may go:
    ``channels`` less the integration its ``channel`` label names, which is
    never told of its own failure."""
    subject = labels.get("channel")
    return [name for name in channels if name != subject]


class IntegrationHealth(msgspec.Struct, frozen=True, kw_only=True):
    """One integration's health, as the API shows it."""

    status: Status
    #: Why, in a few words (``last 5 attempts failed``); empty when healthy.
    detail: str
    last_success_at: float | None
    last_error_at: float | None
    last_error_reason: str | None
    last_error_status: int | None
    failures_24h: int
    dead_letters_24h: int
    #: Median and 95th percentile of the latest attempts' durations.
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    backlog: int
    #: How long the oldest pending notification has waited, in seconds.
    oldest_pending_s: float | None
    #: Attempts being made now.
    in_flight: int = 0


def integration_health(
    figures: DeliveryFigures,
    settings: HealthConfig,
    now: float,
    *,
    in_flight: int = 0,
) -> IntegrationHealth:
    """Return an integration's health at ``now`` (see the module's rule)."""
    status, detail = classify(figures, settings, now)
    waited = (
        None
        if figures.oldest_pending_at is None
        else round(max(0.0, now - figures.oldest_pending_at), 3)
    )
    p50, p95 = latency(figures.recent_durations_ms)

    return IntegrationHealth(
        status=status,
        detail=detail,
        last_success_at=figures.last_success_at,
        last_error_at=figures.last_error_at,
        last_error_reason=figures.last_error_reason,
        last_error_status=figures.last_error_status,
        failures_24h=figures.failures_24h,
        dead_letters_24h=figures.dead_letters_24h,
        latency_p50_ms=p50,
        latency_p95_ms=p95,
        backlog=figures.backlog,
        oldest_pending_s=waited,
        in_flight=in_flight,
    )


def classify(
    figures: DeliveryFigures, settings: HealthConfig, now: float
) -> tuple[Status, str]:
    """Return an integration's status and why (see the module's rule)."""
    window = float(settings.window)
    latest = figures.recent_outcomes[: settings.failures]
    in_a_row = len(latest) == settings.failures and "delivered" not in latest
    stalled = (
        figures.backlog > 0
        and figures.oldest_pending_at is not None
        and now - figures.oldest_pending_at > window
    )
    delivered_lately = (
        figures.last_success_at is not None and now - figures.last_success_at <= window
    )
    if in_a_row:
        return "failing", f"last {settings.failures} attempts failed"
    if stalled and not delivered_lately:
        return "failing", "nothing delivered while notifications wait"
    if figures.failures_window:
        return "degraded", f"{figures.failures_window} failed attempts lately"
    if figures.backlog >= settings.backlog:
        return "degraded", f"{figures.backlog} notifications pending"
    if stalled:
        return "degraded", "notifications wait longer than the window"

    return "healthy", ""


def latency(durations: Sequence[float]) -> tuple[float | None, float | None]:
    """Return the median and the 95th percentile of ``durations``, or ``None``
    for both when there are none."""
    if not durations:
        return None, None
    ordered = sorted(durations)
    # Nearest rank: a value some attempt took, never one between two.
    rank = max(0, -(-95 * len(ordered) // 100) - 1)

    return round(statistics.median(ordered), 3), round(ordered[rank], 3)


class _Outcomes:
    """One integration's outcomes within the window, oldest first."""

    def __init__(self) -> None:
        self.failures: deque[tuple[float, str]] = deque()
        self.dead_letters: deque[float] = deque()
        self.last_success_at: float | None = None
        self.last_failure_at: float | None = None


class DeliveryWatch:
    """The outcomes of recent attempts, by integration, in memory.

    The delivery workers call :meth:`attempted` for every outcome once it is
    recorded and :meth:`expired` for every notification given up on unsent;
    :attr:`changed` is set each time, for whoever watches.

    :param window: how long an outcome is kept, in seconds (``health.window``).
    """

    def __init__(self, window: float = 600.0) -> None:
        self.window = window
        self.changed = asyncio.Event()
        self._channels: dict[str, _Outcomes] = {}

    def attempted(
        self, channel: str, outcome: str, at: float, reason: str | None = None
    ) -> None:
        """Note one attempt's outcome (``delivered``, ``retry`` or ``dead``)."""
        outcomes = self._channels.setdefault(channel, _Outcomes())
        if outcome == "delivered":
            outcomes.last_success_at = at
        else:
            outcomes.failures.append((at, reason or ""))
            outcomes.last_failure_at = at
        if outcome == "dead":
            outcomes.dead_letters.append(at)
        self.changed.set()

    def expired(self, channel: str, at: float) -> None:
        """Note a notification dead-lettered without an attempt (``max_age``)."""
        self._channels.setdefault(channel, _Outcomes()).dead_letters.append(at)
        self.changed.set()

    def channels(self) -> list[str]:
        """Return the integrations with any outcome noted."""
        return list(self._channels)

    def failures(self, channel: str, now: float) -> list[tuple[float, str]]:
        """Return ``(at, reason)`` of the failed attempts within the window."""
        outcomes = self._forget(channel, now)
        return [] if outcomes is None else list(outcomes.failures)

    def dead_letters(self, channel: str, now: float) -> int:
        """Return how many notifications were dead-lettered within the window."""
        outcomes = self._forget(channel, now)
        return 0 if outcomes is None else len(outcomes.dead_letters)

    def is_delivering(self, channel: str) -> bool:
        """Tell whether the integration's last attempt succeeded."""
        outcomes = self._channels.get(channel)
        if outcomes is None or outcomes.last_success_at is None:
            return False
        failed = outcomes.last_failure_at

        return failed is None or outcomes.last_success_at >= failed

    def _forget(self, channel: str, now: float) -> _Outcomes | None:
        outcomes = self._channels.get(channel)
        if outcomes is None:
            return None
        since = now - self.window
        while outcomes.failures and outcomes.failures[0][0] < since:
            outcomes.failures.popleft()
        while outcomes.dead_letters and outcomes.dead_letters[0] < since:
            outcomes.dead_letters.popleft()

        return outcomes
