"""The checks of routing, mute windows, inhibition, escalation and dedup.

:func:`check_routing` runs what the schema cannot express for those sections:
names that are unique and that exist where they are used, matchers and
windows that parse, and the rules of the root route. Each check raises
:class:`~tocsin.errors.ConfigError` naming the file and the key path
(``routing.routes[0].matchers[1]``, ``mute_windows[2].times[0].end``).
:func:`routing_warnings` lists what loads but probably surprises.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import msgspec

from tocsin.channels.matchers import parse_matcher
from tocsin.channels.routing import ROOT_ID
from tocsin.channels.timeintervals import (
    parse_day_range,
    parse_month_range,
    parse_time,
    parse_time_range,
    parse_weekday_range,
    parse_year_range,
    zone,
)
from tocsin.errors import ConfigError
from tocsin.rules.conditions import format_duration
from tocsin.schema import (
    Config,
    ConfigWarning,
    MuteWindowConfig,
    RouteConfig,
    RoutingConfig,
)


class _Names:
    """The names each section defines, to check the references to them."""

    def __init__(self, config: Config) -> None:
        self.channels = {channel.name for channel in config.channels}
        self.windows = {window.name for window in config.mute_windows}
        self.escalations = {policy.name for policy in config.escalations}


def check_routing(config: Config, source: str) -> None:
    """Check ``routing``, ``mute_windows``, ``inhibit``, ``escalations``,
    ``dedup`` and the rules' ``escalation``.

    :param config: a config that decoded, with its channels already checked.
    :param source: the file's name, for the errors.
    :raises ConfigError: at the first check that fails.
    """
    _check_unique(config.mute_windows, "mute window", "mute_windows", source)
    _check_unique(config.escalations, "escalation", "escalations", source)
    names = _Names(config)
    for index, window in enumerate(config.mute_windows):
        _check_window(window, source, f"mute_windows[{index}]")
    _check_root(config.routing, names, source)
    for index, policy in enumerate(config.escalations):
        where = f"escalations[{index}]"
        if not policy.steps:
            raise ConfigError(
                source, "an escalation needs at least one step", f"{where}.steps"
            )
        for step_index, step in enumerate(policy.steps):
            step_where = f"{where}.steps[{step_index}].channels"
            _check_references(
                step.channels, names.channels, "channel", step_where, source
            )
    for index, rule in enumerate(config.rules):
        if rule.escalation is not None and rule.escalation not in names.escalations:
            raise ConfigError(
                source,
                f"no escalation named {rule.escalation!r}",
                f"rules[{index}].escalation",
            )
    for index, inhibit in enumerate(config.inhibit):
        for side in ("source", "target"):
            where = f"inhibit[{index}].{side}"
            matchers = getattr(inhibit, side)
            if not matchers:
                raise ConfigError(
                    source,
                    "needs at least one matcher: none would match every alert",
                    where,
                )
            _check_matchers(matchers, source, where)
    dedup = config.dedup
    if dedup.max_per_window and dedup.window <= 0:
        raise ConfigError(
            source,
            "must be longer than 0s when max_per_window is set",
            "dedup.window",
        )


def _check_unique(entries: Sequence, noun: str, key: str, source: str) -> None:
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        if entry.name in seen:
            raise ConfigError(
                source, f"duplicate {noun} name {entry.name!r}", f"{key}[{index}].name"
            )
        seen.add(entry.name)


def _check_window(window: MuteWindowConfig, source: str, where: str) -> None:
    try:
        zone(window.location)
    except ValueError as error:
        raise ConfigError(source, str(error), f"{where}.location") from None
    for index, times in enumerate(window.times):
        key = f"{where}.times[{index}]"
        for end in ("start", "end"):
            _parsed(parse_time, getattr(times, end), source, f"{key}.{end}")
        _parsed(lambda t: parse_time_range(t.start, t.end), times, source, key)
    fields: tuple[tuple[str, Callable[[str], object]], ...] = (
        ("weekdays", parse_weekday_range),
        ("days_of_month", parse_day_range),
        ("months", parse_month_range),
        ("years", parse_year_range),
    )
    for name, parse in fields:
        for index, text in enumerate(getattr(window, name)):
            _parsed(parse, text, source, f"{where}.{name}[{index}]")


def _parsed(parse: Callable, value: object, source: str, key: str) -> None:
    """Run ``parse`` on ``value``, turning its ValueError into a ConfigError."""
    try:
        parse(value)
    except ValueError as error:
        raise ConfigError(source, str(error), key) from None


def _check_root(root: RoutingConfig, names: _Names, source: str) -> None:
    if root.matchers:
        raise ConfigError(
            source,
            "the root route takes every alert and has no matchers",
            "routing.matchers",
        )
    for key in ("mute_windows", "active_windows"):
        if getattr(root, key):
            raise ConfigError(
                source,
                "the root route cannot be muted: give the windows to a route below it",
                f"routing.{key}",
            )
    ids = {root.name or ROOT_ID: "routing"}
    _check_route(root, root.name or ROOT_ID, "routing", ids, names, source)


def _check_route(
    route: RouteConfig,
    route_id: str,
    where: str,
    ids: dict[str, str],
    names: _Names,
    source: str,
) -> None:
    """Check one route and, depth first, the routes below it."""
    _check_route_name(route.name, where, source)
    _check_matchers(route.matchers, source, f"{where}.matchers")
    channels = route.channels if route.channels is not msgspec.UNSET else []
    _check_references(channels, names.channels, "channel", f"{where}.channels", source)
    for key in ("mute_windows", "active_windows"):
        windows = getattr(route, key)
        _check_references(
            windows, names.windows, "mute window", f"{where}.{key}", source
        )
    if route.escalation is not msgspec.UNSET and (
        route.escalation not in names.escalations
    ):
        raise ConfigError(
            source, f"no escalation named {route.escalation!r}", f"{where}.escalation"
        )
    if route.group_by is not msgspec.UNSET and (
        "..." in route.group_by and len(route.group_by) > 1
    ):
        raise ConfigError(
            source,
            "'...' groups by every label and cannot be listed with others",
            f"{where}.group_by",
        )
    for index, child in enumerate(route.routes):
        child_where = f"{where}.routes[{index}]"
        _check_route_name(child.name, child_where, source)
        child_id = child.name or f"{route_id}/{index}"
        if child_id in ids:
            raise ConfigError(
                source,
                f"duplicate route name {child_id!r} (also {ids[child_id]})",
                f"{child_where}.name",
            )
        ids[child_id] = child_where
        _check_route(child, child_id, child_where, ids, names, source)


def _check_route_name(name: str, where: str, source: str) -> None:
    if "/" in name:
        raise ConfigError(
            source,
            "a route name cannot hold '/', which separates the ids of unnamed routes",
            f"{where}.name",
        )


def _check_matchers(matchers: Iterable[str], source: str, where: str) -> None:
    for index, text in enumerate(matchers):
        _parsed(parse_matcher, text, source, f"{where}[{index}]")


def _check_references(
    used: Iterable[str], defined: set[str], noun: str, where: str, source: str
) -> None:
    """Check that every name of ``used`` is ``defined``."""
    for index, name in enumerate(used):
        if name not in defined:
            raise ConfigError(source, f"no {noun} named {name!r}", f"{where}[{index}]")


def routed_channels(route: RouteConfig) -> bool:
    """Return whether ``route`` or any route below it names a channel."""
    if route.channels is not msgspec.UNSET and route.channels:
        return True

    return any(routed_channels(child) for child in route.routes)


def routing_warnings(routing: RoutingConfig) -> list[ConfigWarning]:
    """Return the routes whose repeats come later than ``repeat_interval`` says.

    A group is only ever sent on a tick of its ``group_interval``, so its
    repeats are sent every ``repeat_interval`` rounded up to a whole number
    of group intervals; one shorter than the group interval is in effect the
    group interval.
    """
    found: list[ConfigWarning] = []
    _warn_route(
        routing, "routing", routing.group_interval, routing.repeat_interval, found
    )

    return found


def _warn_route(
    route: RouteConfig,
    where: str,
    group_interval: float,
    repeat_interval: float,
    found: list[ConfigWarning],
) -> None:
    if route.group_interval is not msgspec.UNSET:
        group_interval = route.group_interval
    if route.repeat_interval is not msgspec.UNSET:
        repeat_interval = route.repeat_interval
    # Only where the route sets one of the two: its children inheriting both
    # would repeat the same warning.
    sets_either = (
        route.group_interval is not msgspec.UNSET
        or route.repeat_interval is not msgspec.UNSET
    )
    if sets_either and 0 < repeat_interval < group_interval:
        effective = _effective(repeat_interval, group_interval)
        found.append(
            ConfigWarning(
                f"{where}.repeat_interval",
                f"shorter than group_interval ({format_duration(group_interval)}):"
                f" repeats are sent every {format_duration(effective)}",
            )
        )
    for index, child in enumerate(route.routes):
        _warn_route(
            child, f"{where}.routes[{index}]", group_interval, repeat_interval, found
        )


def _effective(repeat_interval: float, group_interval: float) -> float:
    """Return the repeat interval the notifier keeps: a whole number of ticks."""
    return math.ceil(repeat_interval / group_interval) * group_interval
