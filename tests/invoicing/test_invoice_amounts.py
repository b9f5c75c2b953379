"""Each invoice's own amount: a balance carried forward is owed once, on the invoice that
charged it, and the open amounts of a company's invoices add up to what it owes."""

from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from djmoney.money import Money

from accounts.models import Company
from billing.reconcile import reconcile
from billing.selectors import company_balance
from billing.services.ledger import credits_grant, ledger_reverse
from invoicing.models import OPEN_PAYMENT_STATUSES, Statement
from invoicing.payments import payment_record, payment_reverse
from invoicing.selectors import amounts_paid
from invoicing.services import statement_issue
from tests.factories import CompanyFactory

from .helpers import fee

pytestmark = pytest.mark.django_db

TOKYO = ZoneInfo("Asia/Tokyo")
Paid = Statement.PaymentStatus


def postpaid_company() -> Company:
    return CompanyFactory(
        mode=Company.Mode.POSTPAID,
        created_at=datetime(2025, 1, 1, tzinfo=UTC),
        billing_timezone="Asia/Tokyo",
        tax_rate=Decimal("0.10"),
    )


def close(company, month, at):
    return statement_issue(company=company, year=2026, month=month, now=at)


def pay(company, amount, at: datetime):
    return payment_record(
        company=company,
        amount=Money(amount, company.currency),
        received_on=at.astimezone(company.tzinfo).date(),
        reference="BANK",
        now=at,
    )


def open_total(company) -> Decimal:
    invoices = list(
        Statement.objects.filter(company=company, payment_status__in=OPEN_PAYMENT_STATUSES)
    )
    paid = amounts_paid([invoice.pk for invoice in invoices])
    return sum(
        (invoice.invoice_amount.amount - paid.get(invoice.pk, 0) for invoice in invoices),
        Decimal(0),
    )


def owed(company) -> Decimal:
    return max(-company_balance(company).amount, Decimal(0))


def test_an_unpaid_balance_carried_forward_is_owed_once():
    company = postpaid_company()
    fee(company, "1000", at=datetime(2026, 4, 2, tzinfo=TOKYO))
    april = close(company, 4, datetime(2026, 5, 1, 1, tzinfo=TOKYO))
    fee(company, "2000", at=datetime(2026, 5, 2, tzinfo=TOKYO))
    may = close(company, 5, datetime(2026, 6, 1, 1, tzinfo=TOKYO))

    assert (april.invoice_amount, april.amount_due) == (Money(1100, "JPY"), Money(1100, "JPY"))
    # May's statement shows everything owed, but its own amount is May's charges.
    assert may.balance_forward == Money(1100, "JPY")
    assert may.amount_due == Money(3300, "JPY")
    assert may.invoice_amount == Money(2200, "JPY")
    assert open_total(company) == owed(company) == 3300

    pay(company, 1100, datetime(2026, 6, 3, tzinfo=TOKYO))
    april.refresh_from_db()
    may.refresh_from_db()
    assert (april.payment_status, may.payment_status) == (Paid.PAID, Paid.PENDING)
    pay(company, 2200, datetime(2026, 6, 4, tzinfo=TOKYO))
    may.refresh_from_db()
    assert may.payment_status == Paid.PAID
    assert company_balance(company) == Money(0, "JPY")
    assert open_total(company) == 0
    assert reconcile().ok


def test_a_payment_beyond_the_open_invoices_lowers_the_next_invoice():
    company = postpaid_company()
    fee(company, "1000", at=datetime(2026, 4, 2, tzinfo=TOKYO))
    close(company, 4, datetime(2026, 5, 1, 1, tzinfo=TOKYO))
    payment = pay(company, 1600, datetime(2026, 5, 10, tzinfo=TOKYO))  # 500 left over
    fee(company, "1000", at=datetime(2026, 5, 12, tzinfo=TOKYO))
    may = close(company, 5, datetime(2026, 6, 1, 1, tzinfo=TOKYO))

    assert sum(a.amount.amount for a in payment.allocations.all()) == 1100
    assert may.closing_balance == Money(600, "JPY")
    assert may.invoice_amount == Money(600, "JPY")
    assert open_total(company) == owed(company) == 600


