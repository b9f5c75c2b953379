"""Races on one company's money, run for real: sixteen threads, each with its own database
connection, released together by a barrier against PostgreSQL.

What keeps these safe is the ledger's lock order (the company row, then its lots): every
money-moving transaction of a company waits for the one before it to commit, so the
transactions of a company form one sequence. Each test checks that sequence afterwards:
``balance_after`` runs without a gap through the transactions in the order they were
written, and ``manage.py reconcile`` finds nothing.
"""

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from djmoney.money import Money

from accounts.models import Company, CompanyBlock
from billing.exceptions import BillingError, IdempotencyConflict
from billing.models import CreditLot, LedgerAccount, LedgerPosting, LedgerTransaction
from billing.reconcile import reconcile
from billing.selectors import company_available, company_balance
from billing.services import ledger
from tests.factories import CompanyFactory
from tests.factories.billing import charge, grant

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

THREADS = 16
NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)


def jpy(amount) -> Money:
    return Money(Decimal(amount), "JPY")


def run_together(calls: list[Callable[[], object]]) -> list[object]:
    """Run each call in its own thread, all released at once; return their results in order.

    Every thread opens its connection before the barrier (so they reach the database
    together, not one connect after another) and closes it at the end. An exception in a
    thread is re-raised here, in the test, with the thread's traceback.
    """
    assert len(calls) == THREADS
    barrier = threading.Barrier(THREADS, timeout=30)
    results: list[object] = [None] * THREADS
    errors: list[BaseException] = []

    def work(index: int, call: Callable[[], object]) -> None:
        try:
            connection.ensure_connection()
            barrier.wait()
            results[index] = call()
        except BaseException as error:  # handed to the main thread, which re-raises it
            errors.append(error)
            barrier.abort()  # release the others instead of letting them time out
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a thread is stuck (deadlock?)"
    if errors:  # the first real error, not the broken barrier it caused in the others
        raise next(
            (e for e in errors if not isinstance(e, threading.BrokenBarrierError)), errors[0]
        )
    return results


def customer_net(transaction_: LedgerTransaction) -> Decimal:
    return sum(
        (
            posting.amount.amount
            for posting in transaction_.postings.all()
            if posting.account.kind == LedgerAccount.Kind.CUSTOMER
        ),
        Decimal(0),
    )


def assert_one_unbroken_sequence(company: Company) -> None:
    """The company's transactions, in the order they were written, each record the balance
    that the one before left plus their own postings: no two of them saw the same balance."""
    running = Decimal(0)
    for transaction_ in LedgerTransaction.objects.filter(company=company).order_by("id"):
        running += customer_net(transaction_)
        assert transaction_.balance_after.amount == running, transaction_
    assert company_balance(company).amount == running


def assert_books_reconcile(now: datetime) -> None:
    report = reconcile(now=now)
    assert report.ok, report.problems


@pytest.mark.parametrize(
    ("credit", "expected_partial"),
    [(1000, None), (1050, (50, 50))],
    ids=["credit-for-exactly-ten", "credit-for-ten-and-a-half"],
)
def test_parallel_prepaid_charges_never_take_the_balance_below_zero(credit, expected_partial):
    company = CompanyFactory(mode=Company.Mode.PREPAID)
    grant(company, credit, now=NOW - timedelta(hours=1))

    results = run_together(
        [lambda i=i: charge(company, 100, now=NOW, key=f"usage:{i}") for i in range(THREADS)]
    )

    outcomes = sorted((r.charged.amount, r.shortfall.amount) for r in results)
    full = [o for o in outcomes if o == (100, 0)]
    partial = [o for o in outcomes if o not in ((100, 0), (0, 100))]
    assert len(full) == 10
    assert partial == ([expected_partial] if expected_partial else [])
    assert outcomes.count((0, 100)) == THREADS - 10 - len(partial)
    assert all(not r.duplicate for r in results)
    assert all(r.balance.amount >= 0 for r in results)
    assert sum(r.charged.amount for r in results) == credit
    assert company_balance(company) == jpy(0)
    assert LedgerTransaction.objects.filter(company=company, kind="usage").count() == THREADS
    assert not LedgerTransaction.objects.filter(company=company, balance_after__lt=0).exists()
    assert CreditLot.objects.get(company=company).remaining == jpy(0)
    company.refresh_from_db()
    assert company.is_blocked
    # Blocked once, not once per thread that found the credit gone.
    assert CompanyBlock.objects.filter(company=company, lifted_at=None).count() == 1
    assert_one_unbroken_sequence(company)
    assert_books_reconcile(NOW)


