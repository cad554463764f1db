"""``tocsin audit`` against the real API on a temp socket, over a fake backend."""

from __future__ import annotations

import json
import time

import pytest

from tests.daemon.fake_backend import NOW
from tests.daemon.test_cli_api import tocsin


async def test_the_audit_is_a_table_for_people(served_api, capsys):
    status, out, err = await tocsin(served_api, capsys, "audit")

    assert (status, err) == (0, "")
    assert out.splitlines() == [
        "TIME                  KIND      ACTION   ALERT/SUBJECT  CHANNEL  ACTOR"
        "      DETAIL",
        "2025-06-15 15:06:35Z  delivery  retry    uid-1          hook     -"
        "          trigger attempt 1, HTTP 503, server_error, 12 ms",
        "2025-06-15 15:05:40Z  silence   created  s1             -        api:alice"
        '  team="ml"',
    ]


async def test_the_audit_as_json_is_the_apis_page(served_api, capsys):
    status, out, _ = await tocsin(served_api, capsys, "audit", "--json")

    page = json.loads(out)
    assert status == 0
    assert page["next_cursor"] is None
    assert [e["kind"] for e in page["entries"]] == ["delivery", "silence"]


async def test_each_option_becomes_a_filter(served_api, capsys):
    argv = [
        "audit",
        "--since",
        "1750000000",
        "--until",
        "2025-06-15T16:00:00Z",
        "--alert",
        "uid-1",
        "--channel",
        "hook",
        "--outcome",
        "retry",
        "--kind",
        "delivery",
        "--limit",
        "5",
        "--cursor",
        "1.5:0:3",
    ]
    status, _, err = await tocsin(served_api, capsys, *argv)

    assert (status, err) == (0, "")
    [(query, alert)] = served_api.backend.audit_queries
    assert alert == "uid-1"
    assert (query.since, query.until) == (NOW, NOW + 3200)
    assert (query.channel, query.outcome, query.kind) == ("hook", "retry", "delivery")
    assert (query.limit, query.cursor) == (5, "1.5:0:3")


async def test_since_a_duration_counts_back_from_now(served_api, capsys):
    before = time.time()
    await tocsin(served_api, capsys, "audit", "--since", "1h")
    after = time.time()

    [(query, _)] = served_api.backend.audit_queries
    assert before - 3600 <= query.since <= after - 3600


@pytest.mark.parametrize(
    ("argv", "err"),
    [
        (["--alert", "99"], "tocsin: refused: no alert 99\n"),
        (["--since", "yesterday"], "tocsin: refused: since: expected an ISO 8601"),
    ],
)
async def test_refusals_exit_1_with_the_daemons_message(served_api, capsys, argv, err):
    status, out, said = await tocsin(served_api, capsys, "audit", *argv)

    assert (status, out) == (1, "")
    assert said.startswith(err)
