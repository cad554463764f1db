"""The configuration file: a strict schema, decoded from TOML, then checked.

Decoding and checking are separate steps. :func:`load` reads and decodes the
file with msgspec (unknown keys, wrong types and bad durations fail there, with
the key path msgspec reports, an entry of a table such as ``match`` named by its
key) and then runs the checks a schema cannot express
(unique names, references between sections). Either step raises
:class:`~tocsin.errors.ConfigError` with one line naming the file and the key,
and nothing that runs is touched.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import socket
from pathlib import Path
from typing import Annotated, Literal, NamedTuple
from urllib.parse import urlsplit

import msgspec

from tocsin import templates
from tocsin.datadog_names import NAME_LIMIT, metric_name
from tocsin.errors import ConfigError
from tocsin.keypaths import name_entries, toml_key


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
        return cls(float(match[1]) * cls._UNITS[match[2]])


def _decode_hook(kind: type, obj: object) -> object:
    if kind is Duration:
        if not isinstance(obj, str):
            raise TypeError("expected a duration string like '30s', '5m' or '1h'")
        return Duration.parse(obj)
    raise NotImplementedError(kind)


Severity = Literal["critical", "high", "medium", "low"]
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
Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.\-]{1,100}$")]
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


class AlertsConfig(_Strict):
    #: A resolved alert is closed after this long.
    close_after: Duration = Duration(3600.0)


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
    #: Delay before the first retry; doubled on each attempt, with jitter.
    backoff: Duration = Duration(1.0)
    max_backoff: Duration = Duration(300.0)
    #: Whether resolve notifications go to this channel.
    send_resolved: bool = True


class WebhookChannelConfig(_ChannelBase, tag="webhook"):
    #: Destination URL. Prefer ``url_env`` or ``url_file``: a webhook URL is a
    #: secret.
    url: str = ""
    url_env: str = ""
    url_file: str = ""
    headers: dict[str, str] = {}
    timeout: Duration = Duration(5.0)


class LogChannelConfig(_ChannelBase, tag="log"):
    level: Literal["info", "warning", "error"] = "warning"


ChannelConfig = WebhookChannelConfig | LogChannelConfig
_CHANNEL_TYPES = ("webhook", "log")


class RuleConfig(_Strict, kw_only=True):
    name: Name
    metric: str
    #: Label matchers; every one must equal the sample's tag value.
    match: dict[str, str] = {}
    #: Labels whose values make one series of this rule.
    group_by: list[str] = []
    aggregation: Aggregation = "avg"
    window: Duration = Duration(300.0)
    op: Comparison = ">"
    #: What the aggregation is compared with (every ``op`` but the ranges).
    threshold: float | None = None
    #: ``[low, high]`` for ``inside`` (low <= value <= high) and ``outside``.
    range: list[float] = []
    #: Hysteresis: a firing alert resolves only once the value is back past
    #: this (at or below it for ``>`` and ``>=``, at or above it for ``<``
    #: and ``<=``), so a value hovering at the threshold does not flap.
    recover: float | None = None
    #: A firing alert whose condition stops holding stays firing this long; a
    #: breach within it keeps the alert as it is.
    keep_firing_for: Duration = Duration(0.0)
    #: A window with fewer samples than this never fires; a firing alert whose
    #: window falls below it resolves, saying so.
    min_samples: PositiveInt = 1
    #: How long the condition must hold before the alert fires.
    for_: Duration = msgspec.field(name="for", default=Duration(0.0))
    severity: Severity = "medium"
    channels: list[Name] = []
    #: After an alert of a series fires, a new one for that series waits this long.
    cooldown: Duration = Duration(0.0)
    #: At most this many alerts per rule per UTC day; 0 means no cap.
    daily_cap: Annotated[int, msgspec.Meta(ge=0)] = 0
    summary: str = ""
    description: str = ""
    runbook: str = ""
    recommended_actions: list[str] = []
    #: Extra labels attached to every alert of the rule (team, project, ...).
    labels: dict[str, str] = {}
    #: Free-form metadata copied into notifications.
    metadata: dict[str, str] = {}


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
    channels: list[ChannelConfig] = []
    rules: list[RuleConfig] = []

    @property
    def database_path(self) -> Path:
        if self.daemon.database:
            return Path(self.daemon.database)
        return Path(self.daemon.state_dir) / "tocsin.db"

    def channel(self, name: str) -> ChannelConfig:
        for channel in self.channels:
            if channel.name == name:
                return channel
        raise KeyError(name)

    def warnings(self) -> list[ConfigWarning]:
        """Return what this config allows but probably does not mean.

        A rule without channels is legitimate, to keep a record only, so it is
        a warning and not an error.
        """
        return [
            ConfigWarning(
                f"rules[{index}].channels",
                f"no channels: alerts of rule {rule.name!r} are recorded"
                " but nobody is notified",
            )
            for index, rule in enumerate(self.rules)
            if not rule.channels
        ]


_MSGSPEC_PATH = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$")
_UNKNOWN_FIELD = re.compile(r"Object contains unknown field `(?P<field>[^`]+)`")
_MISSING_FIELD = re.compile(r"Object missing required field `(?P<field>[^`]+)`")


def _split_msgspec_error(error: msgspec.MSGSPEC_ERRORS) -> tuple[str, str | None]:
    """Turn msgspec's ``message - at `$.a[0].b``` into ``(message, "a[0].b")``."""
    match = _MSGSPEC_PATH.match(str(error))
    assert match is not None
    message = match["message"]
    path = (match["path"] or "").lstrip(".") or None
    for pattern, replacement in (
        (_UNKNOWN_FIELD, "unknown key"),
        (_MISSING_FIELD, "missing required key"),
    ):
        found = pattern.match(message)
        if found:
            field = toml_key(found["field"])
            path = f"{path}.{field}" if path else field
            message = replacement
    if path and path.endswith("].type") and message.startswith("Invalid value"):
        known = ", ".join(sorted(_CHANNEL_TYPES))
        message = (
            f"unknown channel type ({message[len('Invalid value ') :]}); known: {known}"
        )
    return message, path


