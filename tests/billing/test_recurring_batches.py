"""Recurring charges for many companies in one database transaction (the task's batches):
the same charges as one company at a time, in a fixed number of statements, and one
company's refusal does not hold up the others."""

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from djmoney.money import Money

from accounts.models import Company
from billing.exceptions import IdempotencyConflict
from billing.models import LedgerTransaction, PhoneNumber, Plan, RecurringCharge, Subscription
from billing.reconcile import reconcile
from billing.selectors import company_balance
from billing.services import ledger, recurring
from billing.tasks import recurring_charge_batch, recurring_charge_due
from tests.factories import CompanyFactory, SubaccountFactory
from tests.factories.billing import charge, grant
from tests.factories.rating import PlanFactory

pytestmark = pytest.mark.django_db
START = datetime(2026, 8, 15, 9, 30, tzinfo=UTC)
AS_OF = datetime(2026, 10, 20, tzinfo=UTC)
# By AS_OF: the activation fee, three monthly periods of the plan, DID and seats, and ten
# weeks of the service fee.
PER_COMPANY = 1 + 3 + 3 + 3 + 10


def jpy(value) -> Money:
    return Money(Decimal(value), "JPY")


@pytest.fixture(autouse=True)
def books_reconcile():
    yield
    assert reconcile().ok


def company_with_items(n: int, *, mode=Company.Mode.POSTPAID, zone="UTC") -> Company:
    """A plan with an activation fee, a DID, a seat fee (two seats, one of them gone
    before the last period) and a weekly service fee, all from ``START``."""
    company = CompanyFactory(mode=mode, billing_timezone=zone)
    plan = Plan.objects.filter(name="Business").first() or PlanFactory(
        name="Business", monthly_fee=jpy(1000), activation_fee=jpy(500)
    )
    recurring.subscription_order(company=company, plan=plan, at=START)
    recurring.phone_number_assign(
        company=company, number=f"+81 50 2222 {n:04d}", monthly_price=jpy(300), at=START
    )
    SubaccountFactory(company=company, created_at=START - timedelta(days=1))
    SubaccountFactory(
        company=company,
        created_at=START - timedelta(days=1),
        is_active=False,
        deactivated_at=START + timedelta(days=40),
    )
    recurring.seat_fee_set(company=company, price_per_seat=jpy(200), at=START)
    recurring.service_fee_add(
        company=company, name="Support", amount=jpy(700), period="weekly", at=START
    )
    return company


def charges_of(company) -> list[tuple]:
    """What a customer sees of each charge (the DID's number differs between companies)."""
    return [
        (
            c.item,
            c.period_index,
            c.period_start,
            c.period_end,
            c.quantity,
            c.amount,
            re.sub(r"\+81 50 2222 \d+", "DID", c.description),
            c.created_at,
            # Linked to its item and its ledger transaction (under the same key).
            [f for f in recurring.SOURCE_FIELDS if getattr(c, f"{f}_id") == _item_id(c)],
            c.transaction.idempotency_key == f"recurring:{c.item_key}:{c.period_index}",
        )
        for c in RecurringCharge.objects.filter(company=company).order_by(
            "item_key", "period_index"
        )
    ]


def ledger_of(company) -> list[tuple]:
    return [
        (
            t.kind,
            re.sub(r"\+81 50 2222 \d+", "DID", t.description),
            t.effective_at,
            t.balance_after,
        )
        for t in LedgerTransaction.objects.filter(company=company).order_by(
            "effective_at", "description"
        )
    ]


def test_a_batch_charges_each_company_as_charging_it_alone_would():
    alone = [company_with_items(n, zone=zone) for n, zone in enumerate(["UTC", "Asia/Tokyo"])]
    batched = [
        company_with_items(n + 10, zone=zone) for n, zone in enumerate(["UTC", "Asia/Tokyo"])
    ]
    for company in alone:
        recurring.recurring_charge_company(company=company, as_of=AS_OF, now=AS_OF)

    count = recurring.recurring_charge_companies(
        company_ids=[company.pk for company in batched], as_of=AS_OF, now=AS_OF
    )

    assert count == sum(len(charges_of(company)) for company in alone)
    for one, other in zip(alone, batched, strict=True):
        assert charges_of(other) == charges_of(one)
        assert ledger_of(other) == ledger_of(one)
        assert company_balance(other) == company_balance(one)
    seats = RecurringCharge.objects.filter(company=batched[0], item="seats")
    assert [c.quantity for c in seats.order_by("period_index")] == [2, 2, 1]
    for model in (Subscription, PhoneNumber):
        assert set(
            model.objects.filter(company__in=batched).values_list("next_charge_at", flat=True)
        ) == set(model.objects.filter(company__in=alone).values_list("next_charge_at", flat=True))