def test_expiry_run_racing_charges_never_lets_a_charge_spend_the_expired_lot():
    company = CompanyFactory(mode=Company.Mode.PREPAID)
    lot_a = grant(company, 700, now=NOW - timedelta(days=10), days=9).lot  # expired a day ago
    lot_b = grant(company, 1000, now=NOW - timedelta(days=10), days=30).lot
    expiry_runs = 4
    charges = THREADS - expiry_runs  # 12 × ¥100 against ¥1,000 that is still live

    results = run_together(
        [lambda: ledger.credits_expire(company=company, now=NOW) for _ in range(expiry_runs)]
        + [lambda i=i: charge(company, 100, now=NOW, key=f"usage:{i}") for i in range(charges)]
    )

    expiries = [tx for run in results[:expiry_runs] for tx in run]
    assert len(expiries) == 1  # one run expired lot A, the others found nothing left
    assert expiries[0].cause == lot_a
    postings = {p.account.code: p.amount for p in expiries[0].postings.select_related("account")}
    assert postings == {"customer": jpy(-700), "breakage": jpy(700)}
    charge_results = results[expiry_runs:]
    assert sorted(r.charged.amount for r in charge_results) == [0, 0] + [100] * 10
    # Lot A is touched only by its grant and its expiry; every charge took from lot B.
    spent_from_a = LedgerPosting.objects.filter(lot=lot_a).exclude(
        transaction__kind__in=["grant", "expiry"]
    )
    assert not spent_from_a.exists()
    assert LedgerPosting.objects.filter(lot=lot_b, transaction__kind="usage").count() == 10
    lot_a.refresh_from_db()
    lot_b.refresh_from_db()
    assert (lot_a.remaining, lot_b.remaining) == (jpy(0), jpy(0))
    assert company_balance(company) == jpy(0)
    assert LedgerTransaction.objects.filter(kind="expiry").count() == 1
    assert_one_unbroken_sequence(company)
    assert_books_reconcile(NOW)  # includes: no lot spent after it expired


def test_one_idempotency_key_charged_by_sixteen_threads_posts_one_transaction():
    company = CompanyFactory(mode=Company.Mode.PREPAID)
    grant(company, 1000, now=NOW - timedelta(hours=1))

    results = run_together(
        [lambda: charge(company, 300, now=NOW, key="usage:evt-42") for _ in range(THREADS)]
    )

    assert len({r.transaction.pk for r in results}) == 1
    assert sorted(r.duplicate for r in results) == [False] + [True] * (THREADS - 1)
    assert {(r.charged, r.shortfall, r.balance) for r in results} == {(jpy(300), jpy(0), jpy(700))}
    assert LedgerTransaction.objects.filter(idempotency_key="usage:evt-42").count() == 1
    assert company_balance(company) == jpy(700)
    assert_one_unbroken_sequence(company)
    assert_books_reconcile(NOW)


def test_one_idempotency_key_granted_by_sixteen_threads_creates_one_lot():
    company = CompanyFactory(mode=Company.Mode.PREPAID)
    # An earlier grant creates the customer account, so the threads do not queue on its
    # creation and meet only at the company lock.
    grant(company, 100, now=NOW - timedelta(hours=1))

    results = run_together(
        [lambda: grant(company, 500, now=NOW, key="purchase:order-7") for _ in range(THREADS)]
    )

    assert len({r.transaction.pk for r in results}) == 1
    assert len({r.lot.pk for r in results}) == 1
    assert sorted(r.duplicate for r in results) == [False] + [True] * (THREADS - 1)
    assert LedgerTransaction.objects.filter(idempotency_key="purchase:order-7").count() == 1
    assert CreditLot.objects.filter(company=company).count() == 2
    assert company_balance(company) == jpy(600)
    assert_one_unbroken_sequence(company)
    assert_books_reconcile(NOW)


def refused_or_posted(call: Callable[[], object]) -> Callable[[], object]:
    """The call, answering a domain refusal (a ``BillingError``) as its result."""

    def attempt():
        try:
            return call()
        except BillingError as refusal:
            return refusal

    return attempt


def test_one_idempotency_key_for_sixteen_different_charges_posts_one_and_refuses_the_rest():
    company = CompanyFactory(mode=Company.Mode.PREPAID)
    grant(company, 10_000, now=NOW - timedelta(hours=1))

    results = run_together(
        [
            refused_or_posted(lambda i=i: charge(company, 100 + i, now=NOW, key="usage:evt-9"))
            for i in range(THREADS)
        ]
    )

    posted = [r for r in results if not isinstance(r, BillingError)]
    refusals = [r for r in results if isinstance(r, BillingError)]
    assert len(posted) == 1 and not posted[0].duplicate
    assert len(refusals) == THREADS - 1
    assert all(isinstance(r, IdempotencyConflict) for r in refusals), refusals
    assert LedgerTransaction.objects.filter(idempotency_key="usage:evt-9").count() == 1
    assert_one_unbroken_sequence(company)
    assert_books_reconcile(NOW)


