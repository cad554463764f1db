"""What the HTTP API needs of the daemon: the :class:`Backend` protocol.

The API (:mod:`tocsin.daemon.api`) parses and checks requests and shapes the
answers; everything it reads or changes goes through one object with this
protocol, which the daemon builds from its alert store, silences, catalog,
routing tree and notifier. Tests serve the API over a small in-memory fake.

Values the API has checked arrive typed (a :class:`~tocsin.schema.RuleConfig`,
a channel config); what the backend refuses it refuses by raising one of
Tocsin's errors, each of which the API answers with its own status:

- :class:`~tocsin.errors.UnknownAlertError`,
  :class:`~tocsin.errors.UnknownSilenceError`,
  :class:`~tocsin.errors.NotFoundError`: 404;
- :class:`~tocsin.errors.LifecycleError`, :class:`~tocsin.errors.ConflictError`:
  409;
- :class:`~tocsin.errors.InvalidValueError`: 422.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol

import msgspec

from tocsin.channels.health import IntegrationHealth
from tocsin.errors import LifecycleError
from tocsin.schema import ChannelConfig, DedupConfig, Duration, Matcher, RuleConfig
from tocsin.state.audit import AuditPage, AuditQuery
from tocsin.state.lifecycle import MANUAL_MOVES, path_to
from tocsin.state.models import Alert, AlertState, Silence, Transition
from tocsin.state.outbox import DeadLetter

#: The settings the API may change, each a part of the running config.
SettingsKind = Literal["grouping", "dedup", "digest"]
#: Where a rule or an integration comes from.
Source = Literal["config", "api"]


class _Value(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    pass


class GroupingSettings(_Value):
    """Grouping keys and timings that override the routing tree's root.

    A key left unset keeps the root's value from the config file.
    """

    group_by: list[str] | msgspec.UnsetType = msgspec.UNSET
    group_wait: Duration | msgspec.UnsetType = msgspec.UNSET
    group_interval: Duration | msgspec.UnsetType = msgspec.UNSET
    repeat_interval: Duration | msgspec.UnsetType = msgspec.UNSET


class DigestSettings(_Value):
    """Notifications of the alerts ``matchers`` select, batched into digests.

    ``interval`` of ``0`` sends no digest: every notification goes out as it
    happens.
    """

    interval: Duration = Duration(0.0)
    #: Every matcher must hold for an alert to go into the digest.
    matchers: list[Matcher] = []
    #: Channels the digest goes to; none means the alerts' own.
    channels: list[str] = []


#: The value each kind of settings takes.
Settings = GroupingSettings | DedupConfig | DigestSettings
SETTINGS_TYPES: dict[str, type] = {
    "grouping": GroupingSettings,
    "dedup": DedupConfig,
    "digest": DigestSettings,
}


class EscalationStep(msgspec.Struct, frozen=True, kw_only=True):
    """One step of an alert's escalation, as stored when the alert fired."""

    #: Position in the policy, from 0.
    step: int
    #: When the step is (or was) due, POSIX seconds.
    due_at: float
    channels: list[str]
    #: ``cancelled`` once the alert was acknowledged or ended first.
    state: Literal["pending", "reached", "cancelled"]
    #: When it was reached or cancelled.
    changed_at: float | None = None


class AlertDetail(msgspec.Struct, frozen=True, kw_only=True):
    """An alert with its history: every transition, and its escalation."""

    alert: Alert
    history: list[Transition]
    escalation: list[EscalationStep] = []


class RuleEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A rule the daemon runs, with where it comes from."""

    rule: RuleConfig
    source: Source
    #: When it was added through the API; ``None`` for a rule of the file.
    created_at: float | None = None
    created_by: str = ""


class IntegrationEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A channel the daemon delivers to, with where it comes from.

    ``channel`` holds its secrets; the API masks them in every answer.
    """

    channel: ChannelConfig
    source: Source
    created_at: float | None = None
    created_by: str = ""
    #: How it delivers, when the answer lists integrations (see
    #: :mod:`tocsin.channels.health`).
    health: IntegrationHealth | None = None


