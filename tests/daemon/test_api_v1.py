"""``/api/v1`` over a real Unix socket and TCP, against a fake backend."""

from __future__ import annotations

import getpass
import logging

import aiohttp
import pytest

from tests.daemon.fake_backend import NOW, TOKEN
from tocsin import logs
from tocsin.daemon import api, api_values
from tocsin.daemon.api_values import MASK
from tocsin.schema import ApiConfig, WebhookChannelConfig

HOOK = "https://hooks.example/T000/B000/very-secret"


async def call(
    served,
    method: str,
    url: str,
    body: object = None,
    *,
    tcp: bool = False,
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
) -> tuple[int, dict]:
    """Send one request over the socket (or TCP, with the token) and return
    its status and JSON answer."""
    if tcp:
        connector = aiohttp.TCPConnector()
        base = served.url
        headers = {"Authorization": f"Bearer {TOKEN}"} if headers is None else headers
    else:
        connector = aiohttp.UnixConnector(path=served.socket)
        base = "http://tocsin"
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.request(
            method, base + url, json=body, data=data, headers=headers
        ) as response,
    ):
        assert response.content_type == "application/json"
        return response.status, await response.json()


async def test_alerts_are_listed_newest_first(served_api):
    status, answer = await call(served_api, "GET", "/api/v1/alerts")

    assert status == 200
    assert answer["status"] == "ok"
    assert [alert["id"] for alert in answer["alerts"]] == [2, 1]
    assert answer["alerts"][1]["spec"]["labels"] == {"model": "fraud-a", "team": "ml"}


@pytest.mark.parametrize(
    ("query", "ids"),
    [
        ("?rule=drift", [1]),
        ("?label=team=search", [2]),
        ("?label=team=ml&label=model=fraud-a", [1]),
        ("?label=team=ml&label=model=ranker", []),
        ("?state=triggered&limit=1", [2]),
        ("?state=resolved", []),
    ],
)
async def test_alerts_are_filtered(served_api, query, ids):
    status, answer = await call(served_api, "GET", "/api/v1/alerts" + query)

    assert status == 200
    assert [alert["id"] for alert in answer["alerts"]] == ids


@pytest.mark.parametrize(
    ("query", "status", "error"),
    [
        ("?state=open", 422, "state: unknown state 'open'; known: triggered,"),
        ("?label=team", 400, "label: expected name=value, got 'team'"),
        ("?limit=0", 400, "limit: expected a number from 1 to 10000"),
        ("?limit=ten", 400, "limit: expected a number from 1 to 10000"),
    ],
)
async def test_bad_alert_filters_are_refused(served_api, query, status, error):
    answer_status, answer = await call(served_api, "GET", "/api/v1/alerts" + query)

    assert answer_status == status
    assert answer["status"] == "error"
    assert answer["error"].startswith(error)


@pytest.mark.parametrize("ref", ["1", "uid-1"])
async def test_an_alert_is_shown_with_its_history_and_escalation(served_api, ref):
    status, answer = await call(served_api, "GET", f"/api/v1/alerts/{ref}")

    assert status == 200
    alert = answer["alert"]
    assert (alert["id"], alert["uid"], alert["state"]) == (1, "uid-1", "triggered")
    assert [t["to_state"] for t in alert["history"]] == ["triggered"]
    assert alert["history"][0]["actor"] == "engine"
    assert [s["state"] for s in alert["escalation"]] == ["reached", "pending"]


async def test_an_unknown_alert_is_404(served_api):
    assert await call(served_api, "GET", "/api/v1/alerts/99") == (
        404,
        {"status": "error", "error": "no alert 99"},
    )


async def test_a_move_on_the_socket_is_made_by_the_peer_user(served_api):
    served_api.clock.advance(60)

    status, answer = await call(
        served_api, "POST", "/api/v1/alerts/1/acknowledge", {"comment": "looking"}
    )

    assert status == 200
    assert answer["alert"]["state"] == "acknowledged"
    last = answer["alert"]["history"][-1]
    expected = {
        "from_state": "triggered",
        "to_state": "acknowledged",
        "at": NOW + 60,
        "actor": f"api:{getpass.getuser()}",
        "comment": "looking",
    }
    assert {key: last[key] for key in expected} == expected


