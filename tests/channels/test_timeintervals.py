"""Mute windows: which instants they contain, in their zone, and when that changes."""

import time
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tocsin.channels.timeintervals import MuteWindow
from tocsin.schema import MuteWindowConfig, TimeRangeConfig


def window(location: str = "UTC", times=(), **fields) -> MuteWindow:
    ranges = [TimeRangeConfig(start=start, end=end) for start, end in times]
    config = MuteWindowConfig(name="w", location=location, times=ranges, **fields)

    return MuteWindow.from_config(config)


def at(text: str) -> float:
    """Return the instant of an ISO time with its offset (``...+00:00``)."""
    return datetime.fromisoformat(text).timestamp()


def iso(instant: float | None) -> str | None:
    if instant is None:
        return None
    return datetime.fromtimestamp(instant, UTC).isoformat()


def test_the_hosts_zone_never_matters(seoul_host):
    assert time.localtime(0).tm_hour == 9
    afternoon = window(times=[("13:00", "24:00")])

    assert afternoon.contains(at("2026-05-04T14:00:00+00:00"))
    assert not afternoon.contains(at("2026-05-04T05:00:00+00:00"))
    change = afternoon.next_change(at("2026-05-04T14:00:00+00:00"))
    assert iso(change) == "2026-05-05T00:00:00+00:00"


# 2026-05-04 is a Monday.
@pytest.mark.parametrize(
    ("fields", "instant", "expected"),
    [
        ({}, "2026-05-04T03:00:00+00:00", True),
        # Start included, end excluded; 24:00 ends the day.
        ({"times": [("09:00", "17:00")]}, "2026-05-04T09:00:00+00:00", True),
        ({"times": [("09:00", "17:00")]}, "2026-05-04T16:59:59+00:00", True),
        ({"times": [("09:00", "17:00")]}, "2026-05-04T17:00:00+00:00", False),
        ({"times": [("09:00", "17:00")]}, "2026-05-04T08:59:59+00:00", False),
        ({"times": [("22:00", "24:00")]}, "2026-05-04T23:59:59+00:00", True),
        ({"times": [("22:00", "24:00")]}, "2026-05-05T00:00:00+00:00", False),
        # Entries of a field are alternatives.
        (
            {"times": [("00:00", "06:00"), ("22:00", "24:00")]},
            "2026-05-04T05:00:00+00:00",
            True,
        ),
        ({"weekdays": ["monday:friday"]}, "2026-05-04T12:00:00+00:00", True),
        ({"weekdays": ["monday:friday"]}, "2026-05-08T23:59:00+00:00", True),
        ({"weekdays": ["monday:friday"]}, "2026-05-09T00:00:00+00:00", False),
        ({"weekdays": ["Saturday", "sunday"]}, "2026-05-10T12:00:00+00:00", True),
        # A weekday range may wrap past Sunday.
        ({"weekdays": ["saturday:monday"]}, "2026-05-04T12:00:00+00:00", True),
        ({"weekdays": ["saturday:monday"]}, "2026-05-05T12:00:00+00:00", False),
        ({"days_of_month": ["1:7"]}, "2026-05-07T12:00:00+00:00", True),
        ({"days_of_month": ["1:7"]}, "2026-05-08T12:00:00+00:00", False),
        # Negative days count from the end of the month.
        ({"days_of_month": ["-1"]}, "2026-02-28T12:00:00+00:00", True),
        ({"days_of_month": ["-1"]}, "2028-02-28T12:00:00+00:00", False),
        ({"days_of_month": ["-1"]}, "2028-02-29T12:00:00+00:00", True),
        ({"days_of_month": ["-7:-1"]}, "2026-04-24T00:00:00+00:00", True),
        ({"days_of_month": ["-7:-1"]}, "2026-04-23T23:59:00+00:00", False),
        ({"days_of_month": ["1:-1"]}, "2026-04-30T12:00:00+00:00", True),
        # A day the month does not have matches nothing.
        ({"days_of_month": ["31"]}, "2026-04-30T12:00:00+00:00", False),
        ({"days_of_month": ["31"]}, "2026-05-01T00:00:00+00:00", False),
        ({"days_of_month": ["25:31"]}, "2026-02-28T12:00:00+00:00", True),
        ({"months": ["may"]}, "2026-05-04T12:00:00+00:00", True),
        ({"months": ["january:march"]}, "2026-05-04T12:00:00+00:00", False),
        ({"months": ["5"]}, "2026-05-04T12:00:00+00:00", True),
        ({"months": ["1:4"]}, "2026-04-30T23:59:00+00:00", True),
        ({"years": ["2026"]}, "2026-05-04T12:00:00+00:00", True),
        ({"years": ["2027:2030"]}, "2026-12-31T23:59:59+00:00", False),
        ({"years": ["2027:2030"]}, "2027-01-01T00:00:00+00:00", True),
        # Every field that is set must hold.
        (
            {"times": [("09:00", "17:00")], "weekdays": ["saturday:sunday"]},
            "2026-05-04T10:00:00+00:00",
            False,
        ),
        (
            {"times": [("09:00", "17:00")], "weekdays": ["monday"], "months": ["may"]},
            "2026-05-04T10:00:00+00:00",
            True,
        ),
    ],
)
def test_what_a_utc_window_contains(fields, instant, expected):
    assert window(**fields).contains(at(instant)) is expected