class IntegrationTest(msgspec.Struct, frozen=True, kw_only=True):
    """How one test notification sent to an integration fared."""

    ok: bool
    #: The destination's HTTP status, when there was an answer.
    status: int | None
    duration_ms: float
    #: Why it failed (``server_error``, ``auth``, ``timeout``...).
    reason: str | None = None
    #: What failed, free of secrets.
    error: str | None = None


class StateDatabaseStatus(msgspec.Struct, frozen=True, kw_only=True):
    """The state database's own health counters, since the daemon started."""

    transactions: int = 0
    #: Statements and transactions that failed, whatever the cause.
    errors: int = 0
    #: Of those, the ones refused because another process held the database
    #: locked for longer than Tocsin waits.
    locked: int = 0
    #: Transactions slower than a second, waits for a lock included.
    slow: int = 0


class Status(msgspec.Struct, frozen=True, kw_only=True):
    """What ``GET /api/v1/status`` reports, besides the version and uptime."""

    #: The config file the daemon runs.
    config: str
    #: When the daemon started, POSIX seconds.
    started_at: float
    #: Alerts by state; states without alerts may be left out.
    alerts: dict[str, int]
    #: Silences by state (``active``, ``pending``); expired ones left out.
    silences: dict[str, int]
    #: Rules by source (``config``, ``api``).
    rules: dict[str, int]
    #: Channels by source.
    channels: dict[str, int]
    #: Notifications queued and not yet delivered, dead or skipped.
    pending_notifications: int
    state_database: StateDatabaseStatus = StateDatabaseStatus()


