"""The configuration's schema: msgspec Structs that forbid unknown keys.

:mod:`tocsin.config` decodes a file into :class:`Config` and checks what the
schema cannot express; everything else imports the types from there. The
building blocks (durations, names) are in :mod:`tocsin.schema_types`, the
channels' Structs in :mod:`tocsin.schema_channels`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, NamedTuple

import msgspec

from tocsin.schema_channels import (
    CHANNEL_TYPES,
    PAGERDUTY_SEVERITIES,
    ChannelConfig,
    DatadogChannelConfig,
    EmailChannelConfig,
    LogChannelConfig,
    PagerDutyChannelConfig,
    PagerDutySeverity,
    SlackChannelConfig,
    TeamsChannelConfig,
    WebhookChannelConfig,
)
from tocsin.schema_types import (
    LEVELS,
    MAX_DURATION,
    NAME_PATTERN,
    Aggregation,
    Comparison,
    Duration,
    Name,
    PositiveInt,
    Severity,
    Strict,
    decode_hook,
)

#: The schema's building blocks and channels are defined beside it and
#: imported from here, as every other type is.
__all__ = [
    "CHANNEL_TYPES",
    "LEVELS",
    "MAX_DURATION",
    "NAME_PATTERN",
    "PAGERDUTY_SEVERITIES",
    "Aggregation",
    "ChannelConfig",
    "Comparison",
    "DatadogChannelConfig",
    "Duration",
    "EmailChannelConfig",
    "LogChannelConfig",
    "Name",
    "PagerDutyChannelConfig",
    "PagerDutySeverity",
    "PositiveInt",
    "Severity",
    "SlackChannelConfig",
    "TeamsChannelConfig",
    "WebhookChannelConfig",
    "decode_hook",
]


class DaemonConfig(Strict):
    #: Directory of the state database; created if missing.
    state_dir: str = "./tocsin-state"
    #: Explicit database file; overrides ``state_dir``.
    database: str = ""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: How often every live series is evaluated even without new samples.
    tick: Duration = Duration(1.0)
    #: Most live series over all rules; new series beyond it are refused,
    #: counted, logged and raise an internal alert.
    max_series: PositiveInt = 1_000_000
    #: Bound on the whole shutdown: recording decisions, flushing the export
    #: (at most half of it) and letting in-flight deliveries finish.
    shutdown_timeout: Duration = Duration(10.0)


class IngestConfig(Strict):
    #: DogStatsD over UDP, ``host:port``; an empty string turns it off.
    udp: str = "127.0.0.1:8125"
    #: DogStatsD over a Unix datagram socket (a path); empty turns it off.
    unix_dgram: str = ""
    #: NDJSON samples over a Unix stream socket (a path); empty turns it off.
    unix_stream: str = ""
    #: Kernel receive buffer asked for on datagram sockets, in bytes (the
    #: kernel caps it at ``net.core.rmem_max``).
    receive_buffer: Annotated[int, msgspec.Meta(ge=4096, le=1 << 30)] = 4 * 1024 * 1024
    #: Samples stamped further in the past than this are dropped and counted.
    max_sample_age: Duration = Duration(3600.0)
    #: Samples stamped further in the future than this are dropped and counted.
    max_sample_skew: Duration = Duration(600.0)
    #: An NDJSON connection that sends nothing for this long is closed, so
    #: idle clients cannot hold every connection and file descriptor.
    idle_timeout: Duration = Duration(300.0)


class AlertsConfig(Strict):
    #: A resolved alert is closed after this long; ``0`` closes by hand only.
    close_after: Duration = Duration(3600.0)
    #: A resolved alert whose series breaches again within this long reopens
    #: (``resolved`` to ``triggered``) as the same alert; ``0`` never reopens.
    reopen_window: Duration = Duration(0.0)
    #: Channels of Tocsin's own alerts (a rule or all rules at their series
    #: limit); with none, they are recorded and logged only.
    internal_channels: list[Name] = []


class AuditConfig(Strict):
    """What the audit log keeps, and for how long."""

    #: How long the audit log keeps deliveries, transitions of alerts no
    #: longer open, and events; ``0`` keeps everything.
    retention: Duration = Duration(30 * 86400.0)
    #: Keep the body each delivery attempt sent over HTTP, its secrets
    #: redacted; headers are never kept.
    record_payloads: bool = False


class HealthConfig(Strict):
    """When an integration counts as degraded or failing, and when Tocsin
    raises its own alerts about one (see :mod:`tocsin.channels.health`)."""

    #: Failed attempts within ``window`` that raise
    #: ``tocsin.integration_failing``; as many failures in a row, with no
    #: success between them, make an integration ``failing``.
    failures: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 5
    #: How far back failures, dead letters and a stalled backlog are looked for.
    #: Not ``0``.
    window: Duration = Duration(600.0)
    #: Pending notifications from which an integration counts as ``degraded``.
    backlog: Annotated[int, msgspec.Meta(ge=1)] = 100
    #: Export intervals without an accepted request, after a failed one,
    #: that raise ``tocsin.export_behind``.
    export_intervals: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 3


#: Where the Datadog API key is read from when the file names no source.
DEFAULT_API_KEY_ENV = "DD_API_KEY"


class DatadogExportConfig(Strict):
    #: The Datadog site, a host name (``datadoghq.eu``); the API is
    #: ``https://api.{site}``.
    site: str = "datadoghq.com"
    #: Full http(s) base URL (``https://api.datadoghq.eu``); overrides ``site``.
    base_url: str = ""
    #: Environment variable holding the API key; unset, ``DD_API_KEY`` unless
    #: ``api_key_file`` is set, and ``""`` reads none. Set at most one of the two.
    api_key_env: str | msgspec.UnsetType = msgspec.UNSET
    #: File holding the API key; a relative name is looked up in
    #: ``$CREDENTIALS_DIRECTORY`` first (a systemd credential).
    api_key_file: str = ""
    interval: Duration = Duration(60.0)
    #: Prepended to every exported metric name; it must start with a letter.
    metric_prefix: str = ""
    tags: list[str] = []
    #: Metric names to export; empty exports every ingested metric.
    metrics: list[str] = []
    compression: Literal["deflate", "gzip"] = "deflate"
    timeout: Duration = Duration(10.0)
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 5
    #: Host reported as the series' ``host`` resource; empty sends none.
    host: str = ""
    #: Most series the export holds at once (a series is held until it has
    #: been idle for 5 intervals); samples of further series are counted and
    #: left out, so a flood of new tag values stays bounded.
    max_series: PositiveInt = 100_000
    #: Also export Tocsin's own metrics (those of ``/metrics``), named
    #: ``tocsin.<name>``, with ``tags`` and ``host`` but no ``metric_prefix``.
    self_metrics: bool = False

    @property
    def key_env(self) -> str:
        """Return the environment variable the API key is read from, ``""`` for none.

        A source the file names wins over the default: with ``api_key_file``
        set, ``$DD_API_KEY`` is not read.
        """
        if self.api_key_env is not msgspec.UNSET:
            return self.api_key_env
        return "" if self.api_key_file else DEFAULT_API_KEY_ENV


class ExportConfig(Strict):
    datadog: DatadogExportConfig = DatadogExportConfig()


class LevelConfig(Strict):
    """One severity level of a rule with both ``warning`` and ``critical``."""

    #: What the measured value is compared with (every ``op`` but the ranges).
    threshold: float | None = None
    #: ``[low, high]`` for ``inside`` and ``outside``.
    range: list[float] = []
    #: Hysteresis: an alert at this level leaves it only once the value is
    #: back past this (see :attr:`RuleConfig.recover`).
    recover: float | None = None


class CompareConfig(Strict):
    """Compare a rule's value with its own past instead of as it is.

    The past is the value the rule measured at each *step*: each bin of a
    tumbling rule, each twelfth of the window of a sliding one.
    """

    #: ``change``: the value less the value ``bins`` steps before;
    #: ``percent``: that change in percent of the earlier value;
    #: ``baseline``: how many standard deviations the value lies from the
    #: mean of the last ``bins`` steps (a z-score).
    kind: Literal["change", "percent", "baseline"]
    #: Steps back (``change``, ``percent``) or steps of history (``baseline``).
    bins: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = 0
    #: The same as ``bins``, as a duration (a whole number of steps).
    ago: Duration = Duration(0.0)
    #: Steps with a value the baseline needs before it can fire; 0 means
    #: half of ``bins`` (at least 2).
    min_history: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = 0


class NoDataConfig(Strict):
    """What a series that stopped sending samples means."""

    #: How long a series must be silent before the policy applies.
    after: Duration
    #: ``alert``: open an alert (or keep it firing) until samples return;
    #: ``keep_last``: keep the series' state as it is; ``resolve``: resolve
    #: a firing alert; ``ignore``: let the window decide, as without a policy.
    action: Literal["alert", "keep_last", "resolve", "ignore"] = "alert"


class FlappingConfig(Strict):
    """Flap detection over a weighted history of state changes."""

    #: Evaluations remembered (at least 2).
    history: Annotated[int, msgspec.Meta(ge=2, le=64)] = 21
    #: A flapping alert settles once the weighted share of changes is below.
    low: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.25
    #: An alert starts flapping once the weighted share of changes is above.
    high: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.5


class ConditionConfig(Strict):
    """One side of a composite rule: a metric, its window and its test."""

    metric: str
    #: Label matchers, on top of the rule's own.
    match: dict[str, str] = {}
    aggregation: Aggregation = "avg"
    window: Duration = Duration(300.0)
    op: Comparison = ">"
    threshold: float | None = None
    range: list[float] = []
    recover: float | None = None
    min_samples: PositiveInt = 1


class RuleConfig(Strict, kw_only=True):
    name: Name
    #: The metric the rule measures; empty for a composite rule.
    metric: str = ""
    #: Label matchers; every one must equal the sample's tag value.
    match: dict[str, str] = {}
    #: Labels whose values make one series of this rule.
    group_by: list[str] = []
    aggregation: Aggregation = "avg"
    #: A sliding window's length, or a tumbling rule's bin width.
    window: Duration = Duration(300.0)
    #: Evaluate whole bins of ``window`` aligned to the clock (UTC minutes,
    #: hours, days) once each bin has closed, rather than a sliding window.
    tumbling: bool = False
    #: Tumbling rules only: how long after its end a bin is evaluated;
    #: samples for a bin are taken until then (late data).
    delay: Duration = Duration(0.0)
    op: Comparison = ">"
    #: What the aggregation is compared with (every ``op`` but the ranges).
    threshold: float | None = None
    #: ``[low, high]`` for ``inside`` (low <= value <= high) and ``outside``.
    range: list[float] = []
    #: Hysteresis: a firing alert resolves only once the value is back past
    #: this (at or below it for ``>`` and ``>=``, at or above it for ``<``
    #: and ``<=``), so a value hovering at the threshold does not flap.
    recover: float | None = None
    #: Two levels in one rule instead of ``threshold``/``range`` and
    #: ``severity``: an alert moves between them without becoming a new one.
    warning: LevelConfig | None = None
    critical: LevelConfig | None = None
    #: Compare the value with the series' own past (change or baseline).
    compare: CompareConfig | None = None
    #: Composite rules: conditions on several metrics, per series key,
    #: joined by ``join`` (``all``: AND, ``any``: OR).
    conditions: list[ConditionConfig] = []
    join: Literal["all", "any"] = "all"
    #: A firing alert whose condition stops holding stays firing this long; a
    #: breach within it keeps the alert as it is.
    keep_firing_for: Duration = Duration(0.0)
    #: A window with fewer samples than this never fires; a firing alert whose
    #: window falls below it resolves, saying so.
    min_samples: PositiveInt = 1
    #: How long the condition must hold before the alert fires.
    for_: Duration = msgspec.field(name="for", default=Duration(0.0))
    #: What a silent series means; without it, its window decides.
    no_data: NoDataConfig | None = None
    #: Flap detection; without it, an alert never counts as flapping.
    flapping: FlappingConfig | None = None
    severity: Severity = "medium"
    #: Where its alerts go; set, they skip the routing tree's channels (the
    #: first matching route still sets grouping and timings).
    channels: list[Name] = []
    #: ``auto`` resolves an alert when its condition clears; ``manual`` keeps
    #: it open, noting the clearing, until someone resolves it.
    resolve: Literal["auto", "manual"] = "auto"
    #: Overrides ``alerts.reopen_window`` for this rule.
    reopen_window: Duration | None = None
    #: Name of an ``escalations`` policy; overrides the route's.
    escalation: Name | None = None
    #: After an alert of a series fires, a new one for that series waits this long.
    cooldown: Duration = Duration(0.0)
    #: At most this many alerts per rule per day; 0 means no cap.
    daily_cap: Annotated[int, msgspec.Meta(ge=0)] = 0
    #: ``utc_day``: the day is the UTC calendar day; ``rolling_24h``: any 24 hours.
    daily_cap_period: Literal["utc_day", "rolling_24h"] = "utc_day"
    #: At most this many alerts per rule within any span of ``window``; 0
    #: means no cap.
    window_cap: Annotated[int, msgspec.Meta(ge=0)] = 0
    #: Most live series of this rule; new ones beyond it are refused,
    #: counted, logged and raise an internal alert.
    max_series: PositiveInt = 100_000
    summary: str = ""
    description: str = ""
    runbook: str = ""
    recommended_actions: list[str] = []
    #: Extra labels attached to every alert of the rule (team, project, ...).
    labels: dict[str, str] = {}
    #: Free-form metadata copied into notifications.
    metadata: dict[str, str] = {}

    @property
    def levels(self) -> list[tuple[str, LevelConfig]]:
        """Return the rule's levels, lowest first, as ``(severity, level)``.

        A rule without ``warning`` and ``critical`` has one level: its
        ``threshold``, ``range`` and ``recover`` at its ``severity``.
        """
        if self.warning is None and self.critical is None:
            own = LevelConfig(
                threshold=self.threshold, range=self.range, recover=self.recover
            )
            return [(self.severity, own)]
        named = (("warning", self.warning), ("critical", self.critical))
        return [(name, level) for name, level in named if level is not None]


class ApiConfig(Strict):
    """The HTTP API: on a Unix stream socket, and optionally on TCP."""

    #: Serve the API; off, only SIGHUP reloads the config.
    enabled: bool = True
    #: Path of the socket; empty means ``api.sock`` in ``daemon.state_dir``.
    #: Created with mode 0660: the API changes what Tocsin alerts on, so only
    #: the service's user and group may use it.
    socket: str = ""
    #: Also serve the API on TCP, ``host:port``; empty (the default) does not.
    #: Every TCP request needs ``Authorization: Bearer <token>``.
    tcp: str = ""
    #: Environment variable holding the bearer token of the TCP listener.
    token_env: str = ""
    #: File holding the bearer token; a relative name is looked up in
    #: ``$CREDENTIALS_DIRECTORY`` first (a systemd credential).
    token_file: str = ""
    #: Where people reach this API, for links in notifications
    #: (``https://tocsin.example.com``); empty leaves the links out.
    external_url: str = ""


#: A label matcher as Alertmanager writes it: ``team="ml"``, ``env!="dev"``,
#: ``model=~"fraud-.*"`` or ``severity!~"info|low"``.
Matcher = str


class TimeRangeConfig(Strict):
    """Times of day, ``HH:MM``; the start is included, the end is not."""

    start: str
    #: ``24:00`` is the end of the day.
    end: str


class MuteWindowConfig(Strict):
    """A recurring time range, like Alertmanager's ``time_intervals``.

    Each field is a list: any of its entries may match (OR); every field that
    is set must match (AND); an empty field matches everything.
    """

    name: Name
    #: IANA time zone the fields are read in; UTC when unset, whatever the
    #: host's zone.
    location: str = "UTC"
    times: list[TimeRangeConfig] = []
    #: ``monday`` or an inclusive range ``monday:friday``.
    weekdays: list[str] = []
    #: ``1``, ``1:15``; negative days count from the end of the month (``-1``).
    days_of_month: list[str] = []
    #: ``january``, ``1``, ``january:march``.
    months: list[str] = []
    #: ``2026`` or ``2026:2027``.
    years: list[str] = []


class RouteConfig(Strict):
    """One node of the routing tree.

    Keys left unset are inherited from the parent route; the root's defaults
    send each alert on its own and at once (see :class:`RoutingConfig`).
    """

    #: Stable identity of the route; groups survive a reload under it. Empty:
    #: the route's position and matchers.
    name: str = ""
    #: Every matcher must hold (AND). The root takes none.
    matchers: list[Matcher] = []
    channels: list[Name] | msgspec.UnsetType = msgspec.UNSET
    #: Labels whose values key a group; ``["..."]`` keys on every label (one
    #: group per alert), ``[]`` puts every alert of the route in one group.
    group_by: list[str] | msgspec.UnsetType = msgspec.UNSET
    group_wait: Duration | msgspec.UnsetType = msgspec.UNSET
    #: ``0`` sends each change of a group as soon as it happens.
    group_interval: Duration | msgspec.UnsetType = msgspec.UNSET
    repeat_interval: Duration | msgspec.UnsetType = msgspec.UNSET
    #: Keep looking for matching siblings after this route matched.
    continue_: bool = msgspec.field(name="continue", default=False)
    #: Names of ``mute_windows`` during which this route sends nothing.
    mute_windows: list[Name] = []
    #: Names of ``mute_windows`` outside which this route sends nothing.
    active_windows: list[Name] = []
    #: Send the resolve of an alert that resolved while silenced, muted or
    #: inhibited, when its trigger had reached the channel.
    send_resolved_silenced: bool | msgspec.UnsetType = msgspec.UNSET
    #: Send this route's groups as digests, every this long (aligned to the
    #: UTC clock); ``0`` sends them as they change.
    digest: Duration | msgspec.UnsetType = msgspec.UNSET
    #: Name of an ``escalations`` policy for the alerts this route takes.
    escalation: Name | msgspec.UnsetType = msgspec.UNSET
    routes: list[RouteConfig] = []


class EscalationStepConfig(Strict):
    #: How long after the previous step (after the alert fired, for the
    #: first) this step is reached, unless the alert was acknowledged or
    #: resolved first.
    wait: Duration = Duration(0.0)
    #: Channels this step notifies of the alert; none only marks the alert
    #: escalated.
    channels: list[Name] = []


class EscalationConfig(Strict):
    """An escalation policy: ordered steps. Reaching any step after the
    first moves the alert to ``escalated``."""

    name: Name
    steps: list[EscalationStepConfig]


class InhibitConfig(Strict):
    """While an alert matching ``source`` is open, alerts matching ``target``
    with the same values of the ``equal`` labels are not notified."""

    source: list[Matcher]
    target: list[Matcher]
    equal: list[str] = []


class DedupConfig(Strict):
    """Caps on notifications that say the same thing, per channel.

    Two notifications are the same when their alerts have the same values of
    ``keys``; with no keys, deduplication is off.
    """

    keys: list[str] = []
    #: The window of ``max_per_window``.
    window: Duration = Duration(600.0)
    #: Most notifications per key and channel within ``window``; ``0`` has no
    #: cap. Notifications beyond it are dropped, counted and logged.
    max_per_window: Annotated[int, msgspec.Meta(ge=0)] = 0
    #: A trigger for a key already triggered on the channel within this long
    #: is not sent; ``0`` suppresses nothing.
    suppress_for: Duration = Duration(0.0)


class RoutingConfig(RouteConfig):
    """The root of the routing tree, with Tocsin's defaults.

    By default each alert is its own group, sent at once and on every change,
    and repeated every four hours while it fires. Alertmanager's defaults are
    ``group_by = []``, 30s, 5m and 4h: set them here to batch as it does.
    """

    channels: list[Name] = []
    group_by: list[str] = msgspec.field(default_factory=lambda: ["..."])
    group_wait: Duration = Duration(0.0)
    group_interval: Duration = Duration(0.0)
    repeat_interval: Duration = Duration(4 * 3600.0)
    send_resolved_silenced: bool = True
    digest: Duration = Duration(0.0)


class PrivacyConfig(Strict):
    """Personal data replaced before anything is stored, sent or logged (see
    :mod:`tocsin.redaction`)."""

    #: Names whose values are always replaced, matched case-insensitively,
    #: as a tag's or label's key, a metadata key or a key of a JSON body.
    redact_fields: list[str] = []
    #: Detectors run over every other value; all of them unless listed.
    detectors: list[Literal["email", "phone", "national_id", "card"]] = msgspec.field(
        default_factory=lambda: ["email", "phone", "national_id", "card"]
    )
    #: What a redacted value, or a detected part of one, becomes.
    marker: str = "[REDACTED]"


class ConfigWarning(NamedTuple):
    """Something a config may say that is likely a mistake; it still loads."""

    #: The key path it is about (``rules[0].channels``).
    key: str
    message: str


class Config(Strict):
    daemon: DaemonConfig = DaemonConfig()
    ingest: IngestConfig = IngestConfig()
    alerts: AlertsConfig = AlertsConfig()
    export: ExportConfig = ExportConfig()
    api: ApiConfig = ApiConfig()
    channels: list[ChannelConfig] = []
    rules: list[RuleConfig] = []
    routing: RoutingConfig = RoutingConfig()
    mute_windows: list[MuteWindowConfig] = []
    inhibit: list[InhibitConfig] = []
    escalations: list[EscalationConfig] = []
    dedup: DedupConfig = DedupConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    audit: AuditConfig = AuditConfig()
    health: HealthConfig = HealthConfig()

    @property
    def database_path(self) -> Path:
        if self.daemon.database:
            return Path(self.daemon.database)
        return Path(self.daemon.state_dir) / "tocsin.db"

    @property
    def api_socket_path(self) -> str:
        """Return where the control API listens (see :class:`ApiConfig`)."""
        return self.api.socket or str(Path(self.daemon.state_dir) / "api.sock")

    def channel(self, name: str) -> ChannelConfig:
        for channel in self.channels:
            if channel.name == name:
                return channel
        raise KeyError(name)

    def warnings(self) -> list[ConfigWarning]:
        """Return what this config allows but probably does not mean (see
        :func:`tocsin.rule_checks.config_warnings`)."""
        # Imported here: the checks import this module's types.
        from tocsin.rule_checks import config_warnings

        return config_warnings(self)
