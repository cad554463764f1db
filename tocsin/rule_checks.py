"""The checks of one ``[[rules]]`` entry that its schema cannot express.

:func:`check_rule` runs them in the order a reader of the rule would: what
kind of rule it is (one metric, or a composite of ``conditions``), then its
test (``op`` with ``threshold``, ``range`` and ``recover``, or its ``warning``
and ``critical`` levels), then ``compare``, ``tumbling`` and ``delay``,
``no_data`` and ``flapping``, and last its texts, rendered against a sample
alert. Each check raises :class:`~tocsin.errors.ConfigError` naming the file
and the key path (``rules[0].critical.threshold``,
``rules[2].conditions[1].window``).

Checks between sections (unique names, channels that exist) stay in
:mod:`tocsin.config`.
"""

from __future__ import annotations

import math

from tocsin import templates
from tocsin.errors import ConfigError
from tocsin.rules.conditions import format_duration
from tocsin.rules.windows import BINS
from tocsin.schema import (
    CompareConfig,
    Config,
    ConfigWarning,
    LevelConfig,
    RuleConfig,
)

#: Direction of the ordered comparisons: +1 fires above, -1 below.
_ORDERED = {">": 1, ">=": 1, "<": -1, "<=": -1}
_RANGES = ("inside", "outside")
#: A rule with every key at its default, to tell which keys a rule sets.
_DEFAULTS = RuleConfig(name="defaults")
#: Keys a composite rule must leave unset, and why.
_NOT_COMPOSITE = (
    ("metric", "each condition names its own"),
    ("threshold", "each condition has its own test"),
    ("range", "each condition has its own test"),
    ("recover", "each condition has its own test"),
    ("warning", "a composite rule fires at its severity"),
    ("critical", "a composite rule fires at its severity"),
    ("compare", "only a rule with one metric compares with its past"),
    ("tumbling", "each condition has its own sliding window"),
    ("delay", "only tumbling rules take a delay"),
)
SECONDS_PER_DAY = 86400.0
#: Most steps a comparison may reach back or remember.
MAX_STEPS = 10_000
#: Longest ``delay`` of a tumbling rule, in windows: each pending bin is
#: held in memory until it is evaluated.
MAX_DELAY_WINDOWS = 50


def check_rule(rule: RuleConfig, source: str, where: str) -> None:
    """Check one rule; ``where`` is its key path, like ``rules[0]``.

    :raises ConfigError: naming ``source`` and the key at fault, if the rule
        sets keys that contradict each other or cannot work.
    """
    if rule.window <= 0:
        raise ConfigError(source, "must be longer than 0s", f"{where}.window")
    if len(set(rule.group_by)) != len(rule.group_by):
        raise ConfigError(source, "a label is listed twice", f"{where}.group_by")

    if rule.conditions:
        _check_composite(rule, source, where)
    else:
        if not rule.metric:
            raise ConfigError(
                source,
                "a rule needs a metric, unless it has conditions",
                f"{where}.metric",
            )
        _check_levels(rule, source, where)
    if rule.compare is not None:
        _check_compare(rule, rule.compare, source, f"{where}.compare")
    _check_bins(rule, source, where)
    if rule.no_data is not None and rule.no_data.after <= 0:
        raise ConfigError(source, "must be longer than 0s", f"{where}.no_data.after")
    flapping = rule.flapping
    if flapping is not None and not flapping.low < flapping.high:
        raise ConfigError(
            source,
            f"must be below high ({flapping.high:g}): a flapping alert settles"
            " under low and starts flapping over high",
            f"{where}.flapping.low",
        )
    _check_texts(rule, source, where)


def _check_composite(rule: RuleConfig, source: str, where: str) -> None:
    """Check a rule with ``conditions``: they carry the tests, not the rule."""
    for key, reason in _NOT_COMPOSITE:
        if getattr(rule, key) != getattr(_DEFAULTS, key):
            raise ConfigError(
                source,
                f"a rule with conditions takes no {key}; {reason}",
                f"{where}.{key}",
            )
    for position, condition in enumerate(rule.conditions):
        at = f"{where}.conditions[{position}]"
        if not condition.metric:
            raise ConfigError(source, "must not be empty", f"{at}.metric")
        if condition.window <= 0:
            raise ConfigError(source, "must be longer than 0s", f"{at}.window")
        _check_test(
            condition.op,
            LevelConfig(
                threshold=condition.threshold,
                range=condition.range,
                recover=condition.recover,
            ),
            source,
            at,
        )


