"""Mute windows: recurring ranges of time, read in one time zone.

A window (``[[mute_windows]]``) has up to five fields: ``times`` of day,
``weekdays``, ``days_of_month``, ``months`` and ``years``. Each is a list whose
entries are alternatives (OR); every field that is set must hold (AND); an
unset field holds always, so a window with no fields covers all time. Times
include their start and exclude their end, ``24:00`` being the end of the day;
every other range includes both ends. The fields are read on the wall clock of
the window's ``location`` (UTC unless set), never in the host's zone, so a
window reads the same on every machine and across daylight-saving changes: on
the day clocks go forward, a local time the clock skips is never inside a
window, and on the day they go back, an hour that happens twice is inside it
both times.

Weekday ranges may wrap past the end of the week (``saturday:monday``); days
of the month may count from its end (``-1`` is its last day, ``1:-1`` every
day), and a day the month does not have matches nothing.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tocsin.schema import MuteWindowConfig

WEEKDAYS = (
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
)
MONTHS = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)
MINUTES_PER_DAY = 24 * 60
#: How far :meth:`MuteWindow.next_change` looks ahead when ``years`` leaves it
#: open: the Gregorian calendar, weekdays included, repeats every 400 years.
HORIZON_YEARS = 400

#: The last year whose days :meth:`MuteWindow.next_change` walks; the day
#: after the end of 9999 cannot be written as a date.
_LAST_YEAR = 9998
_TIME = re.compile(r"(\d\d):(\d\d)")
_INTEGER = re.compile(r"-?\d{1,9}")

Range = tuple[int, int]


def zone(location: str) -> ZoneInfo:
    """Return the IANA time zone ``location`` (``Europe/Paris``, ``UTC``).

    :raises ValueError: if no such zone is known.
    """
    try:
        return ZoneInfo(location)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {location!r} (expected an IANA name like"
            " Europe/Paris or UTC)"
        ) from None


def parse_time(text: str) -> int:
    """Return ``HH:MM`` as minutes after midnight; ``24:00`` is 1440.

    :raises ValueError: if ``text`` is not a time of day.
    """
    found = _TIME.fullmatch(text)
    if found is None:
        raise ValueError(f"expected a time as HH:MM, got {text!r}")
    hours, minutes = int(found[1]), int(found[2])
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise ValueError(f"{text!r} is not a time of day (00:00 to 24:00)")

    return hours * 60 + minutes


def parse_time_range(start: str, end: str) -> Range:
    """Return a ``times`` entry as ``(start, end)`` minutes, the end excluded.

    :raises ValueError: if a time is invalid, or the start is not before the end.
    """
    first, last = parse_time(start), parse_time(end)
    if first == MINUTES_PER_DAY:
        raise ValueError("a range cannot start at 24:00; start it at 00:00")
    if first >= last:
        raise ValueError(
            f"start {start} is not before end {end} (a range across midnight"
            " is two ranges: ...-24:00 and 00:00-...)"
        )

    return first, last


def parse_weekday_range(text: str) -> Range:
    """Return ``monday`` or ``monday:friday`` as weekday numbers, Monday 0.

    A range whose start comes after its end wraps past Sunday.

    :raises ValueError: if a name is not a weekday.
    """
    return _named_range(text, WEEKDAYS, "weekday", numbers=False)


def parse_month_range(text: str) -> Range:
    """Return ``march``, ``3`` or ``january:march`` as month numbers, 1 to 12.

    :raises ValueError: if a month is unknown or the range runs backwards.
    """
    first, last = _named_range(text, MONTHS, "month", numbers=True)
    if first > last:
        raise ValueError(
            f"month range {text!r} runs backwards; write a range across the"
            " new year as two ranges"
        )

    return first, last


def parse_day_range(text: str) -> Range:
    """Return ``1``, ``1:15``, ``-1`` or ``1:-1`` as days of the month.

    Negative days count from the end of the month; a range may start from the
    month's start and end counted from its end, but not the other way round.

    :raises ValueError: if a day is not 1 to 31 or -31 to -1, or the range
        runs backwards.
    """
    first, last = _integer_range(text, "day of the month")
    for day in (first, last):
        if day == 0 or not -31 <= day <= 31:
            raise ValueError(f"day {day} is not 1 to 31 or -31 to -1 (from the end)")
    if first < 0 < last:
        raise ValueError(
            f"day range {text!r} starts from the end of the month and ends"
            " from its start"
        )
    if (first > 0) == (last > 0) and first > last:
        raise ValueError(f"day range {text!r} runs backwards")

    return first, last


def parse_year_range(text: str) -> Range:
    """Return ``2026`` or ``2026:2027`` as years.

    :raises ValueError: if a year is not 1 to 9999 or the range runs backwards.
    """
    first, last = _integer_range(text, "year")
    for year in (first, last):
        if not 1 <= year <= 9999:
            raise ValueError(f"year {year} is not 1 to 9999")
    if first > last:
        raise ValueError(f"year range {text!r} runs backwards")

    return first, last


def _named_range(
    text: str, names: tuple[str, ...], kind: str, *, numbers: bool
) -> Range:
    """Parse ``name`` or ``name:name``; months may also be numbers from 1."""
    ends = text.split(":")
    if len(ends) > 2:
        raise ValueError(f"expected a {kind} or a range {kind}:{kind}, got {text!r}")
    parsed = []
    for end in ends:
        word = end.strip().lower()
        if word in names:
            parsed.append(names.index(word) + (1 if numbers else 0))
        elif numbers and word.isdigit() and 1 <= int(word) <= len(names):
            parsed.append(int(word))
        else:
            known = ", ".join(names)
            raise ValueError(f"unknown {kind} {end!r} (known: {known})")

    return parsed[0], parsed[-1]


def _integer_range(text: str, kind: str) -> Range:
    ends = [end.strip() for end in text.split(":")]
    if len(ends) > 2 or not all(_INTEGER.fullmatch(end) for end in ends):
        raise ValueError(f"expected a {kind} or a range of them (a:b), got {text!r}")

    return int(ends[0]), int(ends[-1])


@dataclass(frozen=True, slots=True)
class MuteWindow:
    """One parsed ``[[mute_windows]]`` entry; see the module's docstring."""

    name: str
    zone: ZoneInfo
    times: tuple[Range, ...] = ()
    weekdays: tuple[Range, ...] = ()
    days_of_month: tuple[Range, ...] = ()
    months: tuple[Range, ...] = ()
    years: tuple[Range, ...] = ()

    @classmethod
    def from_config(cls, config: MuteWindowConfig) -> MuteWindow:
        """Build a window from its config entry.

        :raises ValueError: if a field does not parse (the config checks
            refuse such a file first, naming the key).
        """
        return cls(
            name=config.name,
            zone=zone(config.location),
            times=tuple(parse_time_range(t.start, t.end) for t in config.times),
            weekdays=tuple(map(parse_weekday_range, config.weekdays)),
            days_of_month=tuple(map(parse_day_range, config.days_of_month)),
            months=tuple(map(parse_month_range, config.months)),
            years=tuple(map(parse_year_range, config.years)),
        )

    def contains(self, t: float) -> bool:
        """Return whether the instant ``t`` (POSIX seconds) is inside the window."""
        local = datetime.fromtimestamp(t, self.zone)
        if not self._day_matches(local.date()):
            return False
        minute = local.hour * 60 + local.minute

        return not self.times or any(a <= minute < b for a, b in self.times)

    def next_change(self, t: float) -> float | None:
        """Return the first instant after ``t`` at which :meth:`contains` flips.

        The answer is found by walking the instants where it can flip: the
        start of each local day, each time boundary of the day, and each
        change of the zone's UTC offset; between two of them the wall clock
        crosses no boundary, so the answer cannot change.

        :return: POSIX seconds, or ``None`` if the answer never changes again.
        """
        inside = self.contains(t)
        day = datetime.fromtimestamp(t, self.zone).date()
        last = self._last_day(day)
        while day <= last:
            matches = self._day_matches(day)
            # A day outside the window, or inside it all day long, can only
            # flip the answer at its start.
            if (matches and self.times) or matches != inside:
                for instant in self._candidates(day):
                    if instant > t and self.contains(instant) != inside:
                        return instant
            if not inside and not self._month_matches(day):
                # Nothing in this month can open the window: skip to the next.
                day = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
            else:
                day += timedelta(days=1)

        return None

    def _month_matches(self, day: date) -> bool:
        if self.years and not _within(day.year, self.years):
            return False

        return not self.months or _within(day.month, self.months)

    def _day_matches(self, day: date) -> bool:
        if not self._month_matches(day):
            return False
        if self.weekdays and not any(
            _weekday_within(day.weekday(), first, last) for first, last in self.weekdays
        ):
            return False
        if self.days_of_month:
            length = calendar.monthrange(day.year, day.month)[1]
            return any(
                _day_within(day.day, first, last, length)
                for first, last in self.days_of_month
            )

        return True

    def _last_day(self, start: date) -> date:
        """Return the last local day :meth:`next_change` needs to look at."""
        if self.years:
            end = max(last for _, last in self.years)
            if end < start.year:
                return start
            return date(min(end + 1, _LAST_YEAR), 1, 1)

        return date(min(start.year + HORIZON_YEARS, _LAST_YEAR), 12, 31)

    def _candidates(self, day: date) -> list[float]:
        """Return the instants of ``day`` where :meth:`contains` may flip."""
        minutes = {0}
        for first, last in self.times:
            minutes.update((first, last))
        found = set()
        for minute in minutes:
            local = _local(day, minute)
            # Both readings of a time that happens twice, and both ends of
            # one that is skipped, so no boundary is missed.
            found.add(local.replace(tzinfo=self.zone, fold=0).timestamp())
            found.add(local.replace(tzinfo=self.zone, fold=1).timestamp())
        start = _local(day, 0).replace(tzinfo=self.zone).timestamp()
        end = _local(day, MINUTES_PER_DAY).replace(tzinfo=self.zone).timestamp()
        found.update(_offset_changes(self.zone, int(start), int(end) + 1))

        return sorted(found)


