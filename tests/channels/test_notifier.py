"""The notifier: groups, timers, the dedup decision and suppression, on a real
state database, a manual clock and a fake policy."""

from __future__ import annotations

import msgspec
import msgspec.structs
import pytest

from tests.state.test_alerts import make_spec
from tocsin.channels.notifier import Notifier
from tocsin.channels.routing import RouteSettings
from tocsin.clock import ManualClock
from tocsin.schema import DedupConfig, Duration
from tocsin.state.alerts import AlertStore
from tocsin.state.db import Database
from tocsin.state.models import Alert

T0 = 1_750_000_000.0
_decode_alerts = msgspec.json.Decoder(list[Alert]).decode


def route(**settings) -> RouteSettings:
    values = {
        "id": "root",
        "channels": ("ops",),
        "group_by": ("...",),
        "group_wait": 0.0,
        "group_interval": 0.0,
        "repeat_interval": 4 * 3600.0,
    }
    values.update(settings)
    return RouteSettings(**values)


class FakePolicy:
    """Every alert takes every route; suppressions are set by hand."""

    def __init__(self, *routes: RouteSettings) -> None:
        self.routes_ = list(routes)
        #: (alert id, kind, start, end) offsets from T0.
        self.holds: list[tuple[int, str, float, float]] = []

    def routes(self, alert):
        return list(self.routes_)

    def suppression(self, alert, route, open_alerts, now):
        for alert_id, kind, start, end in self.holds:
            if alert_id == alert.id and T0 + start <= now < T0 + end:
                return kind
        return None

    def next_change(self, now):
        edges = [T0 + t for _, _, start, end in self.holds for t in (start, end)]
        return min((t for t in edges if t > now), default=None)


class Harness:
    """A notifier and the alert store it is told about, on one database."""

    def __init__(
        self, db, clock, policy, dedup=None, takes_resolves=None, takes_acks=None
    ):
        self.db = db
        self.clock = clock
        self.policy = policy
        self.store = AlertStore(db, clock)
        self.woken: list[list[str]] = []
        self.notifier = Notifier(
            db,
            self.store,
            policy,
            clock,
            dedup=dedup or DedupConfig(),
            on_queued=lambda channels: self.woken.append(list(channels)),
            takes_resolves=takes_resolves,
            takes_acknowledgements=takes_acks,
        )

    async def at(self, offset: float) -> int:
        """Move the clock to T0 + offset and flush what is due."""
        self.clock.set(T0 + offset)
        return await self.notifier.flush_due(T0 + offset)

    async def fire(self, offset: float, series: str = "model=a", **spec) -> Alert:
        self.clock.set(T0 + offset)
        model = series.split("=")[1]
        fields = {"labels": {"model": model, "team": "ml"}, "fired_at": T0 + offset}
        alert = await self.store.fire(
            make_spec(series=series, **{**fields, **spec}), ()
        )
        self.notifier.changed(alert)
        return alert

    async def resolve(self, offset: float, series: str = "model=a") -> Alert:
        self.clock.set(T0 + offset)
        alert = await self.store.resolve(
            "drift", series, at=T0 + offset, value=0.1, reason="ok", channels=()
        )
        self.notifier.changed(alert)
        return alert

    async def sent(self) -> list[tuple[float, str, str, list[tuple[int, str]]]]:
        """Every message queued: (offset, channel, reason, [(id, state)])."""
        rows = await self.db.fetchall(
            "SELECT created_at, channel, reason, alerts FROM outbox ORDER BY id"
        )
        return [
            (at - T0, channel, reason, [(a.id, a.state) for a in _decode_alerts(js)])
            for at, channel, reason, js in rows
        ]


@pytest.fixture
def clock():
    return ManualClock(T0)


def harness(db, clock, *routes, **options) -> Harness:
    return Harness(db, clock, FakePolicy(*routes), **options)