def _check_levels(rule: RuleConfig, source: str, where: str) -> None:
    """Check the rule's own test, or its ``warning`` and ``critical`` levels."""
    if rule.warning is None and rule.critical is None:
        [(_, own)] = rule.levels
        _check_test(rule.op, own, source, where)
        return

    for key in ("threshold", "range", "recover"):
        if getattr(rule, key) != getattr(_DEFAULTS, key):
            raise ConfigError(
                source,
                f"a rule with warning or critical takes no {key} of its own;"
                " set it in each level",
                f"{where}.{key}",
            )
    for name, level in rule.levels:
        _check_test(rule.op, level, source, f"{where}.{name}")
    if rule.warning is None or rule.critical is None:
        return

    # Levels are tried from the strictest down, so a critical level that a
    # value reaches before the warning one would hide the warning level.
    warning, critical = rule.warning, rule.critical
    at = f"{where}.critical"
    direction = _ORDERED.get(rule.op)
    if rule.op in ("==", "!="):
        raise ConfigError(
            source,
            f"op {rule.op!r} takes one level: set warning or critical, not both",
            at,
        )
    if direction is not None:
        assert warning.threshold is not None and critical.threshold is not None
        if (critical.threshold - warning.threshold) * direction < 0:
            side = "at or above" if direction > 0 else "at or below"
            raise ConfigError(
                source,
                f"must be {side} warning.threshold: critical is the stricter level",
                f"{at}.threshold",
            )
        return

    (warn_low, warn_high), (crit_low, crit_high) = warning.range, critical.range
    if rule.op == "outside" and not (crit_low <= warn_low and warn_high <= crit_high):
        raise ConfigError(
            source,
            "must contain warning.range: critical is the stricter level",
            f"{at}.range",
        )
    if rule.op == "inside" and not (warn_low <= crit_low and crit_high <= warn_high):
        raise ConfigError(
            source,
            "must lie within warning.range: critical is the stricter level",
            f"{at}.range",
        )


def _check_test(op: str, level: LevelConfig, source: str, where: str) -> None:
    """Check that a threshold, range and recovery fit ``op``.

    ``where`` is the key path of what holds them: a rule, one of its levels
    or one of its conditions.
    """
    if op in _RANGES:
        if level.threshold is not None:
            raise ConfigError(
                source, f"op {op!r} takes a range, not a threshold", where
            )
        if len(level.range) != 2:
            raise ConfigError(source, "expected [low, high]", f"{where}.range")
        low, high = level.range
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            raise ConfigError(
                source, "expected finite numbers, low <= high", f"{where}.range"
            )
        if level.recover is not None:
            raise ConfigError(
                source, "a range has no recovery threshold", f"{where}.recover"
            )
        return

    if level.range:
        raise ConfigError(source, f"op {op!r} takes no range", f"{where}.range")
    if level.threshold is None:
        raise ConfigError(source, "missing required key", f"{where}.threshold")
    if not math.isfinite(level.threshold):
        raise ConfigError(source, "must be a finite number", f"{where}.threshold")
    if level.recover is None:
        return
    direction = _ORDERED.get(op)
    if direction is None:
        raise ConfigError(
            source, f"op {op!r} has no recovery threshold", f"{where}.recover"
        )
    if not math.isfinite(level.recover):
        raise ConfigError(source, "must be a finite number", f"{where}.recover")
    if (level.recover - level.threshold) * direction > 0:
        side = "at or below" if direction > 0 else "at or above"
        raise ConfigError(source, f"must be {side} the threshold", f"{where}.recover")


def _check_compare(
    rule: RuleConfig, compare: CompareConfig, source: str, where: str
) -> None:
    """Check that ``compare`` reaches a whole number of steps, 1 to 10000."""
    if bool(compare.bins) == bool(compare.ago):
        extra = ", not both" if compare.bins else ""
        raise ConfigError(source, f"set one of bins and ago{extra}", where)

    if compare.bins:
        steps, given = compare.bins, "bins"
    else:
        given = "ago"
        step = rule.window if rule.tumbling else rule.window / BINS
        ratio = compare.ago / step
        steps = round(ratio)
        if steps < 1 or abs(ratio - steps) > 1e-9 * ratio:
            kind = "its window" if rule.tumbling else f"its window / {BINS}"
            raise ConfigError(
                source,
                f"must be a whole number of steps of {format_duration(step)}"
                f" (a step of this rule is {kind})",
                f"{where}.ago",
            )
        if steps > MAX_STEPS:
            raise ConfigError(
                source,
                f"is {steps} steps of {format_duration(step)}; at most {MAX_STEPS}",
                f"{where}.ago",
            )

    if compare.kind == "baseline" and steps < 2:
        raise ConfigError(
            source, "a baseline needs at least 2 steps of history", f"{where}.{given}"
        )
    if compare.min_history > steps:
        raise ConfigError(
            source,
            f"must not be more than the {steps} steps compared",
            f"{where}.min_history",
        )


