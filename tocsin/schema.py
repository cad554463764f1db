"""The configuration's schema: msgspec Structs that forbid unknown keys.

:mod:`tocsin.config` decodes a file into :class:`Config` and checks what the
schema cannot express; everything else imports the types from there.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, ClassVar, Literal, NamedTuple

import msgspec

#: The longest duration a config may give, in seconds (ten years).
MAX_DURATION = 3650 * 86400.0


class Duration(float):
    """Seconds, written in the file as ``30s``, ``5m``, ``1h``, ``1d`` or ``250ms``."""

    _UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    _PATTERN = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")

    @classmethod
    def parse(cls, text: str) -> Duration:
        """Parse one duration, raising :class:`ValueError` if it is not one."""
        if text == "0":
            return cls(0.0)
        match = cls._PATTERN.fullmatch(text)
        if match is None:
            raise ValueError(
                f"invalid duration {text!r} (write it like 30s, 5m, 1h or 1d)"
            )
        seconds = float(match[1]) * cls._UNITS[match[2]]
        # A bound, not a policy: beyond it, arithmetic on timestamps loses
        # whole seconds, and a huge number of digits reads as infinity.
        if not seconds <= MAX_DURATION:
            raise ValueError(f"duration {text!r} is longer than 3650d")
        return cls(seconds)

    @classmethod
    def format(cls, seconds: float) -> str:
        """Write ``seconds`` as the file would (``30s``, ``5m``, ``1h``).

        The largest unit that divides the duration exactly wins; anything
        else is written in seconds.
        """
        for unit, size in sorted(cls._UNITS.items(), key=lambda item: -item[1]):
            count = seconds / size
            if count >= 1 and abs(count - round(count)) < 1e-9:
                return f"{round(count)}{unit}"
        # Plain decimals, never an exponent, so that ``parse`` reads it back.
        text = f"{seconds:.9f}".rstrip("0").rstrip(".")
        return "0s" if text in ("0", "") else f"{text}s"


def decode_hook(kind: type, obj: object) -> object:
    if kind is Duration:
        if not isinstance(obj, str):
            raise TypeError("expected a duration string like '30s', '5m' or '1h'")
        return Duration.parse(obj)
    raise NotImplementedError(kind)


Severity = Literal["critical", "high", "warning", "medium", "low", "info"]
#: Names of the two levels a rule may have, lowest first.
LEVELS = ("warning", "critical")
Aggregation = Literal[
    "avg",
    "min",
    "max",
    "sum",
    "count",
    "last",
    "stddev",
    "delta",
    "rate",
    "p50",
    "p90",
    "p95",
    "p99",
]
Comparison = Literal[">", ">=", "<", "<=", "==", "!=", "inside", "outside"]
#: A name is a segment of the API's paths too, so one of dots alone (which
#: HTTP clients fold into the path around it) is not a name.
NAME_PATTERN = r"^(?!\.+$)[A-Za-z0-9_.\-]{1,100}$"
Name = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    pass


class DaemonConfig(_Strict):
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


class IngestConfig(_Strict):
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


class AlertsConfig(_Strict):
    #: A resolved alert is closed after this long; ``0`` closes by hand only.
    close_after: Duration = Duration(3600.0)
    #: A resolved alert whose series breaches again within this long reopens
    #: (``resolved`` to ``triggered``) as the same alert; ``0`` never reopens.
    reopen_window: Duration = Duration(0.0)
    #: Channels of Tocsin's own alerts (a rule or all rules at their series
    #: limit); with none, they are recorded and logged only.
    internal_channels: list[Name] = []


#: Where the Datadog API key is read from when the file names no source.
DEFAULT_API_KEY_ENV = "DD_API_KEY"


class DatadogExportConfig(_Strict):
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

    @property
    def key_env(self) -> str:
        """Return the environment variable the API key is read from, ``""`` for none.

        A source the file names wins over the default: with ``api_key_file``
        set, ``$DD_API_KEY`` is not read.
        """
        if self.api_key_env is not msgspec.UNSET:
            return self.api_key_env
        return "" if self.api_key_file else DEFAULT_API_KEY_ENV


class ExportConfig(_Strict):
    datadog: DatadogExportConfig = DatadogExportConfig()


class _ChannelBase(_Strict, tag_field="type"):
    name: Name
    #: Delivery attempts before a notification is dead-lettered. With the
    #: default backoff, 15 attempts span about 40 minutes of outage.
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 15
    #: A notification still undelivered this long after it was queued is
    #: dead-lettered, whatever its attempts; ``0`` keeps it until
    #: ``max_attempts`` run out.
    max_age: Duration = Duration(86400.0)
    #: Delay before the first retry; doubled on each attempt, with jitter.
    backoff: Duration = Duration(1.0)
    max_backoff: Duration = Duration(300.0)
    #: Whether resolve notifications go to this channel.
    send_resolved: bool = True
    #: Most requests in flight to this destination at once.
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4
    #: Most requests per ``rate_period``; ``0`` has no limit. Each
    #: destination's default is its service's published limit.
    rate_limit: Annotated[int, msgspec.Meta(ge=0)] = 0
    rate_period: Duration = Duration(1.0)
    #: How long one request may take.
    timeout: Duration = Duration(10.0)

    #: The secrets of this kind of channel: each is given by one of the keys
    #: ``NAME``, ``NAME_env`` (an environment variable) or ``NAME_file`` (a
    #: file, looked up in ``$CREDENTIALS_DIRECTORY`` first), and maps to
    #: what the secret is, for errors. Required ones are listed in
    #: ``required_secrets``.
    secrets: ClassVar[dict[str, str]] = {}
    required_secrets: ClassVar[tuple[str, ...]] = ()
    #: Secrets the destination accepts at one length only, by name.
    secret_lengths: ClassVar[dict[str, int]] = {}


class WebhookChannelConfig(_ChannelBase, tag="webhook"):
    """Any HTTP endpoint: the alert JSON, or the body ``template`` renders."""

    #: Destination URL. Prefer ``url_env`` or ``url_file``: a webhook URL is a
    #: secret.
    url: str = ""
    url_env: str = ""
    url_file: str = ""
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    headers: dict[str, str] = {}
    timeout: Duration = Duration(5.0)
    #: The request body as a Jinja2 template (``{"text": {{ alert.name }}}``);
    #: every ``{{ ... }}`` is written as a JSON value. Empty sends Tocsin's
    #: own JSON payload.
    template: str = ""
    content_type: str = "application/json"
    #: Standard Webhooks signing secret (``whsec_...``); when set, every
    #: request carries a ``webhook-signature``.
    secret: str = ""
    secret_env: str = ""
    secret_file: str = ""

    secrets: ClassVar[dict[str, str]] = {
        "url": "webhook URL",
        "secret": "webhook signing secret",
    }
    required_secrets: ClassVar[tuple[str, ...]] = ("url",)


#: PagerDuty's severities, which Tocsin's are mapped onto.
PagerDutySeverity = Literal["critical", "error", "warning", "info"]
#: The PagerDuty severity of each of Tocsin's, unless a channel says otherwise.
PAGERDUTY_SEVERITIES: dict[str, str] = {
    "critical": "critical",
    "high": "error",
    "warning": "warning",
    "medium": "warning",
    "low": "info",
    "info": "info",
}


class PagerDutyChannelConfig(_ChannelBase, tag="pagerduty"):
    """One PagerDuty service, through the Events API v2."""

    #: The service's 32-character integration key.
    routing_key: str = ""
    routing_key_env: str = ""
    routing_key_file: str = ""
    #: Secret(s) of the service's Webhooks V3 subscription, comma-separated
    #: during a rotation; set to take acknowledgements back from PagerDuty at
    #: ``/hooks/pagerduty/NAME``.
    webhook_secret: str = ""
    webhook_secret_env: str = ""
    webhook_secret_file: str = ""
    url: str = "https://events.pagerduty.com/v2/enqueue"
    #: PagerDuty severity per Tocsin severity, over :data:`PAGERDUTY_SEVERITIES`.
    severities: dict[Severity, PagerDutySeverity] = {}
    #: The event's ``source``; empty means this host's name.
    source: str = ""
    component: str = ""
    group: str = ""
    #: The event's ``class``; empty means the rule's metric.
    event_class: str = msgspec.field(default="", name="class")
    #: Send ``acknowledge`` when an alert is acknowledged in Tocsin.
    send_acknowledged: bool = True
    rate_limit: Annotated[int, msgspec.Meta(ge=0)] = 120
    rate_period: Duration = Duration(60.0)

    secrets: ClassVar[dict[str, str]] = {
        "routing_key": "PagerDuty routing key",
        "webhook_secret": "PagerDuty webhook secret",
    }
    required_secrets: ClassVar[tuple[str, ...]] = ("routing_key",)
    secret_lengths: ClassVar[dict[str, int]] = {"routing_key": 32}


class SlackChannelConfig(_ChannelBase, tag="slack"):
    """One Slack channel, through an incoming webhook, with buttons."""

    webhook_url: str = ""
    webhook_url_env: str = ""
    webhook_url_file: str = ""
    #: The Slack app's signing secret; set to take the buttons' actions at
    #: ``/hooks/slack/NAME``.
    signing_secret: str = ""
    signing_secret_env: str = ""
    signing_secret_file: str = ""
    #: How long the Snooze button silences the alert.
    snooze: Duration = Duration(3600.0)
    #: Show Acknowledge / Snooze / Resolve buttons.
    buttons: bool = True
    rate_limit: Annotated[int, msgspec.Meta(ge=0)] = 1
    rate_period: Duration = Duration(1.0)

    secrets: ClassVar[dict[str, str]] = {
        "webhook_url": "Slack webhook URL",
        "signing_secret": "Slack signing secret",
    }
    required_secrets: ClassVar[tuple[str, ...]] = ("webhook_url",)


class TeamsChannelConfig(_ChannelBase, tag="teams"):
    """One Microsoft Teams channel, through a Workflows webhook."""

    webhook_url: str = ""
    webhook_url_env: str = ""
    webhook_url_file: str = ""
    card_version: Literal["1.2", "1.3", "1.4", "1.5"] = "1.4"
    rate_limit: Annotated[int, msgspec.Meta(ge=0)] = 4
    rate_period: Duration = Duration(1.0)

    secrets: ClassVar[dict[str, str]] = {"webhook_url": "Teams webhook URL"}
    required_secrets: ClassVar[tuple[str, ...]] = ("webhook_url",)


class EmailChannelConfig(_ChannelBase, tag="email"):
    """Mail through an SMTP server."""

    host: str = "localhost"
    #: 0 means the security's usual port: 25, 587 for STARTTLS, 465 for TLS.
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str = ""
    password: str = ""
    password_env: str = ""
    password_file: str = ""
    #: The From address, ``Name <addr>`` or ``addr``.
    sender: str = msgspec.field(default="", name="from")
    to: list[str] = []
    #: A CA bundle to verify the server with, instead of the system's.
    ca_file: str = ""

    secrets: ClassVar[dict[str, str]] = {"password": "SMTP password"}


class DatadogChannelConfig(_ChannelBase, tag="datadog"):
    """Datadog events, one per alert transition, grouped by alert."""

    api_key: str = ""
    api_key_env: str = ""
    api_key_file: str = ""
    site: str = "datadoghq.com"
    #: The API's base URL, to which ``/api/v1/events`` is appended (as the
    #: export's ``base_url``); empty means ``https://api.SITE``.
    base_url: str = ""
    priority: Literal["normal", "low"] = "normal"
    #: Added to every event; each must be a valid Datadog tag.
    tags: list[str] = []
    source_type_name: str = "tocsin"
    #: Send an ``info`` event when an alert is acknowledged in Tocsin.
    send_acknowledged: bool = False

    secrets: ClassVar[dict[str, str]] = {"api_key": "Datadog API key"}
    required_secrets: ClassVar[tuple[str, ...]] = ("api_key",)


class LogChannelConfig(_ChannelBase, tag="log"):
    level: Literal["info", "warning", "error"] = "warning"


ChannelConfig = (
    WebhookChannelConfig
    | PagerDutyChannelConfig
    | SlackChannelConfig
    | TeamsChannelConfig
    | EmailChannelConfig
    | DatadogChannelConfig
    | LogChannelConfig
)
CHANNEL_TYPES = ("webhook", "pagerduty", "slack", "teams", "email", "datadog", "log")


class LevelConfig(_Strict):
    """One severity level of a rule with both ``warning`` and ``critical``."""

    #: What the measured value is compared with (every ``op`` but the ranges).
    threshold: float | None = None
    #: ``[low, high]`` for ``inside`` and ``outside``.
    range: list[float] = []
    #: Hysteresis: an alert at this level leaves it only once the value is
    #: back past this (see :attr:`RuleConfig.recover`).
    recover: float | None = None


class CompareConfig(_Strict):
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


class NoDataConfig(_Strict):
    """What a series that stopped sending samples means."""

    #: How long a series must be silent before the policy applies.
    after: Duration
    #: ``alert``: open an alert (or keep it firing) until samples return;
    #: ``keep_last``: keep the series' state as it is; ``resolve``: resolve
    #: a firing alert; ``ignore``: let the window decide, as without a policy.
    action: Literal["alert", "keep_last", "resolve", "ignore"] = "alert"


class FlappingConfig(_Strict):
    """Flap detection over a weighted history of state changes."""

    #: Evaluations remembered (at least 2).
    history: Annotated[int, msgspec.Meta(ge=2, le=64)] = 21
    #: A flapping alert settles once the weighted share of changes is below.
    low: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.25
    #: An alert starts flapping once the weighted share of changes is above.
    high: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.5


class ConditionConfig(_Strict):
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


class RuleConfig(_Strict, kw_only=True):
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


class ApiConfig(_Strict):
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


class TimeRangeConfig(_Strict):
    """Times of day, ``HH:MM``; the start is included, the end is not."""

    start: str
    #: ``24:00`` is the end of the day.
    end: str


class MuteWindowConfig(_Strict):
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


class RouteConfig(_Strict):
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


class EscalationStepConfig(_Strict):
    #: How long after the previous step (after the alert fired, for the
    #: first) this step is reached, unless the alert was acknowledged or
    #: resolved first.
    wait: Duration = Duration(0.0)
    #: Channels this step notifies of the alert; none only marks the alert
    #: escalated.
    channels: list[Name] = []


class EscalationConfig(_Strict):
    """An escalation policy: ordered steps. Reaching any step after the
    first moves the alert to ``escalated``."""

    name: Name
    steps: list[EscalationStepConfig]


class InhibitConfig(_Strict):
    """While an alert matching ``source`` is open, alerts matching ``target``
    with the same values of the ``equal`` labels are not notified."""

    source: list[Matcher]
    target: list[Matcher]
    equal: list[str] = []


class DedupConfig(_Strict):
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


class ConfigWarning(NamedTuple):
    """Something a config may say that is likely a mistake; it still loads."""

    #: The key path it is about (``rules[0].channels``).
    key: str
    message: str


class Config(_Strict):
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
