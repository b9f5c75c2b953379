"""``manage.py reconcile``: quiet and successful on clean books; on books someone changed
around the ledger service, it fails and names the company's account for each problem.

Tampering goes through ``QuerySet.update()`` on balances, lots and companies (what a stray
script could do; on PostgreSQL ledger transactions and postings cannot be updated at all),
or through rows inserted directly, which PostgreSQL would refuse only at COMMIT.
"""

from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from djmoney.money import Money

from accounts.models import Company, CompanyBlock
from accounts.services import company_block
from billing.models import CreditLot, LedgerAccount, LedgerPosting, LedgerTransaction
from billing.reconcile import reconcile
from billing.services import ledger
from tests.factories import CompanyFactory, UserFactory
from tests.factories.billing import charge, grant, next_key

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


def jpy(amount) -> Money:
    return Money(Decimal(amount), "JPY")


def run_reconcile() -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("reconcile", stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def reconcile_failure() -> str:
    """Run the command expecting it to fail; return everything it said."""
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError, match=r"problem\(s\) found") as failure:
        call_command("reconcile", stdout=out, stderr=err)
    assert "OK" not in out.getvalue()
    return f"{err.getvalue()}\n{failure.value}"


@pytest.fixture
def books():
    """A few companies with ordinary history: grants, charges, an expiry, a reversal,
    a block, a postpaid debt."""
    prepaid = CompanyFactory(mode=Company.Mode.PREPAID)
    grant(prepaid, 1000, now=NOW - timedelta(days=20), days=10)
    charge(prepaid, 200, now=NOW - timedelta(days=15))
    ledger.credits_expire(company=prepaid, now=NOW - timedelta(days=9))  # ¥800 lost, blocked
    grant(prepaid, 500, now=NOW - timedelta(days=5), days=30)  # unblocked
    refunded = charge(prepaid, 50, now=NOW - timedelta(days=2))
    ledger.ledger_reverse(transaction=refunded.transaction, reason="Dropped call", now=NOW)

    depleted = CompanyFactory(mode=Company.Mode.PREPAID)
    grant(depleted, 100, now=NOW)
    charge(depleted, 150, now=NOW)  # blocked, with a shortfall

    postpaid = CompanyFactory(mode=Company.Mode.POSTPAID, credit_limit=jpy(1000))
    charge(postpaid, 700, now=NOW)
    return {"prepaid": prepaid, "depleted": depleted, "postpaid": postpaid}


def test_clean_books_reconcile_and_the_command_says_ok(books):
    out, err = run_reconcile()
    assert out.startswith("OK: every invariant holds")
    assert f"{LedgerTransaction.objects.count()} transactions" in out
    assert "3 companies" in out
    assert err == ""


def test_empty_books_reconcile():
    out, _ = run_reconcile()
    assert out.startswith("OK:") and "0 transactions" in out


def test_a_customer_balance_changed_around_the_ledger_is_named(books):
    company = books["postpaid"]
    LedgerAccount.objects.filter(company=company).update(balance=jpy(-600))
    said = reconcile_failure()
    assert f"company {company.account_code}: balance -600" in said
    assert "postings sum to -700" in said
    # Only the company at fault is named.
    assert books["prepaid"].account_code not in said


def test_a_lot_remaining_changed_around_the_ledger_is_named(books):
    company = books["prepaid"]
    lot = CreditLot.objects.filter(company=company, remaining__gt=0).get()
    CreditLot.objects.filter(pk=lot.pk).update(remaining=jpy(499))
    said = reconcile_failure()
    assert f"company {company.account_code}: credit lot #{lot.pk}: remaining 499" in said
    # The prepaid balance (¥500) is no longer what its lots hold (¥499) either.
    assert "prepaid balance 500" in said


def test_a_lot_amount_unlike_its_grant_is_named(books):
    company = books["prepaid"]
    lot = CreditLot.objects.filter(company=company, remaining__gt=0).get()
    CreditLot.objects.filter(pk=lot.pk).update(amount=jpy(5000))
    said = reconcile_failure()
    assert f"company {company.account_code}: credit lot #{lot.pk}: amount 5000" in said
    assert f"its grant (transaction #{lot.grant_transaction_id}) put 500.0000 into it" in said


def test_a_prepaid_balance_made_negative_is_named(books):
    company = books["depleted"]
    LedgerAccount.objects.filter(company=company).update(balance=jpy(-50))
    said = reconcile_failure()
    assert f"company {company.account_code}: prepaid balance -50" in said
    assert "(negative)" in said


def test_a_company_blocked_without_a_block_is_named(books):
    company = books["postpaid"]
    Company.objects.filter(pk=company.pk).update(status="blocked", blocked_reason="By hand")
    said = reconcile_failure()
    assert f"company {company.account_code}: status is blocked but it has no active block" in said


