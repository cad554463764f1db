"""The ingest router: parsed lines reach rules and the export with their labels."""

from __future__ import annotations

from tests.daemon.conftest import NOW
from tocsin.channels.datadog_buffer import ExportBuffer
from tocsin.clock import ManualClock
from tocsin.config import Duration, RuleConfig
from tocsin.daemon.dogstatsd import DogStatsDParser
from tocsin.daemon.ingest import IngestRouter, IngestStats, tag_labels
from tocsin.redaction import Redactor
from tocsin.rules.engine import RuleEngine


def pipeline(*rules: RuleConfig, buffer: ExportBuffer | None = None, redactor=None):
    """Return a parser feeding a router over ``rules``, and the decisions list."""
    decisions = []
    router = IngestRouter(RuleEngine(list(rules)), buffer, decisions.extend, redactor)
    parser = DogStatsDParser(router, IngestStats(), ManualClock(NOW))

    def feed(datagram: bytes) -> None:
        parser.feed(datagram)
        router.evaluate(NOW)

    return feed, decisions


def rule(**fields) -> RuleConfig:
    settings = {"name": "r", "window": Duration(60.0), "op": ">", "threshold": 0.0}
    settings.update(fields)
    return RuleConfig(**settings)


def test_tag_labels_split_on_the_first_colon_and_keep_bare_tags():
    tags = ("svc_addr:10.0.0.1:443", "route:/v1/a:b", "canary", "env:")
    assert tag_labels(tags) == {
        "svc_addr": "10.0.0.1:443",
        "route": "/v1/a:b",
        "canary": "",
        "env": "",
    }


def test_F01_tag_values_with_colons_reach_a_rule_whole():
    feed, decisions = pipeline(
        rule(metric="model.req", aggregation="sum", group_by=["svc_addr", "route"])
    )

    feed(b"model.req:42|c|#svc_addr:10.0.0.1:443,route:/v1/a:b")

    (decision,) = decisions
    assert decision.labels == {"svc_addr": "10.0.0.1:443", "route": "/v1/a:b"}
    assert decision.value == 42.0


def test_F03_a_rule_reads_signed_gauges_as_absolute_values():
    feed, decisions = pipeline(
        rule(metric="temp", aggregation="last", threshold=4.0),
        buffer=ExportBuffer(),
    )

    for _ in range(3):
        feed(b"temp:-1|g")
    assert decisions == []
    feed(b"temp:+5|g")

    (decision,) = decisions
    assert decision.value == 5.0


def test_F03_the_export_reads_signed_gauges_as_absolute_values():
    buffer = ExportBuffer()
    feed, _ = pipeline(buffer=buffer)

    for line in (b"temp:-1|g", b"temp:-1|g", b"temp:-1|g"):
        feed(line)
    (series,) = buffer.drain(NOW, 10.0)
    assert series["points"][0]["value"] == -1.0
    feed(b"temp:+5|g")
    (series,) = buffer.drain(NOW + 10.0, 10.0)
    assert series["points"][0]["value"] == 5.0


def test_sampled_counters_reach_rules_scaled_by_their_rate():
    feed, decisions = pipeline(
        rule(metric="errors", aggregation="sum", threshold=9.0),
        buffer=ExportBuffer(),
    )

    feed(b"errors:1|c|@0.1")

    (decision,) = decisions
    assert decision.value == 10.0


def test_personal_data_in_tags_is_redacted_before_rules_and_the_export_see_it():
    buffer = ExportBuffer()
    feed, decisions = pipeline(
        rule(metric="req", aggregation="sum", group_by=["user_email", "who", "model"]),
        buffer=buffer,
        redactor=Redactor(["user_email"]),
    )

    feed(b"req:1|c|#user_email:anyone,who:bob@example.com,model:fraud-v2")

    (decision,) = decisions
    assert decision.labels == {
        "user_email": "[REDACTED]",
        "who": "[REDACTED]",
        "model": "fraud-v2",
    }
    (series,) = buffer.drain(NOW, 10.0)
    # The export writes the marker as Datadog's tag rules allow.
    assert sorted(series["tags"]) == [
        "model:fraud-v2",
        "user_email:_REDACTED_",
        "who:_REDACTED_",
    ]