async def test_f07_a_repeat_shorter_than_the_interval_waits_for_ticks(db, clock):
    h = harness(db, clock, route(group_interval=60.0, repeat_interval=15.0))
    await h.notifier.start()
    a = await h.fire(0)

    for second in range(131):
        await h.at(second)

    assert [(at, reason) for at, _, reason, _ in await h.sent()] == [
        (0, "first notification"),
        (60, "repeat interval elapsed"),
        (120, "repeat interval elapsed"),
    ]
    assert {ids[0] for *_, ids in await h.sent()} == {(a.id, "triggered")}


async def test_f08_a_reload_keeps_the_timers_and_sends_nothing(db, clock):
    hour = 3600.0
    policy = FakePolicy(route(group_by=("rule",), group_interval=hour))
    h = Harness(db, clock, policy)
    await h.notifier.start()
    a = await h.fire(0, "model=a")
    await h.at(0)
    b = await h.fire(600, "model=b")
    await h.at(600)

    h.notifier.reconfigure(FakePolicy(*policy.routes_), DedupConfig())
    for offset in (600, 601, 1800, hour - 1):
        assert await h.at(offset) == 0
    assert h.notifier.next_due() == T0 + hour
    await h.at(hour)

    assert await h.sent() == [
        (0, "ops", "first notification", [(a.id, "triggered")]),
        (hour, "ops", "new alerts", [(a.id, "triggered"), (b.id, "triggered")]),
    ]
    [(sent_at,)] = await db.fetchall("SELECT sent_at FROM notification_log")
    assert sent_at == T0 + hour


async def test_f08_the_repeat_clock_is_untouched_by_a_reload(db, clock):
    policy = FakePolicy(route(group_interval=3600.0, repeat_interval=7200.0))
    h = Harness(db, clock, policy)
    await h.notifier.start()
    await h.fire(0)
    await h.at(0)

    h.notifier.reconfigure(FakePolicy(*policy.routes_), DedupConfig())
    for offset in (3600, 7199):
        assert await h.at(offset) == 0

    assert await h.at(7200) == 1
    assert [r for _, _, r, _ in await h.sent()][-1] == "repeat interval elapsed"


async def test_f09_a_resolve_within_group_wait_sends_nothing(db, clock):
    h = harness(db, clock, route(group_wait=120.0))
    await h.notifier.start()
    alert = await h.fire(0)
    await h.at(0)
    await h.resolve(60)

    for offset in (60, 119, 120, 121, 3 * 3600, 5 * 3600):
        await h.at(offset)

    assert await h.sent() == []
    history = await h.store.history(alert.id)
    assert [t.to_state for t in history] == ["triggered", "resolved"]
    assert h.notifier.groups() == []
    assert await db.fetchall("SELECT * FROM notify_groups") == []


async def test_a_resolve_goes_only_to_channels_that_heard_the_trigger(db, clock):
    policy = FakePolicy(route())
    h = Harness(db, clock, policy)
    await h.notifier.start()
    alert = await h.fire(0)
    await h.at(0)
    # A channel added afterwards never heard of the alert.
    policy.routes_ = [route(channels=("ops", "late"))]
    h.notifier.reconfigure(policy, DedupConfig())
    await h.resolve(10)
    await h.at(10)

    assert await h.sent() == [
        (0, "ops", "first notification", [(alert.id, "triggered")]),
        (10, "ops", "all alerts resolved", [(alert.id, "resolved")]),
    ]
    assert h.notifier.groups() == []


async def test_a_channel_without_resolves_gets_none_and_forgets(db, clock):
    h = harness(
        db, clock, route(channels=("ops", "pager")), takes_resolves=lambda c: c == "ops"
    )
    await h.notifier.start()
    alert = await h.fire(0)
    await h.at(0)
    await h.resolve(10)
    await h.at(10)

    assert [(at, c, r) for at, c, r, _ in await h.sent()] == [
        (0, "ops", "first notification"),
        (0, "pager", "first notification"),
        (10, "ops", "all alerts resolved"),
    ]
    # Reopened, it is news to both again.
    h.clock.set(T0 + 20)
    reopened = msgspec.structs.replace(alert, state="triggered", resolved_at=None)
    h.notifier.changed(reopened)
    await h.at(20)
    assert [(at, c, r) for at, c, r, _ in await h.sent()][3:] == [
        (20, "ops", "first notification"),
        (20, "pager", "first notification"),
    ]


