"""Routing, mute windows, inhibition, escalation and dedup keys: what loads,
and the exact error for what does not."""

import pytest

from tocsin import config
from tocsin.errors import ConfigError
from tocsin.schema import ConfigWarning

CHANNELS = (
    '[[channels]]\nname = "pager"\ntype = "log"\n'
    '[[channels]]\nname = "slack"\ntype = "log"\n'
)
WINDOW = '[[mute_windows]]\nname = "nights"\n'
POLICY = '[[escalations]]\nname = "oncall"\nsteps = [{ channels = ["pager"] }]\n'
ROUTE = "[[routing.routes]]\n"
RULE = '[[rules]]\nname = "r"\nmetric = "m"\nthreshold = 1\n'

#: Everything these sections can say, in one file.
GOOD = (
    CHANNELS
    + WINDOW
    + 'location = "Europe/Paris"\n'
    + 'times = [{ start = "00:00", end = "07:00" },'
    + ' { start = "22:00", end = "24:00" }]\n'
    + 'weekdays = ["monday:friday", "sunday"]\n'
    + 'days_of_month = ["1:7", "-1", "1:-1", "-7:-1"]\n'
    + 'months = ["january:march", "12", "July"]\n'
    + 'years = ["2026", "2027:2030"]\n'
    + '[[mute_windows]]\nname = "weekend"\nweekdays = ["saturday:sunday"]\n'
    + POLICY
    + '[[escalations]]\nname = "slow"\n'
    + 'steps = [{ channels = ["slack"] }, { wait = "15m", channels = ["pager"] }]\n'
    + RULE
    + 'escalation = "slow"\n'
    + "[[inhibit]]\nsource = ['severity=\"critical\"']\n"
    + 'target = [\'severity="warning"\']\nequal = ["rule"]\n'
    + '[dedup]\nkeys = ["rule"]\nmax_per_window = 3\nwindow = "10m"\n'
    + '[routing]\nchannels = ["slack"]\nname = "top"\n'
    + ROUTE
    + 'name = "ml"\nmatchers = [\'team="ml"\', \'env!~"dev|test"\']\n'
    + 'channels = ["pager"]\nmute_windows = ["nights"]\n'
    + 'active_windows = ["weekend"]\nescalation = "oncall"\ncontinue = true\n'
    + "[[routing.routes.routes]]\nmatchers = ['model=~\"fraud-.*\"']\n"
    + 'group_by = ["..."]\n'
)


def refusal(text: str) -> str:
    with pytest.raises(ConfigError) as raised:
        config.parse(text, "bad.toml")

    return str(raised.value)


