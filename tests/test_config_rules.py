"""Rule keys of the rules engine: what loads, and the exact error for what does not.

Levels, comparisons, tumbling bins, no-data, flapping and composite rules.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tocsin import config
from tocsin.errors import ConfigError
from tocsin.schema import ConfigWarning, LevelConfig, RuleConfig

#: A rule with everything but its test.
RULE = '[[rules]]\nname = "r"\nmetric = "m"\n'
PLAIN = RULE + "threshold = 1\n"
LEVELS = RULE + "warning = { threshold = 0.2 }\ncritical = { threshold = 0.5 }\n"
RANGES = RULE + 'op = "outside"\nwarning = { range = [0.2, 0.8] }\n'
COMPOSITE = (
    '[[rules]]\nname = "r"\nconditions = [\n'
    '  { metric = "a", threshold = 1 },\n'
    '  { metric = "b", op = "<", threshold = 2 },\n'
    "]\n"
)
TWO_CONDITIONS = (
    '[[rules]]\nname = "r"\nconditions = [{ metric = "a", threshold = 1 }, '
)
ONE_CONDITION = (
    '[[rules]]\nname = "r"\nconditions = [{ metric = "a", threshold = 1 }]\n'
)


def refusal(text: str) -> str:
    with pytest.raises(ConfigError) as raised:
        config.parse(text, "bad.toml")

    return str(raised.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Tocsin's own alerts have rules of their own.
        (
            PLAIN.replace('name = "r"', 'name = "tocsin.series_limit"'),
            "rules[0].name: rule names starting with 'tocsin.' are Tocsin's own",
        ),
        # A rule measures one metric, or is a composite of conditions.
        (
            '[[rules]]\nname = "r"\nthreshold = 1\n',
            "rules[0].metric: a rule needs a metric, unless it has conditions",
        ),
        (
            PLAIN.replace('"m"', '""'),
            "rules[0].metric: a rule needs a metric, unless it has conditions",
        ),
        (
            TWO_CONDITIONS + '{ metric = "", threshold = 2 }]\n',
            "rules[0].conditions[1].metric: must not be empty",
        ),
        (
            TWO_CONDITIONS + '{ metric = "b", threshold = 2, window = "0s" }]\n',
            "rules[0].conditions[1].window: must be longer than 0s",
        ),
        (
            TWO_CONDITIONS + '{ metric = "b" }]\n',
            "rules[0].conditions[1].threshold: missing required key",
        ),
        (
            TWO_CONDITIONS + '{ metric = "b", threshold = 2, recover = 3 }]\n',
            "rules[0].conditions[1].recover: must be at or below the threshold",
        ),
        (
            TWO_CONDITIONS + '{ metric = "b", op = "inside", threshold = 2 }]\n',
            "rules[0].conditions[1]: op 'inside' takes a range, not a threshold",
        ),
        (
            TWO_CONDITIONS + '{ metric = "b", op = "==", range = [1, 2] }]\n',
            "rules[0].conditions[1].range: op '==' takes no range",
        ),
        (
            TWO_CONDITIONS + '{ metric = "b", threshold = 1, typo = 2 }]\n',
            "rules[0].conditions[1].typo: unknown key",
        ),
        # Levels carry the thresholds; the rule carries none of its own.
        (
            LEVELS + "threshold = 0.3\n",
            "rules[0].threshold: a rule with warning or critical takes no"
            " threshold of its own; set it in each level",
        ),
        (
            RANGES + "range = [0.1, 0.9]\n",
            "rules[0].range: a rule with warning or critical takes no range of"
            " its own; set it in each level",
        ),
        (
            LEVELS + "recover = 0.1\n",
            "rules[0].recover: a rule with warning or critical takes no recover"
            " of its own; set it in each level",
        ),
        (
            RULE + "warning = { recover = 0.1 }\n",
            "rules[0].warning.threshold: missing required key",
        ),
        (
            RULE + "critical = { range = [1, 2] }\n",
            "rules[0].critical.range: op '>' takes no range",
        ),
        (
            RULE + 'op = "=="\nwarning = { threshold = 1, recover = 0 }\n',
            "rules[0].warning.recover: op '==' has no recovery threshold",
        ),
        (
            RULE + "warning = { threshold = 0.2, recover = 0.3 }\n",
            "rules[0].warning.recover: must be at or below the threshold",
        ),
        (
            RULE + 'op = "<"\ncritical = { threshold = 0.2, recover = 0.1 }\n',
            "rules[0].critical.recover: must be at or above the threshold",
        ),
        (
            RANGES + "critical = { threshold = 0.9 }\n",
            "rules[0].critical: op 'outside' takes a range, not a threshold",
        ),
        (
            RANGES + "critical = { range = [0.9, 0.1] }\n",
            "rules[0].critical.range: expected finite numbers, low <= high",
        ),
        # With both levels, critical is the stricter one.
        (
            RULE + "warning = { threshold = 0.5 }\ncritical = { threshold = 0.2 }\n",
            "rules[0].critical.threshold: must be at or above warning.threshold:"
            " critical is the stricter level",
        ),
        (
            RULE + 'op = "<="\nwarning = { threshold = 0.2 }\n'
            "critical = { threshold = 0.5 }\n",
            "rules[0].critical.threshold: must be at or below warning.threshold:"
            " critical is the stricter level",
        ),
        (
            RANGES + "critical = { range = [0.3, 0.9] }\n",
            "rules[0].critical.range: must contain warning.range: critical is"
            " the stricter level",
        ),
        (
            RANGES.replace("outside", "inside") + "critical = { range = [0.1, 0.5] }\n",
            "rules[0].critical.range: must lie within warning.range: critical"
            " is the stricter level",
        ),
        (
            RULE + 'op = "=="\nwarning = { threshold = 1 }\n'
            "critical = { threshold = 1 }\n",
            "rules[0].critical: op '==' takes one level: set warning or critical,"
            " not both",
        ),
        (
            RULE + 'op = "!="\nwarning = { threshold = 0 }\n'
            "critical = { threshold = 1 }\n",
            "rules[0].critical: op '!=' takes one level: set warning or critical,"
            " not both",
        ),
        # compare: a whole number of steps, 1 to 10000.
        (
            PLAIN + 'compare = { kind = "change" }\n',
            "rules[0].compare: set one of bins and ago",
        ),
        (
            PLAIN + 'compare = { kind = "change", bins = 2, ago = "50s" }\n',
            "rules[0].compare: set one of bins and ago, not both",
        ),
        (
            PLAIN + 'compare = { kind = "percent", ago = "1m" }\n',
            "rules[0].compare.ago: must be a whole number of steps of 25s"
            " (a step of this rule is its window / 12)",
        ),
        (
            PLAIN + 'compare = { kind = "percent", ago = "10s" }\n',
            "rules[0].compare.ago: must be a whole number of steps of 25s"
            " (a step of this rule is its window / 12)",
        ),
        (
            PLAIN
            + 'window = "1h"\ntumbling = true\n'
            + 'compare = { kind = "change", ago = "90m" }\n',
            "rules[0].compare.ago: must be a whole number of steps of 1h"
            " (a step of this rule is its window)",
        ),
        (
            PLAIN + 'window = "1m"\ncompare = { kind = "change", ago = "1d" }\n',
            "rules[0].compare.ago: is 17280 steps of 5s; at most 10000",
        ),
        (
            PLAIN + 'compare = { kind = "change", bins = 10001 }\n',
            "rules[0].compare.bins: Expected `int` <= 10000",
        ),
        (
            PLAIN + 'compare = { kind = "baseline", bins = 1 }\n',
            "rules[0].compare.bins: a baseline needs at least 2 steps of history",
        ),
        (
            PLAIN + 'compare = { kind = "baseline", ago = "25s" }\n',
            "rules[0].compare.ago: a baseline needs at least 2 steps of history",
        ),
        (
            PLAIN + 'compare = { kind = "baseline", bins = 5, min_history = 6 }\n',
            "rules[0].compare.min_history: must not be more than the 5 steps compared",
        ),
        (
            PLAIN + 'compare = { kind = "drift", bins = 5 }\n',
            "rules[0].compare.kind: Invalid enum value 'drift'; expected one of"
            " 'baseline', 'change', 'percent'",
        ),
        # Tumbling bins align to UTC; only they take a delay.
        (
            PLAIN + 'window = "7m"\ntumbling = true\n',
            "rules[0].window: a tumbling window must divide a day into whole bins"
            " (like 1m, 5m, 1h, 6h) or be a whole number of days, so bins align"
            " to UTC minutes, hours and days",
        ),
        (
            PLAIN + 'window = "36h"\ntumbling = true\n',
            "rules[0].window: a tumbling window must divide a day into whole bins"
            " (like 1m, 5m, 1h, 6h) or be a whole number of days, so bins align"
            " to UTC minutes, hours and days",
        ),
        (
            PLAIN + 'delay = "10s"\n',
            "rules[0].delay: only tumbling rules take a delay; a sliding window"
            " takes late samples while they are inside it",
        ),
        (
            PLAIN + 'window = "1m"\ntumbling = true\ndelay = "51m"\n',
            "rules[0].delay: must be at most 50 windows (50m)",
        ),
        # no_data and flapping.
        (
            PLAIN + 'no_data = { after = "0s" }\n',
            "rules[0].no_data.after: must be longer than 0s",
        ),
        (
            PLAIN + 'no_data = { action = "alert" }\n',
            "rules[0].no_data.after: missing required key",
        ),
        (
            PLAIN + "flapping = { low = 0.5, high = 0.5 }\n",
            "rules[0].flapping.low: must be below high (0.5): a flapping alert"
            " settles under low and starts flapping over high",
        ),
        (
            PLAIN + "flapping = { history = 1 }\n",
            "rules[0].flapping.history: Expected `int` >= 2",
        ),
        # Tocsin's own alerts go to configured channels.
        (
            '[alerts]\ninternal_channels = ["log", "pager"]\n'
            '[[channels]]\nname = "log"\ntype = "log"\n',
            "alerts.internal_channels[1]: no channel named 'pager'",
        ),
        # Texts render against a sample alert of the rule's first level.
        (
            LEVELS + "summary = \"{{ 1 / 0 if severity == 'warning' else '' }}\"\n",
            "rules[0].summary: division by zero",
        ),
        (
            LEVELS
            + 'summary = "{{ 1 / 0 if threshold == 0.2 and value == 0.2 else 1 }}"\n',
            "rules[0].summary: division by zero",
        ),
        (
            RANGES + 'description = "{{ 1 / 0 if value == 0.2 and threshold'
            " is none else '' }}\"\n",
            "rules[0].description: division by zero",
        ),
        (
            COMPOSITE + "summary = \"{{ 1 / 0 if metric == 'a' else '' }}\"\n",
            "rules[0].summary: division by zero",
        ),
        (
            COMPOSITE + 'summary = "{{ labels.model }}"\n',
            "rules[0].summary: 'dict object' has no attribute 'model'",
        ),
    ],
)
def test_a_bad_rule_is_one_line_naming_file_and_key(text, expected):
    assert refusal(text) == f"bad.toml: {expected}"


@pytest.mark.parametrize(
    ("key", "line", "reason"),
    [
        ("metric", 'metric = "m"', "each condition names its own"),
        ("threshold", "threshold = 1", "each condition has its own test"),
        ("range", "range = [0, 1]", "each condition has its own test"),
        ("recover", "recover = 0", "each condition has its own test"),
        ("warning", "warning = { threshold = 1 }", "a composite rule fires at its"),
        ("critical", "critical = { threshold = 1 }", "a composite rule fires at its"),
        (
            "compare",
            'compare = { kind = "change", bins = 1 }',
            "only a rule with one metric compares with its past",
        ),
        ("tumbling", "tumbling = true", "each condition has its own sliding window"),
        ("delay", 'delay = "1m"', "only tumbling rules take a delay"),
    ],
)
def test_a_composite_rule_refuses_the_keys_of_a_plain_rule(key, line, reason):
    message = refusal(COMPOSITE.replace("conditions", f"{line}\nconditions", 1))

    assert message.startswith(
        f"bad.toml: rules[0].{key}: a rule with conditions takes no {key}; {reason}"
    )


GOOD_RULES = {
    "two levels": (
        LEVELS.replace("threshold = 0.2 }", "threshold = 0.2, recover = 0.15 }")
        + 'summary = "{{ severity }}: {{ value | round(2) }} over {{ threshold }}"\n'
    ),
    "two range levels": RANGES + "critical = { range = [0.1, 0.9] }\n",
    "critical only": RULE + 'op = "<"\ncritical = { threshold = 0.9 }\n',
    "tumbling hourly with delay": (
        PLAIN + 'window = "1h"\ntumbling = true\ndelay = "10m"\nfor = "2h"\n'
    ),
    "tumbling daily": PLAIN + 'window = "1d"\ntumbling = true\ndelay = "1h"\n',
    "tumbling weekly": PLAIN + 'window = "7d"\ntumbling = true\n',
    "tumbling quarter second": PLAIN + 'window = "250ms"\ntumbling = true\n',
    "baseline": (
        PLAIN
        + 'window = "10m"\n'
        + 'compare = { kind = "baseline", ago = "2h", min_history = 24 }\n'
    ),
    "percent a day ago": (
        PLAIN
        + 'window = "1h"\ntumbling = true\n'
        + 'compare = { kind = "percent", ago = "1d" }\n'
    ),
    "change, bins": PLAIN + 'compare = { kind = "change", bins = 1 }\n',
    "composite": (
        COMPOSITE.replace('"r"\n', '"r"\njoin = "any"\nfor = "5m"\n', 1)
        + 'summary = "{{ metric }} {{ value }}"\n'
    ),
    "composite with range": (
        TWO_CONDITIONS + '{ metric = "b", op = "outside", range = [0, 1] }]\n'
    ),
    "no_data": PLAIN + 'no_data = { after = "15m", action = "keep_last" }\n',
    "flapping": PLAIN + "flapping = { history = 11, low = 0.2, high = 0.6 }\n",
    "caps": PLAIN + 'daily_cap = 5\ndaily_cap_period = "rolling_24h"\nwindow_cap = 2\n',
    "internal channels": (
        '[daemon]\nmax_series = 500\n[alerts]\ninternal_channels = ["log"]\n'
        '[[channels]]\nname = "log"\ntype = "log"\n' + PLAIN + "max_series = 50\n"
    ),
}


@pytest.mark.parametrize("text", GOOD_RULES.values(), ids=GOOD_RULES.keys())
def test_rules_with_the_engines_keys_load(text):
    assert config.parse(text, "good.toml").rules[0].name == "r"


def test_the_engines_keys_load_as_written():
    text = "\n".join(
        (
            GOOD_RULES["two levels"],
            GOOD_RULES["tumbling hourly with delay"].replace('"r"', '"hourly"'),
            GOOD_RULES["baseline"].replace('"r"', '"baseline"'),
            GOOD_RULES["composite"].replace('"r"', '"both"'),
            PLAIN.replace('"r"', '"silent"') + 'no_data = { after = "15m" }\n',
            PLAIN.replace('"r"', '"flappy"') + "flapping = {}\n",
        )
    )

    levels, hourly, baseline, both, silent, flappy = config.parse(text).rules

    assert levels.warning == LevelConfig(threshold=0.2, recover=0.15)
    assert levels.critical == LevelConfig(threshold=0.5)
    assert (hourly.tumbling, hourly.window, hourly.delay) == (True, 3600, 600)
    assert baseline.compare == config.CompareConfig(
        kind="baseline", ago=7200, min_history=24
    )
    assert (both.join, [c.metric for c in both.conditions]) == ("any", ["a", "b"])
    assert both.conditions[1] == config.ConditionConfig(metric="b", op="<", threshold=2)
    assert silent.no_data == config.NoDataConfig(after=900, action="alert")
    assert flappy.flapping == config.FlappingConfig(history=21, low=0.25, high=0.5)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (
            RuleConfig(name="r", threshold=1, recover=0.5, severity="high"),
            [("high", LevelConfig(threshold=1, recover=0.5))],
        ),
        (
            RuleConfig(name="r", op="inside", range=[0, 1]),
            [("medium", LevelConfig(range=[0, 1]))],
        ),
        (
            RuleConfig(
                name="r",
                severity="low",
                critical=LevelConfig(threshold=2),
                warning=LevelConfig(threshold=1),
            ),
            [
                ("warning", LevelConfig(threshold=1)),
                ("critical", LevelConfig(threshold=2)),
            ],
        ),
        (
            RuleConfig(name="r", critical=LevelConfig(threshold=2)),
            [("critical", LevelConfig(threshold=2))],
        ),
        (
            RuleConfig(name="r", warning=LevelConfig(threshold=1)),
            [("warning", LevelConfig(threshold=1))],
        ),
    ],
)
def test_levels_are_lowest_first_with_the_rule_severity_for_a_plain_rule(
    rule, expected
):
    assert rule.levels == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (COMPOSITE + 'channels = ["log"]\n', []),
        (
            ONE_CONDITION + 'channels = ["log"]\n',
            [
                ConfigWarning(
                    "rules[0].conditions",
                    "one condition: a plain rule with its metric, window and"
                    " threshold says the same and can have levels and compare",
                )
            ],
        ),
        (
            ONE_CONDITION,
            [
                ConfigWarning(
                    "rules[0].channels",
                    "no channels: alerts of rule 'r' are recorded but nobody"
                    " is notified",
                ),
                ConfigWarning(
                    "rules[0].conditions",
                    "one condition: a plain rule with its metric, window and"
                    " threshold says the same and can have levels and compare",
                ),
            ],
        ),
    ],
)
def test_a_composite_of_one_condition_is_a_warning(text, expected):
    channel = '[[channels]]\nname = "log"\ntype = "log"\n'

    assert config.parse(channel + text, "good.toml").warnings() == expected


@given(seconds=st.integers(min_value=1, max_value=30 * 86400))
def test_a_tumbling_window_loads_exactly_when_it_tiles_utc_days(seconds):
    text = PLAIN + f'window = "{seconds}s"\ntumbling = true\n'
    tiles = 86400 % seconds == 0 or seconds % 86400 == 0

    try:
        config.parse(text, "t.toml")
    except ConfigError as error:
        assert not tiles, str(error)
    else:
        assert tiles


@given(
    op=st.sampled_from([">", ">=", "<", "<="]),
    warning=st.integers(min_value=-5, max_value=5),
    critical=st.integers(min_value=-5, max_value=5),
)
def test_two_levels_load_exactly_when_critical_is_at_least_as_strict(
    op, warning, critical
):
    text = (
        RULE + f'op = "{op}"\nwarning = {{ threshold = {warning} }}\n'
        f"critical = {{ threshold = {critical} }}\n"
    )
    stricter = critical >= warning if op.startswith(">") else critical <= warning

    try:
        config.parse(text, "t.toml")
    except ConfigError as error:
        assert not stricter
        assert error.key == "rules[0].critical.threshold"
    else:
        assert stricter


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            PLAIN + 'no_data = { after = "1m", action = "page" }\n',
            "rules[0].no_data.action: Invalid enum value 'page'; expected one of"
            " 'alert', 'ignore', 'keep_last', 'resolve'",
        ),
        (
            TWO_CONDITIONS + '{ metric = "b", aggregation = "p42", threshold = 2 }]\n',
            "rules[0].conditions[1].aggregation: Invalid enum value 'p42'; expected"
            " one of 'avg', 'count', 'delta', 'last', 'max', 'min', 'p50', 'p90',"
            " 'p95', 'p99', 'rate', 'stddev', 'sum'",
        ),
        (
            RULE + 'threshold = "high"\n',
            "rules[0].threshold: Expected `float`, got `str`",
        ),
    ],
)
def test_a_value_of_the_wrong_kind_says_what_the_key_takes(text, expected):
    assert refusal(text) == f"bad.toml: {expected}"