async def test_grouped_alerts_share_one_message_and_resolves_are_partial(db, clock):
    h = harness(db, clock, route(group_by=("team",), group_wait=30.0))
    await h.notifier.start()
    a = await h.fire(0, "model=a")
    b = await h.fire(10, "model=b")
    await h.at(29)
    await h.at(30)
    await h.resolve(40, "model=a")
    await h.at(40)
    await h.resolve(50, "model=b")
    await h.at(50)

    assert await h.sent() == [
        (30, "ops", "first notification", [(a.id, "triggered"), (b.id, "triggered")]),
        (40, "ops", "alerts resolved", [(b.id, "triggered"), (a.id, "resolved")]),
        (50, "ops", "all alerts resolved", [(b.id, "resolved")]),
    ]
    assert h.woken == [["ops"]] * 3
    assert h.notifier.sent == 3


async def test_a_severity_change_is_sent_with_its_reason(db, clock):
    h = harness(db, clock, route())
    await h.notifier.start()
    alert = await h.fire(0)
    await h.at(0)
    clock.set(T0 + 5)
    moved = await h.store.change_severity(
        "drift",
        "model=a",
        severity="critical",
        at=T0 + 5,
        value=0.9,
        threshold=0.5,
        reason="worse",
        channels=(),
    )
    h.notifier.changed(moved)
    await h.at(5)

    sent = await h.sent()
    assert [(at, r) for at, _, r, _ in sent] == [
        (0, "first notification"),
        (5, "severity changed"),
    ]
    rows = await db.fetchall("SELECT alerts FROM outbox ORDER BY id")
    assert _decode_alerts(rows[1][0])[0].spec.severity == "critical"
    assert sent[1][3] == [(alert.id, "triggered")]


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("silenced", "silence ended"),
        ("muted", "mute window ended"),
        ("inhibited", "inhibition ended"),
    ],
)
async def test_an_alert_held_back_is_notified_once_when_the_hold_ends(
    db, clock, kind, reason
):
    policy = FakePolicy(route())
    h = Harness(db, clock, policy)
    await h.notifier.start()
    alert = await h.fire(0)
    await h.at(0)
    policy.holds.append((alert.id, kind, 100, 500))

    # The loop is woken at the edges the policy names.
    assert h.notifier.next_due() is None or h.notifier.next_due() > T0 + 100
    h.notifier.suppressions_changed()
    for offset in (100, 200, 499):
        await h.at(offset)
    assert h.notifier.next_due() == T0 + 500
    await h.at(500)
    await h.at(501)

    assert [(at, r) for at, _, r, _ in await h.sent()] == [
        (0, "first notification"),
        (500, reason),
    ]
    assert h.notifier.suppressed == 1


@pytest.mark.parametrize("send_resolved_silenced", [True, False])
async def test_a_resolve_while_silenced_follows_the_route(
    db, clock, send_resolved_silenced
):
    policy = FakePolicy(route(send_resolved_silenced=send_resolved_silenced))
    h = Harness(db, clock, policy)
    await h.notifier.start()
    alert = await h.fire(0)
    await h.at(0)
    policy.holds.append((alert.id, "silenced", 100, 10_000))
    h.notifier.suppressions_changed()
    await h.at(100)
    await h.resolve(200)
    await h.at(200)
    await h.at(10_000)

    expected = [(0, "first notification")]
    if send_resolved_silenced:
        expected.append((200, "all alerts resolved"))
    assert [(at, r) for at, _, r, _ in await h.sent()] == expected
    assert h.notifier.groups() == []


async def test_an_alert_fired_while_silenced_is_sent_when_the_silence_ends(db, clock):
    policy = FakePolicy(route())
    h = Harness(db, clock, policy)
    await h.notifier.start()
    policy.holds.append((1, "silenced", 0, 50))
    alert = await h.fire(0)
    assert alert.id == 1
    await h.at(0)
    await h.at(50)

    assert [(at, r) for at, _, r, _ in await h.sent()] == [(50, "first notification")]


