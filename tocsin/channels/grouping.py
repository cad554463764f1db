"""Aggregation groups: when a group is flushed, and what a flush sends.

Pure logic, no I/O: :mod:`tocsin.channels.notifier` owns the groups, asks the
policy what is suppressed, and writes what :func:`plan_channel` decides.

An alert joins one group per route it matches, keyed by the route and the
values of the route's ``group_by``. A group is flushed ``group_wait`` after it
was created (at once when its first alert fired longer ago than that), then at
ticks ``anchor + k * group_interval``, where the anchor is the first flush; a
``group_interval`` of ``0`` flushes on every change. A digest route flushes
only at multiples of its ``digest`` on the UTC clock.

At a flush, each channel of the route decides on its own whether to send,
against its entry of the notification log (what it was last sent), in the
order Alertmanager's deduplication uses: nothing sent yet: send if something
fires; an alert fires that was not in the last message (or at another
severity): send; nothing fires any more: send if the last message had firing
alerts; an alert the channel knows of resolved: send, if the channel takes
resolves; else send again once ``repeat_interval`` has elapsed.

Two rules of Tocsin's own come first. A suppressed alert (silenced, muted,
inhibited) is left out, and an alert the channel was told of that becomes
suppressed leaves the channel's last firing set, so the end of the suppression
makes it new again and it is notified once more. And a channel only ever hears
of a resolve for an alert it was told fired: the log keeps which alerts each
channel was told of (``announced``). For a channel that takes no resolves, a
resolved alert simply leaves its log entry; no message is sent for it (where
Alertmanager sends an empty "all resolved" to clear its log, Tocsin updates
the log alone).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import NamedTuple

import msgspec

from tocsin.channels.routing import RouteSettings
from tocsin.state.groups import Firing, LogEntry
from tocsin.state.models import OPEN_STATES, Alert

#: The reasons a flush gives for a message.
FIRST = "first notification"
NEW_ALERTS = "new alerts"
SEVERITY_CHANGED = "severity changed"
ALERTS_RESOLVED = "alerts resolved"
ALL_RESOLVED = "all alerts resolved"
REPEAT = "repeat interval elapsed"

#: What a suppressed alert was held back by, and the reason given when that
#: ends and the alert is notified again.
SUPPRESSION_ENDED = {
    "silenced": "silence ended",
    "muted": "mute window ended",
    "inhibited": "inhibition ended",
}


class ChannelPlan(NamedTuple):
    """What one flush does for one channel."""

    #: Why a message is sent; ``None`` when nothing is.
    reason: str | None
    #: The alerts of the message, firing ones first; empty with no message.
    alerts: list[Alert]
    #: The channel's log entry after the flush (``None``: none).
    entry: LogEntry | None


def is_firing(alert: Alert) -> bool:
    """Return whether ``alert`` is open (any state before resolved)."""
    return alert.state in OPEN_STATES


def group_key(route: RouteSettings, labels: Mapping[str, str]) -> str:
    """Return the key of the group of ``route`` with ``labels``: stable across
    restarts and reloads while the route's id stays."""
    pairs = ",".join(f"{name}={value!r}" for name, value in sorted(labels.items()))
    return f"{route.id}:{{{pairs}}}"