@pytest.mark.parametrize(
    ("location", "fields", "instant", "expected"),
    [
        # 09:00 in Paris (summer time) is 07:00 UTC.
        ("Europe/Paris", {"times": [("09:00", "17:00")]}, "2026-05-04T07:00Z", True),
        ("Europe/Paris", {"times": [("09:00", "17:00")]}, "2026-05-04T15:30Z", False),
        # Sunday 23:00 UTC is already Monday in Tokyo.
        ("Asia/Tokyo", {"weekdays": ["monday"]}, "2026-05-03T23:00Z", True),
        ("Asia/Tokyo", {"weekdays": ["monday"]}, "2026-05-04T15:00Z", False),
        ("Asia/Kolkata", {"times": [("00:00", "00:30")]}, "2026-05-03T18:45Z", True),
    ],
)
def test_a_window_reads_its_own_zones_wall_clock(location, fields, instant, expected):
    chosen = window(location, **fields)

    assert chosen.contains(at(instant.replace("Z", "+00:00"))) is expected


@pytest.mark.parametrize(
    ("location", "fields", "start", "expected"),
    [
        ("UTC", {}, "2026-05-04T03:00:00+00:00", None),
        ("UTC", {"times": [("09:00", "17:00")]}, "2026-05-04T03:00:00+00:00", "09:00"),
        ("UTC", {"times": [("09:00", "17:00")]}, "2026-05-04T09:00:00+00:00", "17:00"),
        (
            "UTC",
            {"times": [("09:00", "17:00")]},
            "2026-05-04T17:00:00+00:00",
            "2026-05-05T09:00:00+00:00",
        ),
        # The next match may be days away.
        (
            "UTC",
            {"weekdays": ["saturday"], "times": [("10:00", "11:00")]},
            "2026-05-04T12:00:00+00:00",
            "2026-05-09T10:00:00+00:00",
        ),
        (
            "UTC",
            {"weekdays": ["monday:friday"]},
            "2026-05-04T12:00:00+00:00",
            "2026-05-09T00:00:00+00:00",
        ),
        (
            "UTC",
            {"days_of_month": ["-1"]},
            "2026-02-03T12:00:00+00:00",
            "2026-02-28T00:00:00+00:00",
        ),
        (
            "UTC",
            {"months": ["december"], "days_of_month": ["25"]},
            "2026-05-04T12:00:00+00:00",
            "2026-12-25T00:00:00+00:00",
        ),
        (
            "UTC",
            {"years": ["2026"]},
            "2026-05-04T12:00:00+00:00",
            "2027-01-01T00:00:00+00:00",
        ),
        # Past its last year, a window never opens again.
        ("UTC", {"years": ["2025"]}, "2026-05-04T12:00:00+00:00", None),
        # A day that no month has: never.
        ("UTC", {"months": ["february"], "days_of_month": ["30"]}, "2026-05-04", None),
        # Midnight in Paris, in summer, is 22:00 UTC the day before.
        (
            "Europe/Paris",
            {"weekdays": ["saturday:sunday"]},
            "2026-05-04T12:00:00+00:00",
            "2026-05-08T22:00:00+00:00",
        ),
    ],
)
def test_when_a_window_changes_next(location, fields, start, expected):
    start_instant = at(start if "T" in start else start + "T12:00:00+00:00")
    if expected is not None and "T" not in expected:
        expected = start[:10] + "T" + expected + ":00+00:00"

    found = window(location, **fields).next_change(start_instant)

    assert iso(found) == expected


