"""Aggregation groups: the dedup decision, channel plans and timers."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.state.test_alerts import make_spec
from tocsin.channels.grouping import (
    Group,
    align,
    decide,
    plan_channel,
    tick_after,
    tick_at_or_after,
)
from tocsin.channels.routing import RouteSettings
from tocsin.state.groups import LogEntry
from tocsin.state.models import Alert

NOW = 10_000.0


def entry(firing=(), resolved=(), sent_at=NOW - 10, **more) -> LogEntry:
    return LogEntry(
        firing=frozenset(firing),
        resolved=frozenset(resolved),
        sent_at=sent_at,
        **more,
    )


@pytest.mark.parametrize(
    ("firing", "resolved", "last", "send_resolved", "expected"),
    [
        # Nothing sent yet.
        ({(1, "high")}, set(), None, True, "first notification"),
        (set(), {1}, None, True, None),
        # New firing alerts.
        ({(1, "high"), (2, "high")}, set(), entry({(1, "high")}), True, "new alerts"),
        ({(1, "high")}, set(), entry(), True, "first notification"),
        ({(1, "critical")}, set(), entry({(1, "high")}), True, "severity changed"),
        # Nothing fires any more.
        (set(), {1}, entry({(1, "high")}), True, "all alerts resolved"),
        (set(), {1}, entry({(1, "high")}), False, "all alerts resolved"),
        (set(), set(), entry(), True, None),
        # Some resolved.
        (
            {(2, "high")},
            {1},
            entry({(1, "high"), (2, "high")}),
            True,
            "alerts resolved",
        ),
        ({(2, "high")}, {1}, entry({(1, "high"), (2, "high")}), False, None),
        ({(2, "high")}, {1}, entry({(2, "high")}, {1}), True, None),
        # Unchanged, before and after the repeat interval.
        ({(1, "high")}, set(), entry({(1, "high")}), True, None),
        (
            {(1, "high")},
            set(),
            entry({(1, "high")}, sent_at=NOW - 60),
            True,
            "repeat interval elapsed",
        ),
    ],
)
def test_decide(firing, resolved, last, send_resolved, expected):
    reason = decide(
        firing,
        resolved,
        last,
        send_resolved=send_resolved,
        repeat_interval=60.0,
        now=NOW,
    )

    assert reason == expected


def test_decide_names_the_hold_that_ended():
    last = entry({(2, "high")})

    reason = decide(
        {(1, "high"), (2, "high")},
        set(),
        last,
        send_resolved=True,
        repeat_interval=60.0,
        now=NOW,
        withheld={1: "muted"},
    )

    assert reason == "mute window ended"


def test_decide_never_repeats_with_a_repeat_interval_of_zero():
    last = entry({(1, "high")}, sent_at=0.0)

    assert (
        decide(
            {(1, "high")}, set(), last, send_resolved=True, repeat_interval=0, now=NOW
        )
        is None
    )


def alert(alert_id: int, state: str = "triggered", severity: str = "high") -> Alert:
    spec = make_spec(series=f"model={alert_id}", severity=severity)
    return Alert(id=alert_id, uid=f"u{alert_id}", state=state, spec=spec, value=1.0)


def plan(alerts, suppressed=None, last=None, **options):
    settings = {
        "takes_resolves": True,
        "send_resolved_silenced": True,
        "repeat_interval": 3600.0,
        "now": NOW,
    }
    settings.update(options)
    return plan_channel(alerts, suppressed or {}, last, **settings)


def test_plan_never_puts_an_unannounced_alert_in_a_resolve():
    last = entry({(1, "high")}, announced=frozenset({1}))

    result = plan([alert(1, "resolved"), alert(2, "resolved")], last=last)

    assert result.reason == "all alerts resolved"
    assert [a.id for a in result.alerts] == [1]
    assert result.entry.announced == frozenset()


def test_plan_moves_a_suppressed_alert_out_of_the_firing_set_silently():
    last = entry({(1, "high"), (2, "high")}, announced=frozenset({1, 2}))

    result = plan([alert(1), alert(2)], {2: "silenced"}, last)

    assert result.reason is None
    assert result.alerts == []
    assert result.entry.firing == frozenset({(1, "high")})
    assert result.entry.withheld == {2: "silenced"}
    assert result.entry.announced == frozenset({1, 2})
    assert result.entry.sent_at == last.sent_at


@pytest.mark.parametrize(
    ("takes_resolves", "send_resolved_silenced", "sent"),
    [(True, True, True), (True, False, False), (False, True, False)],
)
def test_plan_of_a_resolve_while_held_back(
    takes_resolves, send_resolved_silenced, sent
):
    last = entry(
        announced=frozenset({1}),
        withheld={1: "silenced"},
    )

    result = plan(
        [alert(1, "resolved")],
        {},
        last,
        takes_resolves=takes_resolves,
        send_resolved_silenced=send_resolved_silenced,
    )

    assert (result.reason is not None) is sent
    assert result.entry.announced == frozenset()


@pytest.mark.parametrize(
    ("at", "digest", "expected"),
    [(3601.0, 3600.0, 7200.0), (7200.0, 3600.0, 7200.0), (5.5, 0.0, 5.5)],
)
def test_align(at, digest, expected):
    assert align(at, digest) == expected


@given(
    anchor=st.integers(0, 10_000),
    interval=st.integers(1, 500),
    at=st.integers(-1000, 20_000),
)
def test_ticks_match_a_brute_force_walk(anchor, interval, at):
    ticks = [anchor + k * interval for k in range(0, 40_000 // interval + 2)]

    assert tick_at_or_after(anchor, interval, at) == min(t for t in ticks if t >= at)
    assert tick_after(anchor, interval, at) == min(t for t in ticks if t > at)


def route(**settings) -> RouteSettings:
    values = {
        "id": "r",
        "channels": ("ops",),
        "group_by": (),
        "group_wait": 30.0,
        "group_interval": 0.0,
        "repeat_interval": 100.0,
    }
    values.update(settings)
    return RouteSettings(**values)


def test_a_new_group_waits_group_wait_and_then_follows_its_ticks():
    group = Group(route(group_interval=60.0), {}, created_at=1000.0)
    group.alerts[1] = alert(1)
    assert group.due_at() == 1030.0

    group.anchor = group.flushed_at = 1030.0
    group.is_dirty = False
    group.log["ops"] = entry({(1, "high")}, sent_at=1030.0)
    # The repeat (100 s) falls between ticks: it waits for the next one.
    assert group.due_at() == 1030.0 + 120.0
    group.touch(1040.0)
    assert group.due_at() == 1090.0


def test_without_interval_a_change_is_due_at_once_and_repeats_follow_sends():
    group = Group(route(), {}, created_at=1000.0)
    group.alerts[1] = alert(1)
    group.anchor = group.flushed_at = 1030.0
    group.is_dirty = False
    group.log["ops"] = entry({(1, "high")}, sent_at=1030.0)
    assert group.due_at() == 1130.0

    group.touch(1050.0)

    assert group.due_at() == 1050.0


@given(
    interval=st.sampled_from([0, 7, 30, 60]),
    repeat=st.sampled_from([15, 45, 100]),
    wait=st.sampled_from([0, 10, 25]),
)
def test_a_single_firing_alert_notifies_as_a_tick_walk_says(interval, repeat, wait):
    """One alert firing from 0 on: the due times the group gives, walked from
    flush to flush, are the sends a second-by-second reference makes."""
    settings = route(group_wait=wait, group_interval=interval, repeat_interval=repeat)
    group = Group(settings, {}, created_at=0.0)
    group.alerts[1] = alert(1)

    walked = []
    for _ in range(200):
        due = group.due_at()
        if due is None or due > 600:
            break
        walked.append(due)
        group.anchor = due if group.anchor is None else group.anchor
        group.flushed_at = due
        group.is_dirty = False
        group.log["ops"] = entry({(1, "high")}, sent_at=due)

    reference = []
    last = None
    for second in range(0, 601):
        if last is None:
            if second >= wait:
                reference.append(second)
                last = second
            continue
        on_tick = interval == 0 or (second - reference[0]) % interval == 0
        if on_tick and second - last >= repeat:
            reference.append(second)
            last = second
    assert walked == reference
    assert all(math.isfinite(t) for t in walked)