def parse(text: str | bytes, source: str = "<memory>") -> Config:
    """Decode and check a configuration document.

    :raises ConfigError: if the document is not valid TOML, does not match the
        schema, or fails a check between sections.
    """
    try:
        config = msgspec.toml.decode(text, type=Config, dec_hook=_decode_hook)
    except msgspec.ValidationError as error:
        message, path = _split_msgspec_error(error)
        if path and "[...]" in path:
            path = name_entries(text, path, Config, _decode_hook)
        raise ConfigError(source, message, path) from None
    except msgspec.DecodeError as error:
        raise ConfigError(source, f"not valid TOML: {error}") from None
    except RecursionError:
        raise ConfigError(source, "not valid TOML: nested too deeply") from None
    _check(config, source)
    return config


def load(path: str | os.PathLike[str]) -> Config:
    """Read, decode and check the configuration file at ``path``.

    :raises ConfigError: if the file cannot be read or is not a valid config.
    """
    source = os.fspath(path)
    try:
        text = Path(source).read_bytes()
    except OSError as error:
        raise ConfigError(source, f"cannot read the file: {error.strerror}") from None
    return parse(text, source)


def _check(config: Config, source: str) -> None:
    """Run the checks a schema cannot express."""
    seen: set[str] = set()
    for index, channel in enumerate(config.channels):
        if channel.name in seen:
            raise ConfigError(
                source,
                f"duplicate channel name {channel.name!r}",
                f"channels[{index}].name",
            )
        seen.add(channel.name)
        _check_retries(channel, source, f"channels[{index}]")
        if isinstance(channel, WebhookChannelConfig):
            given = [k for k in ("url", "url_env", "url_file") if getattr(channel, k)]
            if len(given) != 1:
                raise ConfigError(
                    source,
                    "set exactly one of url, url_env and url_file",
                    f"channels[{index}]",
                )
            if channel.timeout <= 0:
                raise ConfigError(
                    source, "must be longer than 0s", f"channels[{index}].timeout"
                )
            if channel.url and not channel.url.startswith(("http://", "https://")):
                raise ConfigError(
                    source,
                    "must start with http:// or https://",
                    f"channels[{index}].url",
                )
            for name, value in channel.headers.items():
                where = f"channels[{index}].headers.{toml_key(name)}"
                _check_header(name, value, source, where)

    names: set[str] = set()
    for index, rule in enumerate(config.rules):
        where = f"rules[{index}]"
        if rule.name in names:
            raise ConfigError(
                source, f"duplicate rule name {rule.name!r}", f"{where}.name"
            )
        names.add(rule.name)
        if rule.window <= 0:
            raise ConfigError(source, "must be longer than 0s", f"{where}.window")
        if not rule.metric:
            raise ConfigError(source, "must not be empty", f"{where}.metric")
        _check_condition(rule, source, where)
        _check_texts(rule, source, where)
        for position, channel in enumerate(rule.channels):
            if channel not in seen:
                raise ConfigError(
                    source,
                    f"no channel named {channel!r}",
                    f"{where}.channels[{position}]",
                )
        if len(set(rule.group_by)) != len(rule.group_by):
            raise ConfigError(source, "a label is listed twice", f"{where}.group_by")

    ingest = config.ingest
    if ingest.unix_dgram and ingest.unix_dgram == ingest.unix_stream:
        raise ConfigError(
            source, "must not be the path of unix_dgram", "ingest.unix_stream"
        )
    udp = ingest.udp
    if udp:
        host, colon, port = udp.rpartition(":")
        if not colon or not (port.isascii() and port.isdigit()) or int(port) > 65535:
            raise ConfigError(source, f"expected host:port, got {udp!r}", "ingest.udp")
        _check_udp_host(host.removeprefix("[").removesuffix("]"), int(port), source)

    export = config.export.datadog
    if not _is_host_name(export.site):
        raise ConfigError(
            source,
            f"expected a host name like datadoghq.eu (no scheme, no path), "
            f"got {export.site!r}",
            "export.datadog.site",
        )
    if export.base_url:
        _check_base_url(export.base_url, source)
    _check_metric_prefix(export.metric_prefix, source)
    if export.api_key_env and export.api_key_file:
        message = "set one of api_key_env and api_key_file, not both"
        raise ConfigError(source, message, "export.datadog")
    if export.interval < 1:
        raise ConfigError(source, "must be at least 1s", "export.datadog.interval")
    if export.timeout <= 0:
        raise ConfigError(source, "must be longer than 0s", "export.datadog.timeout")
    if config.daemon.tick < 0.01:
        raise ConfigError(source, "must be at least 10ms", "daemon.tick")


