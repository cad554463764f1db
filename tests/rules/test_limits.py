"""A rule's rate guards at their boundaries, and against a reference."""

from __future__ import annotations

from math import floor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tocsin.rules.limits import DAY, FireLimits, RecentFires

#: A UTC midnight (POSIX day 20255 starts here).
MIDNIGHT = 1_750_032_000.0
T0 = MIDNIGHT - 32_000.0


@pytest.mark.parametrize(
    ("since_fire", "blocker"),
    [
        (0.0, "cooldown"),
        (599.999, "cooldown"),
        (600.0, None),  # exactly the cooldown later
        (601.0, None),
    ],
)
def test_the_cooldown_holds_a_series_until_it_has_passed(since_fire, blocker):
    limits = FireLimits(600.0, 0)
    limits.record("model=a", T0)

    assert limits.blocker("model=a", T0 + since_fire) == blocker
    assert limits.blocker("model=b", T0 + since_fire) is None


def test_a_cooldown_starts_from_the_latest_fire_of_the_series():
    limits = FireLimits(600.0, 0)
    limits.cooled("model=a", T0 + 100.0)
    limits.cooled("model=a", T0)  # earlier: does not shorten the cooldown

    assert limits.blocker("model=a", T0 + 699.0) == "cooldown"
    assert limits.blocker("model=a", T0 + 700.0) is None


@pytest.mark.parametrize(
    ("fires", "now", "blocker"),
    [
        ([MIDNIGHT - 10.0], MIDNIGHT - 1.0, None),
        ([MIDNIGHT - 10.0, MIDNIGHT - 5.0], MIDNIGHT - 0.001, "daily_cap"),
        ([MIDNIGHT - 10.0, MIDNIGHT - 5.0], MIDNIGHT, None),  # a new UTC day
        ([MIDNIGHT - DAY, MIDNIGHT - 1.0], MIDNIGHT - 0.5, "daily_cap"),
        ([MIDNIGHT, MIDNIGHT + DAY - 1.0], MIDNIGHT + DAY - 0.5, "daily_cap"),
        ([MIDNIGHT, MIDNIGHT + DAY - 1.0], MIDNIGHT + DAY, None),
    ],
)
def test_the_utc_day_cap_counts_fires_per_calendar_day(fires, now, blocker):
    limits = FireLimits(0.0, 2)
    for at in fires:
        limits.record(None, at)

    assert limits.blocker("model=a", now) == blocker


@pytest.mark.parametrize(
    ("fires", "now", "blocker"),
    [
        ([T0], T0 + 1.0, None),
        ([T0, T0 + 10.0], T0 + 10.0, "daily_cap"),
        ([T0, T0 + 10.0], T0 + DAY - 0.001, "daily_cap"),
        ([T0, T0 + 10.0], T0 + DAY, None),  # exactly 24 hours after the oldest
        ([T0, T0 + 10.0, T0 + 20.0], T0 + DAY + 9.0, "daily_cap"),
        ([T0, T0 + 10.0, T0 + 20.0], T0 + DAY + 10.0, None),
    ],
)
def test_the_rolling_cap_counts_fires_in_any_24_hours(fires, now, blocker):
    limits = FireLimits(0.0, 2, period="rolling_24h")
    for at in fires:
        limits.record(None, at)

    assert limits.blocker("model=a", now) == blocker


@pytest.mark.parametrize(
    ("period", "blocker"), [("utc_day", None), ("rolling_24h", "daily_cap")]
)
def test_only_the_rolling_cap_carries_fires_across_midnight(period, blocker):
    limits = FireLimits(0.0, 1, period=period)
    limits.record("model=a", MIDNIGHT - 60.0)

    assert limits.blocker("model=b", MIDNIGHT - 1.0) == "daily_cap"
    assert limits.blocker("model=b", MIDNIGHT + 60.0) == blocker


@pytest.mark.parametrize(
    ("fires", "now", "blocker"),
    [
        ([T0, T0 + 100.0], T0 + 100.0, "window_cap"),
        ([T0, T0 + 100.0], T0 + 599.999, "window_cap"),
        ([T0, T0 + 100.0], T0 + 600.0, None),  # exactly a window after the oldest
        ([T0, T0 + 100.0, T0 + 200.0], T0 + 699.0, "window_cap"),
        ([T0, T0 + 100.0, T0 + 200.0], T0 + 700.0, None),
        ([T0], T0 + 1.0, None),
    ],
)
def test_the_window_cap_counts_fires_in_any_window(fires, now, blocker):
    limits = FireLimits(0.0, 0, window=600.0, window_cap=2)
    for at in fires:
        limits.record(None, at)

    assert limits.blocker("model=a", now) == blocker


@pytest.mark.parametrize(
    ("key", "now", "blocker"),
    [
        ("model=a", T0 + 1.0, "cooldown"),  # every guard holds: the first wins
        ("model=b", T0 + 1.0, "daily_cap"),
        ("model=a", MIDNIGHT + 1.0, "window_cap"),  # the cooldown is shorter
        ("model=b", MIDNIGHT + 1.0, "window_cap"),
    ],
)
def test_the_guards_are_checked_cooldown_first_then_daily_then_window(
    key, now, blocker
):
    limits = FireLimits(600.0, 1, window=2 * DAY, window_cap=1)
    limits.record("model=a", T0)

    assert limits.blocker(key, now) == blocker


