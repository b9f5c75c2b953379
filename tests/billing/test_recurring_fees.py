"""Seat and service fees are started and ended through their services, which keep each fee's
schedule pointer (``next_charge_at``) right, so that the recurring run charges them once."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from djmoney.money import Money

from accounts.models import Company
from billing.exceptions import BillingError, InvalidAmount
from billing.models import RecurringCharge, SeatFee, ServiceFee
from billing.reconcile import reconcile
from billing.selectors import company_balance
from billing.services import recurring
from tests.factories import CompanyFactory, SubaccountFactory

pytestmark = pytest.mark.django_db
TOKYO = ZoneInfo("Asia/Tokyo")
START = datetime(2026, 11, 1, tzinfo=TOKYO)


def jpy(value) -> Money:
    return Money(Decimal(value), "JPY")


@pytest.fixture
def company():
    return CompanyFactory(mode=Company.Mode.POSTPAID, billing_timezone="Asia/Tokyo")


@pytest.fixture(autouse=True)
def books_reconcile():
    yield
    assert reconcile().ok


def charged(fee) -> list[str]:
    field = {SeatFee: "seat_fee", ServiceFee: "service_fee"}[type(fee)]
    charges = RecurringCharge.objects.filter(**{field: fee})
    return [
        c.period_start.astimezone(TOKYO).date().isoformat()
        for c in charges.order_by("period_start")
    ]


# --- Seat fees ------------------------------------------------------------------------------


def test_a_seat_fee_is_due_at_its_start_and_charges_the_seats_active_then(company):
    SubaccountFactory.create_batch(3, company=company, created_at=START - timedelta(days=5))
    fee = recurring.seat_fee_set(company=company, price_per_seat=jpy(500), at=START)
    assert fee.started_at == fee.next_charge_at == START
    assert fee.ended_at is None

    recurring.recurring_charge_company(company=company, as_of=START, now=START)

    assert charged(fee) == ["2026-11-01"]
    assert company_balance(company) == jpy(-1500)
    fee.refresh_from_db()
    assert fee.next_charge_at == datetime(2026, 12, 1, tzinfo=TOKYO)


def test_setting_a_new_seat_price_ends_the_running_fee_at_that_instant(company):
    old = recurring.seat_fee_set(company=company, price_per_seat=jpy(500), at=START)
    recurring.recurring_charge_company(company=company, as_of=START, now=START)
    change = datetime(2026, 12, 1, tzinfo=TOKYO)  # the old fee's next charge

    new = recurring.seat_fee_set(company=company, price_per_seat=jpy(700), at=change)

    old.refresh_from_db()
    assert old.ended_at == change
    assert old.next_charge_at is None  # its next period would start at the end
    assert new.next_charge_at == change
    later = datetime(2027, 1, 15, tzinfo=TOKYO)
    recurring.recurring_charge_company(company=company, as_of=later, now=later)
    assert charged(old) == ["2026-11-01"]
    assert charged(new) == ["2026-12-01", "2027-01-01"]


def test_a_new_seat_price_cannot_start_before_one_already_set_for_later(company):
    recurring.seat_fee_set(company=company, price_per_seat=jpy(500), at=START)
    with pytest.raises(BillingError, match="end it first"):
        recurring.seat_fee_set(
            company=company, price_per_seat=jpy(400), at=START - timedelta(days=1)
        )
    assert SeatFee.objects.filter(company=company).count() == 1


@pytest.mark.parametrize(
    ("price", "message"),
    [
        (Money(5, "USD"), "billed in JPY"),
        (jpy(0), "more than zero"),
        (jpy(-100), "more than zero"),
        (jpy("0.5"), "more decimals"),
    ],
)
def test_a_seat_price_must_be_more_than_zero_in_the_company_currency(company, price, message):
    with pytest.raises(InvalidAmount, match=message):
        recurring.seat_fee_set(company=company, price_per_seat=price, at=START)
    assert not SeatFee.objects.exists()


def test_ending_a_seat_fee_stops_periods_starting_at_or_after_the_end(company):
    fee = recurring.seat_fee_set(company=company, price_per_seat=jpy(500), at=START)
    recurring.recurring_charge_company(company=company, as_of=START, now=START)
    end = datetime(2026, 11, 20, tzinfo=TOKYO)

    recurring.seat_fee_end(seat_fee=fee, at=end)

    fee.refresh_from_db()
    assert fee.ended_at == end
    assert fee.next_charge_at is None
    later = datetime(2027, 3, 1, tzinfo=TOKYO)
    assert recurring.recurring_charge_company(company=company, as_of=later, now=later) == []
    assert charged(fee) == ["2026-11-01"]  # not refunded: no proration


def test_a_period_started_before_the_end_and_not_charged_yet_is_still_charged(company):
    SubaccountFactory(company=company, created_at=START - timedelta(days=1))
    fee = recurring.seat_fee_set(company=company, price_per_seat=jpy(500), at=START)
    end = datetime(2026, 12, 10, tzinfo=TOKYO)  # the runs missed 1 November and 1 December

    recurring.seat_fee_end(seat_fee=fee, at=end)

    fee.refresh_from_db()
    assert fee.next_charge_at == START
    later = datetime(2027, 3, 1, tzinfo=TOKYO)
    recurring.recurring_charge_company(company=company, as_of=later, now=later)
    assert charged(fee) == ["2026-11-01", "2026-12-01"]
    fee.refresh_from_db()
    assert fee.next_charge_at is None


def test_ending_reads_the_fee_as_committed_not_as_the_caller_read_it(company):
    stale = recurring.seat_fee_set(company=company, price_per_seat=jpy(500), at=START)
    # A run moves the pointer on after the caller read the fee.
    recurring.recurring_charge_company(company=company, as_of=START, now=START)
    assert stale.next_charge_at == START

    recurring.seat_fee_end(seat_fee=stale, at=datetime(2026, 11, 15, tzinfo=TOKYO))

    fee = SeatFee.objects.get(pk=stale.pk)
    assert fee.next_charge_at is None  # 1 December is after the end: nothing more


def test_a_fee_cannot_end_before_it_starts_and_ending_again_later_changes_nothing(company):
    fee = recurring.seat_fee_set(company=company, price_per_seat=jpy(500), at=START)
    with pytest.raises(BillingError, match="must end after it starts"):
        recurring.seat_fee_end(seat_fee=fee, at=START)
    end = datetime(2027, 1, 1, tzinfo=TOKYO)
    recurring.seat_fee_end(seat_fee=fee, at=end)
    recurring.seat_fee_end(seat_fee=fee, at=end + timedelta(days=30))
    fee.refresh_from_db()
    assert fee.ended_at == end
    earlier = datetime(2026, 12, 15, tzinfo=TOKYO)
    recurring.seat_fee_end(seat_fee=fee, at=earlier)
    fee.refresh_from_db()
    assert fee.ended_at == earlier


# --- Service fees ---------------------------------------------------------------------------


def test_a_weekly_service_fee_is_due_at_its_start_then_every_week(company):
    fee = recurring.service_fee_add(
        company=company, name="Priority support", amount=jpy(2000), period="weekly", at=START
    )
    assert fee.next_charge_at == fee.started_at == START
    assert fee.period == ServiceFee.Period.WEEKLY

    as_of = START + timedelta(days=14)
    recurring.recurring_charge_company(company=company, as_of=as_of, now=as_of)

    assert charged(fee) == ["2026-11-01", "2026-11-08", "2026-11-15"]
    assert company_balance(company) == jpy(-6000)
    description = RecurringCharge.objects.filter(service_fee=fee).earliest("period_start")
    assert description.description == "Priority support, 2026-11-01 – 2026-11-07"


def test_a_service_fee_starting_later_is_not_due_before_its_start(company):
    later = datetime(2027, 2, 1, tzinfo=TOKYO)
    recurring.service_fee_add(
        company=company, name="Hosting", amount=jpy(1000), period="monthly", at=later
    )
    assert recurring.recurring_due(company, START) == []
    assert len(recurring.recurring_due(company, later)) == 1


def test_a_service_fee_in_another_currency_or_period_is_refused(company):
    with pytest.raises(InvalidAmount, match="billed in JPY"):
        recurring.service_fee_add(
            company=company, name="Hosting", amount=Money(10, "USD"), period="monthly", at=START
        )
    with pytest.raises(ValueError):
        recurring.service_fee_add(
            company=company, name="Hosting", amount=jpy(10), period="daily", at=START
        )
    assert not ServiceFee.objects.exists()


def test_a_usd_fee_keeps_cents_but_not_fractions_of_a_cent():
    company = CompanyFactory(currency="USD", billing_timezone="UTC", mode=Company.Mode.POSTPAID)
    at = datetime(2026, 11, 1, tzinfo=UTC)
    fee = recurring.service_fee_add(
        company=company, name="Support", amount=Money("9.99", "USD"), period="monthly", at=at
    )
    assert fee.amount == Money("9.99", "USD")
    with pytest.raises(InvalidAmount, match="more decimals"):
        recurring.service_fee_add(
            company=company, name="Support", amount=Money("9.999", "USD"), period="monthly", at=at
        )


def test_ending_a_service_fee_clears_its_next_charge_at_or_after_the_end(company):
    fee = recurring.service_fee_add(
        company=company, name="Hosting", amount=jpy(1000), period="monthly", at=START
    )
    recurring.recurring_charge_company(company=company, as_of=START, now=START)
    end = datetime(2026, 12, 1, tzinfo=TOKYO)  # exactly the next period's start

    recurring.service_fee_end(service_fee=fee, at=end)

    fee.refresh_from_db()
    assert (fee.ended_at, fee.next_charge_at) == (end, None)
    later = datetime(2027, 6, 1, tzinfo=TOKYO)
    recurring.recurring_charge_company(company=company, as_of=later, now=later)
    assert charged(fee) == ["2026-11-01"]


# --- Races (PostgreSQL) ---------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_seat_prices_set_at_once_leave_one_seat_fee():
    import threading

    from django.db import connection

    company = CompanyFactory(mode=Company.Mode.POSTPAID, billing_timezone="Asia/Tokyo")
    barrier = threading.Barrier(2)
    outcomes = []

    def set_price(price):
        try:
            barrier.wait()
            recurring.seat_fee_set(company=company, price_per_seat=jpy(price), at=START)
            outcomes.append("set")
        except BillingError as error:
            outcomes.append(str(error))
        finally:
            connection.close()

    threads = [threading.Thread(target=set_price, args=(price,)) for price in (500, 700)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # The company lock makes the second wait, then see the first fee starting at the same
    # instant: seats are never charged twice for one period.
    assert sorted(outcomes)[1] == "set" and "end it first" in sorted(outcomes)[0]
    assert SeatFee.objects.filter(company=company).count() == 1


def test_a_late_charge_does_not_count_a_seat_through_the_stretch_it_was_deactivated(company):
    from accounts.models import SubaccountInactivity
    from accounts.services import subaccount_set_active

    SubaccountFactory.create_batch(2, company=company, created_at=START - timedelta(days=5))
    away = SubaccountFactory(company=company, created_at=START - timedelta(days=5))
    # Deactivated over the December and January period starts, back on 10 January.
    subaccount_set_active(subaccount=away, active=False, now=datetime(2026, 11, 20, tzinfo=TOKYO))
    subaccount_set_active(subaccount=away, active=True, now=datetime(2027, 1, 10, tzinfo=TOKYO))
    subaccount_set_active(subaccount=away, active=True, now=datetime(2027, 1, 11, tzinfo=TOKYO))
    assert SubaccountInactivity.objects.filter(subaccount=away).count() == 1
    fee = recurring.seat_fee_set(company=company, price_per_seat=jpy(500), at=START)

    # The run was down from November to February: its catch-up charges each period with
    # the seats active at that period's start.
    february = datetime(2027, 2, 1, tzinfo=TOKYO)
    recurring.recurring_charge_company(company=company, as_of=february, now=february)

    counts = dict(
        RecurringCharge.objects.filter(seat_fee=fee).values_list("period_start", "quantity")
    )
    assert {start.astimezone(TOKYO).date().isoformat(): int(n) for start, n in counts.items()} == {
        "2026-11-01": 3,
        "2026-12-01": 2,
        "2027-01-01": 2,
        "2027-02-01": 3,
    }
    assert company_balance(company) == jpy(-(3 + 2 + 2 + 3) * 500)
