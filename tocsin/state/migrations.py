"""The schema of the state database, as an ordered list of migrations.

Migration ``n`` (1-based) turns a database at ``PRAGMA user_version = n - 1``
into one at ``n``. Each runs in its own transaction together with the version
bump, so a crash mid-migration leaves the previous version intact. Never edit a
migration that has shipped: append a new one.

SQLite changes a table's constraints only by copying it into a new table and
dropping the old one (https://www.sqlite.org/lang_altertable.html#otheralter),
which foreign keys forbid while they are enforced; migrations therefore run
with enforcement off, and every foreign key is checked before each commit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import aiosqlite

from tocsin.errors import StateError
from tocsin.state.audit_schema import V10 as _V10

_V1 = """
CREATE TABLE alerts (
    id INTEGER PRIMARY KEY,
    uid TEXT NOT NULL UNIQUE,
    rule TEXT NOT NULL,
    series TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('triggered', 'resolved', 'closed')),
    -- The AlertSpec as JSON, so an operator can read it with the sqlite3 shell.
    spec TEXT NOT NULL,
    value REAL,
    fired_at REAL NOT NULL,
    resolved_at REAL,
    closed_at REAL,
    updated_at REAL NOT NULL
);

-- At most one open alert per series: the guarantee that a firing series is
-- still the same alert after a crash, whatever the engine believes.
CREATE UNIQUE INDEX alerts_open_series ON alerts (rule, series)
    WHERE state NOT IN ('resolved', 'closed');
CREATE INDEX alerts_rule_fired ON alerts (rule, fired_at);
CREATE INDEX alerts_resolved ON alerts (resolved_at) WHERE state = 'resolved';

CREATE TABLE transitions (
    id INTEGER PRIMARY KEY,
    alert_id INTEGER NOT NULL REFERENCES alerts (id),
    from_state TEXT,
    to_state TEXT NOT NULL,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    comment TEXT NOT NULL DEFAULT ''
);
CREATE INDEX transitions_alert ON transitions (alert_id, id);

CREATE TABLE outbox (
    id INTEGER PRIMARY KEY,
    alert_id INTEGER NOT NULL REFERENCES alerts (id),
    transition_id INTEGER NOT NULL REFERENCES transitions (id),
    channel TEXT NOT NULL CHECK (channel <> ''),
    event TEXT NOT NULL CHECK (event IN ('trigger', 'resolve')),
    key TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    last_status INTEGER,
    created_at REAL NOT NULL,
    delivered_at REAL
);
CREATE INDEX outbox_due ON outbox (channel, next_attempt_at, id)
    WHERE state = 'pending';
CREATE INDEX outbox_alert ON outbox (alert_id, channel, id);

CREATE TABLE delivery_attempts (
    id INTEGER PRIMARY KEY,
    outbox_id INTEGER NOT NULL REFERENCES outbox (id),
    attempt INTEGER NOT NULL,
    at REAL NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('delivered', 'retry', 'dead')),
    status INTEGER,
    reason TEXT,
    error TEXT,
    duration_ms REAL NOT NULL,
    UNIQUE (outbox_id, attempt)
);
"""

# Each outbox row keeps the alert as it was at its transition, so that every
# attempt of one notification sends the same message: joining the alert's
# current row made a trigger retried after the resolve say "resolved" under the
# trigger's idempotency key. An alert's id, uid and spec never change after it
# fires; its state, value and resolved_at are what the row has to keep.
#
# Rows already queued are filled in from their transition: a trigger saw the
# alert firing with the value it fired on; a resolve saw it resolved, and
# resolving is the last change of value and resolved_at an alert ever gets.
_V2 = """
ALTER TABLE outbox ADD COLUMN alert_state TEXT
    CHECK (alert_state IN ('triggered', 'resolved'));
ALTER TABLE outbox ADD COLUMN alert_value REAL;
ALTER TABLE outbox ADD COLUMN alert_resolved_at REAL;

UPDATE outbox SET
    alert_state = 'triggered',
    alert_value = (SELECT json_extract(a.spec, '$.value') FROM alerts AS a
                   WHERE a.id = outbox.alert_id),
    alert_resolved_at = NULL
WHERE event = 'trigger';

UPDATE outbox SET
    alert_state = 'resolved',
    alert_value = (SELECT a.value FROM alerts AS a WHERE a.id = outbox.alert_id),
    alert_resolved_at = (SELECT a.resolved_at FROM alerts AS a
                         WHERE a.id = outbox.alert_id)
