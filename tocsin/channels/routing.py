"""The routing tree: which routes, and so which channels, an alert reaches.

:class:`RoutingTree` is built once from ``[routing]``: matchers parsed, and
every key a route leaves unset taken from its parent. An alert walks it depth
first. A route whose matchers hold hands the alert to the first of its
children that matches, and also to the following ones while the one that
matched says ``continue``; when none of its children match, the route takes
the alert itself. The root matches every alert, so every alert reaches at
least one route.

Each route has an id: its ``name`` when it has one, otherwise its position
below the nearest named ancestor, such as ``root/1/0``. Groups and their
timers are kept under it across reloads, so a route that should keep its
groups while routes are added before it is best given a name.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TypeVar

import msgspec

from tocsin.channels.matchers import Matchers
from tocsin.schema import RouteConfig, RoutingConfig
from tocsin.state.models import Alert

#: The id of the root route when it has no name.
ROOT_ID = "root"

_T = TypeVar("_T")


class RouteSettings(msgspec.Struct, frozen=True, kw_only=True):
    """What one matched route asks of the alerts it takes, inheritance applied."""

    #: Stable identity: the route's ``name``, or its position (``root/1/0``).
    id: str
    channels: tuple[str, ...]
    #: ``("...",)`` keys a group on every label; ``()`` puts every alert of the
    #: route in one group.
    group_by: tuple[str, ...]
    group_wait: float
    #: ``0`` sends each change of a group as soon as it happens.
    group_interval: float
    repeat_interval: float
    mute_windows: tuple[str, ...] = ()
    active_windows: tuple[str, ...] = ()
    send_resolved_silenced: bool = True
    #: Seconds between digests (aligned to the UTC clock); ``0`` for none.
    digest: float = 0.0
    escalation: str | None = None


def routing_labels(alert: Alert) -> dict[str, str]:
    """Return the labels routes, silences and inhibitions match an alert on:
    its labels, with ``rule`` and ``severity`` (its current level) added."""
    spec = alert.spec
    return {**spec.labels, "rule": spec.rule, "severity": spec.severity}


def group_labels(route: RouteSettings, labels: Mapping[str, str]) -> dict[str, str]:
    """Return the labels that key an alert's group on ``route``: the values of
    its ``group_by`` (a missing label counts as empty), or every label for
    ``...``."""
    if "..." in route.group_by:
        return dict(sorted(labels.items()))
    return {name: labels.get(name, "") for name in sorted(route.group_by)}


def with_rule_channels(
    routes: Sequence[RouteSettings], channels: Sequence[str]
) -> list[RouteSettings]:
    """Return ``routes`` with a rule's own ``channels`` applied.

    A rule that names channels sends there instead of the channels of the
    first route it matched; that route still sets grouping and timings, and
    any further routes (reached through ``continue``) keep their own.

    :param routes: what :meth:`RoutingTree.match` returned.
    :param channels: the rule's ``channels``; empty leaves ``routes`` as they are.
    """
    if not channels or not routes:
        return list(routes)
    first = msgspec.structs.replace(routes[0], channels=tuple(channels))

    return [first, *routes[1:]]


class RouteMatch(msgspec.Struct, frozen=True, kw_only=True):
    """One route an alert reaches, as ``tocsin routes test`` explains it."""

    route: RouteSettings
    #: Ids from the root down to the route, both included.
    path: tuple[str, ...]
    #: The matchers of the route itself, as written.
    matchers: tuple[str, ...]
    #: The labels keying the alert's group on the route.
    group_labels: dict[str, str]

    @property
    def id(self) -> str:
        """The id of the route reached."""
        return self.route.id


class _Node:
    """One route of the built tree."""

    __slots__ = ("settings", "matchers", "written", "continue_", "path", "children")

    def __init__(
        self,
        settings: RouteSettings,
        matchers: Matchers,
        written: tuple[str, ...],
        continue_: bool,
        path: tuple[str, ...],
    ) -> None:
        self.settings = settings
        self.matchers = matchers
        self.written = written
        self.continue_ = continue_
        self.path = path
        self.children: list[_Node] = []


class RoutingTree:
    """The routes of ``[routing]``, built once; see the module's docstring.

    :param root: the validated ``[routing]`` table.
    :raises ValueError: if a matcher does not parse (the config checks
        refuse such a file first, naming the key).
    """

    def __init__(self, root: RoutingConfig) -> None:
        settings = RouteSettings(
            id=root.name or ROOT_ID,
            channels=tuple(root.channels),
            group_by=tuple(root.group_by),
            group_wait=float(root.group_wait),
            group_interval=float(root.group_interval),
            repeat_interval=float(root.repeat_interval),
            mute_windows=tuple(root.mute_windows),
            active_windows=tuple(root.active_windows),
            send_resolved_silenced=root.send_resolved_silenced,
            digest=float(root.digest),
            escalation=_given(root.escalation, None),
        )
        # The root matches every alert: its matchers are refused by the
        # config checks and ignored here.
        self._root = _Node(settings, Matchers(), (), False, (settings.id,))
        self._by_id = {settings.id: self._root}
        self._build(self._root, root.routes)

    def _build(self, parent: _Node, routes: Sequence[RouteConfig]) -> None:
        for index, config in enumerate(routes):
            inherited = parent.settings
            route_id = config.name or f"{inherited.id}/{index}"
            settings = RouteSettings(
                id=route_id,
                channels=tuple(_given(config.channels, inherited.channels)),
                group_by=tuple(_given(config.group_by, inherited.group_by)),
                group_wait=_seconds(config.group_wait, inherited.group_wait),
                group_interval=_seconds(
                    config.group_interval, inherited.group_interval
                ),
                repeat_interval=_seconds(
                    config.repeat_interval, inherited.repeat_interval
                ),
                # Windows are the route's own: a child of a muted route is
                # not muted unless it says so.
                mute_windows=tuple(config.mute_windows),
                active_windows=tuple(config.active_windows),
                send_resolved_silenced=_given(
                    config.send_resolved_silenced, inherited.send_resolved_silenced
                ),
                digest=_seconds(config.digest, inherited.digest),
                escalation=_given(config.escalation, inherited.escalation),
            )
            node = _Node(
                settings,
                Matchers.parse(config.matchers),
                tuple(config.matchers),
                config.continue_,
                (*parent.path, route_id),
            )
            parent.children.append(node)
            self._by_id[route_id] = node
            self._build(node, config.routes)

    def match(
        self, labels: Mapping[str, str], *, rule_channels: Sequence[str] = ()
    ) -> list[RouteSettings]:
        """Return the routes that take an alert with ``labels``, in tree order.

        :param labels: the alert's routing labels (see :func:`routing_labels`).
        :param rule_channels: the channels of the alert's rule, which replace
            those of the first route (see :func:`with_rule_channels`).
        :return: at least one route: the root when nothing below it matches.
        """
        reached = [node.settings for node in self._walk(self._root, labels)]

        return with_rule_channels(reached, rule_channels)

    def explain(
        self, labels: Mapping[str, str], *, rule_channels: Sequence[str] = ()
    ) -> list[RouteMatch]:
        """Return what :meth:`match` returns, with each route's path from the
        root, its matchers and the alert's group labels on it."""
        nodes = self._walk(self._root, labels)
        settings = with_rule_channels([node.settings for node in nodes], rule_channels)

        return [
            RouteMatch(
                route=route,
                path=node.path,
                matchers=node.written,
                group_labels=group_labels(route, labels),
            )
            for node, route in zip(nodes, settings, strict=True)
        ]

    def route(self, route_id: str) -> RouteSettings | None:
        """Return the route with id ``route_id``, ``None`` if there is none."""
        node = self._by_id.get(route_id)
        return None if node is None else node.settings

    def routes(self) -> Iterator[RouteSettings]:
        """Yield every route, the root first, depth first."""
        return (node.settings for node in self._by_id.values())

    def describe(self) -> dict:
        """Return the whole tree, inheritance applied, as plain JSON values.

        Each route is a dict of its settings, plus ``matchers``, ``continue``
        and its child ``routes``.
        """
        return _describe(self._root)

    def _walk(self, node: _Node, labels: Mapping[str, str]) -> list[_Node]:
        if not node.matchers.matches(labels):
            return []
        found: list[_Node] = []
        for child in node.children:
            taken = self._walk(child, labels)
            if taken:
                found.extend(taken)
                if not child.continue_:
                    break

        return found or [node]


def _describe(node: _Node) -> dict:
    described = {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in msgspec.structs.asdict(node.settings).items()
    }
    described["matchers"] = list(node.written)
    described["continue"] = node.continue_
    described["routes"] = [_describe(child) for child in node.children]

    return described


def _given(value: _T | msgspec.UnsetType, inherited: _T) -> _T:
    """Return ``value``, or ``inherited`` when the route leaves it unset."""
    return inherited if value is msgspec.UNSET else value


def _seconds(value: float | msgspec.UnsetType, inherited: float) -> float:
    """Return a duration as a plain float, ``inherited`` when left unset."""
    return float(_given(value, inherited))
