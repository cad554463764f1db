"""PagerDuty's webhooks served by the real API app over TCP, against alerts
in a real state database."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import aiohttp
import orjson
import pytest

from tests.standins.pagerduty import (
    Incident,
    ping_body,
    signature,
    signed,
    webhook_body,
)
from tests.state.test_alerts import T0, make_spec
from tocsin.channels.base import ChannelContext
from tocsin.channels.pagerduty import PagerDutyChannel, dedup_key
from tocsin.channels.webhook import WebhookChannel
from tocsin.clock import ManualClock
from tocsin.config import PagerDutyChannelConfig, WebhookChannelConfig
from tocsin.daemon import api
from tocsin.daemon.backend import AlertDetail
from tocsin.daemon.hooks import Hooks
from tocsin.daemon.reload import ReloadOutcome
from tocsin.errors import StateError, UnknownAlertError
from tocsin.state.alerts import AlertStore
from tocsin.state.db import Database
from tocsin.state.inbound import KEEP_FOR, InboundLog

OLD, NEW = "old-webhook-secret-0001", "new-webhook-secret-0002"
ROUTING_KEY = "0123456789abcdef0123456789abcdef"
TOKEN = "api-token-for-hook-tests"


class StoreBackend:
    """The two backend calls the hooks make, over a real alert store.

    :param fail_moves: moves that raise :class:`StateError` before the rest
        are made, as a busy database would.
    """

    def __init__(self, store: AlertStore) -> None:
        self.store = store
        self.fail_moves = 0

    async def get_alert(self, ref):
        alert = await self.store.get_by_ref(ref)
        if alert is None:
            raise UnknownAlertError(ref)
        return AlertDetail(alert=alert, history=await self.store.history(alert.id))

    async def reopen_alert(self, ref, *, actor, comment):
        alert = await self.store.reopen(ref, actor=actor, comment=comment)
        return await self.get_alert(alert.uid)

    async def move_alert(self, ref, to_state, *, actor, comment):
        if self.fail_moves:
            self.fail_moves -= 1
            raise StateError("database is locked")
        alert = await self.store.move(ref, to_state, actor=actor, comment=comment)
        return await self.get_alert(alert.uid)


class Served:
    """The API with the hooks, and what the tests look at."""

    def __init__(self, url, store, backend, session) -> None:
        self.url = url
        self.store = store
        self.backend = backend
        self.session = session

    async def post(self, channel, body, headers) -> tuple[int, dict]:
        path = f"{self.url}/hooks/pagerduty/{channel}"
        async with self.session.post(path, data=body, headers=headers) as response:
            return response.status, orjson.loads(await response.read())

    async def fire(self, model: str):
        spec = make_spec(series=f"model={model}", labels={"model": model})
        return await self.store.fire(spec, ["page"])

    async def state(self, alert) -> str:
        return (await self.store.get(alert.id)).state

    async def history(self, alert) -> list[tuple[str, str, str]]:
        return [
            (t.to_state, t.actor, t.comment) for t in await self.store.history(alert.id)
        ]


@pytest.fixture
async def served(tmp_path):
    clock = ManualClock(T0)
    db = await Database.open(tmp_path / "tocsin.db", clock=clock)
    store = AlertStore(db, clock)
    backend = StoreBackend(store)
    async with aiohttp.ClientSession() as session:
        context = ChannelContext(session, clock)
        channels = {
            "page": pd_channel("page", context, f"{OLD},{NEW}"),
            "quiet": pd_channel("quiet", context, None),
            "hook": WebhookChannel(
                WebhookChannelConfig(name="hook"), {"url": "http://x/y"}, context
            ),
        }
        hooks = Hooks(backend, channels.get, InboundLog(db, clock), clock, session)
        control = api.ControlApi(
            _reload, lambda: True, token=TOKEN, clock=clock, hooks=hooks
        )
        await control.start(
            api.bind(str(tmp_path / "api.sock")), api.bind_tcp("127.0.0.1:0")
        )
        try:
            yield Served(f"http://{control.tcp_address}", store, backend, session)
        finally:
            await control.stop()
            await db.close()


def pd_channel(name, context, webhook_secret):
    secrets = {"routing_key": ROUTING_KEY}
    if webhook_secret:
        secrets["webhook_secret"] = webhook_secret
    return PagerDutyChannel(PagerDutyChannelConfig(name=name), secrets, context)


async def _reload(source):
    return ReloadOutcome(kept=(), config="tocsin.toml")


def incident_of(alert, number: int = 7) -> Incident:
    return Incident(
        id=f"Q{number:06d}",
        number=number,
        routing_key=ROUTING_KEY,
        dedup_key=dedup_key(alert),
        status="triggered",
        summary="Drift on model a",
        severity="error",
        created_at="2025-06-15T15:06:40Z",
    )


def event(alert, kind: str, agent: str | None = "Ada Lovelace") -> bytes:
    return webhook_body(incident_of(alert), kind, agent=agent)


URL = "https://tocsin-test.pagerduty.com/incidents/Q000007"


async def test_an_acknowledgement_in_pagerduty_acknowledges_that_alert_only(served):
    a, b = await served.fire("a"), await served.fire("b")
    body = event(a, "incident.acknowledged")

    status, answer = await served.post("page", body, signed(body, NEW))

    assert (status, answer) == (200, {"status": "ok", "outcome": "acknowledged"})
    assert await served.state(a) == "acknowledged"
    assert await served.state(b) == "triggered"
    comment = f"acknowledged in PagerDuty by Ada Lovelace (incident #7 {URL})"
    assert (await served.history(a))[-1] == ("acknowledged", "pagerduty", comment)


async def test_a_resolution_walks_the_lifecycle_without_escalating(served):
    alert = await served.fire("a")
    body = event(alert, "incident.resolved", agent=None)

    status, answer = await served.post("page", body, signed(body, OLD))

    assert (status, answer["outcome"]) == (200, "resolved")
    comment = f"resolved in PagerDuty (incident #7 {URL})"
    assert (await served.history(alert))[1:] == [
        ("acknowledged", "pagerduty", comment),
        ("investigating", "pagerduty", comment),
        ("resolved", "pagerduty", comment),
    ]


async def test_an_escalated_alert_is_resolved_in_one_move(served):
    alert = await served.fire("a")
    await served.store.move(alert.uid, "escalated", actor="engine")
    body = event(alert, "incident.resolved")

    await served.post("page", body, signed(body, NEW))

    moves = [(to, actor) for to, actor, _ in await served.history(alert)]
    assert moves[-2:] == [("escalated", "engine"), ("resolved", "pagerduty")]


@pytest.mark.parametrize(
    "header",
    [
        lambda body: signature(body, "not-a-secret-of-ours"),
        lambda body: "v1=" + "00" * 32,
        lambda body: signature(body + b" ", NEW),
    ],
    ids=["other secret", "zeros", "other body"],
)
async def test_a_wrong_signature_is_refused_and_changes_nothing(served, header, caplog):
    alert = await served.fire("a")
    body = event(alert, "incident.resolved")
    headers = {**signed(body, NEW), "X-PagerDuty-Signature": header(body)}

    with caplog.at_level(logging.DEBUG):
        status, answer = await served.post("page", body, headers)

    assert status == 401
    assert await served.state(alert) == "triggered"
    assert "PagerDuty webhook signature does not match" in caplog.messages
    text = caplog.text + orjson.dumps(answer).decode()
    assert OLD not in text and NEW not in text
    # The id was not spent: the genuine delivery is still taken.
    status, _ = await served.post(
        "page", body, signed(body, NEW, webhook_id=headers["X-Webhook-Id"])
    )
    assert status == 200
    assert await served.state(alert) == "resolved"


@pytest.mark.parametrize(
    "header",
    [
        lambda body: signature(body, OLD, NEW),
        lambda body: signature(body, "retired", NEW),
        lambda body: "v0=abc," + signature(body, OLD),
        lambda body: "v1=zz," + signature(body, NEW),
    ],
    ids=["both secrets", "one unknown", "other version first", "bad hex first"],
)
async def test_any_v1_signature_under_any_secret_is_accepted(served, header):
    alert = await served.fire("a")
    body = event(alert, "incident.acknowledged")
    headers = {**signed(body, NEW), "X-PagerDuty-Signature": header(body)}

    status, _ = await served.post("page", body, headers)

    assert status == 200
    assert await served.state(alert) == "acknowledged"


async def test_a_repeated_delivery_is_answered_and_ignored(served):
    alert = await served.fire("a")
    acknowledged = event(alert, "incident.acknowledged")
    resolved = event(alert, "incident.resolved")
    first = signed(acknowledged, NEW)
    # PagerDuty never reuses an id for another event: a resolution under the
    # acknowledgement's id is a replay, and must do nothing.
    replay = signed(resolved, NEW, webhook_id=first["X-Webhook-Id"])

    answers = [
        await served.post("page", acknowledged, first),
        await served.post("page", acknowledged, first),
        await served.post("page", resolved, replay),
    ]

    assert [(s, a["outcome"]) for s, a in answers] == [
        (200, "acknowledged"),
        (200, "repeated"),
        (200, "repeated"),
    ]
    assert await served.state(alert) == "acknowledged"
    assert len(await served.history(alert)) == 2


async def test_a_delivery_that_failed_is_taken_when_pagerduty_retries(served):
    alert = await served.fire("a")
    body = event(alert, "incident.acknowledged")
    headers = signed(body, NEW)
    served.backend.fail_moves = 1

    failed, _ = await served.post("page", body, headers)
    retried, answer = await served.post("page", body, headers)

    assert failed == 500
    assert (retried, answer["outcome"]) == (200, "acknowledged")
    assert await served.state(alert) == "acknowledged"


def without(header: str):
    """A delivery signed right, without ``header``."""

    def build(body: bytes) -> tuple[bytes, dict]:
        headers = signed(body, NEW)
        del headers[header]
        return body, headers

    return build


def signature_of(value: str):
    """A delivery whose signature header is ``value``."""
    return lambda body: (body, {**signed(body, NEW), "X-PagerDuty-Signature": value})


def body_of(raw: bytes):
    """A delivery of ``raw`` instead of the event, signed right."""
    return lambda body: (raw, signed(raw, NEW))


@pytest.mark.parametrize(
    ("build", "status"),
    [
        pytest.param(without("X-PagerDuty-Signature"), 400, id="no signature"),
        pytest.param(signature_of(""), 400, id="empty signature"),
        pytest.param(signature_of("v1="), 400, id="empty v1"),
        pytest.param(signature_of("v1=not-hex"), 400, id="v1 not hex"),
        pytest.param(signature_of("sha256=abcd"), 400, id="no v1 at all"),
        pytest.param(body_of(b""), 400, id="empty body"),
        pytest.param(without("X-Webhook-Id"), 400, id="no webhook id"),
        pytest.param(body_of(b"{not json"), 400, id="not json"),
        pytest.param(body_of(b'{"data":{}}'), 400, id="no event"),
        pytest.param(body_of(b"[1]"), 400, id="not an object"),
        pytest.param(body_of(b" " * (2 * 1024 * 1024 + 1)), 413, id="over 2 MB"),
    ],
)
async def test_a_malformed_delivery_is_refused_and_changes_nothing(
    served, build, status
):
    alert = await served.fire("a")
    body, headers = build(event(alert, "incident.resolved"))

    answered, answer = await served.post("page", body, headers)

    assert answered == status
    assert answer["status"] == "error"
    assert await served.state(alert) == "triggered"


@pytest.mark.parametrize("channel", ["nobody", "quiet", "hook"])
async def test_a_channel_that_takes_no_pagerduty_webhooks_is_not_found(served, channel):
    body = ping_body()

    status, _ = await served.post(channel, body, signed(body, NEW))

    assert status == 404


async def test_the_test_button_is_answered(served):
    body = ping_body()

    status, answer = await served.post("page", body, signed(body, OLD))

    assert (status, answer["outcome"]) == (200, "pong")


@pytest.mark.parametrize("key", ["not-ours", "tocsin-" + "f" * 32, "tocsin-1", None])
async def test_an_incident_that_names_no_alert_is_answered_and_logged(
    served, key, caplog
):
    alert = await served.fire("a")
    incident = incident_of(alert)
    incident.dedup_key = key
    body = webhook_body(incident, "incident.resolved", agent="Ada")

    with caplog.at_level(logging.INFO):
        status, answer = await served.post("page", body, signed(body, NEW))

    assert (status, answer["outcome"]) == (200, "unknown alert")
    assert "PagerDuty incident names no Tocsin alert" in caplog.messages
    assert await served.state(alert) == "triggered"


async def test_a_reopened_incident_reopens_its_resolved_alert(served):
    alert = await served.fire("a")
    resolved = event(alert, "incident.resolved")
    await served.post("page", resolved, signed(resolved, NEW))
    reopened = event(alert, "incident.reopened")

    status, answer = await served.post("page", reopened, signed(reopened, NEW))

    assert (status, answer["outcome"]) == (200, "triggered")
    assert await served.state(alert) == "triggered"
    [last] = (await served.store.history(alert.id))[-1:]
    assert (last.from_state, last.to_state, last.actor) == (
        "resolved",
        "triggered",
        "pagerduty",
    )
    assert last.comment.startswith("reopened in PagerDuty")


async def test_a_reopened_incident_leaves_a_closed_alert_closed(served, caplog):
    alert = await served.fire("a")
    resolved = event(alert, "incident.resolved")
    await served.post("page", resolved, signed(resolved, NEW))
    await served.store.move(alert.uid, "closed", actor="api:alice")
    reopened = event(alert, "incident.reopened")

    with caplog.at_level(logging.INFO):
        status, answer = await served.post("page", reopened, signed(reopened, NEW))

    assert (status, answer["outcome"]) == (200, "refused")
    assert await served.state(alert) == "closed"
    assert "PagerDuty webhook asks a move the lifecycle refuses" in caplog.messages


@pytest.mark.parametrize(
    ("kind", "outcome"),
    [
        ("incident.reopened", "unchanged"),
        ("incident.unacknowledged", "ignored"),
        ("incident.acknowledged", "unchanged"),
        ("incident.priority_updated", "ignored"),
    ],
)
async def test_events_that_ask_nothing_new_change_nothing(served, kind, outcome):
    alert = await served.fire("a")
    await served.store.move(alert.uid, "acknowledged", actor="api:alice")
    body = event(alert, kind)

    status, answer = await served.post("page", body, signed(body, NEW))

    assert (status, answer["outcome"]) == (200, outcome)
    assert await served.state(alert) == "acknowledged"
    assert len(await served.history(alert)) == 2


async def test_the_hooks_need_no_api_token_but_the_api_still_does(served):
    async with served.session.get(f"{served.url}/-/ready") as response:
        assert response.status == 401


async def test_a_very_long_name_makes_a_bounded_comment(served):
    alert = await served.fire("a")
    body = event(alert, "incident.acknowledged", agent="Ada " * 1000)

    await served.post("page", body, signed(body, NEW))

    [*_, (state, actor, comment)] = await served.history(alert)
    assert (state, actor) == ("acknowledged", "pagerduty")
    assert comment.startswith("acknowledged in PagerDuty by Ada Ada")
    assert len(comment) == 500 and comment.endswith("…")


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


async def test_a_captured_delivery_replayed_after_its_id_is_forgotten_does_nothing(
    served, caplog
):
    """Ids are remembered for three days; a signed delivery kept longer and
    sent again must not be taken as new. PagerDuty itself gives up retrying
    after two days, so an event that old is never a genuine delivery."""
    alert = await served.fire("a")
    stale = webhook_body(
        incident_of(alert),
        "incident.resolved",
        agent="Mallory",
        occurred_at=iso(T0 - KEEP_FOR - 60),
    )
    late = webhook_body(
        incident_of(alert),
        "incident.acknowledged",
        agent="Ada",
        occurred_at=iso(T0 - 47 * 3600),
    )

    with caplog.at_level(logging.WARNING, logger="tocsin.daemon.hooks_pagerduty"):
        replayed = await served.post("page", stale, signed(stale, NEW))
    retried = await served.post("page", late, signed(late, NEW))

    assert (replayed[0], replayed[1]["outcome"]) == (200, "stale")
    assert (retried[0], retried[1]["outcome"]) == (200, "acknowledged")
    assert [t[0] for t in await served.history(alert)] == ["triggered", "acknowledged"]
    assert [r.message for r in caplog.records] == [
        "PagerDuty webhook too old to be a delivery; ignored"
    ]


async def test_two_deliveries_of_one_id_at_once_are_applied_once(served):
    alert = await served.fire("a")
    body = event(alert, "incident.resolved")
    headers = signed(body, NEW)

    answers = await asyncio.gather(
        served.post("page", body, headers), served.post("page", body, headers)
    )

    assert sorted(answer["outcome"] for _, answer in answers) == [
        "repeated",
        "resolved",
    ]
    states = [t[0] for t in await served.history(alert)]
    assert states == ["triggered", "acknowledged", "investigating", "resolved"]


async def test_a_delivery_for_a_closed_alert_changes_nothing(served):
    alert = await served.fire("a")
    for state in ("acknowledged", "investigating", "resolved", "closed"):
        await served.store.move(alert.uid, state, actor="api:ops", comment="")
    outcomes = []
    for kind in ("incident.acknowledged", "incident.resolved", "incident.reopened"):
        body = event(alert, kind)
        outcomes.append((await served.post("page", body, signed(body, NEW)))[1])

    assert [answer["outcome"] for answer in outcomes] == [
        "refused",
        "unchanged",
        "refused",
    ]
    assert await served.state(alert) == "closed"
