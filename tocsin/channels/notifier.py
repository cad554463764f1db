"""The notifier: routes changed alerts into groups and queues grouped messages.

Alert transitions queue no notifications themselves. Whoever changes an alert
tells the notifier (:meth:`Notifier.changed`); the alert joins one
aggregation group per route it matches (see :mod:`tocsin.channels.grouping`),
and the group's timers say when it is flushed. A flush asks the policy which
alerts are silenced, muted or inhibited, decides per channel against the
notification log whether a message is due and why, applies the ``[dedup]``
caps, and writes the messages, the log and the timers in one transaction
(:meth:`tocsin.state.groups.GroupStore.flush`) before waking delivery.

Everything a flush decides on is either in that transaction or can be read
again: after a kill -9, :meth:`Notifier.start` rebuilds the groups from the
open alerts and the resolved ones the log still names, with their anchors and
log, so nothing the log says was sent is sent again and a group caught in its
``group_wait`` is flushed when it would have been.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from tocsin.channels.dedup import DedupCaps
from tocsin.channels.grouping import Group, group_key, is_firing, plan_channel
from tocsin.channels.routing import RouteSettings, group_labels, routing_labels
from tocsin.clock import Clock
from tocsin.errors import StateError
from tocsin.logs import RateLimiter
from tocsin.schema import DedupConfig
from tocsin.state.alerts import AlertStore
from tocsin.state.db import Database
from tocsin.state.groups import Flush, GroupStore, LogEntry, Message, StoredGroup
from tocsin.state.models import Alert

log = logging.getLogger(__name__)

#: Pause of the loop after a flush failed, so a database that refuses writes
#: is not asked again in a tight loop.
_RETRY = 1.0


class Policy(Protocol):
    """Where alerts go and what holds them back; built from the config."""

    def routes(self, alert: Alert) -> list[RouteSettings]:
        """Return the routes ``alert`` matches, with the precedence of its
        rule's own channels already applied."""

    def suppression(
        self,
        alert: Alert,
        route: RouteSettings,
        open_alerts: Sequence[Alert],
        now: float,
    ) -> str | None:
        """Return what holds ``alert`` back on ``route`` at ``now``:
        ``silenced``, ``muted``, ``inhibited``, or ``None``.

        :param open_alerts: every open alert, for inhibition.
        """

    def next_change(self, now: float) -> float | None:
        """Return the next instant after ``now`` at which a suppression may
        start or end (a silence's or mute window's edge), or ``None``."""


