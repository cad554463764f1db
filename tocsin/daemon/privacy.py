"""What people type through the API, the CLI and inbound hooks, made safe to
keep: comments, actor names, silences' matchers and rules added at run time.

Labels arrive already redacted by the ingest router, so a matcher or a rule's
``match`` is compared with redacted values. Its value is redacted the same way
for that reason too: ``user_email="bob@example.com"`` becomes
``user_email="[REDACTED]"``, which matches exactly the alerts whose label was
redacted, where the original could match none.
"""

from __future__ import annotations

import re

import msgspec

from tocsin.channels.matchers import parse_matcher
from tocsin.config import RuleConfig
from tocsin.redaction import Redactor


def clean_matcher(redactor: Redactor, text: str) -> str:
    """Return a matcher with its value redacted; unchanged if nothing was.

    A regex matcher's redacted part is the marker escaped, so that it still
    matches the marker itself.

    :raises ValueError: if ``text`` is not a matcher.
    """
    matcher = parse_matcher(text)
    value = redactor.value(matcher.name, matcher.value)
    if value == matcher.value:
        return text
    if matcher.op in ("=~", "!~"):
        value = re.escape(redactor.marker).join(value.split(redactor.marker))
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')

    return f'{matcher.name}{matcher.op}"{escaped}"'


def clean_rule(redactor: Redactor, rule: RuleConfig) -> RuleConfig:
    """Return a rule added at run time with its labels, metadata, matched
    values and texts redacted."""
    conditions = [
        msgspec.structs.replace(condition, match=redactor.labels(condition.match))
        for condition in rule.conditions
    ]

    return msgspec.structs.replace(
        rule,
        match=redactor.labels(rule.match),
        conditions=conditions,
        labels=redactor.labels(rule.labels),
        metadata=redactor.labels(rule.metadata),
        summary=redactor.text(rule.summary),
        description=redactor.text(rule.description),
    )