#: One label of a host name: letters, digits and hyphens, no hyphen at either end.
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*")


def _is_host_name(text: str) -> bool:
    return len(text) <= 253 and _HOST_NAME.fullmatch(text) is not None


def _check_base_url(url: str, source: str) -> None:
    """Check that ``export.datadog.base_url`` is an http(s) URL with a host.

    The exporter appends ``/api/v2/series`` to it, so a query or a fragment
    would swallow that path. :func:`urlsplit` silently drops tabs and newlines,
    so any whitespace or control character is refused before it runs.
    """
    key = "export.datadog.base_url"
    expected = (
        f"expected an http(s) URL with a host, like https://api.datadoghq.eu, "
        f"got {url!r}"
    )
    if not url.isprintable() or " " in url:
        raise ConfigError(source, expected, key)
    try:
        parts = urlsplit(url)
        # Only reading the port checks it: urlsplit alone accepts ``:99999``.
        _ = parts.port
    except ValueError:
        raise ConfigError(source, expected, key) from None
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not (
        _is_host_name(host) or _is_ip_address(host)
    ):
        raise ConfigError(source, expected, key)
    if "?" in url or "#" in url:
        raise ConfigError(
            source,
            "must not have a query or a fragment: the API path is appended to it",
            key,
        )


def _check_metric_prefix(prefix: str, source: str) -> None:
    """Refuse a prefix with which the export could send no metric at all.

    The check is the export's own: if a one-character name has no Datadog name
    behind the prefix, no name has one.
    """
    if not prefix or metric_name("x", prefix) is not None:
        return
    if len(prefix) >= NAME_LIMIT:
        message = (
            f"must be shorter than {NAME_LIMIT} characters, Datadog's limit for"
            " a whole metric name"
        )
    else:
        message = (
            "must start with an ASCII letter, as every Datadog metric name does;"
            f" got {prefix!r}"
        )
    raise ConfigError(source, message, "export.datadog.metric_prefix")


