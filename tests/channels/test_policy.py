"""The notifier's real policy: routing, a rule's own channels, silences, mute
windows in their own zone, and inhibition, with the notifier on a real
database."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.channels.test_notifier import Harness
from tests.state.test_alerts import make_spec
from tocsin import config
from tocsin.channels.policy import NoisePolicy
from tocsin.clock import ManualClock
from tocsin.state.models import Alert, Silence


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


#: 2026-06-01, a Monday.
DAY = "2026-06-01"

MUTED_AFTERNOONS = """
[[channels]]
name = "ops"
type = "log"

[[mute_windows]]
name = "utc-afternoon"
times = [{ start = "13:00", end = "24:00" }]

[routing]
channels = ["ops"]
mute_windows = []

[[routing.routes]]
matchers = ['team="ml"']
mute_windows = ["utc-afternoon"]
"""


def policy_of(text: str, silences=()) -> NoisePolicy:
    return NoisePolicy.from_config(config.parse(text), silences=silences)


async def messages(db) -> list[tuple[float, str, str]]:
    rows = await db.fetchall("SELECT created_at, reason, event FROM outbox ORDER BY id")
    return [tuple(row) for row in rows]


async def test_f17_a_utc_mute_window_is_read_in_utc_whatever_the_host_zone(
    db, seoul_host
):
    clock = ManualClock(utc(f"{DAY}T05:00:00"))
    harness = Harness(db, clock, policy_of(MUTED_AFTERNOONS))
    store, notifier = harness.store, harness.notifier

    # 05:00 UTC (14:00 in Seoul): outside the window, delivered at once.
    morning = await store.fire(
        make_spec(
            series="model=a", labels={"team": "ml", "model": "a"}, fired_at=clock.time()
        ),
        (),
    )
    notifier.changed(morning)
    assert await notifier.flush_due(clock.time()) == 1

    # 14:00 UTC (23:00 in Seoul): inside it; the alert is kept, not sent.
    clock.set(utc(f"{DAY}T14:00:00"))
    evening = await store.fire(
        make_spec(
            series="model=b", labels={"team": "ml", "model": "b"}, fired_at=clock.time()
        ),
        (),
    )
    notifier.changed(evening)
    assert await notifier.flush_due(clock.time()) == 0
    assert (await store.get(evening.id)).state == "triggered"

    # The window ends at 24:00 UTC: the loop wakes then, and each alert still
    # firing is notified once, promptly: the one the window held back, and
    # the morning one, which the window silenced since 13:00.
    midnight = utc("2026-06-02T00:00:00")
    assert notifier.next_due() == midnight
    clock.set(midnight)
    assert await notifier.flush_due(midnight) == 2
    clock.set(midnight + 3600)
    assert await notifier.flush_due(midnight + 3600) == 0

    assert await messages(db) == [
        (utc(f"{DAY}T05:00:00"), "first notification", "trigger"),
        (midnight, "mute window ended", "trigger"),
        (midnight, "first notification", "trigger"),
    ]


ROUTED = """
[[channels]]
name = "ops"
type = "log"

[[channels]]
name = "pager"
type = "log"

[[channels]]
name = "own"
type = "log"

[routing]
channels = ["ops"]

[[routing.routes]]
matchers = ['severity="critical"']
channels = ["pager"]

[[inhibit]]
source = ['severity="critical"']
target = ['severity="warning"']
equal = ["model"]

[[rules]]
name = "drift"
metric = "m"
threshold = 1

[[rules]]
name = "own-channels"
metric = "m"
threshold = 1
channels = ["own"]
"""


def alert_of(store_alert_id: int, rule: str, severity: str, model: str) -> Alert:
    spec = make_spec(rule=rule, severity=severity, labels={"model": model})
    return Alert(
        id=store_alert_id,
        uid=str(store_alert_id),
        state="triggered",
        spec=spec,
        value=1.0,
    )


@pytest.mark.parametrize(
    ("rule", "severity", "channels"),
    [
        ("drift", "warning", ("ops",)),
        ("drift", "critical", ("pager",)),
        # A rule's own channels replace those of the route it matches.
        ("own-channels", "critical", ("own",)),
    ],
)
def test_routes_apply_a_rules_own_channels(rule, severity, channels):
    policy = policy_of(ROUTED)

    [route] = policy.routes(alert_of(1, rule, severity, "a"))

    assert route.channels == channels


@pytest.mark.parametrize(
    ("source_model", "suppressed"), [("a", "inhibited"), ("b", None)]
)
def test_a_critical_alert_inhibits_a_warning_of_the_same_model(
    source_model, suppressed
):
    policy = policy_of(ROUTED)
    warning = alert_of(1, "drift", "warning", "a")
    critical = alert_of(2, "drift", "critical", source_model)
    [route] = policy.routes(warning)

    found = policy.suppression(warning, route, [warning, critical], 0.0)

    assert found == suppressed


def silence(matchers, starts_at, ends_at) -> Silence:
    return Silence(
        id="s1",
        matchers=matchers,
        starts_at=starts_at,
        ends_at=ends_at,
        created_by="alice",
        comment="",
        created_at=0.0,
        updated_at=0.0,
    )


@pytest.mark.parametrize(
    ("matchers", "now", "suppressed"),
    [
        (['model="a"'], 50.0, "silenced"),
        (['model="a"'], 5.0, None),  # not started
        (['model="a"'], 100.0, None),  # ended: the end is not part of it
        (['model=~"b|c"'], 50.0, None),
    ],
)
def test_silences_hold_while_active(matchers, now, suppressed):
    policy = policy_of(ROUTED, silences=[silence(matchers, 10.0, 100.0)])
    alert = alert_of(1, "drift", "warning", "a")
    [route] = policy.routes(alert)

    assert policy.suppression(alert, route, [alert], now) == suppressed
    assert policy.next_change(now) == min(
        (t for t in (10.0, 100.0) if t > now), default=None
    )
