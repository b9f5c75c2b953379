"""Reads of statements shared by the portal, the PDF, the CSV and the admin."""

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import QuerySet
from django.utils.translation import gettext as _
from djmoney.money import Money

from accounts.models import Company
from billing.models import UsageRecord
from billing.selectors_usage import format_bytes, format_duration, service_label

from .models import Statement, StatementLine

Group = StatementLine.Group
CSV_CHUNK = 2000


def company_statements(company: Company) -> QuerySet[Statement]:
    """The company's statements, newest first."""
    return Statement.objects.filter(company=company).order_by("-period_start")


@dataclass(frozen=True)
class DocumentLine:
    description: str
    quantity: str
    amount: Money


@dataclass(frozen=True)
class DocumentSection:
    title: str
    lines: list[DocumentLine]
    total: Money


def line_description(line: StatementLine) -> str:
    if line.group == Group.USAGE:
        return service_label(line.service)
    if line.group == Group.EXPIRY:
        return _("Credit expired unused")
    return line.description


def line_quantity(line: StatementLine) -> str:
    if line.quantity is None:
        return ""
    if line.unit == "s":
        return format_duration(line.quantity)
    if line.unit == "B":
        return format_bytes(line.quantity)
    return f"{line.quantity.normalize():,f}"


def section_title(group: str, statement: Statement) -> str:
    titles = {
        Group.BASE_FEE: _("Base fees"),
        Group.USAGE: _("Usage fees"),
        Group.ADJUSTMENT: _("Adjustments"),
        Group.CREDIT: _("Credits applied") if statement.is_invoice else _("Credits added"),
        Group.TAX: _("Tax"),
        Group.PAYMENT: _("Payments received"),
        Group.EXPIRY: _("Expired credit"),
    }
    return titles[group]


def statement_sections(statement: Statement) -> list[DocumentSection]:
    """The statement's lines by group, in the statement's order, with each group's total
    (one query)."""
    sections: dict[str, list[DocumentLine]] = {}
    totals: dict[str, Decimal] = {}
    for line in statement.lines.order_by("sort_order"):
        sections.setdefault(line.group, []).append(
            DocumentLine(line_description(line), line_quantity(line), line.amount)
        )
        totals[line.group] = totals.get(line.group, Decimal(0)) + line.amount.amount
    return [
        DocumentSection(
            section_title(group, statement), lines, Money(totals[group], statement.currency)
        )
        for group, lines in sections.items()
    ]


def statement_totals(statement: Statement) -> list[tuple[str, Money]]:
    """The summary a customer checks first (owed-positive for invoices; for a prepaid
    account statement, credit-positive balances)."""
    if statement.is_invoice:
        return [
            (_("Balance forward"), statement.balance_forward),
            (_("New charges"), statement.new_charges),
            (_("Adjustments"), statement.adjustments),
            (_("Credits applied"), -statement.credits_applied),
            (_("Tax"), statement.tax),
            (_("Payments received"), -statement.payments),
            (_("Closing balance"), statement.closing_balance),
            (_("Total due"), statement.amount_due),
        ]
    return [
        (_("Opening credit"), statement.opening_credit),
        (_("Credits added"), statement.credits_applied),
        (_("Adjustments"), -statement.adjustments),
        (_("Credits used"), -statement.new_charges),
        (_("Credits expired"), -statement.expired),
        (_("Credit balance"), statement.credit_balance),
    ]


def statement_usage_records(statement: Statement) -> Iterator[tuple]:
    """The period's detail records, oldest first, read in chunks from a server-side cursor
    (never all in memory)."""
    return (
        UsageRecord.objects.filter(
            company_id=statement.company_id,
            occurred_at__gte=statement.period_start,
            occurred_at__lt=statement.period_end,
            status=UsageRecord.Status.CHARGED,
        )
        .order_by("occurred_at", "id")
        .values_list(
            "occurred_at",
            "event_id",
            "subaccount__code",
            "service",
            "destination",
            "quantity",
            "billed_quantity",
            "bundle_quantity",
            "unit_price",
            "amount",
        )
        .iterator(chunk_size=CSV_CHUNK)
    )


# --- Payments -------------------------------------------------------------------------------


def company_payments(company: Company):
    """The company's payments, newest first."""
    from .models import Payment

    return Payment.objects.filter(company=company).order_by("-recorded_at", "-id")


@dataclass(frozen=True)
class PaymentHistoryRow:
    """One line of the portal's payment history: a payment's allocation to one invoice, or
    the part of a payment no invoice took (``statement`` None)."""

    payment: object
    statement: Statement | None
    amount: Money


def payment_history_rows(payments) -> list[PaymentHistoryRow]:
    """Rows for a page of payments: one per allocation, oldest invoice first, plus one for
    an unallocated remainder. ``payments`` must prefetch ``allocations__statement``."""
    rows = []
    for payment in payments:
        allocations = sorted(
            payment.allocations.all(), key=lambda a: (a.statement.period_start, a.pk)
        )
        for allocation in allocations:
            rows.append(PaymentHistoryRow(payment, allocation.statement, allocation.amount))
        left = payment.amount.amount - sum((a.amount.amount for a in allocations), Decimal(0))
        if left > 0:
            rows.append(PaymentHistoryRow(payment, None, Money(left, payment.amount.currency)))
    return rows


def payment_receipt_lines(payment) -> tuple[list, Money]:
    """The invoices a payment paid and what stays unallocated (one query)."""
    allocations = list(
        payment.allocations.select_related("statement").order_by("statement__period_start")
    )
    allocated = sum((a.amount.amount for a in allocations), Decimal(0))
    return allocations, Money(payment.amount.amount - allocated, payment.amount.currency)
