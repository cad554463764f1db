"""The daemon's side of the HTTP API: alerts, silences, runtime additions.

:class:`Services` is the :class:`~tocsin.daemon.backend.Backend` the API
serves. It moves alerts through their lifecycle and tells the notifier and the
escalator, applies silences at once, and keeps the rules, integrations and
settings added at run time in the catalog, laid over the file's configuration
(see :mod:`tocsin.daemon.effective`) and applied in place like a reload.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from tocsin import config as config_file
from tocsin.channels.matchers import parse_matcher
from tocsin.channels.policy import NoisePolicy
from tocsin.channels.routing import group_labels
from tocsin.config import ChannelConfig, Config, RuleConfig
from tocsin.daemon import backend
from tocsin.daemon.api_values import masked
from tocsin.daemon.backend import (
    SETTINGS_TYPES,
    AlertDetail,
    DigestSettings,
    GroupingSettings,
    IntegrationEntry,
    RuleEntry,
    StateDatabaseStatus,
    Status,
)
from tocsin.daemon.delivery_services import DeliveryServices
from tocsin.daemon.effective import Additions, effective
from tocsin.daemon.health_services import HealthServices
from tocsin.daemon.privacy import clean_matcher, clean_rule
from tocsin.errors import (
    ConfigError,
    ConflictError,
    InvalidValueError,
    NotFoundError,
    UnknownAlertError,
    UnknownSilenceError,
)
from tocsin.schema import Duration, EscalationConfig
from tocsin.state.models import Alert

log = logging.getLogger(__name__)

_SOURCE = "api"


def _duration(value: object) -> str:
    if isinstance(value, Duration):
        return Duration.format(value)
    raise NotImplementedError(type(value))


def _encode(value: object) -> Any:
    """Return a config value as JSON-ready builtins, durations written as the
    file writes them, so the catalog decodes it as it decodes a file."""
    return msgspec.to_builtins(value, enc_hook=_duration)


class Services(DeliveryServices, HealthServices):
    """Everything the API reads or changes, over the daemon's running parts.

    :param daemon: the running :class:`~tocsin.daemon.app.Daemon`; its
        ``parts`` are read on every call, so a reload is seen at once.
    """

    def __init__(self, daemon) -> None:
        self._daemon = daemon
        self.started_at = daemon.clock.time()

    @property
    def _parts(self):
        return self._daemon.parts

    # Alerts

    async def list_alerts(self, *, state=None, rule=None, labels=None, limit=100):
        states = None if state is None else [state]
        return await self._parts.store.list_alerts(
            states=states, rule=rule, labels=labels, limit=limit
        )

    async def get_alert(self, ref: str) -> AlertDetail:
        alert = await self._parts.store.get_by_ref(ref)
        if alert is None:
            raise UnknownAlertError(ref)
        return await self._detail(alert)

    async def move_alert(self, ref, to_state, *, actor, comment) -> AlertDetail:
        parts = self._parts
        actor, comment = self._redact(actor), self._redact(comment)
        try:
            alert = await parts.store.move(ref, to_state, actor=actor, comment=comment)
        except ValueError as error:
            raise InvalidValueError(str(error), "state") from None
        log.info(
            "alert moved",
            extra={"alert": alert.uid, "rule": alert.spec.rule, "reason": actor},
        )
        parts.notifier.changed(alert)
        if to_state == "escalated":
            await self._reach_next_step(alert)

        return await self._detail(alert)

    async def reopen_alert(self, ref, *, actor, comment) -> AlertDetail:
        actor, comment = self._redact(actor), self._redact(comment)
        alert = await self._parts.store.reopen(ref, actor=actor, comment=comment)
        log.info(
            "alert reopened",
            extra={"alert": alert.uid, "rule": alert.spec.rule, "reason": actor},
        )
        # As any reopened alert: its routes hear of it again.
        await self._daemon._alert_changed(alert)

        return await self._detail(alert)

    async def _reach_next_step(self, alert: Alert) -> None:
        """Notify the next pending step of an alert escalated by hand, now."""
        parts = self._parts
        pending = [
            step
            for step in await parts.escalations.steps(alert.id)
            if step.state == "pending" and step.step > 0
        ]
        if not pending:
            # TODO: an alert acknowledged before it was escalated by hand has
            # its steps cancelled; only its routes hear of it then.
            return
        reached = await parts.escalations.reach(
            pending[0].id, at=self._daemon.clock.time()
        )
        if reached is not None and reached.channels:
            parts.dispatcher.wake(reached.channels)

    async def _detail(self, alert: Alert) -> AlertDetail:
        parts = self._parts
        steps = [
            backend.EscalationStep(
                step=step.step,
                due_at=step.due_at,
                channels=list(step.channels),
                state=step.state,
                changed_at=step.reached_at or step.cancelled_at,
            )
            for step in await parts.escalations.steps(alert.id)
        ]
        history = await parts.store.history(alert.id)

        return AlertDetail(alert=alert, history=history, escalation=steps)

    def _redact(self, text: str) -> str:
        """Return what a person typed with the personal data detected in it
        replaced, before it is stored or logged."""
        return self._daemon.redactor.text(text)

    # Silences

    async def list_silences(self, *, state=None):
        return await self._parts.silences.list(state=state)

    async def get_silence(self, silence_id):
        silence = await self._parts.silences.get(silence_id)
        if silence is None:
            raise UnknownSilenceError(silence_id)
        return silence

    async def add_silence(self, *, matchers, starts_at, ends_at, created_by, comment):
        for index, text in enumerate(matchers):
            try:
                parse_matcher(text)
            except ValueError as error:
                raise InvalidValueError(str(error), f"matchers[{index}]") from None
        redactor = self._daemon.redactor
        matchers = [clean_matcher(redactor, text) for text in matchers]
        created_by, comment = self._redact(created_by), self._redact(comment)
        try:
            silence = await self._parts.silences.add(
                matchers,
                starts_at=starts_at,
                ends_at=ends_at,
                created_by=created_by,
                comment=comment,
            )
        except ValueError as error:
            raise InvalidValueError(str(error)) from None
        log.info(
            "silence added",
            extra={"detail": silence.id, "reason": created_by},
        )
        await self._daemon.silences_changed()

        return silence

    async def expire_silence(self, silence_id, *, actor="api"):
        silence = await self._parts.silences.expire(silence_id, actor=actor)
        log.info("silence expired", extra={"detail": silence_id, "reason": actor})
        await self._daemon.silences_changed()

        return silence

    # Rules and integrations added at run time

    async def list_rules(self) -> list[RuleEntry]:
        entries = [
            RuleEntry(rule=rule, source="config") for rule in self._daemon.config.rules
        ]
        for stored in await self._parts.catalog.rules():
            rule = self._daemon.additions_rule(stored.name)
            if rule is not None:
                entries.append(
                    RuleEntry(
                        rule=rule,
                        source="api",
                        created_at=stored.created_at,
                        created_by=stored.created_by,
                    )
                )
        return entries

    async def add_rule(self, rule: RuleConfig, *, created_by: str) -> RuleEntry:
        if any(r.name == rule.name for r in self._daemon.running.rules):
            raise ConflictError(f"a rule named {rule.name!r} exists")
        rule = clean_rule(self._daemon.redactor, rule)
        created_by = self._redact(created_by)
        additions = self._daemon.additions
        changed = msgspec.structs.replace(additions, rules=(*additions.rules, rule))
        self._check(changed)
        await self._parts.catalog.add_rule(rule.name, _encode(rule), created_by)
        await self._daemon.apply_additions(changed, "api")
        stored = await self._parts.catalog.rule(rule.name)

        return RuleEntry(
            rule=rule,
            source="api",
            created_at=stored.created_at if stored else None,
            created_by=created_by,
        )

    async def delete_rule(self, name: str, *, actor: str = "api") -> None:
        if any(rule.name == name for rule in self._daemon.config.rules):
            raise ConflictError(
                f"rule {name!r} comes from the config file; remove it there"
            )
        if not await self._parts.catalog.delete_rule(name, actor=actor):
            raise NotFoundError(f"no rule {name}")
        additions = self._daemon.additions
        rules = tuple(rule for rule in additions.rules if rule.name != name)
        await self._daemon.apply_additions(
            msgspec.structs.replace(additions, rules=rules), "api"
        )

    async def list_integrations(self) -> list[IntegrationEntry]:
        entries = [
            IntegrationEntry(channel=channel, source="config")
            for channel in self._daemon.config.channels
        ]
        added = {channel.name: channel for channel in self._daemon.additions.channels}
        for stored in await self._parts.catalog.integrations():
            if stored.name in added:
                entries.append(
                    IntegrationEntry(
                        channel=added[stored.name],
                        source="api",
                        created_at=stored.created_at,
                        created_by=stored.created_by,
                    )
                )
        healths = await self.health_of(entry.channel.name for entry in entries)

        return [
            msgspec.structs.replace(entry, health=healths[entry.channel.name])
            for entry in entries
        ]

    async def add_integration(
        self, channel: ChannelConfig, *, created_by: str
    ) -> IntegrationEntry:
        if any(c.name == channel.name for c in self._daemon.running.channels):
            raise ConflictError(f"an integration named {channel.name!r} exists")
        created_by = self._redact(created_by)
        additions = self._daemon.additions
        changed = msgspec.structs.replace(
            additions, channels=(*additions.channels, channel)
        )
        self._check(changed)
        try:
            built = self._daemon.build_channel(channel)
        except ConfigError as error:
            raise InvalidValueError(error.detail, error.key) from None
        await self._parts.catalog.add_integration(
            channel.name,
            type(channel).__struct_config__.tag,
            _encode(channel),
            created_by,
            shown=masked(channel),
        )
        self._parts.dispatcher.add_channel(channel.name, built)
        await self._daemon.apply_additions(changed, "api")

        return IntegrationEntry(channel=channel, source="api", created_by=created_by)

    async def delete_integration(self, name: str, *, actor: str = "api") -> None:
        if any(channel.name == name for channel in self._daemon.config.channels):
            raise ConflictError(
                f"integration {name!r} comes from the config file; remove it there"
            )
        additions = self._daemon.additions
        if not any(channel.name == name for channel in additions.channels):
            raise NotFoundError(f"no integration {name}")
        changed = msgspec.structs.replace(
            additions,
            channels=tuple(c for c in additions.channels if c.name != name),
        )
        try:
            self._check(changed)
        except InvalidValueError as error:
            raise ConflictError(
                f"integration {name!r} is still used: {error}"
            ) from None
        await self._parts.catalog.delete_integration(name, actor=actor)
        # TODO: its delivery worker runs until the next restart; nothing new
        # is routed to it, and rows already queued for it still go out.
        await self._daemon.apply_additions(changed, "api")

    # The audit log

    async def audit(self, query, *, alert=None):
        if alert is not None:
            found = await self._parts.store.get_by_ref(alert)
            if found is None:
                raise UnknownAlertError(alert)
            query = msgspec.structs.replace(query, alert_id=found.id)

        return await self._parts.audit.query(query)

    # Settings

    async def get_settings(self, kind):
        additions = self._daemon.additions
        running = self._daemon.running
        if kind == "grouping":
            root = running.routing
            return GroupingSettings(
                group_by=list(root.group_by),
                group_wait=root.group_wait,
                group_interval=root.group_interval,
                repeat_interval=root.repeat_interval,
            )
        if kind == "dedup":
            return running.dedup
        return additions.digest or DigestSettings()

    async def put_settings(self, kind, value, *, actor="api"):
        if isinstance(value, DigestSettings):
            for index, text in enumerate(value.matchers):
                try:
                    parse_matcher(text)
                except ValueError as error:
                    raise InvalidValueError(str(error), f"matchers[{index}]") from None
            matchers = [
                clean_matcher(self._daemon.redactor, text) for text in value.matchers
            ]
            value = msgspec.structs.replace(value, matchers=matchers)
        changed = msgspec.structs.replace(self._daemon.additions, **{kind: value})
        self._check(changed)
        await self._parts.catalog.put_setting(kind, _encode(value), actor=actor)
        await self._daemon.apply_additions(changed, "api")

        return await self.get_settings(kind)

    def _check(self, additions: Additions) -> None:
        try:
            effective(self._daemon.config, additions, _SOURCE)
        except ConfigError as error:
            raise InvalidValueError(error.detail, error.key) from None

    # Routing

    async def routes(self) -> dict[str, Any]:
        return self._parts.policy.tree.describe()

    async def test_route(self, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        found = []
        for match in self._parts.policy.tree.explain(dict(labels)):
            route = match.route
            found.append(
                {
                    **_encode(route),
                    "path": list(match.path),
                    "group_labels": group_labels(route, labels),
                }
            )
        return found

    async def groups(self) -> list[dict[str, Any]]:
        return self._parts.notifier.groups()

    async def status(self) -> Status:
        parts = self._parts
        now = self._daemon.clock.time()
        by_state = Counter(
            alert.state for alert in await parts.store.list_alerts(limit=1_000_000)
        )
        silences = Counter(
            silence.state(now) for silence in await parts.silences.all_unexpired(now)
        )
        rules = Counter(entry.source for entry in await self.list_rules())
        channels = Counter(entry.source for entry in await self.list_integrations())
        database = parts.database
        state_database = StateDatabaseStatus(
            transactions=database.transactions,
            errors=database.errors,
            locked=database.locked,
            slow=database.slow,
        )

        return Status(
            config=self._daemon.config_path,
            started_at=self.started_at,
            alerts=dict(by_state),
            silences=dict(silences),
            rules=dict(rules),
            channels=dict(channels),
            pending_notifications=await parts.outbox.pending_count(),
            state_database=state_database,
        )


def decode_additions(stored, source: str = "state database") -> tuple[Additions, list]:
    """Decode what the catalog holds into :class:`Additions`.

    :param stored: ``(rules, integrations, settings)`` as the catalog returns
        them.
    :return: the additions, and the problems of entries that no longer
        decode (each ``(what, error)``); those are left out, and logged by
        the caller.
    """
    rules_stored, channels_stored, settings = stored
    problems = []
    rules, channels = [], []
    for entry in rules_stored:
        try:
            rules.append(config_file.convert(entry.body, RuleConfig, source, "rule"))
        except ConfigError as error:
            problems.append((f"rule {entry.name}", str(error)))
    for entry in channels_stored:
        try:
            channels.append(
                config_file.convert(entry.body, ChannelConfig, source, "channel")
            )
        except ConfigError as error:
            problems.append((f"integration {entry.name}", str(error)))
    values = {}
    for kind, body in settings.items():
        try:
            values[kind] = config_file.convert(body, SETTINGS_TYPES[kind], source, kind)
        except (ConfigError, KeyError) as error:
            problems.append((f"settings {kind}", str(error)))
    additions = Additions(
        rules=tuple(rules),
        channels=tuple(channels),
        grouping=values.get("grouping"),
        dedup=values.get("dedup"),
        digest=values.get("digest"),
    )

    return additions, problems


def escalation_of(
    config: Config, policy: NoisePolicy
) -> Callable[[Alert], EscalationConfig | None]:
    """Return a function naming an alert's escalation policy: its rule's,
    else that of the first route it takes."""
    policies = {escalation.name: escalation for escalation in config.escalations}

    def find(alert: Alert) -> EscalationConfig | None:
        rule = policy.rules.get(alert.spec.rule)
        name = rule.escalation if rule is not None else None
        if name is None:
            routes = policy.routes(alert)
            name = routes[0].escalation if routes else None
        return policies.get(name) if name else None

    return find
