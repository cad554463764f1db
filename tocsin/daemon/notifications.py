"""The daemon's notification parts, and what the API added at run time.

:class:`NotificationParts` is the part of :class:`~tocsin.daemon.app.Daemon`
that starts the notifier, the escalator and the watch on Tocsin's own delivery
and export, tells them of every changed alert, applies silences at once, and
lays the rules, integrations and settings added through the API over the
file's configuration (see :mod:`tocsin.daemon.effective`).
"""

from __future__ import annotations

import asyncio
import logging

from tocsin.channels.build import build_channels
from tocsin.channels.escalation import Escalator
from tocsin.channels.notifier import Notifier
from tocsin.channels.policy import NoisePolicy
from tocsin.config import Config
from tocsin.daemon.alerting import series_limit_rule
from tocsin.daemon.effective import Additions, effective
from tocsin.daemon.export_watch import ExportWatcher
from tocsin.daemon.meta_alerts import IntegrationWatcher, meta_rules
from tocsin.daemon.services import decode_additions, escalation_of
from tocsin.daemon.storage_watch import StorageWatcher
from tocsin.daemon.tasks import cancel
from tocsin.errors import ConfigError
from tocsin.secrets import channel_secrets
from tocsin.state.catalog import Catalog

log = logging.getLogger(__name__)


class NotificationParts:
    """Mixed into the daemon: expects its ``config``, ``config_path``,
    ``clock``, ``parts``, ``additions``, ``running``, ``_session``,
    ``_reloader`` and ``_channel_configs``."""

    async def _load_additions(self, catalog: Catalog) -> Additions:
        """Read what the API added in earlier runs; an entry that no longer
        checks is logged and left out, never fatal."""
        stored = (
            await catalog.rules(),
            await catalog.integrations(),
            await catalog.settings(),
        )
        additions, problems = decode_additions(stored)
        for what, error in problems:
            log.error(
                "left out a runtime addition", extra={"detail": what, "error": error}
            )
        try:
            effective(self.config, additions, "state database")
        except ConfigError as error:
            # The file changed under them (a name now taken, a channel gone):
            # the file wins, and the additions wait until they fit again.
            log.error(
                "runtime additions do not fit the config file; left out",
                extra={"error": str(error)},
            )
            return Additions()

        return additions

    def _compose(self, file_config: Config) -> Config:
        return effective(file_config, self.additions, self.config_path)

    def build_channel(self, channel):
        """Build one channel added through the API.

        :raises ConfigError: if its secret cannot be read.
        """
        secrets = {channel.name: channel_secrets(channel, "api", "channel")}
        return build_channels([channel], secrets, self.channel_context)[channel.name]

    def additions_rule(self, name: str):
        """Return the rule called ``name`` that the API added, or ``None``."""
        return next((r for r in self.additions.rules if r.name == name), None)

    async def apply_additions(self, additions: Additions, source: str) -> None:
        """Run ``additions`` from now on, in place, like a reload."""
        self.additions = additions
        for channel in additions.channels:
            self._channel_configs.setdefault(channel.name, channel)
        await self._reloader.apply_composed(source)

    async def silences_changed(self) -> None:
        """Apply the stored silences at once (one was added or expired)."""
        parts = self.parts
        unexpired = await parts.silences.all_unexpired(self.clock.time())
        parts.policy.set_silences(unexpired)
        parts.notifier.suppressions_changed()

    async def _alert_changed(self, alert) -> None:
        parts = self.parts
        parts.notifier.changed(alert)
        if alert.state in ("resolved", "closed") and self.running.inhibit:
            # It may have inhibited alerts of other groups: they are looked at
            # now, so what it held back goes out promptly.
            parts.notifier.suppressions_changed()
        if alert.state == "triggered":
            await parts.escalator.ensure(alert, self._escalation_of(alert))

    async def _start_notifications(self, stack, database, running: Config) -> None:
        parts = self.parts
        clock = self.clock
        silences = await parts.silences.all_unexpired(clock.time())
        policy = self._policy(running, silences)
        configs = self._channel_configs

        def takes_resolves(name: str) -> bool:
            channel = configs.get(name)
            return channel is not None and channel.send_resolved

        def takes_acknowledgements(name: str) -> bool:
            channel = parts.dispatcher.channel(name)
            return channel is not None and channel.send_acknowledged

        notifier = Notifier(
            database,
            parts.store,
            policy,
            clock,
            dedup=running.dedup,
            on_queued=parts.dispatcher.wake,
            takes_resolves=takes_resolves,
            takes_acknowledgements=takes_acknowledgements,
        )
        await notifier.start()
        escalator = Escalator(parts.escalations, clock, parts.dispatcher.wake)
        parts.notifier, parts.escalator, parts.policy = notifier, escalator, policy
        tasks = [
            asyncio.create_task(notifier.run(), name="notifier"),
            asyncio.create_task(escalator.run(), name="escalator"),
        ]

        async def stop() -> None:
            notifier.stop()
            escalator.stop()
            for task in tasks:
                await cancel(task)

        stack.push_async_callback(stop)
        # Alerts that fired before a restart keep (or get) their steps.
        for alert in await parts.store.open_alerts():
            if alert.state == "triggered":
                await escalator.ensure(alert, self._escalation_of(alert))

    async def _start_watch(self, stack, watch, pipeline) -> None:
        """Start deciding Tocsin's own alerts about its integrations, from
        the outcomes delivery notes in ``watch``, and about the export.

        Those of earlier runs stay open until their condition clears.
        """
        parts, clock, running = self.parts, self.clock, self.running
        exporter = parts.exporter
        export = exporter and ExportWatcher(
            exporter.stats,
            float(self.config.export.datadog.interval),
            running.health,
            clock,
        )
        watcher = IntegrationWatcher(
            watch,
            running.health,
            pipeline.submit,
            clock,
            configured=lambda: [c.name for c in self.running.channels],
            internal_channels=lambda: self.running.alerts.internal_channels,
            export=export,
            storage=StorageWatcher(
                parts.database,
                running.health,
                clock,
                channel=parts.dispatcher.channel,
                internal_channels=lambda: self.running.alerts.internal_channels,
            ),
        )
        watcher.restore(await parts.store.open_alerts(), clock.time())
        parts.watcher = watcher
        task = asyncio.create_task(watcher.run(), name="integration-watch")
        stack.push_async_callback(cancel, task)

    def _policy(self, running: Config, silences) -> NoisePolicy:
        rules = {rule.name: rule for rule in running.rules}
        internal = series_limit_rule(running.alerts.internal_channels)
        rules[internal.name] = internal
        rules.update(meta_rules(running.alerts.internal_channels, running.health))
        policy = NoisePolicy.from_config(running, rules=rules, silences=silences)
        self._escalation_of = escalation_of(running, policy)

        return policy

    def _applied(self, running: Config) -> None:
        """Route, silence and group by ``running`` from now on (a reload)."""
        self.running = running
        parts = self.parts
        watcher = getattr(parts, "watcher", None)
        if watcher is not None:
            watcher.configure(running.health)
            pipeline = parts.pipeline
            pipeline.health = running.health
            pipeline.meta_rules = meta_rules(
                running.alerts.internal_channels, running.health
            )
        policy = self._policy(running, [s for s, _ in parts.policy._silences])
        parts.policy = policy
        parts.notifier.reconfigure(policy, running.dedup)