async def test_a_resolve_while_silenced_never_announced_sends_nothing(db, clock):
    policy = FakePolicy(route())
    h = Harness(db, clock, policy)
    await h.notifier.start()
    policy.holds.append((1, "silenced", 0, 50))
    await h.fire(0)
    await h.at(0)
    await h.resolve(20)
    await h.at(20)
    await h.at(50)

    assert await h.sent() == []


async def reopen(db, clock, policy) -> Harness:
    """A new notifier on the same file, as after a kill -9."""
    again = await Database.open(db.path, clock=clock)
    h = Harness(again, clock, policy)
    await h.notifier.start()
    return h


async def test_a_restart_mid_group_wait_keeps_the_wait(tmp_path, clock):
    policy = FakePolicy(route(group_wait=120.0))
    db = await Database.open(tmp_path / "t.db", clock=clock)
    first = Harness(db, clock, policy)
    await first.notifier.start()
    alert = await first.fire(0)
    await first.at(60)
    await db.close()  # the first notifier is dropped without stop()

    h = await reopen(db, clock, policy)
    try:
        assert h.notifier.next_due() == T0 + 120
        assert await h.at(119) == 0
        assert await h.at(120) == 1
        assert await h.at(121) == 0
        assert await h.sent() == [
            (120, "ops", "first notification", [(alert.id, "triggered")])
        ]
    finally:
        await h.db.close()


async def test_a_restart_after_a_send_sends_nothing_twice(tmp_path, clock):
    policy = FakePolicy(route(group_by=("team",), group_interval=60.0))
    db = await Database.open(tmp_path / "t.db", clock=clock)
    first = Harness(db, clock, policy)
    await first.notifier.start()
    a = await first.fire(0, "model=a")
    await first.at(0)
    b = await first.fire(10, "model=b")  # held for the tick at 60
    await db.close()

    h = await reopen(db, clock, policy)
    try:
        await h.at(20)
        await h.at(59)
        await h.at(60)
        await h.resolve(70, "model=a")
        await h.at(70)
        await h.at(120)
        assert await h.sent() == [
            (0, "ops", "first notification", [(a.id, "triggered")]),
            (60, "ops", "new alerts", [(a.id, "triggered"), (b.id, "triggered")]),
            (120, "ops", "alerts resolved", [(b.id, "triggered"), (a.id, "resolved")]),
        ]
    finally:
        await h.db.close()


async def test_a_restart_keeps_a_pending_resolve(tmp_path, clock):
    policy = FakePolicy(route(group_interval=60.0))
    db = await Database.open(tmp_path / "t.db", clock=clock)
    first = Harness(db, clock, policy)
    await first.notifier.start()
    alert = await first.fire(0)
    await first.at(0)
    await first.resolve(30)
    await db.close()

    h = await reopen(db, clock, policy)
    try:
        await h.at(59)
        await h.at(60)
        assert [(at, r, ids) for at, _, r, ids in await h.sent()] == [
            (0, "first notification", [(alert.id, "triggered")]),
            (60, "all alerts resolved", [(alert.id, "resolved")]),
        ]
        assert h.notifier.groups() == []
    finally:
        await h.db.close()


async def test_suppress_for_drops_a_second_trigger_of_the_same_key(db, clock):
    dedup = DedupConfig(keys=["team"], suppress_for=Duration(300.0))
    h = harness(db, clock, route(), dedup=dedup)
    await h.notifier.start()
    await h.fire(0, "model=a")
    await h.at(0)
    await h.fire(10, "model=b")
    await h.at(10)
    await h.fire(400, "model=c")
    await h.at(400)

    assert [(at, ids[0][0]) for at, _, _, ids in await h.sent()] == [(0, 1), (400, 3)]
    assert h.notifier.deduplicated == 1
    assert await db.fetchone("SELECT COUNT(*) FROM dedup_log") == (2,)