class Notifier:
    """Keep the aggregation groups and flush them when they are due.

    :param dedup: the caps on messages that say the same thing.
    :param on_queued: called with the channels of every flush that queued
        messages, after its transaction committed (delivery's ``wake``).
    :param takes_resolves: whether a channel is sent resolves; every channel
        is when ``None``.
    :param takes_acknowledgements: whether a channel is told that an alert
        it was sent was acknowledged; none is when ``None``.
    """

    def __init__(
        self,
        db: Database,
        store: AlertStore,
        policy: Policy,
        clock: Clock,
        *,
        dedup: DedupConfig,
        on_queued: Callable[[Iterable[str]], None],
        takes_resolves: Callable[[str], bool] | None = None,
        takes_acknowledgements: Callable[[str], bool] | None = None,
    ) -> None:
        #: Messages queued.
        self.sent = 0
        #: Alerts held back by a silence, mute window or inhibition (each
        #: time one starts to be).
        self.suppressed = 0
        self._store = store
        self._groups_store = GroupStore(db, clock)
        self._policy = policy
        self._clock = clock
        self._on_queued = on_queued
        self._takes_resolves = takes_resolves or (lambda channel: True)
        self._takes_acks = takes_acknowledgements or (lambda channel: False)
        #: Acknowledged alerts whose acknowledgement is not yet queued, by id.
        self._acks: dict[int, Alert] = {}
        self._groups: dict[str, Group] = {}
        #: The groups each alert is in, by alert id.
        self._memberships: dict[int, set[str]] = {}
        #: Stored groups to remove at the next flush (emptied, or their route
        #: is gone).
        self._doomed: set[str] = set()
        self._next_change: float | None = None
        self._limiter = RateLimiter(clock=clock.monotonic)
        self._caps = DedupCaps(dedup, self._limiter)
        self._wakeup = asyncio.Event()
        self._stopping = False

    @property
    def deduplicated(self) -> int:
        """Messages the ``[dedup]`` caps dropped."""
        return self._caps.dropped

    async def start(self) -> None:
        """Rebuild the groups from the state database.

        Open alerts are routed again; a resolved alert joins a group again
        only if that group's log still names it (its resolve may be due).
        Groups keep their stored anchor and log; a group without a stored row
        was never flushed and waits ``group_wait`` from its alerts' firing.

        :raises StateError: if the state cannot be read.
        """
        now = self._clock.time()
        stored = {group.key: group for group in await self._groups_store.groups()}
        entries = await self._groups_store.log()
        opened = await self._store.open_alerts()
        for alert in opened:
            self._route(alert, now, stored, entries)

        # Resolved alerts some channel was told of, in the groups that told it.
        named: dict[int, set[str]] = {}
        for key, by_channel in entries.items():
            for entry in by_channel.values():
                ids = {alert_id for alert_id, _ in entry.firing} | entry.announced
                for alert_id in ids:
                    named.setdefault(alert_id, set()).add(key)
        open_ids = {alert.id for alert in opened}
        for alert_id in sorted(named.keys() - open_ids):
            alert = await self._store.get(alert_id)
            if alert is not None:
                self._route(alert, now, stored, entries, only=named[alert_id])

        self._doomed |= (stored.keys() | entries.keys()) - self._groups.keys()
        horizon = self._caps.horizon()
        if horizon is not None:
            for channel, key, event, sent_at in await self._groups_store.dedup_since(
                now - horizon
            ):
                self._caps.remember(channel, key, event, sent_at)
        self._next_change = self._policy.next_change(now)
        log.info(
            "notifier started",
            extra={"groups": len(self._groups), "alerts": len(self._memberships)},
        )

    def changed(self, alert: Alert) -> None:
        """Take in a transition of ``alert`` (fired, reopened, moved between
        levels, acknowledged, resolved, closed...); never blocks.

        The alert joins or updates its groups, which are flushed when their
        timers say: a resolve is sent (or not) by that flush.
        """
        now = self._clock.time()
        if not is_firing(alert) and alert.id not in self._memberships:
            # Resolved outside any group: no channel was told of it.
            return
        self._route(alert, now)
        if alert.state == "acknowledged":
            self._acks[alert.id] = alert
        else:
            self._acks.pop(alert.id, None)
        self._wakeup.set()

    def suppressions_changed(self) -> None:
        """Look at every group again soon: a silence was added or expired."""
        now = self._clock.time()
        for group in self._groups.values():
            # TODO: only groups with an alert whose suppression changed need
            # this; the others' pending news goes out before its tick.
            group.hurry(now)
        self._wakeup.set()

    async def flush_due(self, now: float) -> int:
        """Flush every group due at ``now``; return how many messages were queued.

        :raises StateError: if a flush cannot be written; the groups flushed
            before it stay flushed, that one and the rest are tried again.
        """
        if self._doomed:
            await self._groups_store.drop(sorted(self._doomed))
            self._doomed.clear()
        if self._next_change is not None and now >= self._next_change:
            # A silence or mute window started or ended: any group may differ.
            for group in self._groups.values():
                group.hurry(now)
        self._next_change = self._policy.next_change(now)

        queued = await self._queue_acknowledgements()
        open_alerts = self._open_alerts()
        for group in list(self._groups.values()):
            due = group.due_at()
            if due is not None and due <= now:
                queued += await self._flush(group, open_alerts, now)

        return queued

    async def _queue_acknowledgements(self) -> int:
        """Tell the channels that take acknowledgements, and were sent an
        alert, that it was acknowledged; return how many messages that took.

        An acknowledgement is not news the group's timers hold back: a pager
        that keeps paging someone who already answered is the noise they
        exist to prevent, so it is queued at once, apart from the group's
        flushes and outside the ``[dedup]`` caps.
        """
        queued = 0
        for alert_id, alert in list(self._acks.items()):
            for key in sorted(self._memberships.get(alert_id, ())):
                queued += await self._queue_acknowledgement(self._groups[key], alert)
            del self._acks[alert_id]

        return queued

    async def _queue_acknowledgement(self, group: Group, alert: Alert) -> int:
        channels = [
            channel
            for channel in group.route.channels
            if self._takes_acks(channel)
            and alert.id in getattr(group.log.get(channel), "announced", ())
        ]
        if not channels or not group.is_stored:
            return 0
        messages = [
            Message(channel, "acknowledge", "acknowledged", [alert])
            for channel in channels
        ]
        row = StoredGroup(
            group.key,
            group.route.id,
            group.labels,
            group.created_at,
            group.anchor,
            group.seq,
            group.flushed_at,
        )
        number = await self._groups_store.flush(Flush(row, messages, {}))
        group.seq = group.seq if number is None else number
        self.sent += len(messages)
        self._on_queued(channels)

        return len(messages)

    def next_due(self) -> float | None:
        """Return when :meth:`flush_due` next has something to do, or ``None``."""
        times = [group.due_at() for group in self._groups.values()]
        times.append(self._next_change)
        return min((t for t in times if t is not None), default=None)

    async def run(self) -> None:
        """Flush groups as they fall due until :meth:`stop` is called."""
        while not self._stopping:
            self._wakeup.clear()
            now = self._clock.time()
            until = None
            try:
                await self.flush_due(now)
                until = self.next_due()
            except StateError as error:
                allowed, suppressed = self._limiter.allow("state")
                if allowed:
                    log.warning(
                        "cannot write notifications; retrying",
                        extra={"error": str(error), "suppressed": suppressed},
                    )
                until = now + _RETRY
            except Exception:
                # A bug must not end notifications for good, nor fill the log.
                allowed, suppressed = self._limiter.allow("bug")
                if allowed:
                    log.exception("notifier failed", extra={"suppressed": suppressed})
                until = now + _RETRY
            await _wait(self._wakeup, until, self._clock)

    def stop(self) -> None:
        """End :meth:`run` after its current pass; safe to call twice."""
        self._stopping = True
        self._wakeup.set()

    def reconfigure(self, policy: Policy, dedup: DedupConfig) -> None:
        """Apply a reload: route every known alert again with ``policy``.

        A group whose key (route id and labels) still exists keeps its timers
        and log, and is only looked at again if its alerts changed; nothing is
        flushed here. Groups no alert routes to any more are dropped.
        """
        now = self._clock.time()
        self._policy = policy
        self._caps.config = dedup
        known = {
            alert.id: alert
            for group in self._groups.values()
            for alert in group.alerts.values()
        }
        old = self._groups
        self._groups = {}
        self._memberships = {}
        for alert_id in sorted(known):
            alert = known[alert_id]
            # A resolved alert only stays where a channel may await its resolve.
            only = None if is_firing(alert) else set(old)
            self._route(alert, now, only=only, previous=old)
        for key, group in old.items():
            if key not in self._groups and group.is_stored:
                self._doomed.add(key)
        for group in self._groups.values():
            before = old.get(group.key)
            if before is not None and before.alerts.keys() != group.alerts.keys():
                group.touch(now)
        self._next_change = policy.next_change(now)
        self._wakeup.set()

    def groups(self) -> list[dict]:
        """Describe every group, for the API."""
        return [
            {
                "key": group.key,
                "route": group.route.id,
                "labels": group.labels,
                "alerts": [
                    {
                        "id": alert.id,
                        "uid": alert.uid,
                        "rule": alert.spec.rule,
                        "series": alert.spec.series,
                        "state": alert.state,
                        "severity": alert.spec.severity,
                        "suppressed": group.suppressed.get(alert.id),
                    }
                    for alert in sorted(group.alerts.values(), key=lambda a: a.id)
                ],
                "next_flush": group.due_at(),
                "anchor": group.anchor,
            }
            for group in sorted(self._groups.values(), key=lambda g: g.key)
        ]

    def _route(
        self,
        alert: Alert,
        now: float,
        stored: dict[str, StoredGroup] | None = None,
        entries: dict[str, dict[str, LogEntry]] | None = None,
        *,
        only: set[str] | None = None,
        previous: dict[str, Group] | None = None,
    ) -> None:
        """Put ``alert`` in the groups of its routes and take it out of others.

        :param stored: the stored groups, at start-up.
        :param entries: the stored log, at start-up.
        :param only: join only groups with these keys.
        :param previous: the groups before a reload, reused by key.
        """
        keys: set[str] = set()
        for route in self._policy.routes(alert):
            labels = _group_labels(route, alert)
            key = group_key(route, labels)
            if only is not None and key not in only:
                continue
            group = self._groups.get(key)
            if group is None:
                group = self._group(route, labels, alert, now, stored, entries)
                if previous is not None and key in previous:
                    group = previous[key]
                    group.alerts = {}
                group.route = route
                self._groups[key] = group
            elif stored is not None and key not in stored:
                # Never flushed: its group_wait counts from its oldest alert.
                group.created_at = min(group.created_at, alert.spec.fired_at)
            group.alerts[alert.id] = alert
            if previous is None:
                group.touch(now)
            keys.add(key)

        for key in self._memberships.get(alert.id, set()) - keys:
            group = self._groups.get(key)
            if group is None:
                continue
            del group.alerts[alert.id]
            group.touch(now)
            if not group.alerts:
                del self._groups[key]
                if group.is_stored:
                    self._doomed.add(key)
        if keys:
            self._memberships[alert.id] = keys
        else:
            self._memberships.pop(alert.id, None)

    def _group(
        self,
        route: RouteSettings,
        labels: dict[str, str],
        alert: Alert,
        now: float,
        stored: dict[str, StoredGroup] | None,
        entries: dict[str, dict[str, LogEntry]] | None,
    ) -> Group:
        """Create a group for ``alert``'s arrival, with its stored state if any."""
        group = Group(route, labels, min(now, alert.spec.fired_at))
        row = None if stored is None else stored.get(group.key)
        if row is not None:
            group.created_at = row.created_at
            group.anchor = row.anchor
            group.seq = row.seq
            group.flushed_at = row.flushed_at
            group.is_stored = True
        if entries is not None:
            group.log = dict(entries.get(group.key, {}))

        return group

    def _open_alerts(self) -> list[Alert]:
        found = {
            alert.id: alert
            for group in self._groups.values()
            for alert in group.alerts.values()
            if is_firing(alert)
        }
        return [found[alert_id] for alert_id in sorted(found)]

    async def _flush(self, group: Group, open_alerts: list[Alert], now: float) -> int:
        """Flush one group: decide, write in one transaction, then update it."""
        route = group.route
        alerts = sorted(group.alerts.values(), key=lambda a: a.id)
        suppressed: dict[int, str] = {}
        for alert in alerts:
            kind = self._policy.suppression(alert, route, open_alerts, now)
            if kind is not None:
                suppressed[alert.id] = kind

        messages: list[Message] = []
        changes: dict[str, LogEntry | None] = {}
        for channel in route.channels:
            entry = group.log.get(channel)
            plan = plan_channel(
                alerts,
                suppressed,
                entry,
                takes_resolves=self._takes_resolves(channel),
                send_resolved_silenced=route.send_resolved_silenced,
                repeat_interval=route.repeat_interval,
                now=now,
            )
            after = plan.entry
            if plan.reason is not None:
                event = "trigger" if any(map(is_firing, plan.alerts)) else "resolve"
                labels = {**routing_labels(plan.alerts[0]), **group.labels}
                key = self._caps.key(labels)
                context = {"route": route.id, "group": group.key}
                if self._caps.is_capped(channel, key, event, now, context):
                    # Left as it was: the alerts are still news to the channel.
                    after = entry
                else:
                    message = Message(channel, event, plan.reason, plan.alerts, key)
                    messages.append(message)
            if after != entry:
                changes[channel] = after
        for channel in group.log.keys() - set(route.channels):
            changes[channel] = None

        # Resolved alerts leave once no channel awaits their resolve.
        log_after = {c: e for c, e in {**group.log, **changes}.items() if e is not None}
        known = set().union(*(e.announced for e in log_after.values()))
        leaving = [a.id for a in alerts if not is_firing(a) and a.id not in known]
        delete = len(leaving) == len(alerts)
        anchor = now if group.anchor is None else group.anchor
        number = None
        if messages or changes or group.anchor is None or delete:
            row = StoredGroup(
                group.key,
                route.id,
                group.labels,
                group.created_at,
                anchor,
                group.seq,
                now,
            )
            if delete and not group.is_stored and not messages:
                pass  # never written, nothing to remove
            else:
                flush = Flush(
                    row, messages, changes, delete, self._caps.forget_before(now)
                )
                number = await self._groups_store.flush(flush)

        # Committed: the group follows what was written.
        self._count_suppressed(group, suppressed)
        group.anchor = anchor
        group.is_stored = not delete
        group.seq = group.seq if number is None else number
        group.log = log_after
        group.is_dirty = False
        group.urgent_at = None
        group.flushed_at = now
        for alert_id in leaving:
            del group.alerts[alert_id]
            memberships = self._memberships.get(alert_id, set())
            memberships.discard(group.key)
            if not memberships:
                self._memberships.pop(alert_id, None)
        if delete:
            del self._groups[group.key]
        for message in messages:
            self._caps.remember(message.channel, message.dedup_key, message.event, now)
            log.debug(
                "notification queued",
                extra={
                    "route": route.id,
                    "group": group.key,
                    "channel": message.channel,
                    "reason": message.reason,
                    "alert": message.alerts[0].uid,
                    "alerts": len(message.alerts),
                },
            )
        self.sent += len(messages)
        if messages:
            self._on_queued([message.channel for message in messages])

        return len(messages)

    def _count_suppressed(self, group: Group, suppressed: dict[int, str]) -> None:
        for alert_id, kind in suppressed.items():
            if group.suppressed.get(alert_id) != kind:
                self.suppressed += 1
                log.debug(
                    "alert held back",
                    extra={
                        "route": group.route.id,
                        "group": group.key,
                        "alert": group.alerts[alert_id].uid,
                        "reason": kind,
                    },
                )
        group.suppressed = suppressed


def _group_labels(route: RouteSettings, alert: Alert) -> dict[str, str]:
    """Return the labels of ``alert``'s group on ``route``.

    Grouping on every label (``...``) leaves the severity out: a move between
    the levels of a rule is the same alert changing, told to the same group as
    "severity changed", not a new group. Naming ``severity`` in ``group_by``
    still groups on it.
    """
    labels = routing_labels(alert)
    if "..." in route.group_by:
        del labels["severity"]
    return group_labels(route, labels)


async def _wait(wakeup: asyncio.Event, until: float | None, clock: Clock) -> None:
    """Wait for ``wakeup``, or until the wall-clock time ``until`` if given."""
    delay = None if until is None else max(0.0, until - clock.time())
    try:
        async with asyncio.timeout(delay):
            await wakeup.wait()
    except TimeoutError:
        pass
