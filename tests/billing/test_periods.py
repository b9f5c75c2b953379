"""Billing periods (``billing.periods``): half-open ``[start, end)`` intervals in the company's
billing time zone, anniversary days clamped to month ends, and DST handled by comparing
instants, never wall times.

New York in 2026: clocks jump 02:00 → 03:00 on 8 March and fall back 02:00 → 01:00 on
1 November (01:00–02:00 happens twice). Tokyo has no DST.
"""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from billing.periods import calendar_month, calendar_month_of, monthly_period, weekly_period

TOKYO = ZoneInfo("Asia/Tokyo")
NEW_YORK = ZoneInfo("America/New_York")
SYDNEY = ZoneInfo("Australia/Sydney")
LONDON = ZoneInfo("Europe/London")
MICRO = timedelta(microseconds=1)


def local(tz, *args, fold=0) -> datetime:
    return datetime(*args, tzinfo=tz, fold=fold)


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def u(value: datetime) -> datetime:
    return value.astimezone(UTC)


def u3(period: tuple[datetime, datetime, int]) -> tuple[datetime, datetime, int]:
    return u(period[0]), u(period[1]), period[2]


def starts(anchor: datetime, tz: ZoneInfo, count: int) -> list[datetime]:
    """The first ``count`` period starts, in local time, found by walking end to end."""
    found, at = [], anchor
    for _ in range(count):
        start, end, _ = monthly_period(anchor, at, tz)
        found.append(start.astimezone(tz))
        at = end
    return found


# --- Month ends and leap years -----------------------------------------------------------------


def test_an_anchor_on_the_31st_clamps_to_each_shorter_month_and_comes_back():
    anchor = local(TOKYO, 2026, 1, 31, 10, 0)
    assert [(s.month, s.day, s.hour) for s in starts(anchor, TOKYO, 6)] == [
        (1, 31, 10),
        (2, 28, 10),
        (3, 31, 10),
        (4, 30, 10),
        (5, 31, 10),
        (6, 30, 10),
    ]


def test_in_a_leap_year_the_31st_clamps_to_29_february():
    anchor = local(TOKYO, 2028, 1, 31, 0, 0)
    assert [(s.month, s.day) for s in starts(anchor, TOKYO, 3)] == [(1, 31), (2, 29), (3, 31)]


def test_an_anchor_on_29_february_keeps_the_29th_and_clamps_only_in_february():
    anchor = local(TOKYO, 2028, 2, 29, 9, 0)
    found = starts(anchor, TOKYO, 14)
    assert [(s.year, s.month, s.day) for s in found[11:]] == [
        (2029, 1, 29),
        (2029, 2, 28),  # 2029 is not a leap year
        (2029, 3, 29),
    ]
    assert all(s.day == 29 for s in found[1:12])


def test_the_period_containing_an_instant_and_its_index():
    anchor = local(TOKYO, 2026, 1, 31, 10, 0)
    start, end, index = monthly_period(anchor, local(TOKYO, 2026, 3, 15, 0, 0), TOKYO)
    assert (start, end, index) == (
        local(TOKYO, 2026, 2, 28, 10, 0),
        local(TOKYO, 2026, 3, 31, 10, 0),
        1,
    )
    # Far ahead: the index counts months, whatever the clamping on the way.
    assert monthly_period(anchor, utc(2031, 1, 31, 1, 0), TOKYO)[2] == 60


def test_periods_are_half_open_start_included_end_excluded():
    anchor = local(TOKYO, 2026, 1, 31, 10, 0)
    first_end = local(TOKYO, 2026, 2, 28, 10, 0)
    assert monthly_period(anchor, anchor, TOKYO)[2] == 0
    assert monthly_period(anchor, first_end - MICRO, TOKYO)[2] == 0
    assert monthly_period(anchor, first_end, TOKYO)[:2] == (
        first_end,
        local(TOKYO, 2026, 3, 31, 10, 0),
    )