def _is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False

    return True


def _check_udp_host(host: str, port: int, source: str) -> None:
    """Refuse a UDP listener host that does not resolve, as binding would.

    The lookup is the one the listener makes; an address is resolved without
    asking any name server, and a name usually from ``/etc/hosts``.
    """
    try:
        socket.getaddrinfo(
            host or None, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
        )
    except (OSError, UnicodeError, ValueError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise ConfigError(
            source, f"cannot resolve host {host!r}: {reason}", "ingest.udp"
        ) from None


_ORDERED = {">": 1, ">=": 1, "<": -1, "<=": -1}


def _check_texts(rule: RuleConfig, source: str, where: str) -> None:
    """Render the rule's texts against a sample alert of the rule, so a
    template that cannot render is refused now rather than when it fires."""
    labels = {**rule.labels, **dict.fromkeys(rule.group_by, "sample")}
    threshold = None if rule.range else rule.threshold
    sample = templates.context(
        rule=rule.name,
        metric=rule.metric,
        severity=rule.severity,
        series=",".join(f"{name}=sample" for name in rule.group_by),
        labels=labels,
        value=threshold if threshold is not None else float(rule.range[0]),
        threshold=threshold,
        op=rule.op,
        aggregation=rule.aggregation,
        window="1m",
    )
    for field in ("summary", "description"):
        try:
            templates.render(getattr(rule, field), sample)
        except templates.TemplateProblem as problem:
            raise ConfigError(source, str(problem), f"{where}.{field}") from None


def _check_condition(rule: RuleConfig, source: str, where: str) -> None:
    """Check that a rule's threshold, range and recovery fit its ``op``."""
    if rule.op in ("inside", "outside"):
        if rule.threshold is not None:
            raise ConfigError(
                source, f"op {rule.op!r} takes a range, not a threshold", where
            )
        if len(rule.range) != 2:
            raise ConfigError(source, "expected [low, high]", f"{where}.range")
        low, high = rule.range
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            raise ConfigError(
                source, "expected finite numbers, low <= high", f"{where}.range"
            )
        if rule.recover is not None:
            raise ConfigError(
                source, "a range has no recovery threshold", f"{where}.recover"
            )
        return

    if rule.range:
        raise ConfigError(source, f"op {rule.op!r} takes no range", f"{where}.range")
    if rule.threshold is None:
        raise ConfigError(source, "missing required key", f"{where}.threshold")
    if not math.isfinite(rule.threshold):
        raise ConfigError(source, "must be a finite number", f"{where}.threshold")
    if rule.recover is None:
        return
    direction = _ORDERED.get(rule.op)
    if direction is None:
        raise ConfigError(
            source, f"op {rule.op!r} has no recovery threshold", f"{where}.recover"
        )
    if not math.isfinite(rule.recover):
        raise ConfigError(source, "must be a finite number", f"{where}.recover")
    if (rule.recover - rule.threshold) * direction > 0:
        side = "at or below" if direction > 0 else "at or above"
        raise ConfigError(source, f"must be {side} the threshold", f"{where}.recover")


#: An HTTP field name: a token (RFC 9110, section 5.1).
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: What an HTTP field value may not hold: control characters other than tab.
_HEADER_VALUE_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _check_header(name: str, value: str, source: str, where: str) -> None:
    """Refuse a header aiohttp would refuse to send, on every attempt.

    The value may be a credential: the error says what is wrong with it and
    never quotes it.
    """
    if not _HEADER_NAME.fullmatch(name):
        raise ConfigError(
            source,
            "not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)",
            where,
        )
    if _HEADER_VALUE_FORBIDDEN.search(value):
        raise ConfigError(
            source,
            "the value holds a line break or another control character",
            where,
        )


def _check_retries(channel: ChannelConfig, source: str, where: str) -> None:
    if channel.backoff <= 0:
        raise ConfigError(source, "must be longer than 0s", f"{where}.backoff")
    if channel.max_backoff < channel.backoff:
        raise ConfigError(
            source, "must not be shorter than backoff", f"{where}.max_backoff"
        )
