"""What people type, made safe to keep: matchers and rules added at run time."""

import msgspec
import pytest

from tocsin.channels.matchers import parse_matcher
from tocsin.config import ConditionConfig, Config, Duration, RuleConfig
from tocsin.daemon.privacy import clean_matcher, clean_rule
from tocsin.daemon.reload import restart_sections
from tocsin.redaction import Redactor
from tocsin.schema import PrivacyConfig

REDACTOR = Redactor(["user_email"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('team="ml"', 'team="ml"'),
        ('team =~ "ml|ops"', 'team =~ "ml|ops"'),
        ('user_email="bob"', 'user_email="[REDACTED]"'),
        ('who!="bob@example.com"', 'who!="[REDACTED]"'),
        ('user_email=~"bob.*"', 'user_email=~"\\\\[REDACTED\\\\]"'),
    ],
)
def test_a_matcher_value_is_redacted_as_ingest_redacts_labels(text, expected):
    assert clean_matcher(REDACTOR, text) == expected


def test_a_redacted_matcher_matches_the_redacted_label():
    labels = {"user_email": "[REDACTED]", "who": "[REDACTED]"}

    for text in ('user_email="bob"', 'user_email=~"b.*"', 'who="x@example.com"'):
        assert parse_matcher(clean_matcher(REDACTOR, text)).matches(labels)


def test_a_rule_added_at_run_time_keeps_no_personal_data():
    rule = RuleConfig(
        name="r",
        metric="m",
        threshold=1.0,
        window=Duration(60.0),
        match={"user_email": "bob", "model": "fraud-v2"},
        labels={"owner": "ann@example.com", "team": "ml"},
        metadata={"User_Email": "bob", "card": "4111 1111 1111 1111"},
        summary="call 555-123-4567",
        description="{{ labels.model }} for 123-45-6789",
        conditions=[ConditionConfig(metric="n", match={"user_email": "bob"})],
    )

    clean = clean_rule(REDACTOR, rule)

    assert clean.match == {"user_email": "[REDACTED]", "model": "fraud-v2"}
    assert clean.labels == {"owner": "[REDACTED]", "team": "ml"}
    assert clean.metadata == {"User_Email": "[REDACTED]", "card": "[REDACTED]"}
    assert clean.summary == "call [REDACTED]"
    assert clean.description == "{{ labels.model }} for [REDACTED]"
    assert clean.conditions[0].match == {"user_email": "[REDACTED]"}


def test_a_changed_privacy_table_needs_a_restart():
    running = Config()
    changed = msgspec.structs.replace(running, privacy=PrivacyConfig(marker="***"))

    assert restart_sections(running, changed) == ["privacy"]
