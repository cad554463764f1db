"""A rule's levels: which severity a measurement reaches, with hysteresis.

A rule has one level (its ``threshold`` or ``range`` at its ``severity``) or
two (``warning`` and ``critical``). Level 0 is "no breach"; level ``i`` is the
``i``-th of the rule's levels, lowest first.

Rising is immediate: the highest level whose test holds wins. Falling is
not: an alert at level ``L`` leaves it downwards only once the value has
passed ``L``'s recovery threshold, and then lands on the highest lower level
it has not recovered from, so a value hovering between the two levels' lines
does not bounce between severities.

The tests take whatever the rule measures from: a window (a plain sliding
rule, whose percentile tests can then decide from the window's exact min and
max), or a number (a rule comparing with its own past, or a tumbling rule's
closed bin); a number test is false for ``None``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tocsin.rules.conditions import RANGES, Bound, condition, value_test
from tocsin.schema import LevelConfig

Test = Callable[[object], bool]


def bound_of(op: str, level: LevelConfig) -> Bound:
    """Return a level's threshold, or its ``(low, high)`` for a range."""
    if op in RANGES:
        return (float(level.range[0]), float(level.range[1]))
    return float(level.threshold)


def _number_test(op: str, bound: Bound) -> Test:
    test = value_test(op, bound)
    return lambda value: value is not None and test(value)


class Levels:
    """The compiled tests of a rule's levels.

    :param op: the rule's comparison.
    :param levels: ``(severity, level)`` pairs, lowest first.
    :param measure: what a window test measures; ``None`` compiles number
        tests instead.
    :param quantile: ``measure`` reads a percentile sketch.
    :param optional: ``measure`` may find no value in a non-empty window.
    """

    __slots__ = ("names", "bounds", "recoveries", "thresholds", "holds", "stays")

    def __init__(
        self,
        op: str,
        levels: Sequence[tuple[str, LevelConfig]],
        measure: Callable | None,
        *,
        quantile: bool = False,
        optional: bool = False,
    ) -> None:
        #: Severity of each level, lowest first.
        self.names = tuple(name for name, _ in levels)
        #: The threshold or range of each level.
        self.bounds = tuple(bound_of(op, level) for _, level in levels)
        #: What an alert at each level must pass to stay at it.
        self.recoveries = tuple(
            bound if level.recover is None else float(level.recover)
            for bound, (_, level) in zip(self.bounds, levels, strict=True)
        )
        #: Each level's threshold; ``None`` for a range.
        self.thresholds = tuple(
            None if op in RANGES else bound for bound in self.bounds
        )

        def compile_test(bound: Bound) -> Test:
            if measure is None:
                return _number_test(op, bound)
            return condition(op, bound, measure, quantile=quantile, optional=optional)

        #: Per level, whether a measurement breaches it.
        self.holds = tuple(compile_test(bound) for bound in self.bounds)
        #: Per level, whether an alert at it stays (its recovery test).
        self.stays = tuple(
            holds if recovery == bound else compile_test(recovery)
            for holds, bound, recovery in zip(
                self.holds, self.bounds, self.recoveries, strict=True
            )
        )

    @classmethod
    def custom(cls, name: str, holds: Test, stays: Test) -> Levels:
        """Return one level named ``name`` with ready-made tests (composites)."""
        levels = cls.__new__(cls)
        levels.names = (name,)
        levels.bounds = levels.recoveries = levels.thresholds = (None,)
        levels.holds = (holds,)
        levels.stays = (stays,)
        return levels

    @property
    def top(self) -> int:
        """Return the highest level."""
        return len(self.names)

    def name(self, level: int) -> str:
        """Return the severity of ``level`` (1 or more)."""
        return self.names[level - 1]

    def level_of(self, severity: str) -> int:
        """Return the level named ``severity``, or the lowest if none is."""
        try:
            return self.names.index(severity) + 1
        except ValueError:
            return 1

    def classify(self, reading: object) -> int:
        """Return the highest level ``reading`` breaches, 0 for none."""
        holds = self.holds
        for index in range(len(holds) - 1, -1, -1):
            if holds[index](reading):
                return index + 1
        return 0

    def settle(self, reading: object, level: int) -> int:
        """Return the level an alert at ``level`` moves to for ``reading``.

        It rises to any higher level ``reading`` breaches; otherwise it stays
        at the highest level at or below its own it has not recovered from.
        """
        raised = self.classify(reading)
        if raised >= level:
            return raised
        stays = self.stays
        for index in range(level - 1, -1, -1):
            if stays[index](reading):
                return index + 1
        return 0