def test_an_instant_before_the_anchor_belongs_to_no_period():
    anchor = local(TOKYO, 2026, 1, 31, 10, 0)
    with pytest.raises(ValueError):
        monthly_period(anchor, anchor - MICRO, TOKYO)
    with pytest.raises(ValueError):
        weekly_period(anchor, anchor - MICRO, TOKYO)


def test_the_period_is_computed_in_the_billing_zone_not_utc():
    # 1 March 00:30 in Tokyo is still 28 February in UTC: a Tokyo company's March.
    at = local(TOKYO, 2026, 3, 1, 0, 30)
    assert at.astimezone(UTC).day == 28
    start, end = calendar_month_of(at, TOKYO)
    assert (start, end) == (local(TOKYO, 2026, 3, 1, 0, 0), local(TOKYO, 2026, 4, 1, 0, 0))
    assert start == utc(2026, 2, 28, 15, 0)


@pytest.mark.parametrize(
    ("year", "month", "days"),
    [(2026, 2, 28), (2028, 2, 29), (2100, 2, 28), (2000, 2, 29), (2026, 12, 31)],
)
def test_calendar_months_in_tokyo_last_whole_days(year, month, days):
    start, end = calendar_month(year, month, TOKYO)
    assert (start.day, start.hour, end.day, end.hour) == (1, 0, 1, 0)
    assert end - start == timedelta(days=days)


# --- DST: New York -----------------------------------------------------------------------------


def test_a_new_york_march_is_an_hour_short_and_november_an_hour_long():
    march = [u(edge) for edge in calendar_month(2026, 3, NEW_YORK)]
    november = [u(edge) for edge in calendar_month(2026, 11, NEW_YORK)]
    assert march[1] - march[0] == timedelta(days=31, hours=-1)
    assert november[1] - november[0] == timedelta(days=30, hours=1)
    assert march == [utc(2026, 3, 1, 5, 0), utc(2026, 4, 1, 4, 0)]


def test_an_anniversary_in_the_skipped_spring_hour_starts_just_after_the_gap():
    # Anchored at 02:30 on the 8th: on 8 March 2026 02:30 does not exist in New York.
    anchor = local(NEW_YORK, 2026, 2, 8, 2, 30)
    start, end, index = u3(monthly_period(anchor, utc(2026, 3, 8, 12, 0), NEW_YORK))
    assert index == 1
    assert start == utc(2026, 3, 8, 7, 30)  # 03:30 EDT, the first wall time after the gap
    assert end == utc(2026, 4, 8, 6, 30)  # 02:30 EDT again to 02:30 the month after
    # The instant the clock jumped (03:00 EDT) is still in the February period.
    assert monthly_period(anchor, utc(2026, 3, 8, 7, 0), NEW_YORK)[2] == 0


def test_an_anniversary_in_the_repeated_autumn_hour_is_its_first_occurrence():
    # Anchored at 01:30 EDT: on 1 November 2026 01:30 happens at 05:30Z and again at 06:30Z.
    anchor = local(NEW_YORK, 2026, 10, 1, 1, 30)
    start, _, index = u3(monthly_period(anchor, utc(2026, 11, 1, 6, 45), NEW_YORK))
    assert (start, index) == (utc(2026, 11, 1, 5, 30), 1)
    assert monthly_period(anchor, utc(2026, 11, 1, 5, 29), NEW_YORK)[2] == 0