def test_a_payment_after_the_period_end_counts_before_the_statement_is_issued():
    company = postpaid_company()
    fee(company, "1000", at=datetime(2026, 4, 2, tzinfo=TOKYO))
    close(company, 4, datetime(2026, 5, 1, 1, tzinfo=TOKYO))
    fee(company, "1000", at=datetime(2026, 5, 12, tzinfo=TOKYO))
    # Paid in the night after May ended, before May's statement: April is paid, 500 is left.
    pay(company, 1600, datetime(2026, 6, 1, 0, 30, tzinfo=TOKYO))
    may = close(company, 5, datetime(2026, 6, 1, 2, tzinfo=TOKYO))

    # The payment shows on June's statement, yet May's invoice already counts it.
    assert may.payments == Money(0, "JPY")
    assert may.amount_due == Money(2200, "JPY")
    assert may.invoice_amount == Money(600, "JPY")
    assert open_total(company) == owed(company) == 600

    fee(company, "1000", at=datetime(2026, 6, 5, tzinfo=TOKYO))
    june = close(company, 6, datetime(2026, 7, 1, 2, tzinfo=TOKYO))
    assert june.payments == Money(1600, "JPY")
    assert june.invoice_amount == Money(1100, "JPY")
    assert open_total(company) == owed(company) == 1700


def test_credit_held_at_the_period_end_leaves_nothing_due():
    company = postpaid_company()
    fee(company, "1000", at=datetime(2026, 4, 2, tzinfo=TOKYO))
    close(company, 4, datetime(2026, 5, 1, 1, tzinfo=TOKYO))
    pay(company, 5000, datetime(2026, 5, 3, tzinfo=TOKYO))
    fee(company, "1000", at=datetime(2026, 5, 12, tzinfo=TOKYO))
    may = close(company, 5, datetime(2026, 6, 1, 1, tzinfo=TOKYO))

    assert may.closing_balance == Money(-2800, "JPY")
    assert (may.amount_due, may.invoice_amount) == (Money(0, "JPY"), Money(0, "JPY"))
    assert may.payment_status == Paid.NOT_DUE
    assert open_total(company) == owed(company) == 0


def test_payment_date_in_the_company_time_zone_is_accepted():
    # The helper above pays "today" in Tokyo, which is yesterday in UTC at 00:30.
    company = postpaid_company()
    payment = pay(company, 100, datetime(2026, 6, 1, 0, 30, tzinfo=TOKYO))
    assert payment.received_on == date(2026, 6, 1)


def test_a_reversed_payment_is_owed_again_on_its_invoice_not_taxed_on_the_next():
    company = postpaid_company()
    fee(company, "1000", at=datetime(2026, 4, 2, tzinfo=TOKYO))
    april = close(company, 4, datetime(2026, 5, 1, 1, tzinfo=TOKYO))
    payment = pay(company, 1100, datetime(2026, 5, 3, tzinfo=TOKYO))
    payment_reverse(
        payment=payment, reason="Bounced", actor=None, now=datetime(2026, 5, 6, tzinfo=TOKYO)
    )
    fee(company, "1000", at=datetime(2026, 5, 12, tzinfo=TOKYO))
    may = close(company, 5, datetime(2026, 6, 1, 1, tzinfo=TOKYO))

    april.refresh_from_db()
    assert april.payment_status == Paid.PENDING
    # The payment and its reversal cancel out among the payments; only May's fee is taxed.
    assert may.payments == Money(0, "JPY")
    assert (may.adjustments, may.taxable, may.tax) == (
        Money(0, "JPY"), Money(1000, "JPY"), Money(100, "JPY")
    )  # fmt: skip
    assert may.invoice_amount == Money(1100, "JPY")
    assert may.amount_due == Money(2200, "JPY")
    assert open_total(company) == owed(company) == 2200
    assert reconcile().ok