WHERE event = 'resolve';
"""

# A notification can now end 'skipped': a resolve is not sent to a channel that
# never received the alert's trigger (see tocsin.channels.delivery). Adding the
# state to the CHECK takes a rebuild of the table, which also makes the alert
# kept by version 2 mandatory: version 2 filled it in for every row.
_V3 = """
CREATE TABLE outbox_v3 (
    id INTEGER PRIMARY KEY,
    alert_id INTEGER NOT NULL REFERENCES alerts (id),
    transition_id INTEGER NOT NULL REFERENCES transitions (id),
    channel TEXT NOT NULL CHECK (channel <> ''),
    event TEXT NOT NULL CHECK (event IN ('trigger', 'resolve')),
    key TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'delivered', 'dead', 'skipped')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    last_status INTEGER,
    created_at REAL NOT NULL,
    delivered_at REAL,
    alert_state TEXT NOT NULL CHECK (alert_state IN ('triggered', 'resolved')),
    alert_value REAL,
    alert_resolved_at REAL,
    skipped_at REAL,
    -- Why the notification was not sent, in a word: 'trigger_not_delivered'.
    skip_reason TEXT
);
INSERT INTO outbox_v3 (id, alert_id, transition_id, channel, event, key, state,
    attempts, next_attempt_at, last_error, last_status, created_at, delivered_at,
    alert_state, alert_value, alert_resolved_at)
SELECT id, alert_id, transition_id, channel, event, key, state,
    attempts, next_attempt_at, last_error, last_status, created_at, delivered_at,
    alert_state, alert_value, alert_resolved_at
FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_v3 RENAME TO outbox;
CREATE INDEX outbox_due ON outbox (channel, next_attempt_at, id)
    WHERE state = 'pending';
CREATE INDEX outbox_alert ON outbox (alert_id, channel, id);
"""

# An open alert can now move between the levels of its rule (warning,
# critical), which changes its severity, threshold and range, and the summary
# and description rendered from them; each move is notified. A notification
# must say the level of its transition even when it is retried after a later
# move, so the row keeps the level and the texts too; the range as a JSON
# array, like the spec. A row without a level (NULL) stands for the spec's.
#
# Rows already queued get the level of their alert's spec: no spec changed
# before this version, so that is the level of every transition so far, and a
# move after the upgrade must not rewrite what they say.
_V4 = """
ALTER TABLE outbox ADD COLUMN alert_severity TEXT;
ALTER TABLE outbox ADD COLUMN alert_threshold REAL;
ALTER TABLE outbox ADD COLUMN alert_range TEXT;
ALTER TABLE outbox ADD COLUMN alert_summary TEXT;
ALTER TABLE outbox ADD COLUMN alert_description TEXT;

UPDATE outbox SET
    alert_severity = (SELECT json_extract(a.spec, '$.severity') FROM alerts AS a
                      WHERE a.id = outbox.alert_id),
    alert_threshold = (SELECT json_extract(a.spec, '$.threshold') FROM alerts AS a
                       WHERE a.id = outbox.alert_id),
    alert_range = (SELECT COALESCE(json_extract(a.spec, '$.range'), '[]')
                   FROM alerts AS a WHERE a.id = outbox.alert_id),
    alert_summary = (SELECT COALESCE(json_extract(a.spec, '$.summary'), '')
                     FROM alerts AS a WHERE a.id = outbox.alert_id),
    alert_description = (SELECT COALESCE(json_extract(a.spec, '$.description'), '')
                         FROM alerts AS a WHERE a.id = outbox.alert_id);
"""

# Alerts gain a lifecycle: someone acknowledges an alert, investigates it, or
# the escalation timer escalates it, and an alert keeps being open in each of
# those states. Widening the states takes a rebuild of the alerts table, which
# keeps every row and index; the outbox is rebuilt too, so that a notification
# can say the state its alert was in (an escalation's message says
# ``escalated``).
#
# A resolved alert may reopen as the same row, so the latest alert of a series
# is now looked up by (rule, series): alerts_series serves that.
#
# Silences and the scheduled steps of escalation policies live here as well:
# an acknowledgement must cancel the pending steps in its own transaction, so
# that a crash right after it never lets a step page someone.
_V5 = """
CREATE TABLE alerts_v5 (
    id INTEGER PRIMARY KEY,
    uid TEXT NOT NULL UNIQUE,
    rule TEXT NOT NULL,
    series TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('triggered', 'acknowledged',
        'investigating', 'escalated', 'resolved', 'closed')),
    spec TEXT NOT NULL,
    value REAL,
    fired_at REAL NOT NULL,
    resolved_at REAL,
    closed_at REAL,
    updated_at REAL NOT NULL
);
INSERT INTO alerts_v5 (id, uid, rule, series, state, spec, value, fired_at,
    resolved_at, closed_at, updated_at)
