"""The notifier's policy: where an alert goes, and what keeps it quiet.

It joins the routing tree, the rules' own channel lists, silences, mute
windows and inhibition into the three questions the notifier asks (see
:class:`tocsin.channels.notifier.Policy`). Everything here is in memory and
synchronous: silences are read from the database when they change, not on
every question.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import msgspec

from tocsin.channels.health import DELIVERY_RULES, destinations
from tocsin.channels.inhibition import Inhibitor
from tocsin.channels.matchers import Matchers, parse_matcher
from tocsin.channels.routing import RouteSettings, RoutingTree, routing_labels
from tocsin.channels.timeintervals import MuteWindow
from tocsin.config import Config, RuleConfig
from tocsin.state.models import OPEN_STATES, Alert, Silence


class NoisePolicy:
    """Routes alerts and tells whether one is silenced, muted or inhibited.

    :param tree: the routing tree.
    :param rules: every rule by name; a rule's own ``channels`` replace those
        of the first route its alerts match.
    :param windows: the mute windows by name.
    :param inhibitor: the inhibition rules.
    :param silences: the silences not yet expired.
    """

    def __init__(
        self,
        tree: RoutingTree,
        rules: Mapping[str, RuleConfig],
        windows: Mapping[str, MuteWindow],
        inhibitor: Inhibitor,
        silences: Iterable[Silence] = (),
    ) -> None:
        self.tree = tree
        self.rules = rules
        self.windows = windows
        self.inhibitor = inhibitor
        self.set_silences(silences)

    @classmethod
    def from_config(
        cls,
        config: Config,
        rules: Mapping[str, RuleConfig] | None = None,
        silences: Iterable[Silence] = (),
    ) -> NoisePolicy:
        """Build the policy a checked config describes.

        :param rules: the rules by name, when more than the file's (rules
            added at run time, Tocsin's own).
        """
        windows = {cfg.name: MuteWindow.from_config(cfg) for cfg in config.mute_windows}
        return cls(
            RoutingTree(config.routing),
            rules if rules is not None else {rule.name: rule for rule in config.rules},
            windows,
            Inhibitor(config.inhibit),
            silences,
        )

    def set_silences(self, silences: Iterable[Silence]) -> None:
        """Replace the silences the policy knows (after one was added or expired)."""
        self._silences = [
            (silence, Matchers([parse_matcher(text) for text in silence.matchers]))
            for silence in silences
        ]

    def routes(self, alert: Alert) -> list[RouteSettings]:
        """Return the routes an alert takes, its rule's channels applied.

        Tocsin's alerts about its delivery and export take only the first
        route, with their rule's channels (``alerts.internal_channels``)
        less the integration they are about and no escalation, or none when
        no channel is left: an integration is never told of its own
        failure, whatever the routes or escalations say.
        """
        matched = self.tree.match(routing_labels(alert))
        rule = self.rules.get(alert.spec.rule)
        if alert.spec.rule in DELIVERY_RULES:
            channels = tuple(
                destinations(rule.channels if rule else (), alert.spec.labels)
            )
            if not channels or not matched:
                return []
            only = msgspec.structs.replace(
                matched[0], channels=channels, escalation=None
            )
            return [only]
        if rule is None or not rule.channels or not matched:
            return matched
        first = msgspec.structs.replace(matched[0], channels=tuple(rule.channels))

        return [first]

    def suppression(
        self,
        alert: Alert,
        route: RouteSettings,
        open_alerts: Sequence[Alert],
        now: float,
    ) -> str | None:
        """Return what keeps ``alert`` from being notified on ``route`` at
        ``now``: ``inhibited``, ``muted``, ``silenced``, or ``None``.

        The order is the pipeline's: inhibition, then the route's windows,
        then silences.
        """
        labels = routing_labels(alert)
        sources = (
            routing_labels(other)
            for other in open_alerts
            if other.id != alert.id and other.state in OPEN_STATES
        )
        if self.inhibitor.inhibited(labels, sources):
            return "inhibited"
        if self._is_muted(route, now):
            return "muted"
        for silence, matchers in self._silences:
            if silence.state(now) == "active" and matchers.matches(labels):
                return "silenced"

        return None

    def silenced_by(self, labels: Mapping[str, str], now: float) -> list[Silence]:
        """Return the active silences that select ``labels``."""
        return [
            silence
            for silence, matchers in self._silences
            if silence.state(now) == "active" and matchers.matches(labels)
        ]

    def next_change(self, now: float) -> float | None:
        """Return the next instant a silence or a window starts or ends."""
        soonest = math.inf
        for silence, _ in self._silences:
            for edge in (silence.starts_at, silence.ends_at):
                if edge > now:
                    soonest = min(soonest, edge)
        for window in self.windows.values():
            edge = window.next_change(now)
            if edge is not None and edge > now:
                soonest = min(soonest, edge)

        return None if soonest == math.inf else soonest

    def _is_muted(self, route: RouteSettings, now: float) -> bool:
        if any(self.windows[name].contains(now) for name in route.mute_windows):
            return True
        if route.active_windows:
            return not any(
                self.windows[name].contains(now) for name in route.active_windows
            )
        return False
