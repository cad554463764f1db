"""Dead letters and integration tests through the API and the ``tocsin``
commands, against a fake backend; the real daemon's side is in
``tests/e2e/test_delivery_api.py``."""

from __future__ import annotations

import json

import msgspec
import pytest
from jsonschema import Draft202012Validator

from tests.daemon.fake_backend import NOW, dead_letter
from tests.daemon.test_api_v1 import call
from tests.daemon.test_cli_api import tocsin
from tests.daemon.test_openapi import response_schema
from tocsin import logs
from tocsin.daemon.backend import IntegrationTest

FAILED = IntegrationTest(
    ok=False,
    status=503,
    duration_ms=41.0,
    reason="server_error",
    error="channel log: HTTP 503 Service Unavailable",
)


async def test_a_test_answers_what_the_destination_said(served_api):
    status, answer = await call(served_api, "POST", "/api/v1/integrations/log/test")

    assert status == 200
    assert answer == {
        "status": "ok",
        "result": {
            "ok": True,
            "status": 202,
            "duration_ms": 12.5,
            "reason": None,
            "error": None,
        },
    }
    assert served_api.backend.tested == ["log"]


async def test_a_failed_test_is_a_result_not_an_error(served_api):
    served_api.backend.test_results["log"] = FAILED

    status, answer = await call(served_api, "POST", "/api/v1/integrations/log/test")

    assert status == 200
    assert answer["result"] == {
        "ok": False,
        "status": 503,
        "duration_ms": 41.0,
        "reason": "server_error",
        "error": "channel log: HTTP 503 Service Unavailable",
    }
    schema = response_schema("post", "/api/v1/integrations/{name}/test", 200)
    assert list(Draft202012Validator(schema).iter_errors(answer)) == []


async def test_testing_an_unknown_integration_is_404(served_api):
    status, answer = await call(served_api, "POST", "/api/v1/integrations/nope/test")

    assert (status, answer) == (
        404,
        {"status": "error", "error": "no integration nope"},
    )
    assert served_api.backend.tested == []


@pytest.mark.parametrize(
    ("query", "ids"),
    [
        ("", [2, 1]),
        ("?channel=log", [1]),
        ("?channel=hook&limit=1", [2]),
        ("?limit=1", [2]),
        ("?channel=other", []),
    ],
)
async def test_dead_letters_are_listed_and_filtered(served_api, query, ids):
    status, answer = await call(served_api, "GET", "/api/v1/deadletters" + query)

    assert status == 200
    assert [letter["id"] for letter in answer["dead_letters"]] == ids


async def test_a_dead_letter_never_shows_a_secret(served_api):
    secret = "https://hooks.example/T1/B1/dead-letter-secret"
    logs.register_secret(secret)
    letter = dead_letter(3, "hook", "transport", dead_at=NOW)
    quoted = f"channel hook: cannot reach {secret}"
    served_api.backend.letters = [msgspec.structs.replace(letter, last_error=quoted)]

    _, answer = await call(served_api, "GET", "/api/v1/deadletters")

    [shown] = answer["dead_letters"]
    assert shown["last_error"] == "channel hook: cannot reach [redacted]"
    assert secret not in json.dumps(answer)


async def test_a_limit_out_of_range_is_400(served_api):
    status, answer = await call(served_api, "GET", "/api/v1/deadletters?limit=0")

    assert status == 400
    assert answer["error"] == "limit: expected a number from 1 to 10000"


# The commands.


async def test_integrations_list_is_a_table_or_json(served_api, capsys):
    status, out, err = await tocsin(served_api, capsys, "integrations", "list")

    assert (status, err) == (0, "")
    assert out.splitlines() == [
        "NAME  TYPE  SOURCE  STATUS   LAST SUCCESS          FAILURES 24H  BACKLOG"
        "  LAST ERROR",
        "log   log   config  healthy  2025-06-15 15:06:10Z  0             0        -",
    ]

    status, out, _ = await tocsin(served_api, capsys, "integrations", "list", "--json")

    assert status == 0
    assert [(e["name"], e["type"], e["source"]) for e in json.loads(out)] == [
        ("log", "log", "config")
    ]


async def test_integrations_test_exits_0_when_delivered(served_api, capsys):
    status, out, err = await tocsin(served_api, capsys, "integrations", "test", "log")

    assert (status, err) == (0, "")
    assert out == "integration log: delivered (HTTP 202, 12 ms)\n"


async def test_integrations_test_exits_1_when_not_delivered(served_api, capsys):
    served_api.backend.test_results["log"] = FAILED

    status, out, _ = await tocsin(served_api, capsys, "integrations", "test", "log")
    json_status, json_out, _ = await tocsin(
        served_api, capsys, "integrations", "test", "log", "--json"
    )

    assert status == 1
    assert out == (
        "integration log: not delivered: server_error:"
        " channel log: HTTP 503 Service Unavailable\n"
    )
    assert json_status == 1
    assert json.loads(json_out)["reason"] == "server_error"


async def test_integrations_test_of_an_unknown_name_is_refused(served_api, capsys):
    status, out, err = await tocsin(served_api, capsys, "integrations", "test", "x")

    assert (status, out) == (1, "")
    assert err == "tocsin: refused: no integration x\n"


async def test_deadletters_is_a_table_for_people(served_api, capsys):
    status, out, _ = await tocsin(served_api, capsys, "deadletters")

    assert status == 0
    assert out.splitlines() == [
        "ID  CHANNEL  EVENT    RULE   SERIES         ATTEMPTS  GIVEN UP"
        "              REASON        LAST ERROR",
        "2   hook     trigger  drift  model=fraud-a  15        2025-06-15 15:06:30Z"
        "  server_error  channel hook: HTTP 503",
        "1   log      trigger  drift  model=fraud-a  0         2025-06-15 15:05:40Z"
        "  expired       -",
    ]


async def test_deadletters_filters_by_channel_and_prints_json(served_api, capsys):
    status, out, _ = await tocsin(
        served_api, capsys, "deadletters", "--channel", "log", "--json"
    )

    assert status == 0
    assert [(d["id"], d["reason"]) for d in json.loads(out)] == [(1, "expired")]


async def test_no_dead_letters_says_so(served_api, capsys):
    served_api.backend.letters = []

    status, out, _ = await tocsin(served_api, capsys, "deadletters")

    assert (status, out) == (0, "no dead letters\n")
