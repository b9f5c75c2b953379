"""The database refuses bad money rows by itself, whoever writes them (migration 0002 and the
model constraints), not only the ledger service.

The rows here are written straight with the ORM, around the service, as a buggy module, a
data migration or a shell session would. PostgreSQL checks a transaction's postings at
COMMIT (a deferred constraint trigger); in an ordinary, rolled-back test the check is
fired on demand with ``SET CONSTRAINTS ALL IMMEDIATE``, and the ``transaction=True`` tests
show the real COMMIT.
"""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import F
from djmoney.money import Money

from accounts.models import Company
from billing.models import CreditLot, LedgerAccount, LedgerPosting, LedgerTransaction
from tests.factories import CompanyFactory
from tests.factories.billing import charge, grant, next_key

NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
postgres_only = pytest.mark.postgres


def jpy(amount) -> Money:
    return Money(Decimal(amount), "JPY")


@pytest.fixture
def company():
    return CompanyFactory(mode=Company.Mode.PREPAID)


@pytest.fixture
def accounts(company):
    """The company's customer account and the promotional account, made by a real grant."""
    grant(company, 1000, now=NOW)
    return (
        LedgerAccount.objects.get(company=company),
        LedgerAccount.objects.get(company=None, code="promotional", currency="JPY"),
    )


def write_transaction(company, postings) -> LedgerTransaction:
    """Insert a transaction and its postings directly, the way the service does (the
    transaction first, then its postings), skipping every Python check."""
    transaction_ = LedgerTransaction.objects.create(
        idempotency_key=next_key("raw"),
        fingerprint="-",
        kind=LedgerTransaction.Kind.ADJUSTMENT,
        company=company,
        description="Written around the ledger service",
        posted_at=NOW,
        effective_at=NOW,
    )
    for account, amount in postings:
        LedgerPosting.objects.create(transaction=transaction_, account=account, amount=amount)
    return transaction_


def check_deferred_rules_now() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")


# --- The deferred balance trigger (PostgreSQL) ---------------------------------------------


@postgres_only
@pytest.mark.django_db
@pytest.mark.parametrize(
    ("amounts", "message"),
    [
        ((100, -99), "does not balance: its postings sum to 1"),
        ((100,), "has 1 posting"),
        ((), "has 0 posting"),
        ((0,), "has 1 posting"),
    ],
    ids=["unbalanced", "one-posting", "no-posting", "one-zero-posting"],
)
def test_database_refuses_a_transaction_that_does_not_balance(company, accounts, amounts, message):
    customer, promotional = accounts
    legs = zip((customer, promotional), amounts, strict=False)
    write_transaction(company, [(account, jpy(amount)) for account, amount in legs])
    with pytest.raises(IntegrityError, match=message):
        check_deferred_rules_now()


@postgres_only
@pytest.mark.django_db
def test_database_refuses_a_posting_in_another_currency_than_its_account(company, accounts):
    customer, _ = accounts
    usd_cash = LedgerAccount.objects.create(
        kind=LedgerAccount.Kind.CASH, code="cash", currency="USD", balance=Money(0, "USD")
    )
    # Balanced in dollars, but one of the dollar postings sits on the yen customer account.
    write_transaction(company, [(customer, Money(10, "USD")), (usd_cash, Money(-10, "USD"))])
    with pytest.raises(IntegrityError, match="not in the currency of its account"):
        check_deferred_rules_now()


@postgres_only
@pytest.mark.django_db
def test_transactions_the_ledger_service_writes_pass_the_database_rules(company):
    grant(company, 500, now=NOW)
    charge(company, 200, now=NOW)
    charge(company, 900, now=NOW)  # with a shortfall: the customer side posts what it could
    check_deferred_rules_now()  # raises if any of them broke a rule
    assert LedgerTransaction.objects.filter(company=company).count() == 3


@postgres_only
@pytest.mark.django_db
def test_a_posting_added_after_its_transaction_was_checked_is_checked_again(company, accounts):
    """A transaction is checked once for all its postings (migration 0008), not once per
    posting; a posting written after that check, in the same database transaction, makes
    it checked again."""
    customer, promotional = accounts
    written = write_transaction(company, [(customer, jpy(-40)), (promotional, jpy(40))])
    check_deferred_rules_now()  # balanced: passes, and the transaction is noted as checked
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")  # back to checking at commit
    LedgerPosting.objects.create(transaction=written, account=customer, amount=jpy(5))
    with pytest.raises(IntegrityError, match="does not balance: its postings sum to 5"):
        check_deferred_rules_now()


