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
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from tocsin.clock import Clock
from tocsin.config import ChannelConfig, RuleConfig
from tocsin.errors import StateError
from tocsin.rules.conditions import format_duration
from tocsin.rules.decisions import Decision
from tocsin.state.models import AlertSpec
from tocsin.templates import TemplateProblem, context, render

log = logging.getLogger(__name__)

#: Longest wait between two attempts to write a decision the database refused.
_MAX_RETRY_DELAY = 5.0


def alert_spec(rule: RuleConfig, decision: Decision) -> AlertSpec:
    """Describe the alert a ``fire`` decision opens, from its rule.

    The rule's summary and description are rendered for this alert (see
    :mod:`tocsin.templates`).
    """
    labels = {**rule.labels, **decision.labels}
    variables = context(
        rule=rule.name,
        metric=rule.metric,
        severity=rule.severity,
        series=decision.series,
        labels=labels,
        value=decision.value,
        threshold=rule.threshold,
        op=rule.op,
        aggregation=rule.aggregation,
        window=format_duration(float(rule.window)),
    )
    return AlertSpec(
        rule=rule.name,
        series=decision.series,
        labels=labels,
        severity=rule.severity,
        metric=rule.metric,
        aggregation=rule.aggregation,
        window=float(rule.window),
        op=rule.op,
        threshold=rule.threshold,
        range=list(rule.range),
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
    """

    def __init__(
        self,
        rules: Mapping[str, RuleConfig],
        channels: Mapping[str, ChannelConfig],
        store,
        on_written,
        clock: Clock,
    ) -> None:
        self.rules = rules
        self.channels = channels
        self.store = store
        self.on_written = on_written
        self.clock = clock
        self.fired = 0
        self.resolved = 0
        self._queue: asyncio.Queue[Decision | None] = asyncio.Queue()
        self._unwritten = 0

    def set_rules(self, rules: Mapping[str, RuleConfig]) -> None:
        """Take the rules of a reloaded config for the decisions still to come."""
        self.rules = rules

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
        rule = self.rules.get(decision.rule)
        if rule is None:
            log.warning("decision for an unknown rule", extra={"rule": decision.rule})
            return
        context = {
            "rule": rule.name,
            "series": decision.series,
            "reason": decision.reason,
        }
        if decision.action == "fire":
            alert = await self.store.fire(alert_spec(rule, decision), rule.channels)
            if alert is None:
                log.debug("series already has an open alert", extra=context)
                return
            self.fired += 1
            log.info("alert fired", extra={**context, "alert": alert.uid})
        else:
            channels = [
                name for name in rule.channels if self.channels[name].send_resolved
            ]
            alert = await self.store.resolve(
                rule.name,
                decision.series,
                at=decision.at,
                value=decision.value,
                reason=decision.reason,
                channels=channels,
            )
            if alert is None:
                log.debug("no open alert to resolve", extra=context)
                return
            self.resolved += 1
            log.info("alert resolved", extra={**context, "alert": alert.uid})
        self.on_written()


async def restore(
    store,
    engine,
    rules: Mapping[str, RuleConfig],
    now: float,
    channels: Mapping[str, ChannelConfig] | None = None,
) -> int:
    """Tell the engine which series already fire and what fired today.

    Run once at start-up, before any sample arrives, so that a series that was
    firing before a crash or restart is the same alert afterwards, and the daily
    cap and cooldown count the fires that happened before. An open alert whose
    rule is no longer configured can never resolve by itself: it is resolved
    now, saying so, on the channels its trigger went to that are still
    configured and take resolves.

    :param channels: the configured channels, by name.
    :return: the number of open alerts restored.
    """
    restored = 0
    for alert in await store.open_alerts():
        spec = alert.spec
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
    notified = await store.notified_channels(alert.id)
    resolving = [
        name for name in notified if name in channels and channels[name].send_resolved
    ]
    reason = f"rule {spec.rule!r} is no longer configured"
    await store.resolve(
        spec.rule,
        spec.series,
        at=now,
        value=None,
        reason=reason,
        channels=resolving,
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
