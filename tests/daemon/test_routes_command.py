"""``tocsin routes test``: where an alert with given labels would be sent."""

import orjson
import pytest

from tocsin.daemon import cli

CONFIG = """
[[channels]]
name = "pager"
type = "log"
[[channels]]
name = "slack"
type = "log"
[[channels]]
name = "webhook"
type = "webhook"
url_env = "TOCSIN_TEST_UNSET_URL"
[[mute_windows]]
name = "nights"
times = [{ start = "00:00", end = "06:00" }]
[[escalations]]
name = "oncall"
steps = [{ channels = ["pager"] }]
[[rules]]
name = "latency"
metric = "m"
threshold = 1
severity = "critical"
labels = { team = "ml" }
channels = ["slack"]
[[rules]]
name = "drift"
metric = "m"
threshold = 1
[routing]
group_by = ["rule"]
[[routing.routes]]
name = "ml"
matchers = ['team="ml"']
channels = ["pager", "webhook"]
group_wait = "30s"
mute_windows = ["nights"]
escalation = "oncall"
continue = true
[[routing.routes.routes]]
matchers = ['env="dev"']
channels = ["slack"]
repeat_interval = "1d"
[[routing.routes]]
matchers = ['severity="critical"']
channels = ["pager"]
"""


@pytest.fixture
def path(tmp_path):
    written = tmp_path / "tocsin.toml"
    written.write_text(CONFIG)

    return str(written)


def test_people_see_each_route_with_its_channels_group_and_timings(path, capsys):
    status = cli.main(["routes", "test", "-c", path, "team=ml", "rule=latency"])

    assert status == 0
    assert capsys.readouterr().out.splitlines() == [
        'labels: rule="latency", team="ml"',
        "route ml (path: root > ml)",
        "  channels: pager, webhook",
        '  group: {rule="latency"} (group_by: rule)',
        "  timings: group_wait 30s, group_interval 0s, repeat_interval 4h",
        "  mute windows: nights",
        "  escalation: oncall",
    ]


def test_json_lists_every_route_reached_and_the_channels(path, capsys):
    arguments = ["team=ml", "env=dev", "severity=critical"]

    status = cli.main(["routes", "test", "--json", "-c", path, *arguments])

    assert status == 0
    answer = orjson.loads(capsys.readouterr().out)
    assert answer["labels"] == {"team": "ml", "env": "dev", "severity": "critical"}
    assert [route["id"] for route in answer["routes"]] == ["ml/0", "root/1"]
    assert answer["routes"][0]["path"] == ["root", "ml", "ml/0"]
    assert answer["routes"][0]["repeat_interval"] == 86400.0
    assert answer["routes"][0]["group_wait"] == 30.0
    assert answer["routes"][0]["mute_windows"] == []
    assert answer["routes"][0]["group_labels"] == {"rule": ""}
    assert answer["channels"] == ["slack", "pager"]


@pytest.mark.parametrize(
    ("rule", "labels", "route_channels"),
    [
        # The rule's labels and severity apply; its channels replace the
        # first route's only.
        ("latency", [], [("ml", ["slack"]), ("root/1", ["pager"])]),
        ("latency", ["severity=low"], [("ml", ["slack"])]),
        # A rule without channels of its own keeps the routes' channels.
        ("drift", ["team=ml"], [("ml", ["pager", "webhook"])]),
    ],
)
def test_a_rule_brings_its_labels_and_channels(
    path, capsys, rule, labels, route_channels
):
    status = cli.main(["routes", "test", "--json", "-c", path, "--rule", rule, *labels])

    answer = orjson.loads(capsys.readouterr().out)
    assert status == 0
    assert [(r["id"], r["channels"]) for r in answer["routes"]] == route_channels
    assert answer["labels"]["rule"] == rule


def test_labels_that_reach_no_channel_exit_1(path, capsys):
    status = cli.main(["routes", "test", "-c", path, "team=data"])

    captured = capsys.readouterr()
    assert status == 1
    assert "route root (path: root)" in captured.out
    assert "  channels: (none)" in captured.out
    assert captured.err == "tocsin: these labels reach no channel\n"


@pytest.mark.parametrize(
    ("text", "arguments", "expected"),
    [
        (
            "[routing]\nmatchers = ['a=\"1\"']\n",
            [],
            "tocsin: config error: {path}: routing.matchers: the root route takes"
            " every alert and has no matchers\n",
        ),
        (CONFIG, ["--rule", "nope"], "tocsin: no rule named 'nope' in the config\n"),
        (CONFIG, ["team"], "tocsin: expected label=value, got 'team'\n"),
        (CONFIG, ["=ml"], "tocsin: expected label=value, got '=ml'\n"),
    ],
)
def test_a_bad_file_or_argument_exits_2(tmp_path, capsys, text, arguments, expected):
    path = tmp_path / "tocsin.toml"
    path.write_text(text)

    status = cli.main(["routes", "test", "-c", str(path), *arguments])

    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == ""
    assert captured.err == expected.format(path=path)