def decide(
    firing: Collection[Firing],
    resolved: Collection[int],
    entry: LogEntry | None,
    *,
    send_resolved: bool,
    repeat_interval: float,
    now: float,
    withheld: Mapping[int, str] | None = None,
) -> str | None:
    """Decide whether one channel is sent a message about one group.

    :param firing: the group's firing alerts the channel may hear of.
    :param resolved: the group's resolved alerts whose resolve it may hear of.
    :param entry: the channel's log entry, already cleared of alerts it will
        not hear of any more; ``None`` if it was never sent anything.
    :param send_resolved: whether the channel takes resolves.
    :param repeat_interval: resend an unchanged group this long after the
        last message; ``0`` or less never does.
    :param withheld: alerts held back at the last flush, with what held them.
    :return: the reason of the message, or ``None`` for no message.
    """
    firing = frozenset(firing)
    if entry is None:
        return FIRST if firing else None
    if not firing <= entry.firing:
        new = sorted(firing - entry.firing)
        held = withheld or {}
        ended = [held[alert_id] for alert_id, _ in new if alert_id in held]
        if ended:
            return SUPPRESSION_ENDED.get(ended[0], NEW_ALERTS)
        if not entry.firing:
            return FIRST
        known = {alert_id for alert_id, _ in entry.firing}
        if all(alert_id in known for alert_id, _ in new):
            return SEVERITY_CHANGED
        return NEW_ALERTS
    if not firing:
        if entry.firing:
            return ALL_RESOLVED
        # The last firing alerts may have left the set while held back; their
        # resolves (when the route sends those) still end the group.
        if send_resolved and not frozenset(resolved) <= entry.resolved:
            return ALL_RESOLVED
        return None
    if send_resolved and not frozenset(resolved) <= entry.resolved:
        return ALERTS_RESOLVED
    if 0 < repeat_interval <= now - entry.sent_at:
        return REPEAT
    return None


def plan_channel(
    alerts: Sequence[Alert],
    suppressed: Mapping[int, str],
    entry: LogEntry | None,
    *,
    takes_resolves: bool,
    send_resolved_silenced: bool,
    repeat_interval: float,
    now: float,
) -> ChannelPlan:
    """Plan one channel's part of a group's flush.

    :param alerts: the group's alerts, as they are now.
    :param suppressed: the alerts suppressed now, by id, with what suppresses
        each (``silenced``, ``muted``, ``inhibited``).
    :param entry: the channel's log entry, or ``None``.
    :param takes_resolves: whether the channel is sent resolves.
    :param send_resolved_silenced: whether a resolve of an alert held back
        when it resolved is sent (to a channel that was told it fired).
    """
    announced = entry.announced if entry else frozenset()
    held_before = entry.withheld if entry else {}
    firing_alerts = sorted(
        (a for a in alerts if is_firing(a) and a.id not in suppressed),
        key=lambda a: a.id,
    )
    firing = frozenset((a.id, a.spec.severity) for a in firing_alerts)

    # Resolves: only of alerts the channel was told of, never one held back
    # unless the route asks for those, never to a channel that takes none.
    resolved_alerts: list[Alert] = []
    dropped: set[int] = set()
    for alert in sorted(alerts, key=lambda a: a.id):
        if is_firing(alert) or alert.id not in announced:
            continue
        held = alert.id in suppressed or alert.id in held_before
        if takes_resolves and (send_resolved_silenced or not held):
            resolved_alerts.append(alert)
        else:
            dropped.add(alert.id)
    resolved = frozenset(a.id for a in resolved_alerts)
    withheld = {
        a.id: suppressed[a.id] for a in alerts if is_firing(a) and a.id in suppressed
    }

    # The last message's firing alerts the channel may still be told of
    # again: open and not held back (at whatever severity it heard), or
    # resolved with a resolve to come.
    if entry is None:
        last = None
    else:
        sendable = {a.id for a in firing_alerts} | resolved
        kept = frozenset(pair for pair in entry.firing if pair[0] in sendable)
        last = msgspec.structs.replace(entry, firing=kept)
    reason = decide(
        firing,
        resolved,
        last,
        send_resolved=takes_resolves,
        repeat_interval=repeat_interval,
        now=now,
        withheld=held_before,
    )
    if reason is None:
        if last is None:
            return ChannelPlan(None, [], None)
        after = msgspec.structs.replace(
            last, announced=announced - dropped, withheld=withheld
        )
        return ChannelPlan(None, [], after)

    told = announced | {a.id for a in firing_alerts}
    after = LogEntry(
        firing=firing,
        resolved=resolved,
        announced=told - resolved - dropped,
        withheld=withheld,
        sent_at=now,
    )
    return ChannelPlan(reason, [*firing_alerts, *resolved_alerts], after)


