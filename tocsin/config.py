"""The configuration file: decoded from TOML into its schema, then checked.

Decoding and checking are separate steps. :func:`load` reads and decodes the
file with msgspec (unknown keys, wrong types and bad durations fail there, with
the key path msgspec reports, an entry of a table such as ``match`` named by its
key) and then runs the checks a schema cannot express
(unique names, references between sections, the rule checks of
:mod:`tocsin.rule_checks`, the channel checks of :mod:`tocsin.channel_checks`
and the routing checks of :mod:`tocsin.routing_checks`). Either step raises
:class:`~tocsin.errors.ConfigError` with one line naming the file and the key,
and nothing that runs is touched.

The schema itself (the Structs) lives in :mod:`tocsin.schema`; its types are
imported from here.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import TypeVar

import msgspec
import msgspec.inspect

from tocsin.channel_checks import (
    check_channel,
    is_host_name,
    url_problem,
)
from tocsin.datadog_names import NAME_LIMIT, metric_name
from tocsin.errors import ConfigError
from tocsin.keypaths import name_entries, toml_key
from tocsin.privacy_checks import check_privacy
from tocsin.routing_checks import check_routing
from tocsin.rule_checks import check_rule
from tocsin.schema import (
    CHANNEL_TYPES,
    DEFAULT_API_KEY_ENV,
    NAME_PATTERN,
    Aggregation,
    AlertsConfig,
    ApiConfig,
    ChannelConfig,
    CompareConfig,
    Comparison,
    ConditionConfig,
    Config,
    ConfigWarning,
    DaemonConfig,
    DatadogChannelConfig,
    DatadogExportConfig,
    Duration,
    EmailChannelConfig,
    ExportConfig,
    FlappingConfig,
    IngestConfig,
    LevelConfig,
    LogChannelConfig,
    Name,
    NoDataConfig,
    PagerDutyChannelConfig,
    PositiveInt,
    RuleConfig,
    Severity,
    SlackChannelConfig,
    TeamsChannelConfig,
    WebhookChannelConfig,
    decode_hook,
)

#: Loading, and the schema's types.
__all__ = [
    "Aggregation",
    "AlertsConfig",
    "ChannelConfig",
    "CompareConfig",
    "Comparison",
    "ConditionConfig",
    "Config",
    "ConfigWarning",
    "DaemonConfig",
    "DatadogChannelConfig",
    "DatadogExportConfig",
    "DEFAULT_API_KEY_ENV",
    "Duration",
    "EmailChannelConfig",
    "ExportConfig",
    "FlappingConfig",
    "IngestConfig",
    "LevelConfig",
    "load",
    "LogChannelConfig",
    "Name",
    "NoDataConfig",
    "PagerDutyChannelConfig",
    "parse",
    "PositiveInt",
    "RuleConfig",
    "Severity",
    "SlackChannelConfig",
    "TeamsChannelConfig",
    "WebhookChannelConfig",
]


T = TypeVar("T")

#: Names of Tocsin's own rules start with this; configured rules may not.
RESERVED_RULE_PREFIX = "tocsin."

_MSGSPEC_PATH = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$")
_UNKNOWN_FIELD = re.compile(r"Object contains unknown field `(?P<field>[^`]+)`")
_MISSING_FIELD = re.compile(r"Object missing required field `(?P<field>[^`]+)`")


def _split_msgspec_error(
    error: msgspec.MSGSPEC_ERRORS, root: type = Config
) -> tuple[str, str | None]:
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
    if path and message.startswith("Invalid enum value"):
        allowed = _allowed_values(path, root)
        if allowed:
            message = f"{message}; expected one of {', '.join(allowed)}"
    message = message.replace(" | null`", "`")
    if message == f"Expected `str` matching regex {NAME_PATTERN!r}":
        message = (
            "expected a name of 1 to 100 letters, digits, '_', '.' and '-',"
            " not dots alone"
        )
    if path and path.endswith("].type") and message.startswith("Invalid value"):
        known = ", ".join(sorted(CHANNEL_TYPES))
        message = (
            f"unknown channel type ({message[len('Invalid value ') :]}); known: {known}"
        )
    return message, path


_STEP = re.compile(r"\.?([A-Za-z_][A-Za-z0-9_]*)|\[\d+\]")


def _allowed_values(path: str, root: type = Config) -> list[str]:
    """Return the values the schema allows at ``path`` (``rules[0].op``) of
    ``root``, if the key there takes one of a fixed set of strings."""
    info = msgspec.inspect.type_info(root)
    for step in _STEP.finditer(path):
        info = _unwrap(info)
        if step[1] is None:
            info = getattr(info, "item_type", None)
        elif isinstance(info, msgspec.inspect.StructType):
            fields = {field.encode_name: field.type for field in info.fields}
            info = fields.get(step[1])
        else:
            return []
        if info is None:
            return []
    info = _unwrap(info)
    if isinstance(info, msgspec.inspect.LiteralType):
        return [repr(value) for value in info.values]
    return []


def _unwrap(info):
    """Return the one type of an optional (``T | None``) besides ``None``."""
    if isinstance(info, msgspec.inspect.UnionType):
        types = [t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]
        if len(types) == 1:
            return types[0]
    return info


def parse(text: str | bytes, source: str = "<memory>") -> Config:
    """Decode and check a configuration document.

    :raises ConfigError: if the document is not valid TOML, does not match the
        schema, or fails a check between sections.
    """
    try:
        config = msgspec.toml.decode(text, type=Config, dec_hook=decode_hook)
    except msgspec.ValidationError as error:
        message, path = _split_msgspec_error(error)
        if path and "[...]" in path:
            path = name_entries(text, path, Config, decode_hook)
        raise ConfigError(source, message, path) from None
    except msgspec.DecodeError as error:
        raise ConfigError(source, f"not valid TOML: {error}") from None
    except RecursionError:
        raise ConfigError(source, "not valid TOML: nested too deeply") from None
    _check(config, source)
    return config


def convert(obj: object, kind: type[T], source: str, key: str = "") -> T:
    """Decode a JSON-like value (a rule or a channel an API call sends) into
    the schema's ``kind``, with the same errors as a file's.

    :param key: where ``obj`` sits, prefixed to the key path of an error.
    :raises ConfigError: if ``obj`` does not match the schema.
    """
    try:
        return msgspec.convert(obj, type=kind, dec_hook=decode_hook)
    except msgspec.ValidationError as error:
        message, path = _split_msgspec_error(error, kind)
        where = ".".join(part for part in (key, path) if part) or None
        raise ConfigError(source, message, where) from None


def check(config: Config, source: str) -> None:
    """Run every check between sections on an assembled config.

    :raises ConfigError: naming ``source`` and the key, if one fails.
    """
    _check(config, source)


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
        check_channel(channel, source, f"channels[{index}]")

    names: set[str] = set()
    for index, rule in enumerate(config.rules):
        where = f"rules[{index}]"
        if rule.name in names:
            raise ConfigError(
                source, f"duplicate rule name {rule.name!r}", f"{where}.name"
            )
        names.add(rule.name)
        if rule.name.startswith(RESERVED_RULE_PREFIX):
            raise ConfigError(
                source,
                f"rule names starting with {RESERVED_RULE_PREFIX!r} are Tocsin's own",
                f"{where}.name",
            )
        check_rule(rule, source, where)
        for position, channel in enumerate(rule.channels):
            if channel not in seen:
                raise ConfigError(
                    source,
                    f"no channel named {channel!r}",
                    f"{where}.channels[{position}]",
                )
    for position, channel in enumerate(config.alerts.internal_channels):
        if channel not in seen:
            raise ConfigError(
                source,
                f"no channel named {channel!r}",
                f"alerts.internal_channels[{position}]",
            )
    check_routing(config, source)
    check_privacy(config.privacy, source)
    if not config.health.window > 0:
        raise ConfigError(source, "must be longer than 0", "health.window")

    ingest = config.ingest
    if ingest.unix_dgram and ingest.unix_dgram == ingest.unix_stream:
        raise ConfigError(
            source, "must not be the path of unix_dgram", "ingest.unix_stream"
        )
    if config.api.enabled:
        # Known from the file alone: a clash would otherwise only stop ``run``.
        api_path = os.path.abspath(config.api_socket_path)
        for key in ("unix_dgram", "unix_stream"):
            path = getattr(ingest, key)
            if path and os.path.abspath(path) == api_path:
                raise ConfigError(
                    source, f"must not be the path of ingest.{key}", "api.socket"
                )
    if config.api.tcp:
        _check_api_tcp(config.api, source)
    if ingest.idle_timeout <= 0:
        raise ConfigError(source, "must be longer than 0s", "ingest.idle_timeout")
    udp = ingest.udp
    if udp:
        host, colon, port = udp.rpartition(":")
        if not colon or not (port.isascii() and port.isdigit()) or int(port) > 65535:
            raise ConfigError(source, f"expected host:port, got {udp!r}", "ingest.udp")
        _check_udp_host(host.removeprefix("[").removesuffix("]"), int(port), source)

    export = config.export.datadog
    if not is_host_name(export.site):
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


def _check_api_tcp(api: ApiConfig, source: str) -> None:
    host, colon, port = api.tcp.rpartition(":")
    if not colon or not host or not (port.isascii() and port.isdigit()):
        raise ConfigError(source, f"expected host:port, got {api.tcp!r}", "api.tcp")
    if int(port) > 65535:
        raise ConfigError(source, f"no such port: {port}", "api.tcp")
    # A TCP listener without a token would let anyone who reaches the port
    # change what Tocsin alerts on.
    if bool(api.token_env) == bool(api.token_file):
        raise ConfigError(
            source,
            "with tcp set, set exactly one of token_env and token_file",
            "api",
        )


def _check_base_url(url: str, source: str) -> None:
    """Check that ``export.datadog.base_url`` is an http(s) URL with a host,
    as a channel's URL is checked (:func:`~tocsin.channel_checks.url_problem`).

    The exporter appends ``/api/v2/series`` to it, so a query or a fragment
    would swallow that path.
    """
    key = "export.datadog.base_url"
    if url_problem(url) is not None:
        raise ConfigError(
            source,
            f"expected an http(s) URL with a host, like https://api.datadoghq.eu, "
            f"got {url!r}",
            key,
        )
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