def test_every_key_of_these_sections_loads():
    loaded = config.parse(GOOD, "good.toml")

    assert loaded.routing.routes[0].continue_ is True
    assert loaded.mute_windows[0].location == "Europe/Paris"
    assert loaded.warnings() == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Matchers.
        (
            ROUTE + "matchers = ['team=\"ml\"', 'team']\n",
            "routing.routes[0].matchers[1]: invalid matcher 'team': expected"
            ' name="value", name!="value", name=~"regex" or name!~"regex"',
        ),
        (
            ROUTE + "matchers = ['team=ml']\n",
            "routing.routes[0].matchers[0]: invalid matcher 'team=ml': the value"
            " must be in double quotes",
        ),
        (
            ROUTE + "[[routing.routes.routes]]\nmatchers = ['m=~\"(\"']\n",
            "routing.routes[0].routes[0].matchers[0]: invalid regex in matcher"
            " 'm=~\"(\"': missing ), unterminated subpattern at position 0",
        ),
        (
            '[[inhibit]]\nsource = [\'a="1"\']\ntarget = ["b"]\n',
            "inhibit[0].target[0]: invalid matcher 'b': expected name=\"value\","
            ' name!="value", name=~"regex" or name!~"regex"',
        ),
        (
            "[[inhibit]]\nsource = []\ntarget = ['a=\"1\"']\n",
            "inhibit[0].source: needs at least one matcher: none would match"
            " every alert",
        ),
        # The root.
        (
            "[routing]\nmatchers = ['a=\"1\"']\n",
            "routing.matchers: the root route takes every alert and has no matchers",
        ),
        (
            WINDOW + '[routing]\nmute_windows = ["nights"]\n',
            "routing.mute_windows: the root route cannot be muted: give the windows"
            " to a route below it",
        ),
        (
            WINDOW + '[routing]\nactive_windows = ["nights"]\n',
            "routing.active_windows: the root route cannot be muted: give the"
            " windows to a route below it",
        ),
        # References.
        (
            CHANNELS + '[routing]\nchannels = ["pager", "sms"]\n',
            "routing.channels[1]: no channel named 'sms'",
        ),
        (
            CHANNELS + ROUTE + 'channels = ["sms"]\n',
            "routing.routes[0].channels[0]: no channel named 'sms'",
        ),
        (
            ROUTE + 'mute_windows = ["nights"]\n',
            "routing.routes[0].mute_windows[0]: no mute window named 'nights'",
        ),
        (
            WINDOW + ROUTE + 'active_windows = ["nights", "days"]\n',
            "routing.routes[0].active_windows[1]: no mute window named 'days'",
        ),
        (
            ROUTE + 'escalation = "oncall"\n',
            "routing.routes[0].escalation: no escalation named 'oncall'",
        ),
        (
            RULE + 'escalation = "oncall"\n',
            "rules[0].escalation: no escalation named 'oncall'",
        ),
        (
            '[[escalations]]\nname = "e"\nsteps = [{ channels = ["pager"] }]\n',
            "escalations[0].steps[0].channels[0]: no channel named 'pager'",
        ),
        # Names.
        (
            WINDOW + WINDOW,
            "mute_windows[1].name: duplicate mute window name 'nights'",
        ),
        (
            CHANNELS + POLICY + POLICY,
            "escalations[1].name: duplicate escalation name 'oncall'",
        ),
        (
            ROUTE + 'name = "ml"\n' + ROUTE + 'name = "ml"\n',
            "routing.routes[1].name: duplicate route name 'ml' (also"
            " routing.routes[0])",
        ),
        (
            ROUTE + 'name = "root"\n',
            "routing.routes[0].name: duplicate route name 'root' (also routing)",
        ),
        # An unnamed route's id is its position: a name may not take it.
        (
            ROUTE + ROUTE + 'name = "root/0"\n',
            "routing.routes[1].name: a route name cannot hold '/', which separates"
            " the ids of unnamed routes",
        ),
        (
            ROUTE + 'group_by = ["...", "team"]\n',
            "routing.routes[0].group_by: '...' groups by every label and cannot be"
            " listed with others",
        ),
        # Escalations.
        (
            '[[escalations]]\nname = "e"\nsteps = []\n',
            "escalations[0].steps: an escalation needs at least one step",
        ),
        # Dedup.
        (
            '[dedup]\nmax_per_window = 3\nwindow = "0"\n',
            "dedup.window: must be longer than 0s when max_per_window is set",
        ),
        # Mute windows.
        (
            WINDOW + 'location = "Mars/Olympus"\n',
            "mute_windows[0].location: unknown time zone 'Mars/Olympus' (expected"
            " an IANA name like Europe/Paris or UTC)",
        ),
        (
            WINDOW + 'location = "../etc/passwd"\n',
            "mute_windows[0].location: unknown time zone '../etc/passwd' (expected"
            " an IANA name like Europe/Paris or UTC)",
        ),
        (
            WINDOW + 'times = [{ start = "9:00", end = "17:00" }]\n',
            "mute_windows[0].times[0].start: expected a time as HH:MM, got '9:00'",
        ),
        (
            WINDOW + 'times = [{ start = "09:00", end = "24:30" }]\n',
            "mute_windows[0].times[0].end: '24:30' is not a time of day"
            " (00:00 to 24:00)",
        ),
        (
            WINDOW + 'times = [{ start = "09:60", end = "10:00" }]\n',
            "mute_windows[0].times[0].start: '09:60' is not a time of day"
            " (00:00 to 24:00)",
        ),
        (
            WINDOW + 'times = [{ start = "22:00", end = "06:00" }]\n',
            "mute_windows[0].times[0]: start 22:00 is not before end 06:00 (a range"
            " across midnight is two ranges: ...-24:00 and 00:00-...)",
        ),
        (
            WINDOW + 'times = [{ start = "09:00", end = "09:00" }]\n',
            "mute_windows[0].times[0]: start 09:00 is not before end 09:00 (a range"
            " across midnight is two ranges: ...-24:00 and 00:00-...)",
        ),
        (
            WINDOW + 'times = [{ start = "24:00", end = "24:00" }]\n',
            "mute_windows[0].times[0]: a range cannot start at 24:00; start it at"
            " 00:00",
        ),
        (
            WINDOW + 'weekdays = ["monday", "funday"]\n',
            "mute_windows[0].weekdays[1]: unknown weekday 'funday' (known: monday,"
            " tuesday, wednesday, thursday, friday, saturday, sunday)",
        ),
        (
            WINDOW + 'weekdays = ["monday:tuesday:friday"]\n',
            "mute_windows[0].weekdays[0]: expected a weekday or a range"
            " weekday:weekday, got 'monday:tuesday:friday'",
        ),
        (
            WINDOW + 'months = ["13"]\n',
            "mute_windows[0].months[0]: unknown month '13' (known: january,"
            " february, march, april, may, june, july, august, september, october,"
            " november, december)",
        ),
        (
            WINDOW + 'months = ["november:february"]\n',
            "mute_windows[0].months[0]: month range 'november:february' runs"
            " backwards; write a range across the new year as two ranges",
        ),
        (
            WINDOW + 'days_of_month = ["0"]\n',
            "mute_windows[0].days_of_month[0]: day 0 is not 1 to 31 or -31 to -1"
            " (from the end)",
        ),
        (
            WINDOW + 'days_of_month = ["1:32"]\n',
            "mute_windows[0].days_of_month[0]: day 32 is not 1 to 31 or -31 to -1"
            " (from the end)",
        ),
        (
            WINDOW + 'days_of_month = ["-32"]\n',
            "mute_windows[0].days_of_month[0]: day -32 is not 1 to 31 or -31 to -1"
            " (from the end)",
        ),
        (
            WINDOW + 'days_of_month = ["15:1"]\n',
            "mute_windows[0].days_of_month[0]: day range '15:1' runs backwards",
        ),
        (
            WINDOW + 'days_of_month = ["-1:-7"]\n',
            "mute_windows[0].days_of_month[0]: day range '-1:-7' runs backwards",
        ),
        (
            WINDOW + 'days_of_month = ["-7:3"]\n',
            "mute_windows[0].days_of_month[0]: day range '-7:3' starts from the"
            " end of the month and ends from its start",
        ),
        (
            WINDOW + 'days_of_month = ["first"]\n',
            "mute_windows[0].days_of_month[0]: expected a day of the month or a"
            " range of them (a:b), got 'first'",
        ),
        (
            WINDOW + 'years = ["2027:2026"]\n',
            "mute_windows[0].years[0]: year range '2027:2026' runs backwards",
        ),
        (
            WINDOW + 'years = ["0"]\n',
            "mute_windows[0].years[0]: year 0 is not 1 to 9999",
        ),
    ],
)
def test_a_bad_routing_config_is_one_line_naming_file_and_key(text, expected):
    assert refusal(text) == f"bad.toml: {expected}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ('[routing]\ngroup_interval = "5m"\nrepeat_interval = "1h"\n', []),
        # Without a group interval, every change is sent at once.
        ('[routing]\nrepeat_interval = "1m"\n', []),
        (
            '[routing]\ngroup_interval = "5m"\nrepeat_interval = "2m"\n',
            [
                ConfigWarning(
                    "routing.repeat_interval",
                    "shorter than group_interval (5m): repeats are sent every 5m",
                )
            ],
        ),
        # Inherited values count; the warning names the route that sets one.
        (
            '[routing]\nrepeat_interval = "10m"\n'
            + ROUTE
            + "[[routing.routes.routes]]\n"
            + 'group_interval = "15m"\n'
            + "[[routing.routes.routes.routes]]\n",
            [
                ConfigWarning(
                    "routing.routes[0].routes[0].repeat_interval",
                    "shorter than group_interval (15m): repeats are sent every 15m",
                )
            ],
        ),
    ],
)
def test_warnings_name_routes_whose_repeats_come_later(text, expected):
    assert config.parse(text, "good.toml").warnings() == expected


@pytest.mark.parametrize(
    ("text", "warned"),
    [
        (RULE, True),
        (CHANNELS + RULE + '[routing]\nchannels = ["slack"]\n', False),
        (
            CHANNELS + RULE + ROUTE + 'matchers = [\'a="1"\']\nchannels = ["pager"]\n',
            False,
        ),
    ],
)
def test_a_rule_without_channels_is_only_warned_of_when_no_route_has_any(text, warned):
    keys = [warning.key for warning in config.parse(text, "good.toml").warnings()]

    assert ("rules[0].channels" in keys) is warned