def test_a_batch_costs_the_same_statements_for_one_company_as_for_three():
    # (Three: more would pass SQLite's limit of parameters per statement, where Django
    # splits an insert in two; PostgreSQL has no such limit.)
    few = [company_with_items(1)]
    many = [company_with_items(n + 10) for n in range(3)]
    # The revenue accounts exist, as on any day after the first.
    recurring.recurring_charge_company(company=company_with_items(99), as_of=AS_OF, now=AS_OF)

    with CaptureQueriesContext(connection) as for_few:
        recurring.recurring_charge_companies(
            company_ids=[c.pk for c in few], as_of=AS_OF, now=AS_OF
        )
    with CaptureQueriesContext(connection) as for_many:
        recurring.recurring_charge_companies(
            company_ids=[c.pk for c in many], as_of=AS_OF, now=AS_OF
        )

    assert len(for_many) == len(for_few)
    assert RecurringCharge.objects.filter(company__in=many).count() == 3 * PER_COMPANY


def test_a_batch_run_twice_charges_nothing_more():
    companies = [company_with_items(n) for n in range(3)]
    ids = [company.pk for company in companies]
    first = recurring.recurring_charge_companies(company_ids=ids, as_of=AS_OF, now=AS_OF)
    assert first == 3 * PER_COMPANY
    assert recurring.recurring_charge_companies(company_ids=ids, as_of=AS_OF, now=AS_OF) == 0
    assert RecurringCharge.objects.count() == first


def test_a_prepaid_company_in_a_batch_that_cannot_pay_is_charged_what_it_has_and_blocked():
    poor = company_with_items(1, mode=Company.Mode.PREPAID)
    rich = company_with_items(2, mode=Company.Mode.PREPAID)
    grant(poor, 2000, now=START - timedelta(days=1))
    grant(rich, 100_000, now=START - timedelta(days=1))

    recurring.recurring_charge_companies(company_ids=[poor.pk, rich.pk], as_of=AS_OF, now=AS_OF)

    poor.refresh_from_db()
    rich.refresh_from_db()
    assert poor.status == Company.Status.BLOCKED
    assert rich.status == Company.Status.ACTIVE
    assert company_balance(poor) == jpy(0)
    shortfalls = LedgerTransaction.objects.filter(company=poor, shortfall__gt=0)
    assert shortfalls.exists()
    assert RecurringCharge.objects.filter(company=poor).count() == PER_COMPANY  # all recorded


def test_one_company_refused_in_a_batch_does_not_hold_up_the_others():
    companies = [company_with_items(n) for n in range(3)]
    stuck = companies[1]
    number = PhoneNumber.objects.get(company=stuck)
    # Another company's transaction already holds the key of the stuck company's DID charge.
    charge(CompanyFactory(), 1, now=START, key=f"recurring:did:{number.pk}:0")

    with pytest.raises(IdempotencyConflict):
        recurring.recurring_charge_companies(
            company_ids=[c.pk for c in companies], as_of=AS_OF, now=AS_OF
        )

    assert RecurringCharge.objects.filter(company=companies[0]).count() == PER_COMPANY
    assert RecurringCharge.objects.filter(company=companies[2]).count() == PER_COMPANY
    assert not RecurringCharge.objects.filter(company=stuck).exists()
    assert Subscription.objects.get(company=stuck).next_charge_at == START


def test_a_refused_batch_does_not_stop_the_run_and_the_command_names_the_company():
    from django.core.management import CommandError, call_command

    from billing.exceptions import RecurringChargesFailed

    companies = [company_with_items(n) for n in range(5)]
    stuck = companies[0]
    number = PhoneNumber.objects.get(company=stuck)
    charge(CompanyFactory(), 1, now=START, key=f"recurring:did:{number.pk}:0")

    with pytest.raises(RecurringChargesFailed) as failed:
        recurring.recurring_charge_all(as_of=AS_OF, now=AS_OF, batch_size=1)
    assert failed.value.charged == 4 * PER_COMPANY
    for company in companies[1:]:
        assert RecurringCharge.objects.filter(company=company).count() == PER_COMPANY
    assert not RecurringCharge.objects.filter(company=stuck).exists()

    # The command says so in one sentence (run as of now: the stuck company is still stuck).
    with pytest.raises(CommandError, match=f"company {stuck.account_code}: "):
        call_command("run_recurring")


def test_every_refused_company_of_a_batch_is_named():
    from billing.exceptions import RecurringChargesFailed

    companies = [company_with_items(n) for n in range(4)]
    stuck = [companies[0], companies[2]]
    for company in stuck:
        number = PhoneNumber.objects.get(company=company)
        charge(CompanyFactory(), 1, now=START, key=f"recurring:did:{number.pk}:0")

    with pytest.raises(RecurringChargesFailed) as failed:
        recurring.recurring_charge_all(as_of=AS_OF, now=AS_OF, batch_size=4)
    message = str(failed.value)
    assert all(f"company {company.account_code}: " in message for company in stuck)
    assert failed.value.charged == 2 * PER_COMPANY


