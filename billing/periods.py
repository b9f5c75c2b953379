"""Billing periods: half-open ``[start, end)`` intervals in a company's billing time zone.

A monthly period starts on the anniversary day of an anchor instant (a subscription's
start), at the anchor's local time of day, clamped to the last day of shorter months: an
anchor on 31 January gives periods starting 28 (or 29) February, 31 March, 30 April...
Calendar months are the same with the anchor at midnight on the 1st.
"""

import calendar
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

# The offset furthest ahead of UTC that a billing time zone can have (Kiribati).
LATEST_OFFSET = timedelta(hours=14)
# The years of any instant taken from outside (an event, a rate's start): far from the
# calendar's ends, where converting to UTC can overflow.
FIRST_YEAR, LAST_YEAR = 1970, 2999


def latest_date_anywhere(now: datetime) -> date:
    """The date it is now in the time zone furthest ahead: a day after it has begun nowhere,
    and work "as of" it (fees, reminders) would be done ahead of time."""
    return (now.astimezone(UTC) + LATEST_OFFSET).date()


def utc_within_years(value: datetime) -> datetime | None:
    """``value`` (aware) in UTC, or None when it falls outside ``FIRST_YEAR``–``LAST_YEAR``."""
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        return None
    return utc if FIRST_YEAR <= utc.year <= LAST_YEAR else None


def _local_datetime(day: date, clock: time, tz: ZoneInfo) -> datetime:
    """``day`` at ``clock`` in ``tz``; a wall time skipped by a DST jump moves forward."""
    naive = datetime.combine(day, clock)
    aware = naive.replace(tzinfo=tz)
    normalised = aware.astimezone(UTC).astimezone(tz)
    if normalised.replace(tzinfo=None, fold=0) != naive.replace(fold=0):
        # A wall time skipped by a DST jump: read with fold=0 it lands just after the gap
        # (an anchor's fold=1, from a repeated hour, would put it an hour before).
        normalised = naive.replace(fold=0, tzinfo=tz).astimezone(UTC).astimezone(tz)
    return normalised


def _utc(value: datetime) -> datetime:
    # Aware datetimes sharing a tzinfo compare by wall time, which is wrong in the hour a
    # DST change repeats; comparing in UTC is always right.
    return value.astimezone(UTC)


def add_months(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + months
    return index // 12, index % 12 + 1


def anniversary(anchor_local: datetime, months: int, tz: ZoneInfo) -> datetime:
    """The anchor moved ``months`` months on, same day of month (clamped) and wall time."""
    year, month = add_months(anchor_local.year, anchor_local.month, months)
    day = min(anchor_local.day, calendar.monthrange(year, month)[1])
    return _local_datetime(date(year, month, day), anchor_local.timetz().replace(tzinfo=None), tz)


def monthly_period(anchor: datetime, at: datetime, tz: ZoneInfo) -> tuple[datetime, datetime, int]:
    """The monthly period (start, end, index) that contains ``at``; index 0 starts at
    ``anchor``. ``at`` before the anchor belongs to no period (ValueError).

    Start and end are returned in UTC: two aware datetimes of different zones in the hour
    repeated when clocks go back compare unequal though they hash alike, so a start used
    as a key (bundle counters) must be in one zone, the zone the database gives back."""
    if _utc(at) < _utc(anchor):
        raise ValueError("The instant is before the start of the first period.")
    anchor_local = _utc(anchor).astimezone(tz)  # a real instant, even for a gap wall time
    at_local = at.astimezone(tz)
    months = (at_local.year - anchor_local.year) * 12 + (at_local.month - anchor_local.month)
    # The guess is right or one too far (at falls before this month's anniversary).
    start = anniversary(anchor_local, months, tz)
    while _utc(start) > _utc(at):
        months -= 1
        start = anniversary(anchor_local, months, tz)
    while _utc(end := anniversary(anchor_local, months + 1, tz)) <= _utc(at):
        months += 1
        start = end
    return _utc(start), _utc(end), months


def calendar_month(year: int, month: int, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """``[first day 00:00, first day of next month 00:00)`` in ``tz``."""
    next_year, next_month = add_months(year, month, 1)
    return (
        _local_datetime(date(year, month, 1), time(0), tz),
        _local_datetime(date(next_year, next_month, 1), time(0), tz),
    )


def calendar_month_of(at: datetime, tz: ZoneInfo) -> tuple[datetime, datetime]:
    local = at.astimezone(tz)
    return calendar_month(local.year, local.month, tz)


def weekly_period(anchor: datetime, at: datetime, tz: ZoneInfo) -> tuple[datetime, datetime, int]:
    """Seven-day periods from ``anchor`` in local wall time (a DST week is 167 or 169 h)."""
    if _utc(at) < _utc(anchor):
        raise ValueError("The instant is before the start of the first period.")
    anchor_local = _utc(anchor).astimezone(tz)  # a real instant, even for a gap wall time
    weeks = (at.astimezone(tz).date() - anchor_local.date()).days // 7
    clock = anchor_local.timetz().replace(tzinfo=None)

    def start_of(index: int) -> datetime:
        return _local_datetime(anchor_local.date() + timedelta(weeks=index), clock, tz)

    while _utc(start_of(weeks)) > _utc(at):
        weeks -= 1
    while _utc(start_of(weeks + 1)) <= _utc(at):
        weeks += 1
    return start_of(weeks), start_of(weeks + 1), weeks


def calendar_day(day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """``[day 00:00, next day 00:00)`` in ``tz`` (23 or 25 hours across a DST change)."""
    return (
        _local_datetime(day, time(0), tz),
        _local_datetime(day + timedelta(days=1), time(0), tz),
    )