@postgres_only
@pytest.mark.django_db
def test_with_immediate_checks_a_posting_added_by_a_later_statement_is_checked(company, accounts):
    """Checked as each statement ends: the note of a checked transaction must not outlive
    the statement that wrote its postings."""
    customer, promotional = accounts
    check_deferred_rules_now()  # from here on every check runs as its statement ends
    with connection.cursor() as cursor:
        # A transaction and its balanced pair in one statement (a lone transaction row
        # would fail its own check at once).
        cursor.execute(
            "WITH tx AS (INSERT INTO billing_ledgertransaction (idempotency_key, fingerprint,"
            " kind, company_id, description, posted_at, effective_at, metadata)"
            " VALUES (%s, '-', 'adjustment', %s, 'raw', %s, %s, '{}') RETURNING id)"
            " INSERT INTO billing_ledgerposting (transaction_id, account_id, amount_currency,"
            " amount) SELECT tx.id, p.account, 'JPY', p.amount FROM tx,"
            " (VALUES (%s::bigint, -40), (%s::bigint, 40)) AS p(account, amount)"
            " RETURNING transaction_id",
            [next_key("raw"), company.pk, NOW, NOW, customer.pk, promotional.pk],
        )
        (transaction_id,) = cursor.fetchone()
    with pytest.raises(IntegrityError, match="does not balance: its postings sum to 5"):
        LedgerPosting.objects.create(transaction_id=transaction_id, account=customer, amount=jpy(5))


def delete_transaction_row(transaction_: LedgerTransaction) -> None:
    # The ORM would refuse first (postings and lot PROTECT it); the database must as well.
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM billing_ledgertransaction WHERE id = %s", [transaction_.pk])


@postgres_only
@pytest.mark.django_db
@pytest.mark.parametrize(
    "tamper",
    [
        lambda tx: LedgerTransaction.objects.filter(pk=tx.pk).update(description="Edited"),
        lambda tx: LedgerPosting.objects.filter(transaction=tx).update(amount=F("amount") * 2),
        lambda tx: LedgerPosting.objects.filter(transaction=tx).delete(),
        delete_transaction_row,
    ],
    ids=["update-transaction", "update-postings", "delete-postings", "delete-transaction"],
)
def test_ledger_rows_are_append_only(company, tamper):
    granted = grant(company, 100, now=NOW).transaction
    with pytest.raises(DatabaseError, match="append-only"):
        tamper(granted)


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_unbalanced_transaction_is_refused_at_commit_and_leaves_nothing(company, accounts):
    customer, promotional = accounts
    before = LedgerTransaction.objects.count(), LedgerPosting.objects.count()
    with pytest.raises(IntegrityError, match="does not balance"), transaction.atomic():
        write_transaction(company, [(customer, jpy(100)), (promotional, jpy(-1))])
    assert (LedgerTransaction.objects.count(), LedgerPosting.objects.count()) == before


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_balanced_transaction_written_directly_commits(company, accounts):
    customer, promotional = accounts
    # The trigger checks postings only; balances and lots are the service's (and reconcile's).
    with transaction.atomic():
        written = write_transaction(company, [(customer, jpy(-40)), (promotional, jpy(40))])
    assert LedgerPosting.objects.filter(transaction=written).count() == 2


# --- Credit lot constraints (every database) -----------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "constraint"),
    [
        ({"remaining": jpy(1001)}, "credit_lot_remaining_within_amount"),
        ({"remaining": jpy(-1)}, "credit_lot_remaining_within_amount"),
        ({"amount": jpy(0), "remaining": jpy(0)}, "credit_lot_amount_positive"),
        ({"expires_at": NOW}, "credit_lot_expires_after_grant"),
        ({"remaining": Money(10, "USD")}, "credit_lot_one_currency"),
    ],
    ids=["remaining-over-amount", "negative-remaining", "zero-amount", "expires-at-grant", "usd"],
)
def test_database_refuses_an_impossible_credit_lot(company, change, constraint):
    lot = grant(company, 1000, now=NOW).lot
    with pytest.raises(IntegrityError, match=constraint), transaction.atomic():
        CreditLot.objects.filter(pk=lot.pk).update(**change)
    lot.refresh_from_db()
    assert lot.remaining == jpy(1000)
    assert lot.expires_at == NOW + timedelta(days=90)
