"""The Python client against the real API on a temp socket, over a fake backend.

The client is synchronous: each call runs on a worker thread while the test's
event loop serves the API.
"""

from __future__ import annotations

import asyncio
import getpass

import pytest

from tests.daemon.fake_backend import NOW, TOKEN, Served
from tocsin.client import Client, TocsinAPIError, TocsinUnreachableError


@pytest.fixture
async def served(tmp_path):
    served = Served(tmp_path)
    await served.start()
    yield served
    await served.stop()


@pytest.fixture
def client(served):
    with Client(socket=served.socket) as client:
        yield client


def run(function, *args, **kwargs):
    """Run one blocking client call off the event loop that serves the API."""
    return asyncio.to_thread(function, *args, **kwargs)


async def test_alerts_are_listed_with_filters(client):
    everything = await run(client.list_alerts)
    ml = await run(client.list_alerts, labels={"team": "ml"})
    latency = await run(client.list_alerts, state="triggered", rule="latency")

    assert [alert["id"] for alert in everything] == [2, 1]
    assert [alert["id"] for alert in ml] == [1]
    assert [alert["id"] for alert in latency] == [2]


@pytest.mark.parametrize(
    ("moves", "states"),
    [
        (
            ["acknowledge", "investigate", "resolve", "close"],
            ["acknowledged", "investigating", "resolved", "closed"],
        ),
        (["escalate", "resolve"], ["escalated", "resolved"]),
    ],
)
async def test_an_alert_goes_through_its_lifecycle(client, served, moves, states):
    seen = []
    for move in moves:
        alert = await run(getattr(client, move), 1, comment=f"{move} it")
        seen.append(alert["state"])

    assert seen == states
    history = (await run(client.get_alert, "uid-1"))["history"]
    assert [t["comment"] for t in history[1:]] == [f"{m} it" for m in moves]
    assert {t["actor"] for t in history[1:]} == {f"api:{getpass.getuser()}"}


async def test_a_refused_move_raises_with_the_status_and_message(client):
    with pytest.raises(TocsinAPIError) as raised:
        await run(client.investigate, 1)

    assert raised.value.status == 409
    assert raised.value.message == (
        "alert 1 is triggered: it can move to acknowledged or escalated,"
        " not investigating"
    )


async def test_an_unknown_alert_raises_404(client):
    with pytest.raises(TocsinAPIError) as raised:
        await run(client.get_alert, 42)

    assert (raised.value.status, raised.value.message) == (404, "no alert 42")


async def test_a_rule_is_created_listed_and_deleted(client):
    created = await run(
        client.create_alert_rule,
        "fraud-drift",
        "model.drift",
        threshold=0.2,
        window="10m",
        channels=["log"],
        for_="1m",
        labels={"team": "ml"},
    )
    names = [rule["name"] for rule in await run(client.list_alert_rules)]
    await run(client.delete_alert_rule, "fraud-drift")
    after = [rule["name"] for rule in await run(client.list_alert_rules)]

    assert created["source"] == "api"
    assert (created["rule"]["window"], created["rule"]["for"]) == (600.0, 60.0)
    assert created["rule"]["labels"] == {"team": "ml"}
    assert names == ["latency", "fraud-drift"]
    assert after == ["latency"]


async def test_an_invalid_rule_raises_422_naming_the_key(client):
    with pytest.raises(TocsinAPIError) as raised:
        await run(client.create_alert_rule, "r", "m", threshold=1, aggregation="mean")

    assert raised.value.status == 422
    assert raised.value.message.startswith("rule.aggregation: Invalid enum value")


async def test_a_webhook_integration_is_added_with_its_secret_masked(client):
    url = "https://hooks.example/services/very-secret"

    added = await run(client.add_webhook_integration, "hook", url, timeout="3s")
    listed = await run(client.list_integrations)
    await run(client.delete_integration, "hook")

    assert added["settings"]["url"] == "********"
    assert added["settings"]["timeout"] == 3.0
    assert "very-secret" not in str(listed)
    assert [i["name"] for i in await run(client.list_integrations)] == ["log"]


@pytest.mark.parametrize(
    ("method", "args", "secret"),
    [
        ("add_pagerduty_integration", {"routing_key": "R" * 32}, "R" * 32),
        (
            "add_slack_integration",
            {"webhook_url": "https://hooks.slack.example/T1/B2/slack-secret"},
            "slack-secret",
        ),
        (
            "add_teams_integration",
            {"webhook_url": "https://teams.example/invoke?sig=teams-secret"},
            "teams-secret",
        ),
        ("add_datadog_integration", {"api_key": "d" * 32}, "d" * 32),
        (
            "add_email_integration",
            {
                "to": ["ml@example.com"],
                "sender": "tocsin@example.com",
                "password": "smtp-secret",
                "username": "tocsin",
            },
            "smtp-secret",
        ),
    ],
)
async def test_every_kind_of_integration_is_added_with_its_secrets_masked(
    client, method, args, secret
):
    added = await run(getattr(client, method), "x", **args)
    listed = await run(client.list_integrations)

    assert added["name"] == "x"
    assert [i["name"] for i in listed] == ["log", "x"]
    assert secret not in str(added) + str(listed)