# In New York, clocks go from 02:00 EST to 03:00 EDT on 2026-03-08 (07:00 UTC)
# and from 02:00 EDT back to 01:00 EST on 2026-11-01 (06:00 UTC).
@pytest.mark.parametrize(
    ("times", "start", "expected"),
    [
        # Spring: 01:30 EST opens it; the skipped 02:00-03:00 closes it early.
        (("01:30", "02:30"), "2026-03-08T05:00:00+00:00", "2026-03-08T06:30:00+00:00"),
        (("01:30", "02:30"), "2026-03-08T06:30:00+00:00", "2026-03-08T07:00:00+00:00"),
        (("01:30", "02:30"), "2026-03-08T07:00:00+00:00", "2026-03-09T05:30:00+00:00"),
        # A day's hours on the day clocks change, in local time.
        (("09:00", "17:00"), "2026-03-08T05:00:00+00:00", "2026-03-08T13:00:00+00:00"),
        (("09:00", "17:00"), "2026-03-08T13:00:00+00:00", "2026-03-08T21:00:00+00:00"),
        (("09:00", "17:00"), "2026-11-01T05:00:00+00:00", "2026-11-01T14:00:00+00:00"),
        (("09:00", "17:00"), "2026-11-01T14:00:00+00:00", "2026-11-01T22:00:00+00:00"),
        # Autumn: 01:30-02:00 happens twice, and both times are inside; the
        # clock going back from 02:00 to 01:00 leaves the window in between.
        (("01:30", "02:30"), "2026-11-01T05:00:00+00:00", "2026-11-01T05:30:00+00:00"),
        (("01:30", "02:30"), "2026-11-01T05:30:00+00:00", "2026-11-01T06:00:00+00:00"),
        (("01:30", "02:30"), "2026-11-01T06:00:00+00:00", "2026-11-01T06:30:00+00:00"),
        (("01:30", "02:30"), "2026-11-01T06:30:00+00:00", "2026-11-01T07:30:00+00:00"),
    ],
)
def test_daylight_saving_days(times, start, expected):
    chosen = window("America/New_York", times=[times])

    found = chosen.next_change(at(start))

    assert iso(found) == expected
    assert chosen.contains(found) is not chosen.contains(at(start))
    assert chosen.contains(found - 1) is chosen.contains(at(start))


def test_the_hour_skipped_in_spring_is_never_inside():
    skipped = window("America/New_York", times=[("02:00", "03:00")])

    assert not skipped.contains(at("2026-03-08T06:59:59+00:00"))
    assert not skipped.contains(at("2026-03-08T07:00:00+00:00"))
    change = skipped.next_change(at("2026-03-08T05:00:00+00:00"))
    assert iso(change) == "2026-03-09T06:00:00+00:00"


ZONES = ["UTC", "America/New_York", "Europe/London", "Australia/Lord_Howe"]
TIMES = st.tuples(st.integers(0, 47), st.integers(1, 48)).filter(lambda r: r[0] < r[1])


def hhmm(half_hours: int) -> str:
    return f"{half_hours // 2:02d}:{30 * (half_hours % 2):02d}"


@settings(max_examples=40, deadline=None)
@given(
    location=st.sampled_from(ZONES),
    times=st.lists(TIMES, max_size=2),
    weekdays=st.lists(st.sampled_from(["monday", "friday:sunday"]), max_size=1),
    # Around the 2026 changes of clocks in every zone above.
    start=st.sampled_from(
        [at(f"2026-{day}T00:00:00+00:00") for day in ("03-07", "03-28", "04-04")]
        + [at(f"2026-{day}T00:00:00+00:00") for day in ("09-26", "10-24", "10-31")]
    ),
    offset=st.integers(0, 3 * 24 * 60),
)
def test_next_change_is_the_first_minute_the_answer_flips(
    location, times, weekdays, start, offset
):
    chosen = window(
        location, times=[(hhmm(a), hhmm(b)) for a, b in times], weekdays=weekdays
    )
    t = start + 60 * offset
    inside = chosen.contains(t)

    found = chosen.next_change(t)

    # Every boundary and change of offset in these zones falls on a minute.
    minute = t + 60
    limit = t + 9 * 86400
    while minute < limit and chosen.contains(minute) is inside:
        minute += 60
    expected = None if minute >= limit else minute
    assert (found if found is not None and found < limit else None) == expected
