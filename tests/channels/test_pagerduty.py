"""The PagerDuty channel against a strict local Events API v2."""

from __future__ import annotations

import math

import msgspec
import orjson
import pytest

from tests.standins.pagerduty import PagerDutyStandIn
from tests.state.test_alerts import T0, make_spec
from tocsin.channels.base import ChannelContext
from tocsin.channels.build import build_channels
from tocsin.channels.pagerduty import (
    REQUEST_LIMIT,
    TRIM_MARK,
    PagerDutyChannel,
    alert_uid,
    dedup_key,
    fit_event,
)
from tocsin.clock import ManualClock
from tocsin.config import PagerDutyChannelConfig
from tocsin.errors import DeliveryError
from tocsin.state.models import Alert, Notification, Transition

ROUTING_KEY = "R0UT1NGK3Y0123456789abcdefABCDEF"
UID_A = "a" * 32
UID_B = "b" * 32


@pytest.fixture
async def pd():
    async with PagerDutyStandIn() as standin:
        yield standin


def channel(pd, session, *, key=ROUTING_KEY, external_url="", **fields):
    config = PagerDutyChannelConfig(name="page", url=pd.url, **fields)
    context = ChannelContext(
        session,
        ManualClock(T0),
        external_url=external_url,
        hostname="gpu-host-1",
    )
    return PagerDutyChannel(config, {"routing_key": key}, context)


def alert(
    uid: str = UID_A, state: str = "triggered", model: str = "a", **spec_fields
) -> Alert:
    spec = make_spec(series=f"model={model}", labels={"model": model, "team": "ml"})
    spec = msgspec.structs.replace(spec, **spec_fields)
    return Alert(id=int(uid[0], 16), uid=uid, state=state, spec=spec, value=spec.value)


def message(
    event: str, *alerts: Alert, reason: str = "", actor: str = "engine"
) -> Notification:
    first = alerts[0]
    transition = Transition(
        id=40,
        alert_id=first.id,
        from_state=None if event == "trigger" else "triggered",
        to_state=first.state,
        at=T0 + 5,
        actor=actor,
        reason=first.spec.reason,
    )
    return Notification(
        id=1,
        key=f"tocsin-{first.uid}-40-page",
        channel="page",
        event=event,
        alert=first,
        transition=transition,
        attempts=0,
        created_at=T0,
        reason=reason,
        alerts=list(alerts) if len(alerts) > 1 else [],
    )


async def test_a_trigger_carries_the_alert_and_opens_an_incident(pd, session):
    page = channel(pd, session, external_url="https://tocsin.example.com/")
    sent = message("trigger", alert(), reason="first notification")

    status = await page.send(sent)

    assert status == 202
    [request] = pd.requests
    assert "Authorization" not in request.headers
    assert request.headers["Content-Type"] == "application/json"
    event = request.event
    assert event["routing_key"] == ROUTING_KEY
    assert (event["event_action"], event["dedup_key"]) == ("trigger", f"tocsin-{UID_A}")
    assert event["client"] == "Tocsin"
    alert_url = f"https://tocsin.example.com/api/v1/alerts/{UID_A}"
    assert event["client_url"] == alert_url
    assert event["links"] == [
        {"href": "https://runbooks.example/drift", "text": "Runbook"},
        {"href": alert_url, "text": "Alert in Tocsin"},
    ]
    payload = event["payload"]
    assert payload["summary"] == (
        "Drift on model a (model=a): 0.31 (avg(model.drift) over 5m > 0.2)"
    )
    assert payload["source"] == "gpu-host-1"
    assert payload["severity"] == "error"
    assert payload["timestamp"] == "2025-06-15T15:06:45.000Z"
    assert (payload["component"], payload["class"]) == ("a", "model.drift")
    assert "group" not in payload
    details = payload["custom_details"]
    assert details["model"] == "a"
    assert details["metric"] == "model.drift"
    assert (details["value"], details["threshold"]) == (0.31, 0.2)
    assert details["window"] == "5m"
    assert (details["rule"], details["series"]) == ("drift", "model=a")
    assert details["labels"] == {"model": "a", "team": "ml"}
    assert details["reason"] == "avg 0.31 > 0.2 for 30s"
    assert details["notification"] == "first notification"
    assert details["summary"] == payload["summary"]
    assert "project" not in details and "features" not in details
    [incident] = pd.incidents
    assert (incident.status, incident.dedup_key) == ("triggered", f"tocsin-{UID_A}")


