"""Rows of the state database, as the rest of Tocsin sees them."""

from __future__ import annotations

from typing import Literal

import msgspec

AlertState = Literal[
    "triggered", "acknowledged", "investigating", "escalated", "resolved", "closed"
]
#: The states of an alert that still needs someone (or its rule) to end it.
OPEN_STATES: tuple[AlertState, ...] = (
    "triggered",
    "acknowledged",
    "investigating",
    "escalated",
)
NotificationEvent = Literal["trigger", "resolve", "acknowledge"]


class AlertSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a new alert needs; copied from the rule and the decision.

    Only its level (``severity``, ``threshold``, ``range``) changes later, when
    the open alert moves between the levels of its rule.
    """

    rule: str
    series: str
    #: Series labels merged with the rule's own labels.
    labels: dict[str, str]
    severity: str
    metric: str
    aggregation: str
    window: float
    op: str
    #: The threshold of the alert's level; ``None`` for a range or a
    #: composite rule.
    threshold: float | None
    value: float | None
    samples: int
    #: When the condition started to hold.
    started_at: float
    #: When the alert fired.
    fired_at: float
    reason: str
    #: ``[low, high]`` of the level's range comparison (``inside``,
    #: ``outside``).
    range: list[float] = []
    summary: str = ""
    description: str = ""
    runbook: str = ""
    recommended_actions: list[str] = []
    metadata: dict[str, str] = {}


class Alert(msgspec.Struct, kw_only=True):
    """An alert as stored: its spec, identity and lifecycle state."""

    id: int
    #: Stable external identifier (used as the dedup key by destinations).
    uid: str
    state: AlertState
    spec: AlertSpec
    #: Last aggregated value the engine reported for this alert.
    value: float | None
    resolved_at: float | None = None
    closed_at: float | None = None


class Transition(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    alert_id: int
    from_state: AlertState | None
    to_state: AlertState
    at: float
    actor: str
    reason: str
    comment: str = ""


class Notification(msgspec.Struct, frozen=True, kw_only=True):
    """One message to one channel about one transition; a row of the outbox.

    ``key`` is the idempotency key: the same on every attempt, different for
    every (transition, channel) pair.
    """

    id: int
    key: str
    channel: str
    event: NotificationEvent
    #: The alert as it was right after ``transition``, not as it is now.
    alert: Alert
    transition: Transition
    #: Attempts already made before this one.
    attempts: int
    created_at: float
    #: Whether the channel knows of the alert: always for a trigger; for a
    #: resolve, only if the trigger was delivered to the same channel.
    announced: bool = True
    #: The group the message is about (see :mod:`tocsin.channels.notifier`);
    #: empty for a message about one alert outside any group.
    group_key: str = ""
    #: The group's labels: the values of the route's ``group_by``.
    group_labels: dict[str, str] = {}
    #: Why the message is sent (``first notification``, ``new alerts``,
    #: ``repeat interval elapsed``, ``escalation step 2``...).
    reason: str = ""
    #: Every alert the message is about, as each was when it was queued,
    #: firing ones first; ``alert`` is the first of them. Empty means
    #: ``[alert]``.
    alerts: list[Alert] = []


class Silence(msgspec.Struct, frozen=True, kw_only=True):
    """A time-boxed mute of the alerts its matchers select."""

    id: str
    #: Alertmanager-style matchers (``team="ml"``); every one must hold.
    matchers: list[str]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str
    created_at: float
    updated_at: float

    def state(self, now: float) -> str:
        """Return ``pending``, ``active`` or ``expired`` at ``now``."""
        if now >= self.ends_at:
            return "expired"
        return "active" if now >= self.starts_at else "pending"


EscalationStepState = Literal["pending", "reached", "cancelled"]


class EscalationStep(msgspec.Struct, frozen=True, kw_only=True):
    """One step of an alert's escalation, as scheduled when the alert fired."""

    id: int
    alert_id: int
    #: The name of the escalation policy the step comes from.
    policy: str
    #: 0 for the policy's first step.
    step: int
    #: When the step is reached unless the alert was acknowledged first.
    due_at: float
    #: The channels notified when the step is reached.
    channels: list[str]
    state: EscalationStepState
    reached_at: float | None = None
    cancelled_at: float | None = None