def _local(day: date, minute: int) -> datetime:
    """Return the wall-clock time ``minute`` minutes into ``day``; 1440 is the
    next day's midnight."""
    return datetime.combine(day, time()) + timedelta(minutes=minute)


def _offset_changes(zone: ZoneInfo, start: int, end: int) -> list[float]:
    """Return the instant in ``[start, end]`` at which ``zone`` changes its UTC
    offset, if it does; found by bisection, as zoneinfo lists no transitions.

    TODO: a zone changing its offset twice within one day (none does today)
    would have only one of the changes found.
    """
    before, after = _offset(zone, start), _offset(zone, end)
    if before == after:
        return []
    low, high = start, end
    while high - low > 1:
        middle = (low + high) // 2
        if _offset(zone, middle) == before:
            low = middle
        else:
            high = middle

    return [float(high)]


def _offset(zone: ZoneInfo, instant: int) -> timedelta | None:
    return datetime.fromtimestamp(instant, zone).utcoffset()


def _within(value: int, ranges: Iterable[Range]) -> bool:
    return any(first <= value <= last for first, last in ranges)


def _weekday_within(weekday: int, first: int, last: int) -> bool:
    if first <= last:
        return first <= weekday <= last
    return weekday >= first or weekday <= last


def _day_within(day: int, first: int, last: int, length: int) -> bool:
    """Return whether ``day`` of a month of ``length`` days is in the range."""
    begin = first if first > 0 else length + first + 1
    end = last if last > 0 else length + last + 1
    # A range starting on a day the month does not have (the 31st in April)
    # matches nothing, rather than the days of the next month.
    if begin > length or begin < 1:
        return False

    return begin <= day <= min(end, length)
