"""Inhibition: which open alerts keep which others quiet."""

import pytest

from tocsin.channels.inhibition import Inhibitor
from tocsin.schema import InhibitConfig

#: A cluster outage quiets the model alerts of that cluster.
OUTAGE = InhibitConfig(
    source=['alertname="cluster_down"'],
    target=['alertname=~"model_.*"'],
    equal=["cluster"],
)
#: A critical alert quiets the warnings of the same rule and series.
SEVERITY = InhibitConfig(
    source=['severity="critical"'],
    target=['severity="warning"'],
    equal=["rule", "series"],
)
#: Both sides match the same alerts: no alert may quiet its twin.
SYMMETRIC = InhibitConfig(source=['team="ml"'], target=['team="ml"'], equal=["rule"])


def down(cluster: str = "eu") -> dict[str, str]:
    return {"alertname": "cluster_down", "cluster": cluster}


def model(cluster: str = "eu", name: str = "model_latency") -> dict[str, str]:
    return {"alertname": name, "cluster": cluster}


@pytest.mark.parametrize(
    ("rules", "target", "sources", "expected"),
    [
        ([OUTAGE], model(), [down()], True),
        ([OUTAGE], model(), [down("us")], False),
        ([OUTAGE], model(), [], False),
        ([OUTAGE], model(name="disk_full"), [down()], False),
        # A source must be open: what is passed in is what is open.
        ([OUTAGE], model(), [model("us"), down()], True),
        # A label neither has is equal on both, as empty.
        ([OUTAGE], {"alertname": "model_x"}, [{"alertname": "cluster_down"}], True),
        ([OUTAGE], {"alertname": "model_x"}, [down()], False),
        ([], model(), [down()], False),
        (
            [SEVERITY],
            {"severity": "warning", "rule": "lat", "series": "a"},
            [{"severity": "critical", "rule": "lat", "series": "a"}],
            True,
        ),
        (
            [SEVERITY],
            {"severity": "warning", "rule": "lat", "series": "a"},
            [{"severity": "critical", "rule": "lat", "series": "b"}],
            False,
        ),
        # Any rule may inhibit.
        ([SEVERITY, OUTAGE], model(), [down()], True),
        # An alert never quiets itself.
        (
            [SYMMETRIC],
            {"team": "ml", "rule": "a"},
            [{"team": "ml", "rule": "a"}],
            False,
        ),
        # Two alerts matching both sides cannot quiet each other.
        (
            [SYMMETRIC],
            {"team": "ml", "rule": "a", "series": "1"},
            [{"team": "ml", "rule": "a", "series": "2"}],
            False,
        ),
        # An alert matching both sides is quieted by a source that matches only
        # the source side.
        (
            [InhibitConfig(source=['tier=~"1|2"'], target=['tier=~"2|3"'])],
            {"tier": "2"},
            [{"tier": "1"}],
            True,
        ),
        (
            [InhibitConfig(source=['tier=~"1|2"'], target=['tier=~"2|3"'])],
            {"tier": "2", "x": "1"},
            [{"tier": "2", "x": "2"}],
            False,
        ),
        (
            [InhibitConfig(source=['tier=~"1|2"'], target=['tier=~"2|3"'])],
            {"tier": "3"},
            [{"tier": "2"}],
            True,
        ),
    ],
)
def test_which_alerts_are_inhibited(rules, target, sources, expected):
    inhibitor = Inhibitor(rules)

    assert inhibitor.inhibited(target, sources) is expected
    # Sources may come as any iterable, read once.
    assert inhibitor.inhibited(target, iter(sources)) is expected


def test_an_inhibitor_without_rules_is_false():
    assert not Inhibitor([])
    assert Inhibitor([OUTAGE])


def test_a_bad_matcher_is_refused_when_built():
    with pytest.raises(ValueError, match="invalid matcher"):
        Inhibitor([InhibitConfig(source=["team"], target=['a="b"'])])