def test_instants_in_the_repeated_hour_are_ordered_by_instant_not_by_wall_time():
    anchor = local(NEW_YORK, 2026, 10, 1, 1, 30)
    # 01:15 the second time (EST, 06:15Z) reads earlier on the wall than the 01:30 EDT
    # (05:30Z) start, but happens after it: it is in the new period.
    second_0115 = local(NEW_YORK, 2026, 11, 1, 1, 15, fold=1)
    assert second_0115.astimezone(UTC) == utc(2026, 11, 1, 6, 15)
    assert monthly_period(anchor, second_0115, NEW_YORK)[2] == 1
    first_0145 = local(NEW_YORK, 2026, 11, 1, 1, 45, fold=0)  # 05:45Z
    assert monthly_period(anchor, first_0145, NEW_YORK)[2] == 1
    first_0115 = local(NEW_YORK, 2026, 11, 1, 1, 15, fold=0)  # 05:15Z
    assert monthly_period(anchor, first_0115, NEW_YORK)[2] == 0


def test_an_anchor_in_the_second_occurrence_of_the_repeated_hour():
    anchor = local(NEW_YORK, 2026, 11, 1, 1, 30, fold=1)  # 06:30Z, EST
    assert anchor.astimezone(UTC) == utc(2026, 11, 1, 6, 30)
    assert u(monthly_period(anchor, anchor, NEW_YORK)[0]) == utc(2026, 11, 1, 6, 30)
    # The first 01:45 (EDT, 05:45Z) reads later on the wall but is before the anchor.
    with pytest.raises(ValueError):
        monthly_period(anchor, local(NEW_YORK, 2026, 11, 1, 1, 45, fold=0), NEW_YORK)
    _, end, _ = u3(monthly_period(anchor, anchor, NEW_YORK))
    assert end == utc(2026, 12, 1, 6, 30)  # 01:30 EST on 1 December


def test_weeks_across_dst_are_seven_wall_clock_days():
    anchor = local(NEW_YORK, 2026, 3, 1, 0, 0)  # a Sunday
    spring = u3(weekly_period(anchor, utc(2026, 3, 10, 12, 0), NEW_YORK))
    assert spring[2] == 1
    assert spring[1] - spring[0] == timedelta(hours=167)
    autumn_anchor = local(NEW_YORK, 2026, 10, 25, 0, 0)
    autumn = u3(weekly_period(autumn_anchor, utc(2026, 11, 1, 6, 15), NEW_YORK))
    assert autumn[2] == 1
    assert autumn[1] - autumn[0] == timedelta(hours=169)
    assert (autumn[0].astimezone(NEW_YORK).hour, autumn[1].astimezone(NEW_YORK).hour) == (0, 0)


def test_tokyo_has_no_dst_so_every_period_is_whole_days():
    anchor = local(TOKYO, 2026, 1, 8, 2, 30)
    for start in starts(anchor, TOKYO, 12):
        assert (start.day, start.hour, start.minute) == (8, 2, 30)


def test_a_skipped_wall_time_moves_forward_also_for_an_anchor_in_a_repeated_hour():
    # BUG: Sydney repeats 02:00–03:00 on 6 April 2025 and skips it on 6 October 2030. An
    # anchor at the second 02:30 (AEST, fold=1) keeps fold=1 in its wall time, and a
    # skipped wall time with fold=1 resolves to the instant BEFORE the gap (01:30 AEST)
    # instead of after it (03:30 AEDT), contrary to ``_local_datetime``'s docstring: that
    # period starts an hour early.
    anchor = local(SYDNEY, 2025, 4, 6, 2, 30, fold=1)
    assert anchor.astimezone(UTC) == utc(2025, 4, 5, 16, 30)
    start, _, index = u3(monthly_period(anchor, utc(2030, 10, 6, 0, 0), SYDNEY))
    assert index == 66
    assert start == utc(2030, 10, 5, 16, 30)  # 03:30 AEDT, just after the gap


# --- Properties --------------------------------------------------------------------------------
# Everything is compared and shifted in UTC: aware datetimes that share a tzinfo compare
# (and add) by wall time and ignore ``fold``, which is wrong in a repeated hour.

ZONES = [TOKYO, NEW_YORK, LONDON, SYDNEY, ZoneInfo("UTC")]