async def test_the_config_overrides_severity_source_component_group_and_class(
    pd, session
):
    page = channel(
        pd,
        session,
        severities={"high": "critical", "info": "warning"},
        source="tocsin-prod",
        component="ranker",
        group="search",
        event_class="drift",
    )

    await page.send(message("trigger", alert()))
    await page.send(message("trigger", alert(UID_B, model="b", severity="info")))
    await page.send(message("trigger", alert("c" * 32, model="c", severity="low")))

    payloads = [request.event["payload"] for request in pd.requests]
    assert [p["severity"] for p in payloads] == ["critical", "warning", "info"]
    first = payloads[0]
    assert (first["source"], first["component"]) == ("tocsin-prod", "ranker")
    assert (first["group"], first["class"]) == ("search", "drift")


async def test_project_and_features_come_from_labels_and_metadata(pd, session):
    labelled = alert(
        labels={"model": "a", "project": "fraud", "feature": "age"},
        metadata={"features": "income, age ,zip", "owner": "ml"},
    )

    await channel(pd, session).send(message("trigger", labelled))

    payload = pd.requests[0].event["payload"]
    assert payload["group"] == "fraud"
    assert payload["custom_details"]["project"] == "fraud"
    assert payload["custom_details"]["features"] == ["age", "income", "zip"]


def test_the_dedup_key_is_the_alerts_uid_and_nothing_that_changes():
    fired = alert()
    later = alert(severity="critical", value=9.5, fired_at=T0 + 3600, threshold=0.5)
    later.value = 9.5

    assert dedup_key(fired) == dedup_key(later) == f"tocsin-{UID_A}"
    assert len(dedup_key(fired)) <= 255
    assert alert_uid(dedup_key(fired)) == UID_A


@pytest.mark.parametrize(
    "key", ["", UID_A, "tocsin-12", "tocsin-" + "A" * 32, "other-" + UID_A]
)
def test_a_key_tocsin_did_not_make_names_no_alert(key):
    assert alert_uid(key) is None


async def test_one_alert_per_series_of_a_rule_through_its_whole_life(pd, session):
    """F13: model=a and model=b breach one rule, then a is acknowledged and
    recovers: two keys, a's three events under a's key, b still open."""
    page = channel(pd, session)
    a, b = alert(UID_A, model="a"), alert(UID_B, model="b")

    await page.send(message("trigger", a, b))
    await page.send(message("acknowledge", alert(UID_A, "acknowledged", model="a")))
    await page.send(message("resolve", alert(UID_A, "resolved", model="a")))

    key_a, key_b = f"tocsin-{UID_A}", f"tocsin-{UID_B}"
    assert [request.event["dedup_key"] for request in pd.requests] == [
        key_a,
        key_b,
        key_a,
        key_a,
    ]
    assert pd.actions(key_a) == ["trigger", "acknowledge", "resolve"]
    assert pd.actions(key_b) == ["trigger"]
    assert pd.incident(key_a).status == "resolved"
    assert pd.incident(key_b).status == "triggered"
    assert len(pd.incidents) == 2


async def test_an_acknowledgement_sends_only_the_key(pd, session):
    page = channel(pd, session)
    await page.send(message("trigger", alert()))

    status = await page.send(message("acknowledge", alert(state="acknowledged")))

    assert status == 202
    assert pd.requests[1].event == {
        "routing_key": ROUTING_KEY,
        "event_action": "acknowledge",
        "dedup_key": f"tocsin-{UID_A}",
    }
    assert pd.incident(f"tocsin-{UID_A}").status == "acknowledged"


