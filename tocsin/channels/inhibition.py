"""Inhibition: an open alert keeps the notifications of related alerts quiet.

An ``[[inhibit]]`` rule says: while an alert matching ``source`` is open,
alerts matching ``target`` whose values of the ``equal`` labels are the same
as the source's are not notified (a label neither has counts as equal, both
being empty). A cluster-wide outage can so hide the alerts of every model
running in that cluster.

An alert is never inhibited by itself; and an alert that matches both sides
of a rule is not inhibited by another alert that also matches both, so two
such alerts cannot keep each other quiet and leave nobody told.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from tocsin.channels.matchers import Matchers
from tocsin.schema import InhibitConfig

Labels = Mapping[str, str]


@dataclass(frozen=True, slots=True)
class _Rule:
    source: Matchers
    target: Matchers
    equal: tuple[str, ...]

    def inhibits(self, target: Labels, source: Labels) -> bool:
        """Return whether ``source`` quiets ``target`` (which matches
        :attr:`target`) under this rule."""
        if source == target or not self.source.matches(source):
            return False
        if any(source.get(name, "") != target.get(name, "") for name in self.equal):
            return False
        # No mutual inhibition: an alert that could quiet this source cannot
        # be quieted by it.
        return not (self.source.matches(target) and self.target.matches(source))


class Inhibitor:
    """The ``[[inhibit]]`` rules, matchers parsed once.

    :param rules: the validated ``inhibit`` entries.
    :raises ValueError: if a matcher does not parse (the config checks
        refuse such a file first, naming the key).
    """

    def __init__(self, rules: Sequence[InhibitConfig]) -> None:
        self._rules = tuple(
            _Rule(
                source=Matchers.parse(rule.source),
                target=Matchers.parse(rule.target),
                equal=tuple(rule.equal),
            )
            for rule in rules
        )

    def __bool__(self) -> bool:
        return bool(self._rules)

    def inhibited(self, target: Labels, sources: Iterable[Labels]) -> bool:
        """Return whether the alert with labels ``target`` is inhibited.

        :param target: the routing labels of the alert to notify of.
        :param sources: the routing labels of every open alert; ``target``
            itself may be among them.
        """
        rules = [rule for rule in self._rules if rule.target.matches(target)]
        if not rules:
            return False
        candidates = sources if isinstance(sources, Sequence) else list(sources)

        return any(
            rule.inhibits(target, source) for rule in rules for source in candidates
        )
