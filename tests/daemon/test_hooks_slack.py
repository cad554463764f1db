"""Slack's button clicks at ``/hooks/slack/NAME``: signed, stale, future,
forged and replayed requests, each action's effect, and the message redrawn
through the click's ``response_url``."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import msgspec
import pytest

from tests.channels.test_payload import notification
from tests.daemon.fake_backend import NOW, TOKEN, FakeBackend
from tests.standins.slack import SlackStandin, sign, signed_action
from tocsin.channels.base import ChannelContext
from tocsin.channels.slack import SlackChannel
from tocsin.channels.webhook import WebhookChannel
from tocsin.clock import ManualClock
from tocsin.daemon import api
from tocsin.daemon.hooks import Hooks
from tocsin.daemon.reload import ReloadOutcome
from tocsin.schema import SlackChannelConfig, WebhookChannelConfig
from tocsin.state.db import Database
from tocsin.state.inbound import InboundLog

SECRET = "8f14e45fceea167a5a36dedd4bea2543"
ACK, SNOOZE, RESOLVE = "tocsin.acknowledge", "tocsin.snooze", "tocsin.resolve"


async def _reload(source: str) -> ReloadOutcome:
    return ReloadOutcome(config="tocsin.toml")


class Served:
    """The API with its hooks over a fake backend, a real inbound log, and
    three channels: ``alerts`` (Slack, signed), ``plain`` (Slack without a
    signing secret) and ``hook`` (a webhook)."""

    def __init__(
        self, tmp_path, slack: SlackStandin, session, clock, backend=FakeBackend
    ) -> None:
        self.tmp_path = tmp_path
        self.slack = slack
        self.session = session
        self.clock = clock
        self.backend = backend(clock)

    async def start(self) -> None:
        self.db = await Database.open(self.tmp_path / "tocsin.db", clock=self.clock)
        context = ChannelContext(
            self.session, self.clock, external_url="https://tocsin.example"
        )
        hook_url = "https://receiver.invalid/hook"
        self.channels = {
            "alerts": SlackChannel(
                SlackChannelConfig(name="alerts"),
                {"webhook_url": self.slack.webhook_url, "signing_secret": SECRET},
                context,
            ),
            "plain": SlackChannel(
                SlackChannelConfig(name="plain"),
                {"webhook_url": self.slack.webhook_url},
                context,
            ),
            "hook": WebhookChannel(
                WebhookChannelConfig(name="hook", url=hook_url),
                {"url": hook_url},
                context,
            ),
        }
        hooks = Hooks(
            self.backend,
            self.channels.get,
            InboundLog(self.db, self.clock),
            self.clock,
            self.session,
        )
        self.control = api.ControlApi(
            _reload,
            lambda: True,
            backend=self.backend,
            token=TOKEN,
            clock=self.clock,
            hooks=hooks,
        )
        socket_path = str(self.tmp_path / "api.sock")
        await self.control.start(api.bind(socket_path), api.bind_tcp("127.0.0.1:0"))
        self.url = f"http://{self.control.tcp_address}"

    async def stop(self) -> None:
        """Stop serving; requests in progress are finished first."""
        await self.control.stop()
        if self.db is not None:
            await self.db.close()
            self.db = None

    async def post(self, channel: str, request) -> tuple[int, str]:
        url = f"{self.url}/hooks/slack/{channel}"
        async with self.session.post(
            url, data=request.body, headers=request.headers
        ) as response:
            return response.status, await response.text()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
async def slack(clock):
    async with SlackStandin(clock) as standin:
        yield standin


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
async def served(tmp_path, slack, session, clock):
    running = Served(tmp_path, slack, session, clock)
    await running.start()
    yield running
    await running.stop()


def click(slack, action: str, uid: str = "uid-1", **options):
    options.setdefault("timestamp", NOW)
    return signed_action(
        SECRET, action, uid, response_url=slack.response_url(), **options
    )


def action_ids(message: dict) -> list[str]:
    return [
        element["action_id"]
        for block in message["blocks"]
        if block["type"] == "actions"
        for element in block["elements"]
    ]


async def test_a_signed_acknowledge_moves_the_alert_and_redraws_the_message(
    served, slack
):
    status, _ = await served.post("alerts", click(slack, ACK))

    assert status == 200
    [update] = await slack.wait_for_updates(1)
    assert served.backend.moves == [
        ("uid-1", "acknowledged", "slack:alice", "from Slack")
    ]
    message = update.json
    assert message["replace_original"] is True
    header = message["blocks"][0]["text"]["text"]
    assert header.startswith("[ACKNOWLEDGED] drift on ")
    context = message["blocks"][-1]["elements"][0]["text"]
    assert context.startswith("Acknowledged by slack:alice · <!date^1750000000^")
    assert action_ids(message) == [SNOOZE, RESOLVE]


async def test_resolve_walks_the_lifecycle_and_leaves_no_buttons(served, slack):
    await served.post("alerts", click(slack, RESOLVE, username="", user_id="U0BOB"))

    [update] = await slack.wait_for_updates(1)
    assert served.backend.moves == [
        ("uid-1", "acknowledged", "slack:U0BOB", "from Slack"),
        ("uid-1", "investigating", "slack:U0BOB", "from Slack"),
        ("uid-1", "resolved", "slack:U0BOB", "from Slack"),
    ]
    assert update.json["blocks"][0]["text"]["text"].startswith("[RESOLVED] ")
    assert action_ids(update.json) == []


async def test_snooze_silences_exactly_that_alert_from_now(served, slack, clock):
    clock.advance(42)

    await served.post("alerts", click(slack, SNOOZE, timestamp=NOW + 42))

    [update] = await slack.wait_for_updates(1)
    [silence] = served.backend.silences.values()
    assert silence.matchers == ['model="fraud-a"', 'rule="drift"', 'team="ml"']
    assert (silence.starts_at, silence.ends_at) == (NOW + 42, NOW + 42 + 3600)
    assert silence.created_by == "slack:alice"
    assert silence.comment == "Snoozed from Slack for 1h"
    assert served.backend.moves == []
    context = update.json["blocks"][-1]["elements"][0]["text"]
    assert context.startswith("Snoozed for 1h by slack:alice · ")
    assert action_ids(update.json) == [ACK, SNOOZE, RESOLVE]


async def test_a_move_already_made_redraws_the_message_saying_so(served, slack):
    await served.post("alerts", click(slack, RESOLVE, action_ts="1.1"))
    await slack.wait_for_updates(1)

    await served.post("alerts", click(slack, ACK, action_ts="1.2"))

    _, redrawn = await slack.wait_for_updates(2)
    assert redrawn.json["replace_original"] is True
    assert "Already resolved" in str(redrawn.json["blocks"])
    assert [move[1] for move in served.backend.moves][-1] == "resolved"


async def test_a_refused_action_answers_only_the_clicker_with_the_reason(served, slack):
    await served.post("alerts", click(slack, RESOLVE, action_ts="1.1"))
    await slack.wait_for_updates(1)

    await served.post("alerts", click(slack, SNOOZE, action_ts="1.2"))

    _, refused = await slack.wait_for_updates(2)
    assert refused.json == {
        "response_type": "ephemeral",
        "replace_original": False,
        "text": "Tocsin could not snooze this alert: alert 1 is resolved:"
        " there is nothing to snooze",
    }


async def test_an_unknown_alert_is_answered_with_the_reason(served, slack):
    await served.post("alerts", click(slack, SNOOZE, uid="no-such-alert"))

    [update] = await slack.wait_for_updates(1)
    assert (
        update.json["text"]
        == "Tocsin could not snooze this alert: no alert no-such-alert"
    )
    assert served.backend.silences == {}


@pytest.mark.parametrize("offset", [-300, 300, 0])
async def test_a_timestamp_within_five_minutes_either_way_is_taken(
    served, slack, offset
):
    status, _ = await served.post("alerts", click(slack, ACK, timestamp=NOW + offset))

    assert status == 200
    await slack.wait_for_updates(1)
    assert len(served.backend.moves) == 1


def forged(slack, action: str = ACK):
    """A click signed with another secret."""
    request = click(slack, action)
    stamp = request.headers["X-Slack-Request-Timestamp"]
    headers = {
        **request.headers,
        "X-Slack-Signature": sign("0" * 32, stamp, request.body),
    }
    return type(request)(headers, request.body, request.payload)


def unsigned(slack):
    request = click(slack, ACK)
    headers = {k: v for k, v in request.headers.items() if k != "X-Slack-Signature"}
    return type(request)(headers, request.body, request.payload)


def tampered(slack):
    """A correctly signed click whose body was changed afterwards."""
    request = click(slack, ACK)
    body = request.body.replace(b"uid-1", b"uid-2")
    return type(request)(request.headers, body, request.payload)


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (lambda slack: click(slack, ACK, timestamp=NOW - 301), "outside the window"),
        (lambda slack: click(slack, ACK, timestamp=NOW + 301), "outside the window"),
        (forged, "bad signature"),
        (tampered, "bad signature"),
        (unsigned, "unsigned"),
    ],
)
async def test_a_request_not_signed_by_slack_now_is_refused_and_changes_nothing(
    served, slack, caplog, build, reason
):
    request = build(slack)

    with caplog.at_level(logging.INFO):
        status, answer = await served.post("alerts", request)

    assert status == 401
    assert reason in answer
    # The refused click left no trace: the same click, signed, still acts.
    valid = click(slack, ACK, timestamp=NOW)
    assert (await served.post("alerts", valid))[0] == 200
    await slack.wait_for_updates(1)
    assert [move[:2] for move in served.backend.moves] == [("uid-1", "acknowledged")]
    assert len(slack.updates) == 1
    for text in (answer, caplog.text):
        assert SECRET not in text and "/actions/" not in text


async def test_a_replayed_click_is_applied_once_and_refused_after_the_window(
    served, slack, clock, caplog
):
    request = click(slack, SNOOZE)

    with caplog.at_level(logging.INFO, logger="tocsin.daemon.hooks_slack"):
        assert (await served.post("alerts", request))[0] == 200
        await slack.wait_for_updates(1)
        assert (await served.post("alerts", request))[0] == 200
        clock.advance(301)
        status, _ = await served.post("alerts", request)
        # Stopping waits for the requests in progress.
        await served.stop()

    assert status == 401
    assert len(served.backend.silences) == 1
    assert len(slack.updates) == 1
    messages = [record.getMessage() for record in caplog.records]
    assert messages.count("slack action repeated") == 1
    assert messages.count("slack request refused") == 1


async def test_the_same_moment_by_another_person_is_another_click(served, slack):
    await served.post("alerts", click(slack, SNOOZE))
    await served.post("alerts", click(slack, SNOOZE, user_id="U0BOB", username="bob"))

    await slack.wait_for_updates(2)
    creators = sorted(s.created_by for s in served.backend.silences.values())
    assert creators == ["slack:alice", "slack:bob"]


@pytest.mark.parametrize("channel", ["nowhere", "plain", "hook", "a%0Ab"])
async def test_only_a_slack_channel_with_a_signing_secret_takes_clicks(
    served, slack, channel
):
    status, _ = await served.post(channel, click(slack, ACK))

    assert status == 404
    assert served.backend.moves == []


async def test_a_signed_body_that_is_not_a_click_is_a_bad_request(served):
    body = b"payload=%7Bnot+json"
    stamp = str(int(NOW))
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": sign(SECRET, stamp, body),
    }
    async with served.session.post(
        f"{served.url}/hooks/slack/alerts", data=body, headers=headers
    ) as response:
        assert response.status == 400


async def test_other_interactions_and_foreign_buttons_are_ignored(served, slack):
    foreign = click(slack, "someone.else")

    assert (await served.post("alerts", foreign))[0] == 200
    await served.stop()

    assert served.backend.moves == [] and slack.updates == []


async def test_a_response_url_takes_five_posts_within_thirty_minutes(
    slack, session, clock
):
    first, second = slack.response_url(), slack.response_url()
    statuses = []
    for _ in range(6):
        async with session.post(first, json={"text": "x"}) as response:
            statuses.append(response.status)
    clock.advance(1801)
    async with session.post(second, json={"text": "x"}) as response:
        late = (response.status, await response.json())

    assert statuses == [200] * 5 + [404]
    assert late == (404, {"ok": False, "error": "expired_url"})


async def test_a_click_in_a_grouped_message_changes_only_that_alerts_part(
    served, slack
):
    alerts = list(served.backend.alerts.values())
    grouped = msgspec.structs.replace(
        notification(), alert=alerts[0], alerts=alerts, reason="new alerts"
    )
    original = served.channels["alerts"].render(grouped)

    await served.post("alerts", click(slack, ACK, uid="uid-2", message=original))

    [update] = await slack.wait_for_updates(1)
    blocks = update.json["blocks"]
    assert blocks[0] == original["blocks"][0]
    by_id = {block.get("block_id"): block for block in blocks}
    assert by_id["tocsin.actions.uid-1"] == original["blocks"][2]
    assert [b["action_id"] for b in by_id["tocsin.actions.uid-2"]["elements"]] == [
        SNOOZE,
        RESOLVE,
    ]
    note = by_id["tocsin.note.uid-2"]["elements"][0]["text"]
    assert note.startswith("Acknowledged by slack:alice · ")
    ids = [block.get("block_id") for block in blocks]
    assert ids.index("tocsin.note.uid-2") == ids.index("tocsin.actions.uid-2") - 1
    assert update.json["text"] == original["text"]


class SlowBackend(FakeBackend):
    """Moves an alert only once :attr:`gate` is set, as a busy database would."""

    def __init__(self, clock) -> None:
        super().__init__(clock)
        self.gate = asyncio.Event()

    async def move_alert(self, ref, to_state, *, actor, comment):
        await self.gate.wait()
        return await super().move_alert(ref, to_state, actor=actor, comment=comment)


async def test_slack_hears_200_before_the_action_is_applied(
    tmp_path, slack, session, clock
):
    served = Served(tmp_path, slack, session, clock, backend=SlowBackend)
    await served.start()
    try:
        # Bounded, so that an answer held back by the move fails the test.
        async with asyncio.timeout(5):
            status, _ = await served.post("alerts", click(slack, ACK))

        assert status == 200
        assert served.backend.moves == [] and slack.updates == []
        served.backend.gate.set()
        await slack.wait_for_updates(1)
        assert [move[1] for move in served.backend.moves] == ["acknowledged"]
    finally:
        served.backend.gate.set()
        await served.stop()


class ResolvedMeanwhile(FakeBackend):
    """The engine resolves the alert right after a click's first move."""

    async def move_alert(self, ref, to_state, *, actor, comment):
        detail = await super().move_alert(ref, to_state, actor=actor, comment=comment)
        if actor.startswith("slack:") and to_state == "acknowledged":
            alert = detail.alert
            self.alerts[alert.id] = msgspec.structs.replace(alert, state="resolved")
            self.history[alert.id].append(
                self._transition(alert, alert.state, "resolved", "engine", "")
            )
        return detail


async def test_a_resolve_click_racing_the_engine_says_it_is_already_resolved(
    tmp_path, slack, session, clock
):
    running = Served(tmp_path, slack, session, clock, backend=ResolvedMeanwhile)
    await running.start()
    try:
        await running.post("alerts", click(slack, RESOLVE, action_ts="2.1"))
        [update] = await slack.wait_for_updates(1)
    finally:
        await running.stop()

    history = running.backend.history[1]
    assert [(t.to_state, t.actor) for t in history][-2:] == [
        ("acknowledged", "slack:alice"),
        ("resolved", "engine"),
    ]
    # The click's purpose holds: the message says so rather than refusing.
    assert update.json["replace_original"] is True
    assert "Already resolved" in str(update.json["blocks"])