@pytest.mark.parametrize("period", ["utc_day", "rolling_24h"])
@pytest.mark.parametrize(
    ("caps", "key", "now", "blocker"),
    [
        ({"daily_cap": 3}, "model=a", T0, "cooldown"),
        ({"daily_cap": 3}, "model=b", T0, "daily_cap"),
        ({"daily_cap": 3}, "model=c", T0, "daily_cap"),
        ({"daily_cap": 4}, "model=b", T0, None),
        ({"window_cap": 2}, "model=b", T0, "window_cap"),
        ({"window_cap": 2}, "model=b", T0 + 3500.0, None),
        ({"window_cap": 3}, "model=b", T0, None),
    ],
)
def test_restored_fires_count_towards_every_guard(period, caps, key, now, blocker):
    settings_ = {"daily_cap": 0, "window": 3600.0, "window_cap": 0} | caps
    limits = FireLimits(600.0, period=period, **settings_)
    # Restored in any order; the keys name the series of the first fires only.
    limits.record_all([T0 - 100.0, T0 - 4000.0, T0 - 50.0], ["model=a", "model=b"])

    assert limits.blocker(key, now) == blocker


def test_a_fire_restored_out_of_order_keeps_the_latest_times():
    recent = RecentFires(2, 600.0)
    for at in [T0 + 50.0, T0 + 10.0, T0 + 30.0, T0]:
        recent.add(at)

    # The latest two are T0 + 30 and T0 + 50.
    assert recent.blocks(T0 + 629.0) is True
    assert recent.blocks(T0 + 630.0) is False
    assert len(recent) == 2


@pytest.mark.parametrize("period", ["utc_day", "rolling_24h"])
def test_forget_keeps_only_what_can_still_hold_a_fire_back(period):
    limits = FireLimits(60.0, 5, period=period, window=600.0, window_cap=3)
    for second in range(0, 5 * 86400, 97):
        limits.record(f"model={second}", T0 + second)
    now = T0 + 5 * 86400
    limits.forget(now)

    # Of 4454 series, only the one that fired in the last minute still
    # cools down; the daily cap keeps today's count or at most 5 fire times,
    # the window cap at most 3.
    assert limits.remembered() <= 1 + 5 + 3
    for key in ("model=a", "model=b"):
        assert limits.blocker(key, now + DAY) is None


def test_forget_does_not_drop_a_fire_that_still_blocks():
    limits = FireLimits(600.0, 1, period="rolling_24h", window=600.0, window_cap=1)
    limits.record("model=a", T0)
    limits.forget(T0 + 599.0)

    assert limits.blocker("model=a", T0 + 599.0) == "cooldown"
    assert limits.blocker("model=b", T0 + 599.0) == "daily_cap"
    limits.forget(T0 + DAY)
    assert limits.remembered() == 0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"period": "week"}, "period must be utc_day or rolling_24h"),
        ({"cooldown": -1.0}, "must not be negative"),
        ({"daily_cap": -1}, "must not be negative"),
        ({"window_cap": 2}, "a window cap needs a positive window"),
        ({"window": -1.0, "window_cap": 2}, "must not be negative"),
    ],
)
def test_bad_settings_are_refused(arguments, message):
    settings_ = {"cooldown": 0.0, "daily_cap": 0} | arguments
    with pytest.raises(ValueError, match=message):
        FireLimits(**settings_)


class Reference:
    """Every fire ever recorded, and each guard from its definition."""

    def __init__(self, cooldown, daily_cap, period, window, window_cap) -> None:
        self.cooldown = cooldown
        self.daily_cap = daily_cap
        self.period = period
        self.window = window
        self.window_cap = window_cap
        self.fires: list[tuple[str | None, float]] = []

    def blocker(self, key: str, now: float) -> str | None:
        own = [at for k, at in self.fires if k == key]
        if self.cooldown > 0 and own and now - max(own) < self.cooldown:
            return "cooldown"
        if self.daily_cap:
            if self.period == "utc_day":
                today = floor(now / DAY)
                fired = sum(1 for _, at in self.fires if floor(at / DAY) == today)
            else:
                fired = sum(1 for _, at in self.fires if now - DAY < at <= now)
            if fired >= self.daily_cap:
                return "daily_cap"
        if self.window_cap:
            fired = sum(1 for _, at in self.fires if now - self.window < at <= now)
            if fired >= self.window_cap:
                return "window_cap"
        return None


_step = st.one_of(
    st.tuples(st.just("fire"), st.sampled_from(["a", "b", "c"]), st.integers(0, 40000)),
    st.tuples(
        st.just("restore"), st.sampled_from(["a", "b", None]), st.integers(0, 90000)
    ),
    st.tuples(st.just("forget"), st.none(), st.just(0)),
)


@settings(max_examples=300, deadline=None)
@given(
    cooldown=st.sampled_from([0.0, 600.0, 3600.0]),
    daily_cap=st.integers(0, 4),
    period=st.sampled_from(["utc_day", "rolling_24h"]),
    window=st.sampled_from([600.0, 7200.0]),
    window_cap=st.integers(0, 3),
    steps=st.lists(_step, max_size=60),
)
def test_the_limits_agree_with_every_fire_kept(
    cooldown, daily_cap, period, window, window_cap, steps
):
    limits = FireLimits(
        cooldown, daily_cap, period=period, window=window, window_cap=window_cap
    )
    reference = Reference(cooldown, daily_cap, period, window, window_cap)
    now = T0
    for action, key, seconds in steps:
        if action == "fire":
            # Time moves on; the fire happens unless a guard holds it back.
            now += seconds
            blocker = limits.blocker(key, now)
            assert blocker == reference.blocker(key, now)
            if blocker is None:
                limits.record(key, now)
                reference.fires.append((key, now))
        elif action == "restore":
            at = now - seconds
            limits.record_all([at], [key] if key else [])
            reference.fires.append((key, at))
        else:
            limits.forget(now)
        for probe in ("a", "b", "c"):
            assert limits.blocker(probe, now) == reference.blocker(probe, now)