def _check_bins(rule: RuleConfig, source: str, where: str) -> None:
    """Check that tumbling bins align to UTC and that only they take a delay."""
    window = float(rule.window)
    if rule.tumbling:
        # Bins are aligned to the POSIX epoch, which is a UTC midnight: a bin
        # width that divides a day (or is whole days) starts every day afresh.
        count = SECONDS_PER_DAY / window if window <= SECONDS_PER_DAY else None
        days = window / SECONDS_PER_DAY
        if count is not None:
            aligned = abs(count - round(count)) <= 1e-9 * count
        else:
            aligned = abs(days - round(days)) <= 1e-9 * days
        if not aligned:
            raise ConfigError(
                source,
                "a tumbling window must divide a day into whole bins (like 1m,"
                " 5m, 1h, 6h) or be a whole number of days, so bins align to"
                " UTC minutes, hours and days",
                f"{where}.window",
            )

    if rule.delay <= 0:
        return
    if not rule.tumbling:
        raise ConfigError(
            source,
            "only tumbling rules take a delay; a sliding window takes late"
            " samples while they are inside it",
            f"{where}.delay",
        )
    if rule.delay > MAX_DELAY_WINDOWS * window:
        longest = format_duration(MAX_DELAY_WINDOWS * window)
        raise ConfigError(
            source,
            f"must be at most {MAX_DELAY_WINDOWS} windows ({longest})",
            f"{where}.delay",
        )


def _check_texts(rule: RuleConfig, source: str, where: str) -> None:
    """Render the rule's texts against a sample alert of the rule, so a
    template that cannot render is refused now rather than when it fires.

    The sample is at the rule's lowest level (or, for a composite rule, at the
    test of its first condition), with the value at that level's threshold.
    """
    if rule.conditions:
        first = rule.conditions[0]
        metric, severity, op = first.metric, rule.severity, first.op
        aggregation = first.aggregation
        level = LevelConfig(threshold=first.threshold, range=first.range)
    else:
        metric, op, aggregation = rule.metric, rule.op, rule.aggregation
        severity, level = rule.levels[0]
    threshold = None if level.range else level.threshold
    labels = {**rule.labels, **dict.fromkeys(rule.group_by, "sample")}
    sample = templates.context(
        rule=rule.name,
        metric=metric,
        severity=severity,
        series=",".join(f"{name}=sample" for name in rule.group_by),
        labels=labels,
        value=threshold if threshold is not None else float(level.range[0]),
        threshold=threshold,
        op=op,
        aggregation=aggregation,
        window="1m",
    )
    for field in ("summary", "description"):
        try:
            templates.render(getattr(rule, field), sample)
        except templates.TemplateProblem as problem:
            raise ConfigError(source, str(problem), f"{where}.{field}") from None


def config_warnings(config: Config) -> list[ConfigWarning]:
    """Return what ``config`` allows but probably does not mean.

    A rule without channels is legitimate, to keep a record only, and so is a
    composite rule of one condition, so each is a warning and not an error; a
    rule without channels of its own is only warned of when no route has any
    either. Warnings come rule by rule, in the file's order, then route by
    route (see :mod:`tocsin.routing_checks`).
    """
    # Imported here: the routing checks import this module's neighbours.
    from tocsin.routing_checks import routed_channels, routing_warnings

    found: list[ConfigWarning] = []
    routed = routed_channels(config.routing)
    for index, rule in enumerate(config.rules):
        if not rule.channels and not routed:
            found.append(
                ConfigWarning(
                    f"rules[{index}].channels",
                    f"no channels: alerts of rule {rule.name!r} are recorded"
                    " but nobody is notified",
                )
            )
        if len(rule.conditions) == 1:
            found.append(
                ConfigWarning(
                    f"rules[{index}].conditions",
                    "one condition: a plain rule with its metric, window and"
                    " threshold says the same and can have levels and compare",
                )
            )
    found.extend(routing_warnings(config.routing))

    return found
