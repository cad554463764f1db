"""Schema version 10: the audit log.

Kept apart from :mod:`tocsin.state.migrations`, which imports it into its list,
so that the list stays readable as one file.

A delivery attempt may keep the body it sent (``audit.record_payloads``),
already cleared of the channel's secrets; headers are never kept. Silences
and config changes, which leave no other trace, are written to
``audit_events``. The indexes serve the audit's queries, newest first by time,
and its pruning: the finished outbox rows of an alert, and the transitions no
outbox row refers to.
"""

from __future__ import annotations

V10 = """
ALTER TABLE delivery_attempts ADD COLUMN payload TEXT;
CREATE INDEX delivery_attempts_at ON delivery_attempts (at, id);
CREATE INDEX transitions_at ON transitions (at, id);
CREATE INDEX outbox_transition ON outbox (transition_id);

CREATE TABLE audit_events (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('silence', 'config')),
    -- What happened, in a word: created, expired, reloaded, reload_refused,
    -- rule_added, rule_removed, integration_added, integration_removed,
    -- settings_changed.
    action TEXT NOT NULL,
    -- Who: an API user (api:alice), cli, sighup, ...
    actor TEXT NOT NULL,
    -- What it is about: a silence's id, a rule's or an integration's name.
    subject TEXT NOT NULL DEFAULT '',
    -- A JSON object; secrets are masked before they get here.
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_at ON audit_events (at, id);
CREATE INDEX audit_events_kind ON audit_events (kind, at, id);
"""