instants = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2034, 12, 31), timezones=st.just(UTC)
)
# Anchors often on the days and hours that make periods interesting: month ends, DST days
# and hours, both occurrences of a repeated hour.
anchors = st.one_of(
    instants,
    st.builds(
        lambda tz, year, month, day, hour, minute, fold: datetime(
            year, month, day, hour, minute, fold=fold, tzinfo=tz
        ),
        st.sampled_from(ZONES),
        st.integers(2020, 2030),
        st.sampled_from([1, 2, 3, 4, 10, 11, 12]),
        st.sampled_from([1, 5, 6, 8, 28]),
        st.sampled_from([0, 1, 2, 23]),
        st.sampled_from([0, 30]),
        st.sampled_from([0, 1]),
    ),
    st.builds(
        lambda tz, year, month, day: datetime(year, month, day, 10, 0, tzinfo=tz),
        st.sampled_from(ZONES),
        st.integers(2020, 2030),
        st.sampled_from([1, 3, 5, 8, 10, 12]),
        st.sampled_from([29, 30, 31]),
    ),
)
offsets = st.timedeltas(timedelta(0), timedelta(days=2000))


@settings(max_examples=300, deadline=None)
@given(anchor=anchors, tz=st.sampled_from(ZONES), offset=offsets)
@example(
    anchor=local(NEW_YORK, 2026, 10, 1, 1, 30),
    tz=NEW_YORK,
    offset=timedelta(days=31, hours=5, minutes=15),
)
@example(anchor=local(NEW_YORK, 2026, 11, 1, 1, 30, fold=1), tz=NEW_YORK, offset=timedelta(0))
@example(anchor=local(TOKYO, 2028, 1, 31, 10, 0), tz=TOKYO, offset=timedelta(days=29))
def test_monthly_periods_touch_and_every_instant_is_in_exactly_one(anchor, tz, offset):
    at = u(anchor) + offset
    start, end, index = u3(monthly_period(anchor, at, tz))
    assert start <= at < end
    assert index >= 0
    # The next period starts where this one ends; the previous one ends where it starts.
    assert u3(monthly_period(anchor, end, tz))[::2] == (end, index + 1)
    if index:
        assert u3(monthly_period(anchor, start - MICRO, tz))[1:] == (start, index - 1)
    else:
        assert start == u(anchor)
    # Both edges of the period answer the same period: nothing falls between two.
    assert u3(monthly_period(anchor, start, tz)) == (start, end, index)
    assert u3(monthly_period(anchor, end - MICRO, tz)) == (start, end, index)
    # A month is 28 to 31 days, give or take an hour of DST.
    assert timedelta(days=28, hours=-2) <= end - start <= timedelta(days=31, hours=2)


@settings(max_examples=200, deadline=None)
@given(anchor=anchors, tz=st.sampled_from(ZONES), offset=offsets)
def test_weekly_periods_touch_and_every_instant_is_in_exactly_one(anchor, tz, offset):
    at = u(anchor) + offset
    start, end, index = u3(weekly_period(anchor, at, tz))
    assert start <= at < end
    assert u3(weekly_period(anchor, end, tz))[::2] == (end, index + 1)
    assert u3(weekly_period(anchor, start, tz)) == (start, end, index)
    assert u3(weekly_period(anchor, end - MICRO, tz)) == (start, end, index)
    assert timedelta(days=7, hours=-2) <= end - start <= timedelta(days=7, hours=2)


@settings(max_examples=200, deadline=None)
@given(at=instants, tz=st.sampled_from(ZONES))
def test_calendar_months_touch_and_start_at_local_midnight_on_the_first(at, tz):
    start, end = (u(x) for x in calendar_month_of(at, tz))
    assert start <= at < end
    assert u(calendar_month_of(end, tz)[0]) == end
    assert u(calendar_month_of(start - MICRO, tz)[1]) == start
    local_start = start.astimezone(tz)
    assert (local_start.day, local_start.hour, local_start.minute) == (1, 0, 0)
