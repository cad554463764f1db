"""The routing tree: which routes an alert reaches, and what each asks of it."""

import pytest

from tocsin import config
from tocsin.channels.routing import RouteSettings, RoutingTree, with_rule_channels

CHANNELS = "".join(
    f'[[channels]]\nname = "{name}"\ntype = "log"\n'
    for name in ("default", "pager", "slack", "ml", "ops", "audit")
)

#: Severity decides: critical pages, warnings go to chat, the rest to default.
BY_SEVERITY = """
[routing]
channels = ["default"]
[[routing.routes]]
matchers = ['severity="critical"']
channels = ["pager"]
[[routing.routes]]
matchers = ['severity=~"high|warning"']
channels = ["slack"]
"""

#: The team decides, and the ML team splits again by environment.
BY_TEAM = """
[routing]
channels = ["default"]
group_by = ["rule"]
[[routing.routes]]
name = "ml"
matchers = ['team="ml"']
channels = ["ml"]
group_wait = "30s"
[[routing.routes.routes]]
matchers = ['env!="prod"']
channels = ["slack"]
repeat_interval = "1d"
[[routing.routes]]
matchers = ['team="ops"']
channels = ["ops"]
"""

#: An audit route that sees everything and lets routing go on.
CONTINUE = """
[routing]
channels = ["default"]
[[routing.routes]]
name = "audit"
matchers = ['rule=~".+"']
channels = ["audit"]
continue = true
[[routing.routes]]
matchers = ['severity="critical"']
channels = ["pager"]
continue = true
[[routing.routes]]
matchers = ['team="ml"']
channels = ["ml"]
[[routing.routes]]
matchers = ['team=~"ml|ops"']
channels = ["ops"]
"""


def tree(text: str) -> RoutingTree:
    return RoutingTree(config.parse(CHANNELS + text, "routes.toml").routing)


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        (BY_SEVERITY, {"severity": "critical"}, [("root/0", ("pager",))]),
        (BY_SEVERITY, {"severity": "high"}, [("root/1", ("slack",))]),
        (BY_SEVERITY, {"severity": "warning"}, [("root/1", ("slack",))]),
        # No child matches: the root takes the alert.
        (BY_SEVERITY, {"severity": "info"}, [("root", ("default",))]),
        (BY_SEVERITY, {}, [("root", ("default",))]),
        (BY_TEAM, {"team": "ml", "env": "prod"}, [("ml", ("ml",))]),
        (BY_TEAM, {"team": "ml", "env": "dev"}, [("ml/0", ("slack",))]),
        (BY_TEAM, {"team": "ml"}, [("ml/0", ("slack",))]),
        (BY_TEAM, {"team": "ops", "env": "dev"}, [("root/1", ("ops",))]),
        (BY_TEAM, {"team": "data"}, [("root", ("default",))]),
        (
            CONTINUE,
            {"rule": "r", "severity": "critical", "team": "ml"},
            [("audit", ("audit",)), ("root/1", ("pager",)), ("root/2", ("ml",))],
        ),
        # The first match without continue ends the search among siblings.
        (
            CONTINUE,
            {"rule": "r", "team": "ops"},
            [("audit", ("audit",)), ("root/3", ("ops",))],
        ),
        # Only routes with continue matched: they take the alert, not the root.
        (CONTINUE, {"rule": "r", "team": "data"}, [("audit", ("audit",))]),
        (CONTINUE, {}, [("root", ("default",))]),
    ],
)
def test_which_routes_an_alert_reaches(text, labels, expected):
    reached = tree(text).match(labels)

    assert [(route.id, route.channels) for route in reached] == expected


def test_unset_keys_are_inherited_and_windows_are_not():
    text = """
[[mute_windows]]
name = "nights"
times = [{ start = "00:00", end = "06:00" }]
[[escalations]]
name = "oncall"
steps = [{ channels = ["pager"] }]
[routing]
channels = ["default"]
group_by = ["team"]
group_wait = "10s"
group_interval = "1m"
repeat_interval = "2h"
send_resolved_silenced = false
digest = "1h"
escalation = "oncall"
[[routing.routes]]
matchers = ['team="ml"']
group_wait = "30s"
mute_windows = ["nights"]
active_windows = ["nights"]
[[routing.routes.routes]]
matchers = ['env="prod"']
channels = ["ml"]
"""
    reached = tree(text).match({"team": "ml", "env": "prod"})

    assert reached == [
        RouteSettings(
            id="root/0/0",
            channels=("ml",),
            group_by=("team",),
            group_wait=30.0,
            group_interval=60.0,
            repeat_interval=7200.0,
            mute_windows=(),
            active_windows=(),
            send_resolved_silenced=False,
            digest=3600.0,
            escalation="oncall",
        )
    ]
    parent = tree(text).route("root/0")
    assert parent is not None
    assert (parent.mute_windows, parent.active_windows) == (("nights",), ("nights",))


def test_the_root_has_tocsins_defaults():
    (root,) = tree("").match({"team": "ml"})

    assert root == RouteSettings(
        id="root",
        channels=(),
        group_by=("...",),
        group_wait=0.0,
        group_interval=0.0,
        repeat_interval=4 * 3600.0,
    )


def test_explain_gives_the_path_matchers_and_group_labels():
    (found,) = tree(BY_TEAM).explain({"team": "ml", "env": "dev", "rule": "lat"})

    assert found.id == "ml/0"
    assert found.path == ("root", "ml", "ml/0")
    assert found.matchers == ('env!="prod"',)
    assert found.group_labels == {"rule": "lat"}
    assert found.route.repeat_interval == 86400.0


def test_describe_gives_the_whole_tree_with_inheritance_applied():
    described = tree(BY_TEAM).describe()

    assert [route["id"] for route in described["routes"]] == ["ml", "root/1"]
    child = described["routes"][0]["routes"][0]
    assert child == {
        "id": "ml/0",
        "channels": ["slack"],
        "group_by": ["rule"],
        "group_wait": 30.0,
        "group_interval": 0.0,
        "repeat_interval": 86400.0,
        "mute_windows": [],
        "active_windows": [],
        "send_resolved_silenced": True,
        "digest": 0.0,
        "escalation": None,
        "matchers": ['env!="prod"'],
        "continue": False,
        "routes": [],
    }


def test_route_ids_are_stable_and_every_route_is_listed():
    first, second = tree(BY_TEAM), tree(BY_TEAM)

    assert list(first.routes()) == list(second.routes())
    assert [route.id for route in first.routes()] == ["root", "ml", "ml/0", "root/1"]
    assert first.route("nope") is None


@pytest.mark.parametrize(
    ("channels", "expected"),
    [
        ((), [("pager",), ("ml",)]),
        (("ops",), [("ops",), ("ml",)]),
    ],
)
def test_a_rules_channels_replace_those_of_its_first_route_only(channels, expected):
    reached = tree(CONTINUE).match({"rule": "r", "severity": "critical", "team": "ml"})

    changed = with_rule_channels(reached[1:], channels)

    assert [route.channels for route in changed] == expected
    assert changed[0].group_by == reached[1].group_by


def test_match_and_explain_apply_a_rules_channels_alike():
    labels = {"rule": "r", "severity": "critical"}
    chosen = tree(CONTINUE)

    matched = chosen.match(labels, rule_channels=["slack"])
    explained = chosen.explain(labels, rule_channels=["slack"])

    assert [route.channels for route in matched] == [("slack",), ("pager",)]
    assert [found.route for found in explained] == matched