class Backend(Protocol):
    """Everything the API reads or changes; see the module's docstring."""

    async def list_alerts(
        self,
        *,
        state: AlertState | None = None,
        rule: str | None = None,
        labels: Mapping[str, str] | None = None,
        limit: int = 100,
    ) -> list[Alert]:
        """Return alerts, newest first, that match every filter given.

        :param labels: labels every alert returned has, with these values.
        :param limit: most alerts returned.
        """
        ...

    async def get_alert(self, ref: str) -> AlertDetail:
        """Return the alert whose id (``12``) or uid is ``ref``, with history.

        :raises UnknownAlertError: if there is none.
        """
        ...

    async def move_alert(
        self, ref: str, to_state: AlertState, *, actor: str, comment: str
    ) -> AlertDetail:
        """Move the alert ``ref`` to ``to_state`` by hand; return it afterwards.

        :param actor: who asks (``api:alice``), recorded on the transition.
        :raises UnknownAlertError: if there is no such alert.
        :raises LifecycleError: if its lifecycle forbids the move.
        """
        ...

    async def reopen_alert(self, ref: str, *, actor: str, comment: str) -> AlertDetail:
        """Open the resolved alert ``ref`` again because a service says it is
        not over, and tell its routes.

        :raises UnknownAlertError: if there is no such alert.
        :raises LifecycleError: if it is not resolved.
        """
        ...

    async def list_silences(self, *, state: str | None = None) -> list[Silence]:
        """Return the silences, those in ``state`` only when it is given."""
        ...

    async def get_silence(self, silence_id: str) -> Silence:
        """Return one silence.

        :raises UnknownSilenceError: if there is none with that id.
        """
        ...

    async def add_silence(
        self,
        *,
        matchers: list[str],
        starts_at: float,
        ends_at: float,
        created_by: str,
        comment: str,
    ) -> Silence:
        """Store a new silence and apply it at once; return it.

        :raises InvalidValueError: if a matcher does not parse (its ``key``
            is ``matchers[i]``).
        """
        ...

    async def expire_silence(self, silence_id: str, *, actor: str = "api") -> Silence:
        """End a silence now; return it as it ends.

        :param actor: who ends it (``api:alice``), for the audit log.

        :raises UnknownSilenceError: if there is none with that id.
        """
        ...

    async def list_rules(self) -> list[RuleEntry]:
        """Return every rule the daemon runs, the file's first."""
        ...

    async def add_rule(self, rule: RuleConfig, *, created_by: str) -> RuleEntry:
        """Store a rule (already checked like the file's) and start running it.

        :raises ConflictError: if a rule of that name exists.
        :raises InvalidValueError: if it names a channel or an escalation
            policy that does not exist.
        """
        ...

    async def delete_rule(self, name: str, *, actor: str = "api") -> None:
        """Stop running and forget a rule added through the API.

        :param actor: who removes it, for the audit log.

        :raises NotFoundError: if no rule has that name.
        :raises ConflictError: if the rule comes from the config file.
        """
        ...

    async def list_integrations(self) -> list[IntegrationEntry]:
        """Return every channel, the file's first."""
        ...

    async def add_integration(
        self, channel: ChannelConfig, *, created_by: str
    ) -> IntegrationEntry:
        """Store a channel (already checked like the file's) and deliver to it.

        :raises ConflictError: if a channel of that name exists.
        :raises InvalidValueError: if its secret cannot be read (a ``url_env``
            that is unset).
        """
        ...

    async def delete_integration(self, name: str, *, actor: str = "api") -> None:
        """Forget a channel added through the API.

        :param actor: who removes it, for the audit log.

        :raises NotFoundError: if no channel has that name.
        :raises ConflictError: if the channel comes from the config file, or
            a rule still names it.
        """
        ...

    async def integration_health(self, name: str) -> IntegrationHealth:
        """Return how the integration ``name`` delivers.

        :raises NotFoundError: if no integration has that name.
        """
        ...

    async def test_integration(self, name: str) -> IntegrationTest:
        """Send one sample notification to the integration ``name`` at once.

        It goes through the running channel, past the outbox, its retries
        and its rate limit: one attempt, whose outcome is returned.

        :raises NotFoundError: if no integration has that name.
        """
        ...

    async def dead_letters(
        self, *, channel: str | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        """Return the notifications given up on, the last given up on first.

        :param channel: only those of this channel, when given.
        """
        ...

    async def get_settings(self, kind: SettingsKind) -> Settings:
        """Return the settings of ``kind`` as they apply now."""
        ...

    async def put_settings(
        self, kind: SettingsKind, value: Settings, *, actor: str = "api"
    ) -> Settings:
        """Store and apply the settings of ``kind``; return them as they apply.

        :param actor: who changes them, for the audit log.

        :raises InvalidValueError: if a matcher does not parse or a channel
            does not exist.
        """
        ...

    async def audit(self, query: AuditQuery, *, alert: str | None = None) -> AuditPage:
        """Return the audit log's entries that match ``query``, newest first.

        :param alert: only this alert's (an id or a uid).
        :raises UnknownAlertError: if ``alert`` names no alert.
        """
        ...

    async def routes(self) -> dict[str, Any]:
        """Return the routing tree as JSON: the root route, its ``routes`` in it.

        Each route has its ``id``, its ``matchers`` and its settings with
        inheritance applied (durations in seconds).
        """
        ...

    async def test_route(self, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """Return the routes an alert of ``labels`` would take, in order.

        Each has the route's ``id``, ``channels`` and grouping settings, and
        the ``group_labels`` the alert would be grouped under.
        """
        ...

    async def groups(self) -> list[dict[str, Any]]:
        """Return the aggregation groups: ``key``, ``route``, ``labels``,
        ``alerts`` (ids) and when each was last notified."""
        ...

    async def status(self) -> Status:
        """Return the counts of ``GET /api/v1/status``."""
        ...


async def move_alert_to(
    backend: Backend, alert: Alert, target: AlertState, *, actor: str, comment: str
) -> AlertDetail:
    """Move ``alert`` to ``target`` through the moves a person would make,
    each recorded with ``actor`` and ``comment``; return it afterwards.

    A service that only says "resolved" (PagerDuty, a Slack button) walks
    an alert there this way, never through ``escalated``.

    :raises LifecycleError: if no run of moves leads there, or someone moved
        the alert meanwhile so that the next one is refused (their move
        stands).
    """
    path = path_to(alert.state, target)
    if not path:
        raise LifecycleError(alert.id, alert.state, target, MANUAL_MOVES[alert.state])
    for state in path:
        detail = await backend.move_alert(
            alert.uid, state, actor=actor, comment=comment
        )

    return detail