def test_one_idempotency_key_used_by_sixteen_companies_at_once_posts_one_and_refuses_the_rest():
    # Keys are unique across the whole ledger, but each company locks only its own row:
    # these sixteen requests do not queue on one lock. The loser must still be told
    # "IdempotencyConflict" (a refusal the API can answer with 409), not a database error.
    companies = CompanyFactory.create_batch(THREADS, mode=Company.Mode.POSTPAID)
    for company in companies:  # customer and revenue accounts exist: only the key is contended
        charge(company, 1, now=NOW - timedelta(hours=1))

    results = run_together(
        [
            refused_or_posted(lambda c=c: charge(c, 100, now=NOW, key="usage:shared-evt"))
            for c in companies
        ]
    )

    posted = [r for r in results if not isinstance(r, BillingError)]
    refusals = [r for r in results if isinstance(r, BillingError)]
    assert len(posted) == 1 and not posted[0].duplicate
    assert len(refusals) == THREADS - 1
    assert all(isinstance(r, IdempotencyConflict) for r in refusals), refusals
    assert LedgerTransaction.objects.filter(idempotency_key="usage:shared-evt").count() == 1
    assert_books_reconcile(NOW)


def test_parallel_grants_and_charges_on_a_postpaid_company_end_consistent():
    # Whatever order they run in, the charges take the company past its ¥1,000 limit at
    # some point or not, and the grants bring it back: it ends owing ¥800, under the limit.
    company = CompanyFactory(mode=Company.Mode.POSTPAID, credit_limit=jpy(1000))

    results = run_together(
        [lambda i=i: grant(company, 200, now=NOW, key=f"grant:{i}") for i in range(8)]
        + [lambda i=i: charge(company, 300, now=NOW, key=f"usage:{i}") for i in range(8)]
    )

    assert all(not r.duplicate for r in results)
    assert all(r.charged == jpy(300) and r.shortfall == jpy(0) for r in results[8:])
    account = LedgerAccount.objects.get(company=company)
    posted = LedgerPosting.objects.filter(account=account).values_list("amount", flat=True)
    assert account.balance == jpy(-800) == jpy(sum(posted))
    company.refresh_from_db()
    assert not company.is_blocked  # -800 is under the limit of 1,000
    assert company_available(company, NOW) == jpy(200)
    assert_one_unbroken_sequence(company)
    # Replaying the sequence: a block was set each time a charge reached the limit and
    # lifted each time a grant brought the balance back under it, never otherwise.
    blocked, set_, lifted = False, 0, 0
    for transaction_ in LedgerTransaction.objects.filter(company=company).order_by("id"):
        at_limit = transaction_.balance_after.amount <= -1000
        set_ += at_limit and not blocked
        lifted += blocked and not at_limit
        blocked = at_limit
    blocks = CompanyBlock.objects.filter(company=company, reason="credit_limit")
    assert (blocks.count(), blocks.exclude(lifted_at=None).count()) == (set_, lifted)
    assert_books_reconcile(NOW)


def test_parallel_charges_ending_over_the_limit_leave_the_postpaid_company_blocked():
    company = CompanyFactory(mode=Company.Mode.POSTPAID, credit_limit=jpy(1000))

    run_together(
        [lambda i=i: grant(company, 100, now=NOW, key=f"grant:{i}") for i in range(8)]
        + [lambda i=i: charge(company, 300, now=NOW, key=f"usage:{i}") for i in range(8)]
    )

    assert company_balance(company) == jpy(-1600)
    company.refresh_from_db()
    assert company.is_blocked and "Credit limit reached" in company.blocked_reason
    assert CompanyBlock.objects.filter(company=company, lifted_at=None).count() == 1
    assert_one_unbroken_sequence(company)
    assert_books_reconcile(NOW)


def test_first_charges_of_many_companies_create_each_system_account_once():
    # No revenue account exists yet: sixteen companies (sixteen different row locks) all
    # need "revenue:sms" at the same instant.
    companies = CompanyFactory.create_batch(THREADS, mode=Company.Mode.POSTPAID)

    run_together([lambda c=c: charge(c, 10, now=NOW, revenue="sms") for c in companies])

    revenue = LedgerAccount.objects.get(company=None, code="revenue:sms", currency="JPY")
    assert revenue.postings.count() == THREADS
    assert LedgerAccount.objects.filter(kind="customer").count() == THREADS
    assert_books_reconcile(NOW)