@pytest.mark.parametrize(
    ("body", "tcp", "actor"),
    [
        (None, True, "api:token"),
        ({"actor": "pagerduty"}, False, "pagerduty"),
        ({"actor": "slack", "comment": ""}, True, "slack"),
    ],
)
async def test_the_actor_of_a_move(served_api, body, tcp, actor):
    status, _ = await call(
        served_api, "POST", "/api/v1/alerts/uid-2/escalate", body, tcp=tcp
    )

    assert status == 200
    assert served_api.backend.moves == [("uid-2", "escalated", actor, "")]


@pytest.mark.parametrize(
    ("url", "body", "status", "error"),
    [
        (
            "/api/v1/alerts/1/investigate",
            None,
            409,
            "alert 1 is triggered: it can move to acknowledged or escalated,"
            " not investigating",
        ),
        ("/api/v1/alerts/1/snooze", None, 404, "unknown action 'snooze'; known:"),
        ("/api/v1/alerts/7/resolve", None, 404, "no alert 7"),
        ("/api/v1/alerts/1/acknowledge", {"note": "x"}, 422, "note: unknown key"),
        (
            "/api/v1/alerts/1/acknowledge",
            {"comment": 3},
            422,
            "comment: Expected `str`",
        ),
        ("/api/v1/alerts/1/acknowledge", [1], 400, "the body must be a JSON object"),
    ],
)
async def test_refused_moves(served_api, url, body, status, error):
    answer_status, answer = await call(served_api, "POST", url, body)

    assert (answer_status, answer["status"]) == (status, "error")
    assert answer["error"].startswith(error)
    assert served_api.backend.moves == []


async def test_a_body_that_is_not_json_is_400(served_api):
    status, answer = await call(
        served_api, "POST", "/api/v1/alerts/1/acknowledge", data=b"{comment"
    )

    assert status == 400
    assert answer["error"].startswith("the body is not valid JSON")


@pytest.mark.parametrize(
    ("body", "ends_at"),
    [
        ({"duration": "2h"}, NOW + 7200),
        ({"ends_at": "2025-06-15T18:00:00Z"}, 1_750_010_400.0),
        ({"ends_at": "2025-06-15T18:00:00"}, 1_750_010_400.0),
        ({"ends_at": "2025-06-15T20:00:00+02:00"}, 1_750_010_400.0),
        ({"starts_at": NOW + 60, "duration": "30m"}, NOW + 60 + 1800),
    ],
)
async def test_a_silence_ends_when_asked(served_api, body, ends_at):
    asked = {"matchers": ['team="ml"'], "comment": "deploy", **body}

    status, answer = await call(served_api, "POST", "/api/v1/silences", asked)

    assert status == 201
    silence = answer["silence"]
    assert silence["ends_at"] == ends_at
    assert silence["starts_at"] == body.get("starts_at", NOW)
    assert silence["created_by"] == f"api:{getpass.getuser()}"
    assert silence["state"] == ("pending" if "starts_at" in body else "active")


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"matchers": []}, "matchers: Expected `array` of length >= 1"),
        ({"matchers": ['team="ml"']}, "give exactly one of ends_at and duration"),
        (
            {"matchers": ['team="ml"'], "duration": "1h", "ends_at": NOW + 10},
            "give exactly one of ends_at and duration",
        ),
        ({"matchers": ['team="ml"'], "duration": "2 hours"}, "duration: invalid"),
        ({"matchers": ['team="ml"'], "ends_at": "tomorrow"}, "ends_at: expected an"),
        ({"matchers": ['team="ml"'], "ends_at": NOW - 1}, "ends_at: must be later"),
        ({"matchers": ["team=ml"], "duration": "1h"}, "matchers[0]: not a matcher"),
        ({"matchers": ['team="ml"'], "duration": "1h", "x": 1}, "x: unknown key"),
    ],
)
async def test_bad_silences_are_422(served_api, body, error):
    status, answer = await call(served_api, "POST", "/api/v1/silences", body)

    assert (status, answer["status"]) == (422, "error")
    assert answer["error"].startswith(error)
    assert served_api.backend.silences == {}