SELECT id, uid, rule, series, state, spec, value, fired_at,
    resolved_at, closed_at, updated_at
FROM alerts;
DROP TABLE alerts;
ALTER TABLE alerts_v5 RENAME TO alerts;
CREATE UNIQUE INDEX alerts_open_series ON alerts (rule, series)
    WHERE state NOT IN ('resolved', 'closed');
CREATE INDEX alerts_rule_fired ON alerts (rule, fired_at);
CREATE INDEX alerts_resolved ON alerts (resolved_at) WHERE state = 'resolved';
CREATE INDEX alerts_series ON alerts (rule, series, id);

CREATE TABLE outbox_v5 (
    id INTEGER PRIMARY KEY,
    alert_id INTEGER NOT NULL REFERENCES alerts (id),
    transition_id INTEGER NOT NULL REFERENCES transitions (id),
    channel TEXT NOT NULL CHECK (channel <> ''),
    event TEXT NOT NULL CHECK (event IN ('trigger', 'resolve')),
    key TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'delivered', 'dead', 'skipped')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    last_status INTEGER,
    created_at REAL NOT NULL,
    delivered_at REAL,
    alert_state TEXT NOT NULL CHECK (alert_state IN ('triggered', 'acknowledged',
        'investigating', 'escalated', 'resolved', 'closed')),
    alert_value REAL,
    alert_resolved_at REAL,
    skipped_at REAL,
    skip_reason TEXT,
    alert_severity TEXT,
    alert_threshold REAL,
    alert_range TEXT,
    alert_summary TEXT,
    alert_description TEXT
);
INSERT INTO outbox_v5 (id, alert_id, transition_id, channel, event, key, state,
    attempts, next_attempt_at, last_error, last_status, created_at, delivered_at,
    alert_state, alert_value, alert_resolved_at, skipped_at, skip_reason,
    alert_severity, alert_threshold, alert_range, alert_summary, alert_description)
SELECT id, alert_id, transition_id, channel, event, key, state,
    attempts, next_attempt_at, last_error, last_status, created_at, delivered_at,
    alert_state, alert_value, alert_resolved_at, skipped_at, skip_reason,
    alert_severity, alert_threshold, alert_range, alert_summary, alert_description
FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_v5 RENAME TO outbox;
CREATE INDEX outbox_due ON outbox (channel, next_attempt_at, id)
    WHERE state = 'pending';
CREATE INDEX outbox_alert ON outbox (alert_id, channel, id);

CREATE TABLE silences (
    -- A uuid4 in hex: an id people copy from a list into a command.
    id TEXT PRIMARY KEY,
    -- The matchers as a JSON array of strings (team="ml"); all must hold.
    matchers TEXT NOT NULL,
    starts_at REAL NOT NULL,
    -- Equal to starts_at only for a silence expired before it started.
    ends_at REAL NOT NULL CHECK (ends_at >= starts_at),
    created_by TEXT NOT NULL,
    comment TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX silences_ends ON silences (ends_at);

CREATE TABLE escalation_steps (
    id INTEGER PRIMARY KEY,
    alert_id INTEGER NOT NULL REFERENCES alerts (id),
    policy TEXT NOT NULL,
    -- 0 for the policy's first step.
    step INTEGER NOT NULL CHECK (step >= 0),
    due_at REAL NOT NULL,
    -- The channels to notify, as a JSON array of names.
    channels TEXT NOT NULL DEFAULT '[]',
    state TEXT NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'reached', 'cancelled')),
    reached_at REAL,
    cancelled_at REAL,
    UNIQUE (alert_id, step)
);
CREATE INDEX escalation_steps_due ON escalation_steps (due_at, id)
    WHERE state = 'pending';
"""

# Notifications now go out per aggregation group (see
# tocsin.channels.notifier): one message about several alerts, sent when its
# group's timers say so and the notification log says something changed. An
# outbox row of such a message names its group and why it was sent, and keeps
# every alert it is about as JSON (the alert_* columns keep describing the
# first of them, so alert_state is 'triggered' for any open state). Rows of
# one group and channel go out in order, as rows of one alert do.
#
# The groups survive a restart: their timers (an anchor time, ticks at
# anchor + k * group_interval) and the flush counter; the notification log
# says, per group and channel, what was last sent (firing alerts with their
# severity, resolved ones), which alerts the channel knows of, which were held
# back by a silence, mute window or inhibition, and when. dedup_log keeps the
# messages the [dedup] caps count. notify_sequence numbers every flush, so an
# idempotency key is never reused by a group that was emptied and came back.
_V6 = """
ALTER TABLE outbox ADD COLUMN group_key TEXT;
ALTER TABLE outbox ADD COLUMN group_labels TEXT;
ALTER TABLE outbox ADD COLUMN reason TEXT;
ALTER TABLE outbox ADD COLUMN alerts TEXT;
CREATE INDEX outbox_group ON outbox (group_key, channel, id)
    WHERE group_key IS NOT NULL;

