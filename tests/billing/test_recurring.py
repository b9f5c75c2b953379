"""Recurring charges: anniversaries, time zones, catch-up, exactly once."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.core.management import CommandError, call_command
from djmoney.money import Money

from accounts.models import Company
from billing.models import LedgerTransaction, RecurringCharge
from billing.reconcile import reconcile
from billing.selectors import company_balance
from billing.services import recurring
from tests.factories import CompanyFactory, SubaccountFactory
from tests.factories.billing import grant
from tests.factories.rating import PlanFactory

pytestmark = pytest.mark.django_db
TOKYO = ZoneInfo("Asia/Tokyo")
NEW_YORK = ZoneInfo("America/New_York")


def jpy(value) -> Money:
    return Money(Decimal(value), "JPY")


@pytest.fixture
def postpaid():
    return CompanyFactory(mode=Company.Mode.POSTPAID, billing_timezone="Asia/Tokyo")


@pytest.fixture(autouse=True)
def books_reconcile():
    yield
    assert reconcile().ok


def starts(company, item=None):
    charges = RecurringCharge.objects.filter(company=company).order_by("period_start", "item_key")
    if item:
        charges = charges.filter(item=item)
    return [c.period_start.astimezone(company.tzinfo).date().isoformat() for c in charges]


def test_plan_fee_and_activation_are_charged_at_order_then_monthly_clamped_at_month_ends(postpaid):
    plan = PlanFactory(monthly_fee=jpy(1000), activation_fee=jpy(3000))
    ordered = datetime(2026, 1, 31, 10, 0, tzinfo=TOKYO)
    recurring.subscription_order(company=postpaid, plan=plan, at=ordered)
    recurring.recurring_charge_company(company=postpaid, as_of=ordered, now=ordered)
    assert starts(postpaid) == ["2026-01-31", "2026-01-31"]
    assert company_balance(postpaid) == jpy(-4000)
    recurring.recurring_charge_company(
        company=postpaid,
        as_of=datetime(2026, 5, 1, tzinfo=TOKYO),
        now=datetime(2026, 5, 1, tzinfo=TOKYO),
    )
    assert starts(postpaid, "plan_fee") == ["2026-01-31", "2026-02-28", "2026-03-31", "2026-04-30"]
    assert RecurringCharge.objects.filter(item="activation").count() == 1
    descriptions = list(
        RecurringCharge.objects.filter(item="plan_fee")
        .order_by("period_start")
        .values_list("description", flat=True)
    )
    assert descriptions[1] == f"Plan {plan.name}, 2026-02-28 – 2026-03-30"


def test_leap_year_anniversary_on_the_29th():
    company = CompanyFactory(mode=Company.Mode.POSTPAID, billing_timezone="UTC")
    number = recurring.phone_number_assign(
        company=company,
        number="+81 50 1234 5678",
        monthly_price=jpy(300),
        at=datetime(2024, 2, 29, 12, 0, tzinfo=UTC),
    )
    recurring.recurring_charge_company(company=company, as_of=datetime(2025, 3, 30, tzinfo=UTC))
    days = starts(company)
    assert days[:2] == ["2024-02-29", "2024-03-29"]
    assert "2025-02-28" in days and "2025-03-29" in days
    assert RecurringCharge.objects.get(phone_number=number, period_index=0).description == (
        "DID +81 50 1234 5678, 2024-02-29 – 2024-03-28"
    )


def test_periods_follow_the_billing_time_zone_across_dst():
    company = CompanyFactory(mode=Company.Mode.POSTPAID, billing_timezone="America/New_York")
    fee = recurring.ServiceFee.objects.create(
        company=company,
        name="Support",
        amount=jpy(100),
        period="weekly",
        started_at=datetime(2026, 3, 2, 9, 0, tzinfo=NEW_YORK),
        next_charge_at=datetime(2026, 3, 2, 9, 0, tzinfo=NEW_YORK),
    )
    recurring.recurring_charge_company(
        company=company, as_of=datetime(2026, 3, 16, 9, 0, tzinfo=NEW_YORK)
    )
    local_starts = [
        c.period_start.astimezone(NEW_YORK).strftime("%Y-%m-%d %H:%M")
        for c in RecurringCharge.objects.filter(service_fee=fee).order_by("period_start")
    ]
    # 9:00 local every Monday, across the switch to daylight saving time on 8 March.
    assert local_starts == ["2026-03-02 09:00", "2026-03-09 09:00", "2026-03-16 09:00"]


def test_catch_up_after_three_missed_months_charges_each_in_order_once(postpaid):
    plan = PlanFactory(monthly_fee=jpy(1000))
    recurring.subscription_order(company=postpaid, plan=plan, at=datetime(2026, 7, 5, tzinfo=TOKYO))
    call_command("run_recurring", "--date", "2026-10-05")
    assert starts(postpaid) == ["2026-07-05", "2026-08-05", "2026-09-05", "2026-10-05"]
    call_command("run_recurring", "--date", "2026-10-05")
    call_command("run_recurring", "--date", "2026-10-04")
    assert RecurringCharge.objects.count() == 4
    assert LedgerTransaction.objects.filter(kind="recurring_fee").count() == 4


def test_run_recurring_refuses_a_bad_date():
    with pytest.raises(CommandError, match="not a date"):
        call_command("run_recurring", "--date", "2026-13-40")


def test_run_recurring_refuses_a_day_that_has_not_come_anywhere(postpaid):
    plan = PlanFactory(monthly_fee=jpy(1000))
    recurring.subscription_order(company=postpaid, plan=plan, at=datetime(2026, 7, 5, tzinfo=TOKYO))
    charged = RecurringCharge.objects.count()
    for day in ("9999-12-31", (datetime.now(tz=UTC) + timedelta(days=2)).date().isoformat()):
        with pytest.raises(CommandError, match="in the future"):
            call_command("run_recurring", "--date", day)
    assert RecurringCharge.objects.count() == charged


def test_seat_fee_counts_active_subaccounts_at_the_charge_instant(postpaid):
    at = datetime(2026, 11, 1, tzinfo=TOKYO)
    SubaccountFactory.create_batch(3, company=postpaid, created_at=at - timedelta(days=10))
    SubaccountFactory(company=postpaid, created_at=at + timedelta(days=3))  # joins later
    gone = SubaccountFactory(company=postpaid, created_at=at - timedelta(days=10))
    fee = recurring.SeatFee.objects.create(
        company=postpaid, price_per_seat=jpy(500), started_at=at, next_charge_at=at
    )
    gone.is_active, gone.deactivated_at = False, at - timedelta(days=1)
    gone.save()
    recurring.recurring_charge_company(company=postpaid, as_of=at)
    charge = RecurringCharge.objects.get(seat_fee=fee)
    assert (charge.quantity, charge.amount) == (3, jpy(1500))
    assert charge.description.startswith("Seats: 3 × ¥500")


def test_charge_descriptions_are_the_ledgers_english_whatever_language_is_active(postpaid):
    from django.utils import translation

    at = datetime(2026, 11, 1, tzinfo=TOKYO)
    SubaccountFactory(company=postpaid, created_at=at - timedelta(days=10))
    recurring.SeatFee.objects.create(
        company=postpaid, price_per_seat=jpy(500), started_at=at, next_charge_at=at
    )
    with translation.override("ja"):  # e.g. charged from a portal request
        recurring.recurring_charge_company(company=postpaid, as_of=at)
    charge = RecurringCharge.objects.get(company=postpaid)
    assert charge.description == "Seats: 1 × ¥500, 2026-11-01 – 2026-11-30"
    assert charge.transaction.description == charge.description


def test_ending_a_subscription_and_releasing_a_did_stop_future_charges(postpaid):
    start = datetime(2026, 1, 10, tzinfo=TOKYO)
    sub = recurring.subscription_order(
        company=postpaid, plan=PlanFactory(monthly_fee=jpy(10)), at=start
    )
    did = recurring.phone_number_assign(
        company=postpaid, number="+81 3 1234 5678", monthly_price=jpy(5), at=start
    )
    recurring.recurring_charge_company(company=postpaid, as_of=start)
    recurring.subscription_end(subscription=sub, at=datetime(2026, 3, 1, tzinfo=TOKYO))
    recurring.phone_number_release(phone_number=did, at=datetime(2026, 2, 10, tzinfo=TOKYO))
    recurring.recurring_charge_company(company=postpaid, as_of=datetime(2026, 12, 31, tzinfo=TOKYO))
    assert starts(postpaid, "plan_fee") == ["2026-01-10", "2026-02-10"]
    assert starts(postpaid, "did") == ["2026-01-10"]


def test_prepaid_company_that_cannot_pay_a_fee_records_the_shortfall_and_is_blocked():
    company = CompanyFactory(mode=Company.Mode.PREPAID)
    at = datetime(2026, 11, 1, tzinfo=TOKYO)
    grant(company, 300, now=at - timedelta(days=1))
    recurring.phone_number_assign(
        company=company, number="+81 50 0000 0001", monthly_price=jpy(500), at=at
    )
    recurring.recurring_charge_company(company=company, as_of=at, now=at)
    transaction = RecurringCharge.objects.get(company=company).transaction
    assert transaction.shortfall == jpy(200)
    company.refresh_from_db()
    assert company.is_blocked and company_balance(company) == jpy(0)


def test_paygo_plan_fee_starts_at_first_usage():
    from billing.services.usage import UsageEvent, usage_ingest
    from tests.factories.rating import RateFactory, TariffFactory, api_key

    tariff = TariffFactory()
    RateFactory(tariff=tariff, service="data", destination="", price=Decimal("1"))
    company = CompanyFactory(mode=Company.Mode.POSTPAID, tariff=tariff)
    plan = PlanFactory(monthly_fee=jpy(500), is_paygo=True, fee_starts="first_use")
    ordered = datetime(2026, 10, 1, tzinfo=UTC)
    sub = recurring.subscription_order(company=company, plan=plan, at=ordered)
    recurring.recurring_charge_company(company=company, as_of=ordered + timedelta(days=20))
    assert not RecurringCharge.objects.exists()
    key, _ = api_key()
    used_at = datetime(2026, 10, 20, 8, 0, tzinfo=UTC)
    usage_ingest(
        api_key=key,
        now=used_at,
        events=[
            UsageEvent(
                id="d1",
                account=company.account_code,
                subaccount=None,
                service="data",
                destination="JP",
                quantity=Decimal(1_000_000),
                occurred_at=used_at,
            )
        ],
    )
    sub.refresh_from_db()
    assert sub.fee_anchor_at == used_at
    recurring.recurring_charge_company(company=company, as_of=datetime(2026, 11, 21, tzinfo=UTC))
    assert starts(company, "plan_fee") == ["2026-10-20", "2026-11-20"]


def test_plan_in_another_currency_cannot_be_ordered():
    company = CompanyFactory(currency="USD")
    with pytest.raises(recurring.InvalidAmount, match="billed in USD"):
        recurring.subscription_order(company=company, plan=PlanFactory(currency="JPY"))


def test_running_twice_with_the_pointer_reset_still_charges_once(postpaid):
    """The unique (item, period) and the ledger key hold even if the schedule pointer is lost."""
    at = datetime(2026, 11, 5, tzinfo=TOKYO)
    number = recurring.phone_number_assign(
        company=postpaid, number="+81 3 0000 0000", monthly_price=jpy(5), at=at
    )
    recurring.recurring_charge_company(company=postpaid, as_of=at)
    type(number).objects.filter(pk=number.pk).update(next_charge_at=at)
    recurring.recurring_charge_company(company=postpaid, as_of=at)
    assert RecurringCharge.objects.count() == 1


def test_a_number_held_by_another_company_cannot_be_assigned(postpaid):
    recurring.phone_number_assign(company=postpaid, number="+81 50 9999 0000", monthly_price=jpy(1))
    other = CompanyFactory(mode=Company.Mode.POSTPAID)
    with pytest.raises(recurring.NumberInUse, match="assigned to a company already"):
        recurring.phone_number_assign(
            company=other, number="+81 50 9999 0000", monthly_price=jpy(1)
        )


def test_releasing_with_a_stale_copy_does_not_rewind_the_schedule(postpaid):
    start = datetime(2026, 1, 10, tzinfo=TOKYO)
    stale = recurring.phone_number_assign(
        company=postpaid, number="+81 3 5555 0000", monthly_price=jpy(5), at=start
    )
    recurring.recurring_charge_company(company=postpaid, as_of=datetime(2026, 3, 10, tzinfo=TOKYO))
    released = recurring.phone_number_release(
        phone_number=stale, at=datetime(2026, 5, 1, tzinfo=TOKYO)
    )
    assert released.next_charge_at == datetime(2026, 4, 10, tzinfo=TOKYO)
    recurring.recurring_charge_company(company=postpaid, as_of=datetime(2026, 12, 1, tzinfo=TOKYO))
    assert starts(postpaid, "did") == ["2026-01-10", "2026-02-10", "2026-03-10", "2026-04-10"]
    released.refresh_from_db()
    assert released.next_charge_at is None
