"""What the rules engine tells the rest of Tocsin."""

from __future__ import annotations

from typing import Literal

import msgspec

#: The rule of Tocsin's own alerts about its rules engine: a rule, or every
#: rule together, reached its series limit. It has no configuration; its
#: decisions come from the engine and its alerts go to
#: ``alerts.internal_channels``.
SERIES_LIMIT_RULE = "tocsin.series_limit"

#: ``fire`` opens an alert, ``resolve`` ends it, ``severity`` moves an open
#: alert to another level of its rule, ``flapping`` and ``settled`` mark an
#: open alert as flapping (its notifications pause) and as settled again.
Action = Literal["fire", "resolve", "severity", "flapping", "settled"]


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """A series of a rule changed in a way the alert store must record.

    ``fire`` is emitted once when the condition has held for the rule's ``for``
    duration (and no rate guard holds it back); ``resolve`` once when a firing
    series stops breaching, including when its window runs empty; ``severity``
    when a firing series crosses into another level; ``flapping`` and
    ``settled`` when flap detection starts and stops pausing a firing alert.
    """

    action: Action
    #: Name of the rule.
    rule: str
    #: Canonical series key: the rule's ``group_by`` labels as ``k=v`` joined
    #: with ``,`` in ``group_by`` order, ``\\``, ``,`` and ``=`` escaped by a
    #: backslash (empty when the rule has no group_by).
    series: str
    #: The ``group_by`` labels and their values for this series.
    labels: dict[str, str]
    #: The value the condition compared, or ``None`` when there was none
    #: (an empty window, no data, a composite rule).
    value: float | None
    #: The threshold of the decided level; ``None`` for a range or a
    #: composite rule.
    threshold: float | None
    #: Samples in the window when the decision was taken.
    samples: int
    #: When the decision was taken (POSIX seconds).
    at: float
    #: When the condition started to hold (for ``fire``: the start of pending).
    since: float
    #: Human-readable cause, e.g. ``"avg 0.31 > 0.2 for 30s"``.
    reason: str
    #: The alert's severity after the decision: the rule's ``severity``, or
    #: the name of the level (``warning``, ``critical``) it is at.
    severity: str = ""
