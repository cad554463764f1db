"""``GET /api/v1/audit`` over a real Unix socket, against a fake backend:
each filter read and checked, and the actor of the changes it records."""

from __future__ import annotations

import getpass

import pytest

from tests.daemon.fake_backend import NOW
from tests.daemon.test_api_v1 import call
from tocsin.state.audit import AuditQuery


async def test_the_audit_answers_its_entries_newest_first(served_api):
    status, answer = await call(served_api, "GET", "/api/v1/audit")

    assert status == 200
    assert [e["kind"] for e in answer["entries"]] == ["delivery", "silence"]
    assert answer["entries"][0]["status"] == 503
    assert answer["next_cursor"] is None
    # Fields a kind has not are left out, not null.
    assert "status" not in answer["entries"][1]
    [(query, alert)] = served_api.backend.audit_queries
    assert (query, alert) == (AuditQuery(), None)


@pytest.mark.parametrize(
    ("url", "expected", "alert"),
    [
        ("?since=1750000000", AuditQuery(since=NOW), None),
        ("?since=2025-06-15T15:06:40Z", AuditQuery(since=NOW), None),
        ("?until=1750000000.5", AuditQuery(until=NOW + 0.5), None),
        ("?alert=uid-1", AuditQuery(), "uid-1"),
        (
            "?channel=hook&outcome=dead",
            AuditQuery(channel="hook", outcome="dead"),
            None,
        ),
        ("?kind=config&limit=1000", AuditQuery(kind="config", limit=1000), None),
        ("?cursor=1.5:1:7", AuditQuery(cursor="1.5:1:7"), None),
    ],
)
async def test_each_filter_reaches_the_backend(served_api, url, expected, alert):
    status, answer = await call(served_api, "GET", "/api/v1/audit" + url)

    assert status == 200, answer
    assert served_api.backend.audit_queries == [(expected, alert)]


@pytest.mark.parametrize(
    ("url", "status", "error"),
    [
        ("?limit=0", 400, "limit: expected a number from 1 to 1000"),
        ("?limit=1001", 400, "limit: expected a number from 1 to 1000"),
        ("?kind=mail", 422, "kind: unknown kind 'mail'"),
        ("?outcome=lost", 422, "outcome: unknown outcome 'lost'"),
        ("?since=yesterday", 422, "since: expected an ISO 8601 time"),
        ("?until=nan", 422, "until: expected POSIX seconds or an RFC 3339 time"),
        ("?cursor=abc", 422, "cursor: not a cursor of this API"),
        ("?alert=99", 404, "99"),
    ],
)
async def test_a_filter_that_cannot_be_read_is_refused(served_api, url, status, error):
    answer_status, answer = await call(served_api, "GET", "/api/v1/audit" + url)

    assert answer_status == status
    assert error in answer["error"]


async def test_the_changes_the_audit_records_name_the_caller(served_api):
    me = f"api:{getpass.getuser()}"
    await call(served_api, "DELETE", "/api/v1/silences/s1")
    await call(served_api, "PUT", "/api/v1/settings/grouping", {})
    await call(served_api, "DELETE", "/api/v1/integrations/log")

    assert served_api.backend.actors == [
        ("expire_silence", me),
        ("put_settings", me),
        ("delete_integration", me),
    ]