def test_a_company_active_despite_an_active_block_is_named(books):
    company = books["depleted"]
    assert CompanyBlock.objects.filter(company=company, lifted_at=None).exists()
    Company.objects.filter(pk=company.pk).update(status="active", blocked_reason="")
    said = reconcile_failure()
    assert f"company {company.account_code}: status is active but it has an active block" in said


def test_a_block_lifted_around_the_service_is_named(books):
    company = books["postpaid"]
    company_block(company=company, reason="manual", note="Check", actor=UserFactory(), now=NOW)
    CompanyBlock.objects.filter(company=company).update(lifted_at=NOW + timedelta(hours=1))
    said = reconcile_failure()
    assert f"company {company.account_code}: status is blocked but it has no active block" in said


def test_every_company_at_fault_is_named_once_per_problem(books):
    LedgerAccount.objects.filter(company=books["postpaid"]).update(balance=jpy(0))
    Company.objects.filter(pk=books["prepaid"].pk).update(status="blocked", blocked_reason="x")
    said = reconcile_failure()
    assert "2 problem(s) found" in said
    assert said.count(f"MISMATCH company {books['postpaid'].account_code}:") == 1
    assert said.count(f"MISMATCH company {books['prepaid'].account_code}:") == 1
    assert books["depleted"].account_code not in said


# Rows inserted around the service. PostgreSQL refuses the first three at COMMIT (see
# test_ledger_database_rules); reconcile is the check for SQLite and for what got in before
# the triggers existed. Django's test teardown fires PostgreSQL's deferred checks too, so
# those rows are written in a savepoint that is rolled back before the test ends.


@contextmanager
def rolled_back():
    with transaction.atomic():
        yield
        transaction.set_rollback(True)


def insert_transaction(company, postings, *, kind="adjustment", posted_at=NOW):
    transaction_ = LedgerTransaction.objects.create(
        idempotency_key=next_key("raw"),
        fingerprint="-",
        kind=kind,
        company=company,
        description="Inserted directly",
        posted_at=posted_at,
        effective_at=posted_at,
    )
    for account, amount, lot in postings:
        LedgerPosting.objects.create(
            transaction=transaction_, account=account, amount=amount, lot=lot
        )
    return transaction_


def test_an_unbalanced_transaction_is_named(books):
    company = books["postpaid"]
    customer = LedgerAccount.objects.get(company=company)
    revenue = LedgerAccount.objects.get(company=None, code="revenue:voice")
    with rolled_back():
        tx = insert_transaction(company, [(customer, jpy(-10), None), (revenue, jpy(9), None)])
        LedgerAccount.objects.filter(pk=customer.pk).update(balance=jpy(-710))  # in step
        said = reconcile_failure()
    assert f"company {company.account_code}: transaction #{tx.pk} does not balance: -1" in said


def test_a_transaction_with_one_posting_is_named(books):
    company = books["postpaid"]
    customer = LedgerAccount.objects.get(company=company)
    with rolled_back():
        tx = insert_transaction(company, [(customer, jpy(0), None)])
        said = reconcile_failure()
    assert f"company {company.account_code}: transaction #{tx.pk} has 1 posting(s)" in said


def test_a_posting_in_another_currency_than_its_account_is_named(books):
    company = books["postpaid"]
    customer = LedgerAccount.objects.get(company=company)
    usd_cash = LedgerAccount.objects.create(
        kind="cash", code="cash", currency="USD", balance=Money(0, "USD")
    )
    with rolled_back():
        insert_transaction(
            company, [(customer, Money(0, "USD"), None), (usd_cash, Money(0, "USD"), None)]
        )
        said = reconcile_failure()
    assert f"customer {company.account_code} (JPY): posting #" in said
    assert "is in USD" in said


def test_a_lot_spent_after_it_expired_is_named(books):
    # Balanced, with the lot and the balance kept in step: only the expiry rule is broken.
    company = books["depleted"]
    lot = grant(company, 300, now=NOW - timedelta(days=10), days=5).lot
    customer = LedgerAccount.objects.get(company=company)
    revenue = LedgerAccount.objects.get(company=None, code="revenue:voice")
    tx = insert_transaction(
        company,
        [(customer, jpy(-100), lot), (revenue, jpy(100), None)],
        kind="usage",
        posted_at=lot.expires_at,
    )
    CreditLot.objects.filter(pk=lot.pk).update(remaining=jpy(200))
    LedgerAccount.objects.filter(pk=customer.pk).update(balance=jpy(200))
    assert [str(problem) for problem in reconcile().problems] == [
        f"company {company.account_code}: credit lot #{lot.pk} was spent by transaction "
        f"#{tx.pk} after it expired"
    ]
    said = reconcile_failure()
    assert f"credit lot #{lot.pk} was spent by transaction #{tx.pk} after it expired" in said
