"""Settling open invoices: what a payment and a credit note share once their money is on the
ledger. Each takes the company's open invoices under lock, writes ``PaymentAllocation`` rows
for what it settles, moves each invoice's ``payment_status`` (the one column of a statement
that changes) and lifts an ``overdue`` block once no invoice past its due date stays open.

Callers hold the company lock, so two settlements of the same company serialise and can
never allocate the same open amount twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from djmoney.money import Money

from accounts.models import Company, CompanyBlock
from accounts.services import company_unblock

from .models import OPEN_PAYMENT_STATUSES, CreditNote, Payment, PaymentAllocation, Statement

ZERO = Decimal(0)


def open_invoices_lock(company: Company) -> list[Statement]:
    """The company's open invoices, oldest period first, locked until commit."""
    return list(
        Statement.objects.select_for_update()
        .filter(
            company=company, kind=Statement.Kind.INVOICE, payment_status__in=OPEN_PAYMENT_STATUSES
        )
        .order_by("period_start", "id")
    )


def payment_status_after(invoice: Statement, paid: Decimal) -> str:
    """An open invoice's status once ``paid`` of it has been allocated."""
    if paid <= 0:
        return Statement.PaymentStatus.PENDING
    if paid < invoice.invoice_amount.amount:
        return Statement.PaymentStatus.PARTIALLY_PAID
    return Statement.PaymentStatus.PAID


def allocations_write(
    plan: Sequence[tuple[Statement, Decimal]],
    open_amount: dict[int, Decimal],
    *,
    payment: Payment | None = None,
    credit_note: CreditNote | None = None,
) -> None:
    """Write the allocations of ``plan`` (invoice, amount) from one payment or credit note
    and move each invoice's status by what is then left open on it."""
    source = payment or credit_note
    currency = str(source.amount.currency)
    PaymentAllocation.objects.bulk_create(
        [
            PaymentAllocation(
                payment=payment,
                credit_note=credit_note,
                statement=invoice,
                amount=Money(value, currency),
            )
            for invoice, value in plan
        ]
    )
    for invoice, value in plan:
        left = open_amount[invoice.pk] - value
        invoice.payment_status = payment_status_after(invoice, invoice.invoice_amount.amount - left)
        invoice.save(update_fields=["payment_status"])


def overdue_block_lift(
    company: Company, open_invoices: list[Statement], now: datetime, note: str
) -> None:
    """Lift an ``overdue`` block once none of ``open_invoices`` (their statuses as just
    settled) is still open past its due date."""
    if not CompanyBlock.objects.filter(
        company=company, reason=CompanyBlock.Reason.OVERDUE, lifted_at=None
    ).exists():
        return
    today = now.astimezone(company.tzinfo).date()
    if not any(invoice.is_overdue_on(today) for invoice in open_invoices):
        company_unblock(company=company, reason=CompanyBlock.Reason.OVERDUE, note=note, now=now)