def test_a_batch_skips_a_company_that_no_longer_exists():
    company = company_with_items(1)
    count = recurring.recurring_charge_companies(
        company_ids=[company.pk, 987654], as_of=AS_OF, now=AS_OF
    )
    assert count == PER_COMPANY


def test_run_all_in_small_batches_charges_every_company_once():
    companies = [company_with_items(n) for n in range(5)]
    assert recurring.recurring_charge_all(as_of=AS_OF, now=AS_OF, batch_size=2) == 5 * PER_COMPANY
    assert recurring.recurring_charge_all(as_of=AS_OF, now=AS_OF, batch_size=2) == 0
    assert RecurringCharge.objects.filter(company__in=companies).count() == 5 * PER_COMPANY


def test_the_fan_out_sends_one_task_per_batch(settings, django_capture_on_commit_callbacks):
    settings.TOLLGATE_RECURRING_BATCH = 2
    companies = [company_with_items(n) for n in range(5)]
    sent = []
    original = recurring_charge_batch.delay
    recurring_charge_batch.delay = lambda ids: sent.append(ids) or original(ids)
    try:
        with time_machine.travel(AS_OF, tick=False):
            with django_capture_on_commit_callbacks(execute=True):
                assert recurring_charge_due.delay().get() == 5
            assert sent == [[c.pk for c in companies[i : i + 2]] for i in range(0, 5, 2)]
            assert RecurringCharge.objects.count() == 5 * PER_COMPANY
            # Delivered again: nothing more.
            assert recurring_charge_batch.delay([c.pk for c in companies]).get() == 0
            assert recurring_charge_due.delay().get() == 0
    finally:
        recurring_charge_batch.delay = original


# --- The ledger's batch service -------------------------------------------------------------


def request(key: str, amount=100) -> ledger.ChargeRequest:
    return ledger.ChargeRequest(
        amount=jpy(amount), revenue="did", idempotency_key=key, description=f"Charge {key}"
    )


def test_companies_charge_many_gives_each_company_what_company_charge_many_would():
    alone = [
        CompanyFactory(mode=Company.Mode.PREPAID),
        CompanyFactory(mode=Company.Mode.POSTPAID, credit_limit=jpy(150)),
    ]
    batched = [
        CompanyFactory(mode=Company.Mode.PREPAID),
        CompanyFactory(mode=Company.Mode.POSTPAID, credit_limit=jpy(150)),
    ]
    for company in (alone[0], batched[0]):
        grant(company, 150, now=START)
    single = [
        ledger.company_charge_many(
            company=company, charges=[request(f"a{company.pk}:{i}") for i in range(2)], now=START
        )
        for company in alone
    ]
    many = ledger.companies_charge_many(
        charges=[(c, [request(f"b{c.pk}:{i}") for i in range(2)]) for c in batched], now=START
    )
    for one, other in zip(single, many, strict=True):
        assert [(r.charged, r.shortfall, r.balance, r.duplicate) for r in other] == [
            (r.charged, r.shortfall, r.balance, r.duplicate) for r in one
        ]
    for one, other in zip(alone, batched, strict=True):
        one.refresh_from_db()
        other.refresh_from_db()
        assert (other.status, other.blocked_reason) == (one.status, one.blocked_reason)
        assert company_balance(other) == company_balance(one)
    assert [c.status for c in batched] == [Company.Status.BLOCKED] * 2

    again = ledger.companies_charge_many(
        charges=[(c, [request(f"b{c.pk}:{i}") for i in range(2)]) for c in batched], now=START
    )
    assert all(result.duplicate for results in again for result in results)


def test_companies_charge_many_refuses_a_key_given_to_two_companies_and_posts_nothing():
    first, second = CompanyFactory.create_batch(2, mode=Company.Mode.POSTPAID)
    with pytest.raises(IdempotencyConflict):
        ledger.companies_charge_many(
            charges=[(first, [request("shared")]), (second, [request("shared")])], now=START
        )
    assert not LedgerTransaction.objects.exists()


def test_companies_charge_many_refuses_a_company_listed_twice():
    company = CompanyFactory(mode=Company.Mode.POSTPAID)
    with pytest.raises(ValueError, match="twice"):
        ledger.companies_charge_many(
            charges=[(company, [request("x")]), (company, [request("y")])], now=START
        )


def _item_id(charge: RecurringCharge) -> int:
    return int(charge.item_key.split(":")[1])
