"""Recurring runs at once (two workers, or sixteen) leave one charge per (item, period)."""

import itertools
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from djmoney.money import Money

from accounts.models import Company
from billing.exceptions import BillingError, IdempotencyConflict
from billing.models import LedgerTransaction, RecurringCharge
from billing.reconcile import reconcile
from billing.services import ledger
from billing.services.recurring import (
    phone_number_assign,
    recurring_charge_all,
    recurring_charge_company,
    subscription_order,
)
from tests.factories import CompanyFactory
from tests.factories.rating import PlanFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
START = datetime(2026, 8, 15, tzinfo=UTC)
AS_OF = datetime(2026, 11, 15, tzinfo=UTC)  # four periods each


def _in_threads(count: int, work) -> None:
    barrier = threading.Barrier(count)
    errors = []

    def run():
        try:
            barrier.wait()
            work()
        except Exception as error:  # noqa: BLE001 - re-raised in the main thread
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def _each_in_threads(calls) -> None:
    """Each call in its own thread, all released at once."""
    turns = itertools.count()  # next() is atomic: each thread takes its own call
    _in_threads(len(calls), lambda: calls[next(turns)]())


def _company_with_items() -> Company:
    company = CompanyFactory(mode=Company.Mode.POSTPAID, billing_timezone="UTC")
    number = f"+81 50 1111 {company.pk:04d}"
    subscription_order(company=company, plan=PlanFactory(monthly_fee=Money(1000, "JPY")), at=START)
    phone_number_assign(company=company, number=number, monthly_price=Money(300, "JPY"), at=START)
    return company


def test_sixteen_runs_of_one_company_at_once_charge_each_period_once():
    company = _company_with_items()
    _in_threads(16, lambda: recurring_charge_company(company=company, as_of=AS_OF))
    assert RecurringCharge.objects.count() == 8
    assert LedgerTransaction.objects.filter(kind="recurring_fee").count() == 8
    assert reconcile().ok


def test_two_whole_runs_at_once_over_many_companies_charge_each_period_once():
    companies = [_company_with_items() for _ in range(10)]
    _in_threads(2, lambda: recurring_charge_all(as_of=AS_OF))
    assert RecurringCharge.objects.count() == 8 * len(companies)
    pairs = list(RecurringCharge.objects.values_list("item_key", "period_index"))
    assert len(pairs) == len(set(pairs))
    assert reconcile().ok
    recurring_charge_all(as_of=AS_OF + timedelta(days=1))  # and again: nothing new
    assert RecurringCharge.objects.count() == 8 * len(companies)


def test_two_whole_runs_in_small_batches_and_single_runs_at_once_charge_each_period_once():
    # Batches of three over ten companies: the two runs' batches overlap as they go, and a
    # run for one company (the admin's "run now") meets them; all lock in id order.
    companies = [_company_with_items() for _ in range(10)]
    runs = [lambda: recurring_charge_all(as_of=AS_OF, batch_size=3) for _ in range(2)]
    runs += [
        lambda company=company: recurring_charge_company(company=company, as_of=AS_OF)
        for company in companies[::3]
    ]
    _each_in_threads(runs)
    assert RecurringCharge.objects.count() == 8 * len(companies)
    pairs = list(RecurringCharge.objects.values_list("item_key", "period_index"))
    assert len(pairs) == len(set(pairs))
    assert LedgerTransaction.objects.filter(kind="recurring_fee").count() == 8 * len(companies)
    assert reconcile().ok


def test_a_key_taken_by_another_company_during_a_batch_is_a_conflict_not_a_database_error():
    # Keys are unique across the ledger, but a batch locks only its own companies: the
    # losers of a shared key must be refused with IdempotencyConflict, and post nothing.
    pairs = [CompanyFactory.create_batch(2, mode=Company.Mode.POSTPAID) for _ in range(8)]
    for first, _second in pairs:  # accounts exist: only the key is contended
        ledger.company_charge(
            company=first,
            amount=Money(1, "JPY"),
            revenue="did",
            idempotency_key=f"warm:{first.pk}",
            description="warm up",
            now=START,
        )
    outcomes = []

    def batch(first, second):
        try:
            ledger.companies_charge_many(
                charges=[
                    (first, [_request("shared-key")]),
                    (second, [_request(f"own:{second.pk}")]),
                ],
                now=AS_OF,
            )
        except BillingError as refusal:
            outcomes.append(refusal)
        else:
            outcomes.append("posted")

    _each_in_threads([lambda pair=pair: batch(*pair) for pair in pairs])
    assert outcomes.count("posted") == 1
    assert all(isinstance(o, IdempotencyConflict) for o in outcomes if o != "posted"), outcomes
    assert LedgerTransaction.objects.filter(idempotency_key="shared-key").count() == 1
    assert LedgerTransaction.objects.filter(idempotency_key__startswith="own:").count() == 1
    assert reconcile().ok


def _request(key: str) -> ledger.ChargeRequest:
    return ledger.ChargeRequest(
        amount=Money(100, "JPY"), revenue="did", idempotency_key=key, description=key
    )