async def test_an_acknowledgement_made_in_pagerduty_is_not_sent_back(pd, session):
    page = channel(pd, session)
    await page.send(message("trigger", alert()))
    acked = alert(state="acknowledged")

    status = await page.send(message("acknowledge", acked, actor="pagerduty"))

    assert status is None
    assert [r.event["event_action"] for r in pd.requests] == ["trigger"]


def test_acknowledgements_are_sent_unless_the_config_says_not(session):
    config = PagerDutyChannelConfig(name="page")
    context = ChannelContext(session, ManualClock(T0))
    keys = {"routing_key": ROUTING_KEY}

    assert PagerDutyChannel(config, keys, context).send_acknowledged is True
    quiet = msgspec.structs.replace(config, send_acknowledged=False)
    assert PagerDutyChannel(quiet, keys, context).send_acknowledged is False


async def test_a_grouped_message_triggers_the_firing_and_resolves_the_resolved(
    pd, session
):
    page = channel(pd, session)
    await page.send(message("trigger", alert(UID_B, model="b")))

    await page.send(
        message("trigger", alert(UID_A, model="a"), alert(UID_B, "resolved", "b"))
    )

    actions = [(r.event["event_action"], r.event["dedup_key"]) for r in pd.requests]
    assert actions[1:] == [
        ("trigger", f"tocsin-{UID_A}"),
        ("resolve", f"tocsin-{UID_B}"),
    ]
    assert "payload" not in pd.requests[2].event
    assert pd.incident(f"tocsin-{UID_B}").status == "resolved"


async def test_a_reopened_alert_opens_a_new_incident_under_the_same_key(pd, session):
    page = channel(pd, session)

    await page.send(message("trigger", alert()))
    await page.send(message("resolve", alert(state="resolved")))
    await page.send(message("trigger", alert(fired_at=T0 + 600)))

    key = f"tocsin-{UID_A}"
    first, second = pd.incidents
    assert (first.dedup_key, first.status) == (key, "resolved")
    assert (second.dedup_key, second.status) == (key, "triggered")


async def test_a_long_summary_is_cut_and_kept_whole_in_the_details(pd, session):
    name = "Drift " + "é" * 2000

    await channel(pd, session).send(message("trigger", alert(summary=name)))

    [request] = pd.accepted
    payload = request.event["payload"]
    assert len(payload["summary"]) == 1024
    assert payload["summary"].endswith("…")
    assert payload["custom_details"]["summary"].startswith(name)


async def test_an_event_over_the_size_limit_is_trimmed_visibly(pd, session):
    huge = alert(
        metadata={"notes": "x" * 400_000, "owner": "ml"},
        description='"quoted"\n' * 30_000,
    )

    await channel(pd, session).send(message("trigger", huge))

    [request] = pd.accepted
    assert len(request.body) <= REQUEST_LIMIT
    details = request.event["payload"]["custom_details"]
    cut = sorted(k for k, v in details.items() if str(v).endswith(TRIM_MARK))
    assert cut and details["trimmed"] == cut
    assert details["rule"] == "drift"
    assert details["summary"].startswith("Drift on model a")


def test_a_detail_cut_as_json_text_is_cut_again_until_it_fits():
    # Cut as text, an object's quotes are escaped: the first cut falls short.
    entries = {f"k{index}": "v" for index in range(300)}
    event = {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "payload": {"summary": "s", "custom_details": {"m": entries}},
    }

    body = fit_event(event, limit=2500)

    assert len(body) <= 2500
    cut = orjson.loads(body)["payload"]["custom_details"]["m"]
    assert cut.startswith('{"k0":"v"') and cut.endswith(TRIM_MARK)


def test_trimming_ends_even_when_nothing_is_left_to_cut():
    event = {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "payload": {"summary": "s" * 2000, "custom_details": {"a": "\x01" * 900}},
    }

    body = fit_event(event, limit=1000)

    details = orjson.loads(body)["payload"]["custom_details"]
    assert details == {"a": TRIM_MARK, "trimmed": ["a"]}
    assert len(body) > 1000