async def test_a_silence_is_listed_shown_and_expired(served_api):
    body = {"matchers": ['team="ml"'], "duration": "1h", "created_by": "alice"}
    _, created = await call(served_api, "POST", "/api/v1/silences", body)
    silence_id = created["silence"]["id"]

    _, active = await call(served_api, "GET", "/api/v1/silences?state=active")
    served_api.clock.advance(10)
    _, expired = await call(served_api, "DELETE", f"/api/v1/silences/{silence_id}")
    _, shown = await call(served_api, "GET", f"/api/v1/silences/{silence_id}")
    _, still_active = await call(served_api, "GET", "/api/v1/silences?state=active")

    assert [s["id"] for s in active["silences"]] == [silence_id]
    assert active["silences"][0]["created_by"] == "alice"
    assert expired["silence"]["ends_at"] == NOW + 10
    assert shown["silence"]["state"] == "expired"
    assert still_active["silences"] == []


@pytest.mark.parametrize(
    ("method", "url", "status", "error"),
    [
        ("GET", "/api/v1/silences/nope", 404, "no silence nope"),
        ("DELETE", "/api/v1/silences/nope", 404, "no silence nope"),
        ("GET", "/api/v1/silences?state=old", 422, "state: unknown state 'old'"),
        ("DELETE", "/api/v1/rules/latency", 409, "rule 'latency' comes from the"),
        ("DELETE", "/api/v1/rules/nope", 404, "no rule named 'nope'"),
        ("DELETE", "/api/v1/integrations/log", 409, "channel 'log' comes from"),
        ("DELETE", "/api/v1/integrations/nope", 404, "no channel named 'nope'"),
        ("GET", "/api/v1/settings/colour", 404, "unknown settings 'colour'"),
        ("PUT", "/api/v1/alerts", 405, "Method Not Allowed"),
        ("GET", "/api/v2/alerts", 404, "Not Found"),
    ],
)
async def test_errors(served_api, method, url, status, error):
    answer_status, answer = await call(served_api, method, url)

    assert (answer_status, answer["status"]) == (status, "error")
    assert answer["error"].startswith(error)


RULE = {
    "name": "fraud-drift",
    "metric": "model.drift",
    "threshold": 0.2,
    "window": "10m",
    "for": 30,
    "severity": "high",
    "channels": ["log"],
}


async def test_a_rule_is_added_listed_and_deleted(served_api):
    status, added = await call(served_api, "POST", "/api/v1/rules", RULE)
    _, listed = await call(served_api, "GET", "/api/v1/rules")
    _, deleted = await call(served_api, "DELETE", "/api/v1/rules/fraud-drift")
    _, after = await call(served_api, "GET", "/api/v1/rules")

    assert status == 201
    entry = added["rule"]
    assert (entry["name"], entry["source"], entry["created_at"]) == (
        "fraud-drift",
        "api",
        NOW,
    )
    assert (entry["rule"]["window"], entry["rule"]["for"]) == (600.0, 30.0)
    assert [(r["name"], r["source"]) for r in listed["rules"]] == [
        ("latency", "config"),
        ("fraud-drift", "api"),
    ]
    assert deleted == {"status": "ok"}
    assert [r["name"] for r in after["rules"]] == ["latency"]


async def test_a_rule_read_back_may_be_sent_again(served_api):
    _, added = await call(served_api, "POST", "/api/v1/rules", RULE)
    await call(served_api, "DELETE", "/api/v1/rules/fraud-drift")

    status, again = await call(
        served_api, "POST", "/api/v1/rules", added["rule"]["rule"]
    )

    assert status == 201
    assert again["rule"]["rule"] == added["rule"]["rule"]


@pytest.mark.parametrize(
    ("change", "status", "error"),
    [
        ({"threshold": "high"}, 422, "rule.threshold: Expected `float`, got `str`"),
        ({"window": "5x"}, 422, "rule.window: invalid duration '5x'"),
        ({"window": -5}, 422, "rule.window: a duration is from 0 to 3650d"),
        ({"window": "0"}, 422, "rule.window: must be longer than 0s"),
        ({"thresold": 1}, 422, "rule.thresold: unknown key"),
        ({"name": None}, 422, "rule.name: Expected `str`, got `null`"),
        ({"name": "tocsin.x"}, 422, "rule.name: rule names starting with 'tocsin.'"),
        ({"op": "inside"}, 422, "rule: op 'inside' takes a range, not a threshold"),
        ({"channels": ["pager"]}, 422, "rule.channels[0]: no channel named 'pager'"),
        ({"name": "latency"}, 409, "a rule named 'latency' already exists"),
    ],
)
async def test_bad_rules_are_refused_with_the_key(served_api, change, status, error):
    answer_status, answer = await call(
        served_api, "POST", "/api/v1/rules", {**RULE, **change}
    )

    assert (answer_status, answer["status"]) == (status, "error")
    assert answer["error"].startswith(error)
    assert len(served_api.backend.rules) == 1


