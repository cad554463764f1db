"""What the rules engine tells the rest of Tocsin."""

from __future__ import annotations

from typing import Literal

import msgspec


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """A series of a rule started or stopped breaching.

    ``fire`` is emitted once when the condition has held for the rule's ``for``
    duration (and no cooldown or daily cap holds it back); ``resolve`` once when
    a firing series stops breaching, including when its window runs empty.
    """

    action: Literal["fire", "resolve"]
    #: Name of the rule.
    rule: str
    #: Canonical series key: the rule's ``group_by`` labels as ``k=v`` joined
    #: with ``,`` in ``group_by`` order, ``\``, ``,`` and ``=`` escaped by a
    #: backslash (empty when the rule has no group_by).
    series: str
    #: The ``group_by`` labels and their values for this series.
    labels: dict[str, str]
    #: The aggregated value that decided, or ``None`` when the window is empty.
    value: float | None
    #: The rule's threshold; ``None`` for a range.
    threshold: float | None
    #: Samples in the window when the decision was taken.
    samples: int
    #: When the decision was taken (POSIX seconds).
    at: float
    #: When the condition started to hold (for ``fire``: the start of pending).
    since: float
    #: Human-readable cause, e.g. ``"avg 0.31 > 0.2 for 30s"``.
    reason: str