@pytest.mark.parametrize(
    ("method", "settings", "applied"),
    [
        (
            "configure_grouping",
            {"group_by": ["model"], "group_wait": "30s", "repeat_interval": 3600},
            {"group_by": ["model"], "group_wait": 30.0, "repeat_interval": 3600.0},
        ),
        (
            "configure_deduplication",
            {"keys": ["model"], "window": "5m", "max_per_window": 2},
            {
                "keys": ["model"],
                "window": 300.0,
                "max_per_window": 2,
                "suppress_for": 0.0,
            },
        ),
        (
            "configure_digest",
            {"interval": "1h", "matchers": ['severity="low"']},
            {"interval": 3600.0, "matchers": ['severity="low"'], "channels": []},
        ),
    ],
)
async def test_noise_control_is_configured(client, method, settings, applied):
    assert await run(getattr(client, method), **settings) == applied


async def test_a_silence_is_created_listed_and_expired(client, served):
    silence = await run(
        client.create_silence, ['team="ml"'], duration="2h", comment="deploy"
    )
    active = await run(client.list_silences, "active")
    served.clock.advance(5)
    expired = await run(client.expire_silence, silence["id"])

    assert (silence["ends_at"], silence["comment"]) == (NOW + 7200, "deploy")
    assert [s["id"] for s in active] == [silence["id"]]
    assert expired["ends_at"] == NOW + 5
    assert await run(client.list_silences, "active") == []


async def test_routes_test_and_status(client):
    routed = await run(client.routes_test, {"team": "ml", "severity": "high"})
    status = await run(client.status)

    assert routed["channels"] == ["log"]
    assert [route["id"] for route in routed["routes"]] == ["ml"]
    assert status["uptime_s"] == 90.0
    assert status["alerts"] == {"triggered": 2}


async def test_dead_letters_are_listed_with_filters(client):
    everything = await run(client.list_dead_letters)
    of_log = await run(client.list_dead_letters, "log")
    newest = await run(client.list_dead_letters, limit=1)

    assert [(d["id"], d["reason"]) for d in everything] == [
        (2, "server_error"),
        (1, "expired"),
    ]
    assert [d["id"] for d in of_log] == [1]
    assert [d["id"] for d in newest] == [2]


async def test_the_audit_log_is_read_with_filters(client, served):
    page = await run(client.audit)
    configs = await run(
        client.audit, since=NOW - 60, alert="uid-1", kind="config", limit=5
    )

    assert [e["kind"] for e in page["entries"]] == ["delivery", "silence"]
    assert page["next_cursor"] is None
    assert configs == {"entries": [], "next_cursor": None}
    [_, (query, alert)] = served.backend.audit_queries
    assert (query.since, query.kind, query.limit, alert) == (
        NOW - 60,
        "config",
        5,
        "uid-1",
    )


async def test_an_integration_test_returns_its_result(client, served):
    result = await run(client.test_integration, "log")
    with pytest.raises(TocsinAPIError) as unknown:
        await run(client.test_integration, "nope")

    assert result == {
        "ok": True,
        "status": 202,
        "duration_ms": 12.5,
        "reason": None,
        "error": None,
    }
    assert served.backend.tested == ["log"]
    assert unknown.value.status == 404


async def test_tcp_with_a_token(served):
    with Client(url=served.url, token=TOKEN) as client:
        alerts = await run(client.list_alerts, limit=1)

    assert [alert["id"] for alert in alerts] == [2]


async def test_tcp_without_the_token_raises_401(served):
    with (
        Client(url=served.url, token="wrong") as client,
        pytest.raises(TocsinAPIError) as raised,
    ):
        await run(client.status)

    assert raised.value.status == 401


def test_a_missing_socket_is_unreachable(tmp_path):
    with (
        Client(socket=str(tmp_path / "none.sock"), timeout=1) as client,
        pytest.raises(TocsinUnreachableError) as raised,
    ):
        client.status()

    assert raised.value.status == 0
    assert raised.value.message.startswith(f"cannot reach the daemon at {tmp_path}")


@pytest.mark.parametrize("where", [{}, {"socket": "a", "url": "http://b"}])
def test_exactly_one_address_is_needed(where):
    with pytest.raises(ValueError, match="exactly one of socket and url"):
        Client(**where)


async def test_an_integration_shows_where_it_points_but_not_its_secrets(client):
    added = await run(
        client.add_pagerduty_integration,
        "pd",
        routing_key="R" * 32,
        url="https://events.eu.pagerduty.com/v2/enqueue",
        webhook_secret_env="PD_WEBHOOK_SECRET",
    )

    settings = added["settings"]
    assert settings["routing_key"] == "********"
    assert settings["url"] == "https://events.eu.pagerduty.com/v2/enqueue"
    assert settings["webhook_secret_env"] == "PD_WEBHOOK_SECRET"