async def test_an_integration_never_shows_its_secrets(served_api, caplog):
    caplog.set_level(logging.DEBUG)
    body = {
        "type": "webhook",
        "name": "slack-ml",
        "url": HOOK,
        "headers": {"Authorization": "Bearer abcdef"},
    }

    status, added = await call(served_api, "POST", "/api/v1/integrations", body)
    _, listed = await call(served_api, "GET", "/api/v1/integrations")

    assert status == 201
    settings = added["integration"]["settings"]
    assert (settings["url"], settings["headers"]) == (MASK, {"Authorization": MASK})
    assert settings["url_env"] == ""
    assert listed["integrations"][1]["settings"] == settings
    assert added["integration"]["created_by"] == f"api:{getpass.getuser()}"
    stored = served_api.backend.channels[1].channel
    assert stored.url == HOOK
    for text in (str(added), str(listed), caplog.text):
        assert "very-secret" not in text
        assert "abcdef" not in text


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (
            {"type": "pager", "name": "pd", "routing_key": "k"},
            422,
            "channel.type: Tocsin cannot deliver to 'pager' channels; known types:"
            " datadog, email, log, pagerduty, slack, teams, webhook",
        ),
        (
            {"type": "pagerduty", "name": "pd"},
            422,
            "channel.routing_key: set exactly one of routing_key,",
        ),
        ({"type": "webhook", "name": "w"}, 422, "channel.url: set exactly one of url"),
        (
            {"type": "webhook", "name": "w", "url": "ftp://x"},
            422,
            "channel.url: must start with http:// or https://",
        ),
        ({"name": "w"}, 422, "channel.type: missing required key"),
        ({"type": "log", "name": "log"}, 409, "a channel named 'log' already exists"),
    ],
)
async def test_bad_integrations_are_refused(served_api, body, status, error):
    answer_status, answer = await call(served_api, "POST", "/api/v1/integrations", body)

    assert (answer_status, answer["status"]) == (status, "error")
    assert answer["error"].startswith(error)
    assert len(served_api.backend.channels) == 1


@pytest.mark.parametrize(
    ("kind", "body", "shown"),
    [
        ("grouping", {"group_by": ["model"], "group_wait": "30s"}, None),
        (
            "dedup",
            {"keys": ["model"], "max_per_window": 3},
            {
                "keys": ["model"],
                "window": 600.0,
                "max_per_window": 3,
                "suppress_for": 0.0,
            },
        ),
        (
            "digest",
            {"interval": "1h", "matchers": ['team="ml"'], "channels": ["log"]},
            {"interval": 3600.0, "matchers": ['team="ml"'], "channels": ["log"]},
        ),
    ],
)
async def test_settings_are_put_and_read_back(served_api, kind, body, shown):
    url = f"/api/v1/settings/{kind}"

    status, put = await call(served_api, "PUT", url, body)
    _, got = await call(served_api, "GET", url)

    assert status == 200
    expected = shown or {"group_by": ["model"], "group_wait": 30.0}
    assert put == got == {"status": "ok", "kind": kind, "settings": expected}


@pytest.mark.parametrize(
    ("kind", "body", "error"),
    [
        ("grouping", {"group_wait": "soon"}, "grouping.group_wait: invalid duration"),
        ("dedup", {"max_per_window": -1}, "dedup.max_per_window: Expected `int` >= 0"),
        ("digest", {"channels": ["pager"]}, "digest.channels[0]: no channel named"),
    ],
)
async def test_bad_settings_are_422(served_api, kind, body, error):
    status, answer = await call(served_api, "PUT", f"/api/v1/settings/{kind}", body)

    assert (status, answer["status"]) == (422, "error")
    assert answer["error"].startswith(error)


async def test_routes_groups_and_a_route_test(served_api):
    _, tree = await call(served_api, "GET", "/api/v1/routes")
    _, tested = await call(
        served_api, "POST", "/api/v1/routes/test", {"labels": {"team": "ml"}}
    )
    _, groups = await call(served_api, "GET", "/api/v1/groups")

    assert [route["id"] for route in tree["route"]["routes"]] == ["ml"]
    assert tested["channels"] == ["log"]
    assert [route["id"] for route in tested["routes"]] == ["ml"]
    assert groups["groups"][0]["route"] == "ml"


