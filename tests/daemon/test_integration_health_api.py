"""Integration health through the API, ``tocsin integrations list`` and the
client, over a fake backend on a temp socket."""

from __future__ import annotations

import asyncio
import json

import msgspec
import pytest

from tests.daemon.fake_backend import HEALTHY, NOW
from tests.daemon.test_api_v1 import call
from tests.daemon.test_cli_api import tocsin
from tocsin.client import Client, TocsinAPIError

FAILING = msgspec.structs.replace(
    HEALTHY,
    status="failing",
    detail="last 5 attempts failed",
    last_success_at=None,
    last_error_at=NOW - 5,
    last_error_reason="server_error",
    last_error_status=503,
    failures_24h=7,
    backlog=3,
    oldest_pending_s=120.0,
)


async def test_the_list_and_the_health_path_show_an_integrations_health(
    served_api,
):
    served_api.backend.healths["log"] = FAILING

    _, listed = await call(served_api, "GET", "/api/v1/integrations")
    found, one = await call(served_api, "GET", "/api/v1/integrations/log/health")
    missing, _ = await call(served_api, "GET", "/api/v1/integrations/x/health")

    [entry] = listed["integrations"]
    assert entry["health"] == msgspec.to_builtins(FAILING)
    assert (found, one["health"]["status"]) == (200, "failing")
    assert missing == 404


async def test_integrations_list_shows_status_last_success_failures_and_backlog(
    served_api, capsys
):
    served_api.backend.healths["log"] = FAILING

    status, out, err = await tocsin(served_api, capsys, "integrations", "list")

    assert (status, err) == (0, "")
    header, row = out.splitlines()
    assert header.split() == [
        "NAME",
        "TYPE",
        "SOURCE",
        "STATUS",
        "LAST",
        "SUCCESS",
        "FAILURES",
        "24H",
        "BACKLOG",
        "LAST",
        "ERROR",
    ]
    assert row.split() == ["log", "log", "config", "failing", "-", "7", "3"] + [
        "server_error",
        "(503)",
    ]


async def test_integrations_list_json_holds_the_health(served_api, capsys):
    served_api.backend.healths["log"] = FAILING

    status, out, _ = await tocsin(served_api, capsys, "integrations", "list", "--json")

    assert status == 0
    [entry] = json.loads(out)
    assert entry["health"]["last_error_reason"] == "server_error"
    assert entry["health"]["backlog"] == 3


async def test_a_healthy_integration_lists_its_last_success_in_utc(served_api, capsys):
    status, out, _ = await tocsin(served_api, capsys, "integrations", "list")

    assert status == 0
    row = out.splitlines()[1].split()
    assert row[3:7] == ["healthy", "2025-06-15", "15:06:10Z", "0"]


@pytest.mark.parametrize(("name", "found"), [("log", True), ("nowhere", False)])
async def test_the_client_reads_one_integrations_health(served_api, name, found):
    served_api.backend.healths["log"] = FAILING
    with Client(socket=served_api.socket) as client:
        if found:
            health = await asyncio.to_thread(client.integration_health, name)
            assert health["status"] == "failing"
            assert health["failures_24h"] == 7
        else:
            with pytest.raises(TocsinAPIError) as raised:
                await asyncio.to_thread(client.integration_health, name)
            assert raised.value.status == 404