def test_a_payment_reversed_after_the_period_end_is_owed_on_an_invoice():
    company = postpaid_company()
    fee(company, "1000", at=datetime(2026, 4, 2, tzinfo=TOKYO))
    close(company, 4, datetime(2026, 5, 1, 1, tzinfo=TOKYO))
    fee(company, "1000", at=datetime(2026, 5, 12, tzinfo=TOKYO))
    # Paid and reversed in the night after May ended, before May's statement.
    payment = pay(company, 2200, datetime(2026, 6, 1, 0, 10, tzinfo=TOKYO))
    payment_reverse(
        payment=payment, reason="Bounced", actor=None, now=datetime(2026, 6, 1, 0, 20, tzinfo=TOKYO)
    )
    may = close(company, 5, datetime(2026, 6, 1, 2, tzinfo=TOKYO))

    assert may.invoice_amount == Money(1100, "JPY")
    assert open_total(company) == owed(company) == 2200


def test_a_payment_reversed_after_the_period_end_that_paid_in_the_period_is_owed_once():
    company = postpaid_company()
    fee(company, "1000", at=datetime(2026, 4, 2, tzinfo=TOKYO))
    close(company, 4, datetime(2026, 5, 1, 1, tzinfo=TOKYO))
    payment = pay(company, 1100, datetime(2026, 5, 3, tzinfo=TOKYO))
    fee(company, "1000", at=datetime(2026, 5, 12, tzinfo=TOKYO))
    payment_reverse(
        payment=payment, reason="Bounced", actor=None, now=datetime(2026, 6, 1, 0, 20, tzinfo=TOKYO)
    )
    may = close(company, 5, datetime(2026, 6, 1, 2, tzinfo=TOKYO))

    # April is open again; May's invoice is May's fee with its tax.
    assert may.invoice_amount == Money(1100, "JPY")
    assert open_total(company) == owed(company) == 2200


def test_a_reversed_grant_is_not_taxed():
    company = postpaid_company()
    fee(company, "1000", at=datetime(2026, 4, 2, tzinfo=TOKYO))
    close(company, 4, datetime(2026, 5, 1, 1, tzinfo=TOKYO))
    granted = credits_grant(
        company=company,
        amount=Money(500, "JPY"),
        source="grant",
        idempotency_key="goodwill",
        description="Goodwill",
        now=datetime(2026, 5, 3, tzinfo=TOKYO),
    ).transaction
    ledger_reverse(
        transaction=granted, reason="Wrong company", now=datetime(2026, 5, 4, tzinfo=TOKYO)
    )
    fee(company, "1000", at=datetime(2026, 5, 12, tzinfo=TOKYO))
    may = close(company, 5, datetime(2026, 6, 1, 1, tzinfo=TOKYO))

    assert (may.credits_applied, may.adjustments) == (Money(0, "JPY"), Money(0, "JPY"))
    assert (may.taxable, may.tax) == (Money(1000, "JPY"), Money(100, "JPY"))
    assert open_total(company) == owed(company) == 2200


def test_credit_granted_in_the_period_is_taken_off_before_tax_and_bought_credit_is_not():
    company = postpaid_company()
    fee(company, "1000", at=datetime(2026, 4, 2, tzinfo=TOKYO))
    credits_grant(
        company=company,
        amount=Money(300, "JPY"),
        source="grant",
        idempotency_key="promotion",
        description="Promotional credit",
        now=datetime(2026, 4, 3, tzinfo=TOKYO),
    )
    credits_grant(
        company=company,
        amount=Money(200, "JPY"),
        source="purchase",
        idempotency_key="bought",
        description="Credit purchase",
        now=datetime(2026, 4, 4, tzinfo=TOKYO),
    )
    april = close(company, 4, datetime(2026, 5, 1, 1, tzinfo=TOKYO))

    assert april.credits_applied == Money(500, "JPY")
    assert (april.taxable, april.tax) == (Money(700, "JPY"), Money(70, "JPY"))
    assert april.closing_balance == Money(1000 - 500 + 70, "JPY")
    assert open_total(company) == owed(company) == 570
    assert reconcile().ok