async def test_status_counts_and_uptime(served_api):
    served_api.clock.advance(10)

    status, answer = await call(served_api, "GET", "/api/v1/status")

    assert status == 200
    assert answer["uptime_s"] == 100.0
    assert answer["alerts"] == {"triggered": 2}
    assert answer["config"] == "/etc/tocsin/tocsin.toml"
    assert answer["pending_notifications"] == 3


@pytest.mark.parametrize("url", ["/api/v1/reload", "/-/reload"])
async def test_reload_is_served_under_both_paths(served_api, url):
    status, answer = await call(served_api, "POST", url)

    assert (status, answer["status"], answer["kept"]) == (200, "reloaded", ["latency"])


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
)
@pytest.mark.parametrize("url", ["/api/v1/alerts", "/-/healthy", "/nowhere"])
async def test_tcp_needs_the_token(served_api, headers, url, caplog):
    caplog.set_level(logging.DEBUG)

    status, answer = await call(served_api, "GET", url, tcp=True, headers=headers)

    assert status == 401
    assert answer == {"status": "error", "error": "a valid bearer token is required"}
    assert TOKEN not in caplog.text


async def test_tcp_with_the_token_answers(served_api):
    status, answer = await call(served_api, "GET", "/api/v1/alerts?limit=1", tcp=True)

    assert status == 200
    assert len(answer["alerts"]) == 1


async def test_a_fault_in_the_backend_is_500_without_detail(served_api, caplog):
    async def broken(**filters):
        raise RuntimeError("the database is on fire")

    served_api.backend.list_alerts = broken

    status, answer = await call(served_api, "GET", "/api/v1/alerts")

    assert (status, answer) == (
        500,
        {"status": "error", "error": "internal error; see tocsin's log"},
    )
    [record] = [r for r in caplog.records if r.message == "API request failed"]
    assert record.exc_info is not None


async def test_an_integrations_secrets_are_kept_out_of_every_log(served_api):
    body = {"type": "webhook", "name": "w", "url": HOOK + "/2", "timeout": "0"}

    status, _ = await call(served_api, "POST", "/api/v1/integrations", body)

    # Refused, yet its URL is a secret from now on.
    assert status == 422
    assert logs.redact(f"posting to {HOOK}/2") == "posting to [redacted]"


@pytest.mark.parametrize(
    ("channel", "shown"),
    [
        (
            WebhookChannelConfig(name="a", url=HOOK, headers={"X-Key": "k"}),
            {"url": MASK, "url_env": "", "url_file": "", "headers": {"X-Key": MASK}},
        ),
        (
            WebhookChannelConfig(name="b", url_env="HOOK_URL"),
            {"url": "", "url_env": "HOOK_URL", "url_file": "", "headers": {}},
        ),
        (
            WebhookChannelConfig(name="c", url_file="/run/hook"),
            {"url": "", "url_env": "", "url_file": "/run/hook", "headers": {}},
        ),
    ],
)
def test_masking_hides_values_not_where_they_come_from(channel, shown):
    answer = api_values.masked(channel)

    assert {key: answer[key] for key in shown} == shown


@pytest.mark.parametrize("source", ["env", "file"])
def test_the_tcp_token_is_read_and_registered(tmp_path, monkeypatch, source):
    secret = f"token-from-{source}"
    if source == "env":
        monkeypatch.setenv("TOCSIN_TEST_TOKEN", secret)
        config = ApiConfig(tcp="127.0.0.1:0", token_env="TOCSIN_TEST_TOKEN")
    else:
        (tmp_path / "token").write_text(secret + "\n")
        config = ApiConfig(tcp="127.0.0.1:0", token_file=str(tmp_path / "token"))

    assert api.read_token(config, "tocsin.toml") == secret
    assert logs.redact(secret) == "[redacted]"


async def test_tcp_is_not_served_without_a_token(tmp_path):
    control = api.ControlApi(lambda source: None, lambda: True)
    tcp = api.bind_tcp("127.0.0.1:0")

    binding = api.bind(str(tmp_path / "api.sock"))

    try:
        with pytest.raises(ValueError, match="the TCP API needs a token"):
            await control.start(binding, tcp)
    finally:
        binding.close()

    assert tcp.fileno() == -1