async def test_max_per_window_caps_messages_per_key(db, clock):
    dedup = DedupConfig(keys=["team"], max_per_window=2, window=Duration(600.0))
    h = harness(db, clock, route(), dedup=dedup)
    await h.notifier.start()
    for offset, model in ((0, "a"), (1, "b"), (2, "c"), (3, "d")):
        await h.fire(offset, f"model={model}")
        await h.at(offset)
    await h.fire(601, "model=e")
    await h.at(601)

    assert [at for at, *_ in await h.sent()] == [0, 1, 601]
    assert h.notifier.deduplicated == 2


async def test_dedup_survives_a_restart(tmp_path, clock):
    dedup = DedupConfig(keys=["team"], suppress_for=Duration(300.0))
    policy = FakePolicy(route())
    db = await Database.open(tmp_path / "t.db", clock=clock)
    first = Harness(db, clock, policy, dedup=dedup)
    await first.notifier.start()
    await first.fire(0, "model=a")
    await first.at(0)
    await db.close()

    again = await Database.open(tmp_path / "t.db", clock=clock)
    h = Harness(again, clock, policy, dedup=dedup)
    try:
        await h.notifier.start()
        await h.fire(10, "model=b")
        await h.at(10)
        assert len(await h.sent()) == 1
    finally:
        await again.close()


async def test_a_digest_route_flushes_on_the_utc_grid(db, clock):
    hour = 3600.0
    start = hour - T0 % hour + 100  # 100 s past the next hour, as an offset
    h = harness(db, clock, route(digest=hour))
    await h.notifier.start()
    await h.fire(start)
    await h.at(start)

    due = h.notifier.next_due()
    assert due % hour == 0
    assert due - T0 == start - 100 + hour
    assert await h.at(due - T0 - 1) == 0
    assert await h.at(due - T0) == 1


async def test_groups_describes_each_group(db, clock):
    policy = FakePolicy(route(group_by=("team",), group_wait=30.0))
    h = Harness(db, clock, policy)
    await h.notifier.start()
    alert = await h.fire(0)

    [group] = h.notifier.groups()
    assert group["route"] == "root"
    assert group["labels"] == {"team": "ml"}
    assert group["next_flush"] == T0 + 30
    assert [a["uid"] for a in group["alerts"]] == [alert.uid]


async def test_two_routes_make_two_groups_with_their_own_channels(db, clock):
    h = harness(db, clock, route(), route(id="second", channels=("pager",)))
    await h.notifier.start()
    await h.fire(0)
    await h.at(0)

    assert sorted(c for _, c, _, _ in await h.sent()) == ["ops", "pager"]
    keys = await db.fetchall("SELECT key FROM outbox ORDER BY id")
    assert len({key for (key,) in keys}) == 2


async def test_an_acknowledgement_is_queued_at_once_for_channels_that_take_it(
    db, clock
):
    pager = route(channels=("pager", "chat"), group_by=(), group_interval=300.0)
    h = harness(db, clock, pager, takes_acks=lambda channel: channel == "pager")
    alert = await h.fire(0)
    await h.at(0)
    await h.fire(10, "model=b")

    acked = await h.store.move(alert.id, "acknowledged", actor="api:alice")
    h.notifier.changed(acked)
    queued = await h.at(20)

    rows = await db.fetchall("SELECT channel, event FROM outbox ORDER BY id")
    assert queued == 1
    assert rows == [
        ("pager", "trigger"),
        ("chat", "trigger"),
        ("pager", "acknowledge"),
    ]
    # Only the acknowledgement went out: model=b waits for the group's tick.
    assert (await h.sent())[-1][3] == [(alert.id, "acknowledged")]


async def test_an_alert_acknowledged_before_any_channel_heard_of_it_is_not_announced(
    db, clock
):
    h = harness(db, clock, route(group_wait=30.0), takes_acks=lambda channel: True)
    alert = await h.fire(0)
    acked = await h.store.move(alert.id, "acknowledged", actor="api:alice")
    h.notifier.changed(acked)

    assert await h.at(1) == 0
    assert await db.fetchall("SELECT event FROM outbox") == []