@pytest.mark.parametrize("bad", [math.nan, math.inf])
async def test_a_non_finite_value_is_left_out_not_sent_as_a_token(pd, session, bad):
    await channel(pd, session).send(message("trigger", alert(value=bad, threshold=bad)))

    [request] = pd.accepted
    assert b"NaN" not in request.body and b"Infinity" not in request.body
    details = request.event["payload"]["custom_details"]
    assert "value" not in details and "threshold" not in details


async def test_a_refused_event_is_final_and_says_why_without_the_key(pd, session):
    short_key = "0123456789abcdef"

    with pytest.raises(DeliveryError) as caught:
        await channel(pd, session, key=short_key).send(message("trigger", alert()))

    error = caught.value
    assert (error.reason, error.retryable, error.status) == ("client_error", False, 400)
    assert "Length of 'routing_key' is incorrect (should be 32 characters)" in str(
        error
    )
    assert short_key not in str(error)
    assert pd.incidents == []


async def test_a_refusal_that_quotes_the_routing_key_is_redacted(pd, session):
    echo = orjson.dumps(
        {
            "status": "invalid event",
            "message": "Event object is invalid",
            "errors": [f"routing key {ROUTING_KEY} is disabled"],
        }
    )
    pd.fail(400, body=echo)

    with pytest.raises(DeliveryError) as caught:
        await channel(pd, session).send(message("trigger", alert()))

    assert ROUTING_KEY not in str(caught.value)
    assert "routing key [redacted] is disabled" in str(caught.value)


@pytest.mark.parametrize(
    ("status", "reason"),
    [(429, "rate_limited"), (500, "server_error"), (503, "server_error")],
)
async def test_rate_limits_and_outages_may_succeed_later(pd, session, status, reason):
    pd.fail(status)

    with pytest.raises(DeliveryError) as caught:
        await channel(pd, session).send(message("trigger", alert()))

    error = caught.value
    assert (error.reason, error.retryable, error.status) == (reason, True, status)
    assert error.retry_after is None
    assert pd.incidents == []


async def test_a_slow_answer_is_a_retryable_timeout(pd, session):
    pd.fail(202, hold=True)

    with pytest.raises(DeliveryError) as caught:
        await channel(pd, session, timeout=0.2).send(message("trigger", alert()))

    assert (caught.value.reason, caught.value.retryable) == ("timeout", True)


async def test_a_success_status_with_an_error_body_is_refused(pd, session):
    pd.fail(202, body=b'{"status":"invalid event","message":"throttled"}')

    with pytest.raises(DeliveryError) as caught:
        await channel(pd, session).send(message("trigger", alert()))

    assert (caught.value.retryable, caught.value.status) == (False, 202)
    assert "throttled" in str(caught.value)


async def test_a_retry_after_a_failed_event_sends_every_event_again_alike(pd, session):
    page = channel(pd, session)
    grouped = message("trigger", alert(UID_A, model="a"), alert(UID_B, model="b"))
    pd.fail(503)

    with pytest.raises(DeliveryError):
        await page.send(grouped)
    await page.send(grouped)

    refused, *sent = pd.requests
    assert refused.status == 503
    assert [request.status for request in sent] == [202, 202]
    assert sent[0].body == refused.body
    assert len(pd.incidents) == 2


def test_webhook_secrets_are_split_on_commas(session):
    config = PagerDutyChannelConfig(name="page")
    context = ChannelContext(session, ManualClock(T0))
    secrets = {"routing_key": ROUTING_KEY, "webhook_secret": " old-secret, new,, "}

    page = PagerDutyChannel(config, secrets, context)
    bare = PagerDutyChannel(config, {"routing_key": ROUTING_KEY}, context)

    assert page.webhook_secrets == ("old-secret", "new")
    assert bare.webhook_secrets == ()


def test_the_builder_makes_a_pagerduty_channel(session):
    config = PagerDutyChannelConfig(name="page")
    context = ChannelContext(session, ManualClock(T0))

    built = build_channels([config], {"page": {"routing_key": ROUTING_KEY}}, context)

    assert isinstance(built["page"], PagerDutyChannel)