def align(at: float, digest: float) -> float:
    """Return the first multiple of ``digest`` (POSIX seconds, so aligned to
    the UTC clock) at or after ``at``; ``at`` itself with no digest."""
    if digest <= 0:
        return at
    return math.ceil(at / digest) * digest


def tick_at_or_after(anchor: float, interval: float, at: float) -> float:
    """Return the first tick ``anchor + k * interval`` (k >= 0) at or after ``at``."""
    steps = max(0, math.ceil((at - anchor) / interval))
    return anchor + steps * interval


def tick_after(anchor: float, interval: float, at: float) -> float:
    """Return the first tick ``anchor + k * interval`` strictly after ``at``."""
    steps = max(0, math.floor((at - anchor) / interval) + 1)
    return anchor + steps * interval


class Group:
    """One aggregation group: its alerts, timers and notification log.

    :param created_at: when the group came to be, or when its first alert
        fired if that was earlier: ``group_wait`` counts from it, so a group
        whose first alert fired long ago is flushed at once.
    """

    def __init__(
        self,
        route: RouteSettings,
        labels: Mapping[str, str],
        created_at: float,
    ) -> None:
        self.route = route
        self.labels = dict(labels)
        self.key = group_key(route, labels)
        self.created_at = created_at
        #: The first flush; ticks follow it every ``group_interval``.
        self.anchor: float | None = None
        #: The number of the last flush that queued messages.
        self.seq = 0
        self.alerts: dict[int, Alert] = {}
        #: The notification log, by channel.
        self.log: dict[str, LogEntry] = {}
        #: Whether something changed since the last flush, and since when.
        self.is_dirty = True
        self.changed_at = created_at
        #: Set when a silence, mute window or inhibition ended: the group is
        #: looked at then, not at its next tick, so that what the suppression
        #: held back goes out promptly.
        self.urgent_at: float | None = None
        #: When this process last flushed the group.
        self.flushed_at: float | None = None
        #: Whether the group's row is stored (it is from the first flush on).
        self.is_stored = False
        #: The alerts suppressed at the last flush, with what suppressed them.
        self.suppressed: dict[int, str] = {}

    def touch(self, now: float) -> None:
        """Note a change: the next flush decides whether it is sent."""
        if not self.is_dirty:
            self.is_dirty = True
            self.changed_at = now

    def hurry(self, now: float) -> None:
        """Look at the group at ``now`` whatever its timers say: a suppression
        changed. The dedup decision still sends only what is news."""
        self.touch(now)
        if self.anchor is not None:
            self.urgent_at = now

    def due_at(self) -> float | None:
        """Return when the group is next flushed, or ``None`` for never."""
        route = self.route
        if self.urgent_at is not None:
            return self.urgent_at
        if self.anchor is None:
            due = self.created_at + route.group_wait
        elif route.group_interval > 0:
            due = self._tick_due(route.group_interval)
        elif self.is_dirty:
            due = self.changed_at
        else:
            due = self._repeat_due()
            if due is not None and self.flushed_at is not None:
                # A repeat held back (by the dedup caps) is tried again a
                # whole interval later, not on every pass.
                due = max(due, self.flushed_at + route.repeat_interval)
        if due is None:
            return None

        return align(due, route.digest)

    def _tick_due(self, interval: float) -> float | None:
        assert self.anchor is not None
        if self.flushed_at is None:
            floor = tick_at_or_after(self.anchor, interval, self.changed_at)
        else:
            floor = tick_after(self.anchor, interval, self.flushed_at)
        if self.is_dirty:
            return floor
        repeat = self._repeat_due()
        if repeat is None:
            return None

        return max(floor, tick_at_or_after(self.anchor, interval, repeat))

    def _repeat_due(self) -> float | None:
        """Return when the first channel's repeat falls due, or ``None``."""
        interval = self.route.repeat_interval
        if interval <= 0:
            return None
        times = [e.sent_at + interval for e in self.log.values() if e.firing]
        return min(times, default=None)
