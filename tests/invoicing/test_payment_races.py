"""Two payments (or a payment and a credit note) for one invoice at the same moment, for real
on PostgreSQL: they serialise on the company row, so the invoice is never allocated more
than it owes."""

from datetime import date
from decimal import Decimal

import pytest
from djmoney.money import Money

from billing.reconcile import reconcile
from invoicing.credit_notes import credit_note_issue
from invoicing.exceptions import PaymentRefused
from invoicing.models import Payment, PaymentAllocation, Statement
from invoicing.payments import payment_record

from .test_payments import NOW, invoiced_company
from .test_races import run_together

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_two_payments_racing_on_one_invoice_never_over_allocate_it():
    company, [april] = invoiced_company(4)
    due = april.amount_due.amount
    amount = Money(due * 3 / 4, "JPY")

    def pay(reference):
        return lambda: payment_record(
            company=company,
            amount=amount,
            received_on=date(2026, 8, 9),
            reference=reference,
            now=NOW,
        )

    run_together([pay("bank line 1"), pay("bank line 2")])
    allocated = sum(a.amount.amount for a in PaymentAllocation.objects.filter(statement=april))
    assert allocated == due
    april.refresh_from_db()
    assert april.payment_status == Statement.PaymentStatus.PAID
    assert sorted(Payment.objects.values_list("receipt_number", flat=True)) == [
        "RCP-2026-000001",
        "RCP-2026-000002",
    ]
    assert sum(p.amount.amount for p in Payment.objects.all()) == Decimal(due * 3 / 2)
    assert reconcile().ok


def test_the_same_bank_line_entered_twice_at_once_is_recorded_once():
    company, [april] = invoiced_company(4)
    amount = april.amount_due

    def pay():
        try:
            return payment_record(
                company=company,
                amount=amount,
                received_on=date(2026, 8, 9),
                reference="TRF 0042",
                now=NOW,
            )
        except PaymentRefused as refusal:
            return refusal

    results = run_together([pay, pay])
    assert sorted(type(result).__name__ for result in results) == ["Payment", "PaymentRefused"]
    assert Payment.objects.count() == 1
    april.refresh_from_db()
    assert april.payment_status == Statement.PaymentStatus.PAID
    assert reconcile().ok


def test_a_payment_and_a_credit_note_racing_on_one_invoice_never_over_allocate_it():
    company, [april] = invoiced_company(4)
    due = april.invoice_amount.amount
    amount = Money(due * 3 / 4, "JPY")

    def pay():
        return payment_record(
            company=company, amount=amount, received_on=date(2026, 8, 9), reference="BANK", now=NOW
        )

    def credit():
        return credit_note_issue(
            company=company,
            amount=amount,
            reason="Doubled fee",
            actor=None,
            statement=april,
            now=NOW,
        )

    run_together([pay, credit])
    allocated = sum(a.amount.amount for a in PaymentAllocation.objects.filter(statement=april))
    assert allocated == due
    april.refresh_from_db()
    assert april.payment_status == Statement.PaymentStatus.PAID
    assert PaymentAllocation.objects.filter(credit_note__isnull=False).count() == 1
    assert reconcile().ok