CREATE TABLE notify_groups (
    group_key TEXT PRIMARY KEY,
    route_id TEXT NOT NULL,
    labels TEXT NOT NULL,
    created_at REAL NOT NULL,
    anchor REAL,
    seq INTEGER NOT NULL DEFAULT 0,
    flushed_at REAL
);

CREATE TABLE notification_log (
    group_key TEXT NOT NULL,
    channel TEXT NOT NULL,
    firing TEXT NOT NULL,
    resolved TEXT NOT NULL,
    announced TEXT NOT NULL,
    withheld TEXT NOT NULL,
    sent_at REAL,
    PRIMARY KEY (group_key, channel)
);

CREATE TABLE dedup_log (
    id INTEGER PRIMARY KEY,
    channel TEXT NOT NULL,
    key TEXT NOT NULL,
    event TEXT NOT NULL CHECK (event IN ('trigger', 'resolve')),
    sent_at REAL NOT NULL
);
CREATE INDEX dedup_log_sent ON dedup_log (sent_at);

CREATE TABLE notify_sequence (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last INTEGER NOT NULL
);
INSERT INTO notify_sequence (id, last) VALUES (1, 0);
"""

# Rules, integrations and settings added through the API live in the database,
# so they survive a restart like the alerts they produce. Each is kept as the
# JSON the API accepted (an integration's secrets included: the database file
# is the service's own, like its config), and checked again when loaded.
_V7 = """
CREATE TABLE api_rules (
    name TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    created_at REAL NOT NULL,
    created_by TEXT NOT NULL
);

CREATE TABLE api_integrations (
    name TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at REAL NOT NULL,
    created_by TEXT NOT NULL
);

CREATE TABLE api_settings (
    kind TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    updated_at REAL NOT NULL
);
"""

_V8 = """
-- Requests received from other services (PagerDuty webhooks, Slack actions),
-- by the id the sender gives each: a sender that retries is answered without
-- acting twice. Rows older than the senders' retry horizon are pruned.
CREATE TABLE inbound_events (
    source TEXT NOT NULL,
    event_id TEXT NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (source, event_id)
) WITHOUT ROWID;
CREATE INDEX inbound_events_by_time ON inbound_events (received_at);

-- An acknowledgement made in Tocsin is sent on to the destinations that page
-- (PagerDuty): the outbox and the dedup log take a third event.
CREATE TABLE outbox_v8 (
    id INTEGER PRIMARY KEY,
    alert_id INTEGER NOT NULL REFERENCES alerts (id),
    transition_id INTEGER NOT NULL REFERENCES transitions (id),
    channel TEXT NOT NULL CHECK (channel <> ''),
    event TEXT NOT NULL CHECK (event IN ('trigger', 'resolve', 'acknowledge')),
    key TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'delivered', 'dead', 'skipped')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    last_status INTEGER,
    created_at REAL NOT NULL,
    delivered_at REAL,
    alert_state TEXT NOT NULL CHECK (alert_state IN ('triggered', 'acknowledged',
        'investigating', 'escalated', 'resolved', 'closed')),
    alert_value REAL,
    alert_resolved_at REAL,
    skipped_at REAL,
    skip_reason TEXT,
    alert_severity TEXT,
    alert_threshold REAL,
    alert_range TEXT,
    alert_summary TEXT,
    alert_description TEXT,
    group_key TEXT,
    group_labels TEXT,
    reason TEXT,
    alerts TEXT
);
INSERT INTO outbox_v8 (id, alert_id, transition_id, channel, event, key, state,
    attempts, next_attempt_at, last_error, last_status, created_at, delivered_at,
    alert_state, alert_value, alert_resolved_at, skipped_at, skip_reason,
    alert_severity, alert_threshold, alert_range, alert_summary, alert_description,
    group_key, group_labels, reason, alerts)
