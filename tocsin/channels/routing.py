"""The routing tree: which routes, and so which channels, an alert reaches."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from tocsin.state.models import Alert


class RouteSettings(msgspec.Struct, frozen=True, kw_only=True):
    """What one matched route asks of the alerts it takes, inheritance applied."""

    #: Stable identity: the route's ``name``, or its position and matchers.
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
