"""Tocsin's own alerts about its integrations.

:class:`IntegrationWatcher` reads what the delivery workers tell
:class:`~tocsin.channels.health.DeliveryWatch` and decides, per integration:

``tocsin.integration_failing`` (critical)
    fires when ``health.failures`` attempts failed within ``health.window``
    and the last attempt failed; resolves at the integration's next success,
    or when it is no longer configured.
``tocsin.dead_letters`` (warning)
    fires when a notification of the integration was dead-lettered within
    ``health.window``; resolves once a whole window passes without one.

With the Datadog export on, it also asks the
:class:`~tocsin.daemon.export_watch.ExportWatcher` about
``tocsin.export_behind``, and it has the
:class:`~tocsin.daemon.storage_watch.StorageWatcher` look at the state
database (``tocsin.storage_failing``, which is sent without being stored).

Each alert about an integration has a ``channel`` label, the integration it
is about. Each goes through the pipeline like any rule's: stored with its
transitions, restored after a restart and resolved when its condition
clears. It goes to ``alerts.internal_channels`` less that integration (see
:meth:`tocsin.channels.policy.NoisePolicy.routes`); when that leaves none, it
is stored and logged as an ERROR line, and sent nowhere.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Iterable, Sequence

from tocsin.channels.health import (
    CHANNEL_RULES,
    DEAD_LETTERS_RULE,
    EXPORT_BEHIND_RULE,
    INTEGRATION_FAILING_RULE,
    DeliveryWatch,
    destinations,
)
from tocsin.clock import Clock
from tocsin.config import RuleConfig
from tocsin.daemon.export_watch import ExportWatcher, export_rule
from tocsin.daemon.storage_watch import StorageWatcher
from tocsin.rules.conditions import format_duration
from tocsin.rules.decisions import Decision
from tocsin.rules.runtime import key_of
from tocsin.schema import HealthConfig
from tocsin.state.models import Alert

log = logging.getLogger(__name__)

#: Longest pause between two looks, when no outcome wakes the watcher: a
#: dead-letter alert resolves once its window has passed.
_LOOK_EVERY = 5.0


def meta_rules(
    internal_channels: Sequence[str] = (), settings: HealthConfig | None = None
) -> dict[str, RuleConfig]:
    """Return the built-in rules of Tocsin's alerts about its integrations.

    :param internal_channels: where they go (``alerts.internal_channels``),
        each alert less the integration it is about.
    :param settings: ``[health]``, whose window the alerts' texts name.
    """
    channels = list(internal_channels)
    settings = settings or HealthConfig()
    window = settings.window
    return {
        EXPORT_BEHIND_RULE: export_rule(channels, settings),
        INTEGRATION_FAILING_RULE: RuleConfig(
            name=INTEGRATION_FAILING_RULE,
            metric="tocsin.delivery.failures",
            aggregation="count",
            op=">=",
            severity="critical",
            window=window,
            channels=channels,
            summary="Integration {{ labels.channel }} is failing",
            description=(
                "Tocsin failed to deliver to {{ labels.channel }}"
                " {{ value | int }} times within {{ window }}, and its last"
                " attempt failed too. Its notifications wait in the outbox;"
                " see tocsin integrations list and tocsin deadletters."
            ),
        ),
        DEAD_LETTERS_RULE: RuleConfig(
            name=DEAD_LETTERS_RULE,
            metric="tocsin.delivery.dead_letters",
            aggregation="count",
            op=">",
            severity="warning",
            window=window,
            channels=channels,
            summary="Notifications to {{ labels.channel }} were given up on",
            description=(
                "{{ value | int }} notifications to {{ labels.channel }} were"
                " dead-lettered within {{ window }}: nobody received them."
                " See tocsin deadletters --channel {{ labels.channel }}."
            ),
        ),
    }


def _export_off(alert: Alert, now: float) -> Decision:
    """Return the resolve of an export alert of an earlier run, the export
    being off now."""
    return Decision(
        action="resolve",
        rule=EXPORT_BEHIND_RULE,
        series=alert.spec.series,
        labels={},
        value=None,
        threshold=None,
        samples=0,
        at=now,
        since=now,
        reason="the Datadog export is off",
    )


class IntegrationWatcher:
    """Decide Tocsin's alerts about its integrations.

    :param submit: takes the decisions (the pipeline's ``submit``).
    :param configured: returns the names of the configured integrations.
    :param internal_channels: returns ``alerts.internal_channels``.
    :param export: decides ``tocsin.export_behind``, when the export is on.
    :param storage: decides and sends ``tocsin.storage_failing``.
    """

    def __init__(
        self,
        watch: DeliveryWatch,
        settings: HealthConfig,
        submit: Callable[[Sequence[Decision]], None],
        clock: Clock,
        *,
        configured: Callable[[], Collection[str]],
        internal_channels: Callable[[], Sequence[str]],
        export: ExportWatcher | None = None,
        storage: StorageWatcher | None = None,
    ) -> None:
        self.watch = watch
        self.export = export
        self.storage = storage
        self.settings = settings
        self._submit = submit
        self._clock = clock
        self._configured = configured
        self._internal = internal_channels
        #: Open alerts, as ``(rule, channel)``.
        self._firing: set[tuple[str, str]] = set()
        #: Dead-letter alerts restored at start-up, kept open for one window
        #: from then: the dead letters before the restart are not in memory.
        self._held_until: dict[str, float] = {}
        #: An open export alert of an earlier run, the export being off now.
        self._export_off: list[Alert] = []

    def configure(self, settings: HealthConfig) -> None:
        """Decide by ``settings`` from now on (a reload)."""
        self.settings = settings
        self.watch.window = float(settings.window)
        if self.export is not None:
            self.export.settings = settings
        if self.storage is not None:
            self.storage.settings = settings

    def restore(self, alerts: Iterable[Alert], now: float) -> None:
        """Take the open alerts of earlier runs as firing."""
        alerts = list(alerts)
        if self.export is not None:
            self.export.restore(alerts, now)
        else:
            # The export is off now: its alert of an earlier run can only
            # resolve here.
            self._export_off = [a for a in alerts if a.spec.rule == EXPORT_BEHIND_RULE]
        for alert in alerts:
            spec = alert.spec
            channel = spec.labels.get("channel")
            if spec.rule not in CHANNEL_RULES or channel is None:
                continue
            self._firing.add((spec.rule, channel))
            if spec.rule == DEAD_LETTERS_RULE:
                self._held_until[channel] = now + float(self.settings.window)

    def evaluate(self, now: float) -> list[Decision]:
        """Return the fires and resolves the outcomes noted so far call for."""
        configured = set(self._configured())
        channels = set(self.watch.channels())
        channels.update(channel for _, channel in self._firing)
        decisions: list[Decision] = []
        for channel in sorted(channels):
            present = channel in configured
            decisions.extend(self._failing(channel, present, now))
            decisions.extend(self._dead_letters(channel, present, now))
        if self.export is not None:
            decisions.extend(self.export.evaluate(now))
        for alert in self._export_off:
            decisions.append(_export_off(alert, now))
        self._export_off = []
        for decision in decisions:
            self._tell(decision)

        return decisions

    async def run(self) -> None:
        """Decide whenever an outcome is noted, and every few seconds."""
        changed = self.watch.changed
        while True:
            changed.clear()
            decisions = self.evaluate(self._clock.time())
            if decisions:
                self._submit(decisions)
            if self.storage is not None:
                await self.storage.look()
            try:
                async with asyncio.timeout(_LOOK_EVERY):
                    await changed.wait()
            except TimeoutError:
                pass

    def _failing(self, channel: str, present: bool, now: float) -> list[Decision]:
        key = (INTEGRATION_FAILING_RULE, channel)
        failures = self.watch.failures(channel, now)
        if key in self._firing:
            if present and not self.watch.is_delivering(channel):
                return []
            reason = "delivers again" if present else "no longer configured"
            self._firing.discard(key)
            return [self._decision("resolve", key, len(failures), now, reason)]
        wanted = self.settings.failures
        if not present or len(failures) < wanted or self.watch.is_delivering(channel):
            return []
        self._firing.add(key)
        window = format_duration(float(self.settings.window))
        last = failures[-1][1] or "unknown"
        reason = f"{len(failures)} failed attempts within {window}, the last {last}"
        since = failures[0][0]

        return [self._decision("fire", key, len(failures), now, reason, since)]

    def _dead_letters(self, channel: str, present: bool, now: float) -> list[Decision]:
        key = (DEAD_LETTERS_RULE, channel)
        count = self.watch.dead_letters(channel, now)
        window = format_duration(float(self.settings.window))
        if key in self._firing:
            held = self._held_until.get(channel, 0.0) > now
            if present and (count or held):
                return []
            self._firing.discard(key)
            self._held_until.pop(channel, None)
            reason = f"none dead-lettered within {window}"
            if not present:
                reason = "no longer configured"
            return [self._decision("resolve", key, count, now, reason)]
        if not present or not count:
            return []
        self._firing.add(key)
        reason = f"{count} notifications dead-lettered within {window}"

        return [self._decision("fire", key, count, now, reason)]

    def _decision(
        self,
        action: str,
        key: tuple[str, str],
        value: int,
        now: float,
        reason: str,
        since: float | None = None,
    ) -> Decision:
        rule, channel = key
        return Decision(
            action=action,
            rule=rule,
            series=key_of(("channel",), (channel,)),
            labels={"channel": channel},
            value=float(value),
            threshold=float(
                self.settings.failures if rule == INTEGRATION_FAILING_RULE else 0
            ),
            samples=value,
            at=now,
            since=now if since is None else since,
            reason=reason,
            severity="critical" if rule == INTEGRATION_FAILING_RULE else "warning",
        )

    def _tell(self, decision: Decision) -> None:
        """Log a decision; an alert that can go nowhere is an ERROR line."""
        channel = decision.labels.get("channel")
        context = {"rule": decision.rule, "reason": decision.reason}
        if channel is not None:
            context["channel"] = channel
        if decision.action == "resolve":
            log.info("Tocsin's own alert resolved", extra=context)
            return
        others = destinations(self._internal(), decision.labels)
        if others:
            # WARNING: the alert itself goes out to people; this line is
            # the daemon's own record of it.
            log.warning("Tocsin's own alert fired", extra=context)
            return
        # ERROR: nobody else hears of it. Never the integration it is about,
        # which would report its own failure to itself.
        log.error(
            "Tocsin's own alert fired and has no channel to go to",
            extra={**context, "detail": "alerts.internal_channels"},
        )