SELECT id, alert_id, transition_id, channel, event, key, state,
    attempts, next_attempt_at, last_error, last_status, created_at, delivered_at,
    alert_state, alert_value, alert_resolved_at, skipped_at, skip_reason,
    alert_severity, alert_threshold, alert_range, alert_summary, alert_description,
    group_key, group_labels, reason, alerts
FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_v8 RENAME TO outbox;
CREATE INDEX outbox_due ON outbox (channel, next_attempt_at, id)
    WHERE state = 'pending';
CREATE INDEX outbox_alert ON outbox (alert_id, channel, id);
CREATE INDEX outbox_group ON outbox (group_key, channel, id)
    WHERE group_key IS NOT NULL;

CREATE TABLE dedup_log_v8 (
    id INTEGER PRIMARY KEY,
    channel TEXT NOT NULL,
    key TEXT NOT NULL,
    event TEXT NOT NULL CHECK (event IN ('trigger', 'resolve', 'acknowledge')),
    sent_at REAL NOT NULL
);
INSERT INTO dedup_log_v8 (id, channel, key, event, sent_at)
SELECT id, channel, key, event, sent_at FROM dedup_log;
DROP TABLE dedup_log;
ALTER TABLE dedup_log_v8 RENAME TO dedup_log;
CREATE INDEX dedup_log_sent ON dedup_log (sent_at);
"""

# A dead letter says when and why it was given up on: after its last attempt
# (the reason is that attempt's, such as server_error or auth), or because it
# waited longer than its channel's max_age ('expired'), which is no attempt
# and so has no delivery_attempts row to tell the time by.
_V9 = """
ALTER TABLE outbox ADD COLUMN dead_at REAL;
ALTER TABLE outbox ADD COLUMN dead_reason TEXT;
"""

#: Every migration, oldest first; the schema version is the list's length.
#: Version 10, the audit log, is in :mod:`tocsin.state.audit_schema`.
MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3, _V4, _V5, _V6, _V7, _V8, _V9, _V10)


def statements(script: str) -> list[str]:
    """Split a script into complete SQL statements.

    ``executescript`` cannot be used: it commits any open transaction first,
    which would take the migration out of the transaction of its version bump.
    """
    found: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n\t;"):
                found.append(pending.strip())
            pending = ""
    if pending.strip(" \n\t;"):
        found.append(pending.strip())

    return found


async def migrate(
    connection: aiosqlite.Connection,
    path: str,
    migrations: Sequence[str] = MIGRATIONS,
) -> int:
    """Bring the database up to ``len(migrations)``; return the version reached.

    :raises StateError: if the database is newer than this code, or a
        migration fails (that migration is then rolled back completely).
    """
    target = len(migrations)
    current = await _user_version(connection)
    if current > target:
        raise StateError(
            f"state database {path} has schema version {current}, but this "
            f"Tocsin only knows versions up to {target}; run a newer Tocsin "
            f"or restore a matching database"
        )
    # The setting cannot change inside a transaction: it is switched around them.
    enforced = await _pragma(connection, "foreign_keys")
    await connection.execute("PRAGMA foreign_keys = OFF")
    try:
        for version in range(current + 1, target + 1):
            await _apply(connection, path, version, migrations[version - 1])
    finally:
        await connection.execute(f"PRAGMA foreign_keys = {enforced:d}")

    return target


async def _apply(
    connection: aiosqlite.Connection, path: str, version: int, script: str
) -> None:
    """Run one migration and its version bump in one transaction."""
    await connection.execute("BEGIN IMMEDIATE")
    try:
        # Another process may have migrated while we waited for the lock.
        if await _user_version(connection) >= version:
            await connection.execute("ROLLBACK")
            return
        for statement in statements(script):
            await connection.execute(statement)
        broken = list(await connection.execute_fetchall("PRAGMA foreign_key_check"))
        if broken:
            table, rowid, parent, _ = broken[0]
            raise sqlite3.IntegrityError(
                f"row {rowid} of {table} refers to a missing row of {parent}"
            )
        # PRAGMA takes no parameters; version is an int we computed.
        await connection.execute(f"PRAGMA user_version = {version:d}")
        await connection.execute("COMMIT")
    except sqlite3.Error as error:
        await connection.execute("ROLLBACK")
        raise StateError(
            f"state database {path}: migration to schema version {version} "
            f"failed: {error}"
        ) from error


async def _user_version(connection: aiosqlite.Connection) -> int:
    return await _pragma(connection, "user_version")


async def _pragma(connection: aiosqlite.Connection, name: str) -> int:
    rows = await connection.execute_fetchall(f"PRAGMA {name}")
    return int(next(iter(rows))[0])
