"""From rule decisions to stored alerts and queued notifications.

The rules engine decides synchronously, inside the ingest path; writing to
SQLite is asynchronous. Decisions are therefore queued here and written in
order by one task, so the ingest path never waits on the disk. A decision whose
write fails is retried, never dropped: the alert and its notifications are
written in one transaction or not at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime

from tocsin.channels.health import DELIVERY_RULES, destinations
from tocsin.clock import Clock
from tocsin.config import ChannelConfig, RuleConfig
from tocsin.daemon.meta_alerts import meta_rules
from tocsin.errors import StateError
from tocsin.logs import RateLimiter
from tocsin.rules.conditions import format_duration
from tocsin.rules.decisions import SERIES_LIMIT_RULE, Decision
from tocsin.schema import HealthConfig
from tocsin.state.models import Alert, AlertSpec
from tocsin.templates import TemplateProblem, context, render

log = logging.getLogger(__name__)

#: Longest wait between two attempts to write a decision the database refused.
_MAX_RETRY_DELAY = 5.0

_SERIES_LIMIT_DESCRIPTION = (
    "{% if 'rule' in labels %}"
    "Rule {{ labels.rule }} tracks {{ value | int }} series, its limit: samples"
    " of new series of this rule are ignored, so they cannot alert, until some"
    " of its series expire. If the rule is meant to track this many series,"
    " raise its max_series; otherwise narrow its match or group_by."
    "{% else %}"
    "The rules engine tracks {{ value | int }} series, its limit: samples of"
    " new series of every rule are ignored, so they cannot alert, until some"
    " series expire. If this many series are expected, raise daemon.max_series;"
    " otherwise find the rule whose series grow and narrow its group_by."
    "{% endif %}"
)


def series_limit_rule(channels: Sequence[str] = ()) -> RuleConfig:
    """Return the built-in rule of the alerts the engine raises itself when a
    rule, or every rule together, reaches its series limit.

    Its series are ``rule=<name>`` (labels ``{"rule": name}``) and
    ``scope=all`` (labels ``{"scope": "all"}``); the value is the number of
    live series and the threshold the limit.

    :param channels: where its alerts go (``alerts.internal_channels``).
    """
    return RuleConfig(
        name=SERIES_LIMIT_RULE,
        metric="tocsin.rules.series",
        aggregation="count",
        op=">=",
        severity="warning",
        channels=list(channels),
        summary="Series limit reached",
        description=_SERIES_LIMIT_DESCRIPTION,
    )


def _is_composite(rule: RuleConfig) -> bool:
    """Return whether ``rule`` joins conditions on several metrics."""
    return bool(rule.conditions) and not rule.metric


def _measure(rule: RuleConfig) -> tuple[str, str, float, str]:
    """Return what an alert of ``rule`` says it measured: its metric,
    aggregation, window and comparison."""
    if not _is_composite(rule):
        return rule.metric, rule.aggregation, float(rule.window), rule.op
    joiner = " and " if rule.join == "all" else " or "
    metric = joiner.join(condition.metric for condition in rule.conditions)
    window = max(float(condition.window) for condition in rule.conditions)

    return metric, "composite", window, ""


def _level(rule: RuleConfig, decision: Decision) -> tuple[str, float | None, list]:
    """Return the severity, threshold and range of the level a decision is at.

    A decision of older code names no severity: it is the rule's own.
    """
    severity = decision.severity or rule.severity
    if _is_composite(rule):
        return severity, None, []
    ranges = {name: level.range for name, level in rule.levels}

    return severity, decision.threshold, list(ranges.get(severity, rule.range))


def alert_spec(rule: RuleConfig, decision: Decision) -> AlertSpec:
    """Describe the alert a ``fire`` decision opens, from its rule.

    The rule's summary and description are rendered for this alert (see
    :mod:`tocsin.templates`) with the values the alert carries.
    """
    labels = {**rule.labels, **decision.labels}
    metric, aggregation, window, op = _measure(rule)
    severity, threshold, range_ = _level(rule, decision)
    variables = context(
        rule=rule.name,
        metric=metric,
        severity=severity,
        series=decision.series,
        labels=labels,
        value=decision.value,
        threshold=threshold,
        op=op,
        aggregation=aggregation,
        window=format_duration(window),
    )
    return AlertSpec(
        rule=rule.name,
        series=decision.series,
        labels=labels,
        severity=severity,
        metric=metric,
        aggregation=aggregation,
        window=window,
        op=op,
        threshold=threshold,
        range=range_,
        value=decision.value,
        samples=decision.samples,
        started_at=decision.since,
        fired_at=decision.at,
        reason=decision.reason,
        summary=_render(rule, "summary", variables),
        description=_render(rule, "description", variables),
        runbook=rule.runbook,
        recommended_actions=list(rule.recommended_actions),
        metadata=dict(rule.metadata),
    )


def _render(rule: RuleConfig, field: str, variables: dict[str, object]) -> str:
    text = getattr(rule, field)
    try:
        return render(text, variables)
    except TemplateProblem as problem:
        # The configuration check renders every text against a sample alert,
        # so this takes a value that breaks a filter; the alert still goes out.
        log.warning(
            "cannot render the rule's %s; sending it as written",
            field,
            extra={"rule": rule.name, "error": str(problem)},
        )
        return text


class AlertPipeline:
    """Writes decisions to the alert store and wakes delivery.

    :param rules: rule configs by name.
    :param channels: channel configs by name (for ``send_resolved``).
    :param store: the :class:`~tocsin.state.alerts.AlertStore`.
    :param on_written: called after a transition queued notifications.
    :param internal_channels: where Tocsin's own alerts go (see
        :func:`series_limit_rule`).
    :param on_changed: awaited with each alert a decision changed.
    :param reopen_window: ``alerts.reopen_window``, in seconds.
    :param health: ``[health]``, for Tocsin's alerts about its integrations.
    """

    def __init__(
        self,
        rules: Mapping[str, RuleConfig],
        channels: Mapping[str, ChannelConfig],
        store,
        on_written,
        clock: Clock,
        *,
        internal_channels: Sequence[str] = (),
        on_changed: Callable[[Alert], Awaitable[None]] | None = None,
        reopen_window: float = 0.0,
        health: HealthConfig | None = None,
    ) -> None:
        self.rules = rules
        #: Told of every alert a decision changed; with it, the notifier
        #: decides who hears of the change, and transitions queue nothing
        #: themselves. Without it, each goes straight to its rule's channels.
        self.on_changed = on_changed
        #: ``alerts.reopen_window``; a rule's own wins.
        self.reopen_window = reopen_window
        self.channels = channels
        self.internal_rule = series_limit_rule(internal_channels)
        self.health = health or HealthConfig()
        self.meta_rules = meta_rules(internal_channels, self.health)
        self.store = store
        self.on_written = on_written
        self.clock = clock
        self.fired = 0
        self.resolved = 0
        self._queue: asyncio.Queue[Decision | None] = asyncio.Queue()
        self._unwritten = 0
        self._limiter = RateLimiter(clock=clock.monotonic)

    def set_rules(
        self,
        rules: Mapping[str, RuleConfig],
        *,
        channels: Mapping[str, ChannelConfig] | None = None,
        internal_channels: Sequence[str] | None = None,
    ) -> None:
        """Write every decision from now on with ``rules`` (a live reload).

        Decisions already queued are written with them too: a resolve of a
        rule that is gone still resolves its alert (see :meth:`_write`).

        :param channels: the channel configs, when they changed as well.
        :param internal_channels: where Tocsin's own alerts go, when that
            changed as well.
        """
        self.rules = rules
        if channels is not None:
            self.channels = channels
        if internal_channels is not None:
            self.internal_rule = series_limit_rule(internal_channels)
            self.meta_rules = meta_rules(internal_channels, self.health)

    def rule(self, name: str) -> RuleConfig | None:
        """Return the rule a decision names, built-in ones included."""
        if name == SERIES_LIMIT_RULE:
            return self.internal_rule
        if name in self.meta_rules:
            return self.meta_rules[name]
        return self.rules.get(name)

    def submit(self, decisions: Sequence[Decision]) -> None:
        """Queue decisions for writing; never blocks the caller."""
        for decision in decisions:
            self._queue.put_nowait(decision)
        self._unwritten += len(decisions)

    @property
    def backlog(self) -> int:
        """Decisions queued or being written, not yet recorded."""
        return self._unwritten

    async def run(self) -> None:
        """Write queued decisions until :meth:`stop` is called."""
        while True:
            decision = await self._queue.get()
            if decision is None:
                return
            await self._write_with_retry(decision)
            self._unwritten -= 1

    async def stop(self) -> None:
        """Write what is queued, then end :meth:`run`."""
        self._queue.put_nowait(None)

    async def _write_with_retry(self, decision: Decision) -> None:
        delay = 0.1
        warned = False
        while True:
            try:
                await self._write(decision)
                if warned:
                    log.info("state writes recovered", extra={"rule": decision.rule})
                return
            except StateError as error:
                if not warned:
                    log.warning(
                        "cannot record an alert decision; retrying",
                        extra={
                            "rule": decision.rule,
                            "series": decision.series,
                            "error": str(error),
                        },
                    )
                    warned = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_RETRY_DELAY)

    async def _write(self, decision: Decision) -> None:
        rule = self.rule(decision.rule)
        if rule is None and decision.action == "resolve":
            # A reload removed the rule while this resolve waited: its alert
            # can resolve only now, so it is not dropped with the rule.
            await self._resolve_removed(decision)
            return
        if rule is None:
            allowed, suppressed = self._limiter.allow(f"unknown:{decision.rule}")
            if allowed:
                log.warning(
                    "decision for an unknown rule",
                    extra={
                        "rule": decision.rule,
                        "series": decision.series,
                        "event": decision.action,
                        "suppressed": suppressed,
                    },
                )
            return
        if decision.action == "fire":
            await self._fire(rule, decision)
        elif decision.action == "resolve":
            await self._resolve(rule, decision)
        elif decision.action == "severity":
            await self._change_severity(rule, decision)
        else:
            await self._note(decision)

    def _direct(
        self, channels: Sequence[str], rule: RuleConfig, decision: Decision
    ) -> Sequence[str]:
        """Return the channels a transition queues to by itself: none when
        the notifier decides, and never the integration an alert is about."""
        if rule.name in DELIVERY_RULES:
            allowed = destinations(rule.channels, decision.labels)
            channels = [c for c in channels if c in allowed]
        return () if self.on_changed is not None else channels

    async def _changed(self, alert: Alert) -> None:
        if self.on_changed is not None:
            await self.on_changed(alert)
        self.on_written()

    async def _fire(self, rule: RuleConfig, decision: Decision) -> None:
        window = (
            self.reopen_window if rule.reopen_window is None else rule.reopen_window
        )
        alert = await self.store.fire(
            alert_spec(rule, decision),
            self._direct(rule.channels, rule, decision),
            reopen_window=float(window),
        )
        if alert is None:
            log.debug("series already has an open alert", extra=_context(decision))
            return
        self.fired += 1
        log.info("alert fired", extra={**_context(decision), "alert": alert.uid})
        await self._changed(alert)

    async def _resolve(self, rule: RuleConfig, decision: Decision) -> None:
        if rule.resolve == "manual":
            # The rule leaves ending its alerts to people: the clearing is
            # recorded in the alert's history, and the alert stays open.
            reason = f"condition cleared; resolve by hand: {decision.reason}"
            alert = await self.store.note(
                rule.name, decision.series, at=decision.at, reason=reason
            )
            if alert is not None:
                log.info(
                    "alert condition cleared; it stays open until resolved by hand",
                    extra={**_context(decision), "alert": alert.uid},
                )
            return
        channels = [
            name for name in rule.channels if _takes_resolves(self.channels, name)
        ]
        alert = await self.store.resolve(
            rule.name,
            decision.series,
            at=decision.at,
            value=decision.value,
            reason=decision.reason,
            channels=self._direct(channels, rule, decision),
        )
        if alert is None:
            log.debug("no open alert to resolve", extra=_context(decision))
            return
        self.resolved += 1
        log.info("alert resolved", extra={**_context(decision), "alert": alert.uid})
        await self._changed(alert)

    async def _resolve_removed(self, decision: Decision) -> None:
        alert = await self.store.open_alert(decision.rule, decision.series)
        if alert is None:
            log.debug("no open alert to resolve", extra=_context(decision))
            return
        resolved = await resolve_where_notified(
            self.store,
            alert,
            at=decision.at,
            value=decision.value,
            reason=decision.reason,
            # The notifier sends the resolve where the trigger went.
            channels={} if self.on_changed is not None else self.channels,
        )
        if resolved is None:
            return
        self.resolved += 1
        log.info(
            "resolved an alert of a removed rule",
            extra={**_context(decision), "alert": alert.uid},
        )
        await self._changed(resolved)

    async def _change_severity(self, rule: RuleConfig, decision: Decision) -> None:
        severity, threshold, range_ = _level(rule, decision)
        # The texts may name the severity, threshold or value: they are
        # rendered again for the new level.
        spec = alert_spec(rule, decision)
        alert = await self.store.change_severity(
            rule.name,
            decision.series,
            severity=severity,
            at=decision.at,
            value=decision.value,
            threshold=threshold,
            reason=decision.reason,
            channels=self._direct(rule.channels, rule, decision),
            range=range_,
            texts=(spec.summary, spec.description),
        )
        if alert is None:
            log.debug("no open alert to change", extra=_context(decision))
            return
        log.info(
            "alert severity changed",
            extra={**_context(decision), "alert": alert.uid, "severity": severity},
        )
        await self._changed(alert)

    async def _note(self, decision: Decision) -> None:
        alert = await self.store.note(
            decision.rule, decision.series, at=decision.at, reason=decision.reason
        )
        if alert is None:
            log.debug("no open alert to mark", extra=_context(decision))
            return
        extra = {**_context(decision), "alert": alert.uid}
        if decision.action == "settled":
            log.info("alert settled; its notifications resume", extra=extra)
            return
        # WARNING: someone relies on this alert and will not hear of it until
        # it settles; limited per rule, as a noisy rule flaps on many series.
        allowed, suppressed = self._limiter.allow(f"flapping:{decision.rule}")
        if allowed:
            log.warning(
                "alert is flapping; its notifications pause",
                extra={**extra, "suppressed": suppressed},
            )


def _context(decision: Decision) -> dict[str, str]:
    """Return the log context of a decision."""
    return {
        "rule": decision.rule,
        "series": decision.series,
        "reason": decision.reason,
    }


def _takes_resolves(channels: Mapping[str, ChannelConfig], name: str) -> bool:
    channel = channels.get(name)
    return channel is not None and channel.send_resolved


async def resolve_where_notified(
    store,
    alert: Alert,
    *,
    at: float,
    value: float | None,
    reason: str,
    channels: Mapping[str, ChannelConfig],
) -> Alert | None:
    """Resolve an open alert whose rule is no longer configured.

    Its resolve goes to the channels its triggers went to that are still
    configured and take resolves: the rule no longer says where its alerts go.

    :param channels: the configured channels, by name.
    :return: the resolved alert, or ``None`` if it was no longer open.
    """
    notified = await store.notified_channels(alert.id)
    return await store.resolve(
        alert.spec.rule,
        alert.spec.series,
        at=at,
        value=value,
        reason=reason,
        channels=[name for name in notified if _takes_resolves(channels, name)],
    )


async def restore(
    store,
    engine,
    rules: Mapping[str, RuleConfig],
    now: float,
    channels: Mapping[str, ChannelConfig] | None = None,
) -> int:
    """Tell the engine which series already fire and what fired today.

    Run once at start-up, before any sample arrives, so that a series that was
    firing before a crash or restart is the same alert afterwards, at the same
    severity, and the daily cap and cooldown count the fires that happened
    before. An open alert whose rule is no longer configured can never resolve
    by itself: it is resolved now, saying so, on the channels its trigger went
    to that are still configured and take resolves. Tocsin's own alerts (see
    :func:`series_limit_rule`) are handed to the engine, which resolves them
    once the limit is no longer reached.

    :param channels: the configured channels, by name.
    :return: the number of open alerts restored.
    """
    restored = 0
    for alert in await store.open_alerts():
        spec = alert.spec
        if spec.rule == SERIES_LIMIT_RULE:
            engine.restore(
                spec.rule,
                spec.series,
                spec.labels,
                since=spec.fired_at,
                fired_at=spec.fired_at,
                severity=spec.severity,
            )
            continue
        if spec.rule in DELIVERY_RULES:
            # The delivery and export watchers restore them, and resolve them.
            continue
        if spec.rule not in rules:
            await _retire(store, alert, now, channels or {})
            continue
        labels = {
            k: v for k, v in spec.labels.items() if k in rules[spec.rule].group_by
        }
        engine.restore(
            spec.rule,
            spec.series,
            labels,
            since=spec.started_at,
            fired_at=spec.fired_at,
            severity=spec.severity,
        )
        restored += 1
    midnight = datetime.fromtimestamp(now, UTC).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    for name, rule in rules.items():
        since = min(midnight.timestamp(), now - float(rule.cooldown))
        fired = await store.fires_since(name, since)
        if fired:
            series, times = zip(*fired, strict=True)
            engine.restore_fires(name, times, series=series)
    return restored


async def _retire(store, alert, now: float, channels: Mapping[str, ChannelConfig]):
    """Resolve an open alert whose rule left the configuration."""
    spec = alert.spec
    reason = f"rule {spec.rule!r} is no longer configured"
    await resolve_where_notified(
        store, alert, at=now, value=None, reason=reason, channels=channels
    )
    log.warning(
        "resolved an alert of a removed rule",
        extra={
            "rule": spec.rule,
            "series": spec.series,
            "alert": alert.uid,
            "reason": reason,
        },
    )
