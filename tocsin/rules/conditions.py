"""A rule's condition: how it compares, when it may fire, and how it says so."""

from __future__ import annotations

import operator
from collections.abc import Callable

#: Comparison operators of the configuration with one threshold.
COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
#: Comparison operators of the configuration with a ``(low, high)`` range.
RANGES = ("inside", "outside")

Bound = float | tuple[float, float]


def value_test(op: str, bound: Bound) -> Callable[[float], bool]:
    """Return the test of one value against a threshold or a ``(low, high)``.

    ``inside`` holds for ``low <= value <= high``, ``outside`` for the rest.
    """
    if op == "inside":
        low, high = bound
        return lambda value: low <= value <= high
    if op == "outside":
        low, high = bound
        return lambda value: value < low or value > high
    compare = COMPARISONS[op]
    threshold = float(bound)
    return lambda value: compare(value, threshold)


def condition(
    op: str,
    bound: Bound,
    measure: Callable,
    *,
    quantile: bool = False,
    optional: bool = False,
) -> Callable:
    """Return the test of ``measure(window)`` against ``bound`` for a non-empty
    window.

    :param quantile: ``measure`` reads a sketch, which costs O(sketch size);
        the test then decides from the window's exact min and max whenever they
        settle it, since a quantile lies between them.
    :param optional: ``measure`` may find no value in a non-empty window (a
        rate over samples that share one timestamp); the test is then false.
    """
    test = value_test(op, bound)
    if optional:

        def holds_if_measured(window) -> bool:
            value = measure(window)
            return value is not None and test(value)

        return holds_if_measured
    if not quantile:
        return _direct(op, bound, measure)

    # TODO: a condition that min and max do not settle reads the sketch,
    # O(sketch size) in ddsketch's Python loop (~20 us). Counting, per bin, the
    # samples at or below the threshold would decide exactly in O(1) and leave
    # the sketch to the reported value only.
    # Where the test holds for both extremes of an ordered comparison it holds
    # for everything between them, and likewise where it fails for both; a
    # range holds between two values inside it.
    monotone = op in (">", ">=", "<", "<=")
    convex = op == "inside"

    def holds(window) -> bool:
        low = window.lowest()
        high = window.highest()
        at_low = test(low)
        if at_low == test(high) and (monotone or low == high or (convex and at_low)):
            return at_low
        return test(measure(window))

    return holds


def _direct(op: str, bound: Bound, measure: Callable) -> Callable:
    """Return ``op`` applied to ``measure(window)`` as one closure.

    Every evaluation of a plain rule runs this test, so it compares in place
    rather than calling a value test in turn.
    """
    if op in RANGES:
        low, high = bound
        if op == "inside":
            return lambda window: low <= measure(window) <= high
        return lambda window: not low <= measure(window) <= high
    threshold = float(bound)
    tests = {
        ">": lambda window: measure(window) > threshold,
        ">=": lambda window: measure(window) >= threshold,
        "<": lambda window: measure(window) < threshold,
        "<=": lambda window: measure(window) <= threshold,
        "==": lambda window: measure(window) == threshold,
        "!=": lambda window: measure(window) != threshold,
    }
    return tests[op]


_UNITS = (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0), ("ms", 0.001))


def format_duration(seconds: float) -> str:
    """Write ``seconds`` the way the configuration does (``30s``, ``5m``, ``1h``).

    The largest unit that divides the duration exactly wins; anything else is
    written in seconds.
    """
    if seconds == 0:
        return "0s"
    for unit, size in _UNITS:
        count = seconds / size
        if count >= 1 and abs(count - round(count)) < 1e-9:
            return f"{round(count)}{unit}"
    return f"{seconds:g}s"


def format_number(value: float) -> str:
    """Write a measured value or threshold briefly (at most 6 significant digits)."""
    value = float(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def subject(aggregation: str, metric: str, window: float) -> str:
    """Return what a rule measures, e.g. ``avg(model.drift.psi) over 5m``."""
    return f"{aggregation}({metric}) over {format_duration(window)}"


def format_condition(op: str, bound: Bound) -> str:
    """Write a comparison, e.g. ``> 0.2`` or ``outside [0.1, 0.9]``."""
    if op in RANGES:
        low, high = bound
        return f"{op} [{format_number(low)}, {format_number(high)}]"
    return f"{op} {format_number(bound)}"


def fire_reason(what: str, value: float, op: str, bound: Bound, pending: float) -> str:
    """Explain a fire, e.g. ``avg(model.drift.psi) over 5m = 0.31 > 0.2 for 30s``."""
    reason = f"{what} = {format_number(value)} {format_condition(op, bound)}"
    if pending > 0:
        reason += f" for {format_duration(pending)}"
    return reason


def resolve_reason(
    what: str,
    value: float | None,
    op: str,
    bound: Bound,
    *,
    samples: int,
    min_samples: int = 1,
    kept_for: float = 0.0,
) -> str:
    """Explain a resolve, e.g. ``avg(x) over 5m = 0.1, no longer > 0.2``.

    :param bound: the bound the value no longer passes (the recovery
        threshold, where the rule has one).
    :param kept_for: how long the alert was kept firing after it cleared.
    """
    if not samples:
        reason = f"{what}: no samples in window"
    elif samples < min_samples:
        reason = (
            f"{what}: {samples} samples in window, fewer than the {min_samples} needed"
        )
    elif value is None:
        reason = f"{what}: no value in window"
    else:
        reason = (
            f"{what} = {format_number(value)}, no longer {format_condition(op, bound)}"
        )
    if kept_for > 0:
        reason += f" for {format_duration(kept_for)}"
    return reason
