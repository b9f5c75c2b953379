"""Reads of statements shared by the portal, the PDF, the CSV and the admin."""

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import Exists, OuterRef, Prefetch, Q, QuerySet, Sum
from django.utils.translation import gettext as _
from djmoney.money import Money

from accounts.models import BillingContact, Company, CompanyBlock
from billing.models import LedgerAccount, LedgerPosting, UsageRecord
from billing.selectors_usage import format_bytes, format_duration, service_label

from .models import (
    OPEN_PAYMENT_STATUSES,
    BillingEmail,
    Payment,
    PaymentAllocation,
    Statement,
    StatementLine,
    TopUpReminder,
)
from .statement_content import usage_window_start

Group = StatementLine.Group
CSV_CHUNK = 2000
ZERO = Decimal(0)


def operator_details() -> dict:
    """The operator as its documents name it (settings)."""
    return {
        "name": settings.OPERATOR_NAME,
        "address": settings.TOLLGATE_OPERATOR_ADDRESS,
        "registration": settings.TOLLGATE_OPERATOR_REGISTRATION,
        "email": settings.DEFAULT_FROM_EMAIL,
    }


def document_parties(companies: Iterable[Company]) -> dict[int, dict]:
    """What a document issued now records of who issues it and to whom
    (``Statement.parties``, ``Payment.parties``), by company id: one query for the billing
    contacts."""
    companies = list(companies)
    contacts: dict[int, str] = {}
    # The first contact who gets the statements is the one a document is addressed to.
    for contact in BillingContact.objects.filter(
        company_id__in=[company.pk for company in companies]
    ).order_by("company_id", "-gets_statements", "id"):
        contacts.setdefault(contact.company_id, str(contact))
    operator = operator_details()
    return {
        company.pk: {
            "operator": operator,
            "company": {
                "name": company.name,
                "account_code": company.account_code,
                "billing_timezone": company.billing_timezone,
            },
            "contact": contacts.get(company.pk, ""),
        }
        for company in companies
    }


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


def line_description(
    line: StatementLine, statement: Statement, payments: dict[int, str] | None = None
) -> str:
    """What a line says, in the reader's language where the statement knows the words: the
    service of usage, expiry, tax (its rate and base are on the statement; the ledger
    keeps the English label), and a payment or its reversal (``payments``: by the line's
    transaction, from ``payment_descriptions``)."""
    if line.group == Group.PAYMENT and payments and line.transaction_id in payments:
        return payments[line.transaction_id]
    if line.group == Group.USAGE:
        return service_label(line.service)
    if line.group == Group.EXPIRY:
        return _("Credit expired unused")
    if line.group == Group.TAX:
        return _("Tax %(rate)s%% on %(taxable)s") % {
            "rate": f"{(statement.tax_rate * 100).normalize():f}",
            "taxable": statement.taxable,
        }
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


def payment_descriptions(transaction_ids: Iterable[int | None]) -> dict[int, str]:
    """What a payment's ledger transaction, or its reversal's, says in the reader's language,
    with the receipt number, by transaction id (for statement lines and the credit history;
    ids of other transactions are left out). One query, none without ids."""
    ids = [pk for pk in transaction_ids if pk is not None]
    if not ids:
        return {}
    found = {}
    rows = Payment.objects.filter(
        Q(transaction_id__in=ids) | Q(transaction__reversed_by__in=ids)
    ).values_list("transaction_id", "transaction__reversed_by", "receipt_number", "method")
    for transaction_id, reversal_id, number, method in rows:
        values = {"number": number, "method": Payment.Method(method).label}
        found[transaction_id] = _("Payment received (%(method)s), receipt %(number)s") % values
        if reversal_id is not None:
            found[reversal_id] = _("Payment %(number)s reversed (%(method)s)") % values
    return found


def statement_sections(statement: Statement) -> list[DocumentSection]:
    """The statement's lines by group, in the statement's order, with each group's total
    (one query, and one more with payment lines)."""
    sections: dict[str, list[DocumentLine]] = {}
    totals: dict[str, Decimal] = {}
    lines = list(statement.lines.order_by("sort_order"))
    payments = payment_descriptions(
        line.transaction_id for line in lines if line.group == Group.PAYMENT
    )
    for line in lines:
        sections.setdefault(line.group, []).append(
            DocumentLine(
                line_description(line, statement, payments), line_quantity(line), line.amount
            )
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
    account statement, credit-positive balances). The rows before the closing balance add
    up to it; a row its kind of statement rarely has (credit expiring on an invoice, a
    payment or tax on an account statement: a company that switched mode in the period) is
    shown only when it is not zero."""
    if statement.is_invoice:
        rows = [
            (_("Balance forward"), statement.balance_forward),
            (_("New charges"), statement.new_charges),
            (_("Adjustments"), statement.adjustments),
            (_("Credits applied"), -statement.credits_applied),
            (_("Credits expired"), statement.expired, "optional"),
            (_("Tax"), statement.tax),
            (_("Payments received"), -statement.payments),
            (_("Closing balance"), statement.closing_balance),
            (_("Total due"), statement.amount_due),
        ]
    else:
        rows = [
            (_("Opening credit"), statement.opening_credit),
            (_("Credits added"), statement.credits_applied),
            (_("Adjustments"), -statement.adjustments),
            (_("Credits used"), -statement.new_charges),
            (_("Tax"), -statement.tax, "optional"),
            (_("Payments received"), statement.payments, "optional"),
            (_("Credits expired"), -statement.expired),
            (_("Credit balance"), statement.credit_balance),
        ]
    return [(label, amount) for label, amount, *optional in rows if amount or not optional]


def statement_records(statement: Statement) -> QuerySet[UsageRecord]:
    """The statement's detail records (``statement_content.usage_window_start``), oldest
    first: read through the index on (company, received_at)."""
    previous = (
        Statement.objects.filter(
            company_id=statement.company_id, period_start__lt=statement.period_start
        )
        .order_by("-period_start")
        .first()
    )
    return UsageRecord.objects.filter(
        company_id=statement.company_id,
        received_at__gte=usage_window_start(statement.period_start, previous),
        received_at__lt=statement.period_end,
        status=UsageRecord.Status.CHARGED,
    ).order_by("occurred_at", "id")


def statement_usage_records(statement: Statement) -> Iterator[tuple]:
    """The CSV's values of ``statement_records``, read in chunks from a server-side cursor
    (never all in memory)."""
    return (
        statement_records(statement)
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

    return Payment.objects.filter(company=company).order_by("-recorded_at", "-id")


def company_credit_notes(company: Company):
    """The company's credit notes, newest first, with the invoices each settled (prefetched:
    a page costs the same queries whatever its length)."""
    from .models import CreditNote

    return (
        CreditNote.objects.filter(company=company)
        .order_by("-issued_at", "-id")
        .prefetch_related(
            Prefetch(
                "allocations",
                queryset=PaymentAllocation.objects.select_related("statement").order_by(
                    "statement__period_start", "id"
                ),
            )
        )
    )


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
        if left > 0 or payment.status != Payment.Status.SUCCESSFUL:
            rows.append(PaymentHistoryRow(payment, None, Money(left, payment.amount.currency)))
    return rows


@dataclass(frozen=True)
class CreditNoteLines:
    """What a credit note's document shows besides its header: the net credit and the tax
    in it, the invoices it settled and what stays as credit."""

    net: Money
    tax: Money
    tax_rate: Decimal | None  # as at issue; None: no tax in the note
    allocations: list
    unsettled: Money

    @property
    def tax_percent(self) -> str:
        return f"{(self.tax_rate * 100).normalize():f}%" if self.tax_rate is not None else ""


def credit_note_lines(note) -> CreditNoteLines:
    """A credit note's lines (two queries: its tax posting, its allocations)."""
    currency = str(note.amount.currency)
    tax, tax_rate = ZERO, None
    if note.tax_transaction_id is not None:
        posting = (
            LedgerPosting.objects.filter(
                transaction_id=note.tax_transaction_id, account__kind=LedgerAccount.Kind.CUSTOMER
            )
            .select_related("transaction")
            .get()
        )
        tax = posting.amount.amount
        tax_rate = Decimal(posting.transaction.metadata["tax_rate"])
    allocations = list(
        note.allocations.select_related("statement").order_by("statement__period_start", "id")
    )
    settled = sum((a.amount.amount for a in allocations), ZERO)
    return CreditNoteLines(
        net=Money(note.amount.amount - tax, currency),
        tax=Money(tax, currency),
        tax_rate=tax_rate,
        allocations=allocations,
        unsettled=Money(note.amount.amount - settled, currency),
    )


def payment_receipt_lines(payment) -> tuple[list, Money]:
    """The invoices a payment paid and what stays unallocated, as credit on the account (one
    query). Only a successful payment is on the account: a reversed one's allocations are
    gone and none of it stays as credit."""
    allocations = list(
        payment.allocations.select_related("statement").order_by("statement__period_start")
    )
    allocated = sum((a.amount.amount for a in allocations), Decimal(0))
    left = payment.amount.amount - allocated if payment.status == Payment.Status.SUCCESSFUL else 0
    return allocations, Money(left, payment.amount.currency)


# --- Open invoices, overdue invoices and billing emails ----------------------------------------


def amounts_paid(statement_ids: Iterable[int]) -> dict[int, Decimal]:
    """What has been allocated to each invoice so far (one query)."""
    rows = (
        PaymentAllocation.objects.filter(statement_id__in=list(statement_ids))
        .values("statement_id")
        .annotate(paid=Sum("amount"))
    )
    return {row["statement_id"]: row["paid"] for row in rows}


def open_amounts(invoices: Iterable[Statement]) -> dict[int, Decimal]:
    """What is still to be paid on each of these invoices, by id (one query): its own
    amount less what payments have been allocated to it; zero once it is not open."""
    invoices = list(invoices)
    paid = amounts_paid(invoice.pk for invoice in invoices)
    return {
        invoice.pk: max(invoice.invoice_amount.amount - paid.get(invoice.pk, ZERO), ZERO)
        if invoice.payment_status in OPEN_PAYMENT_STATUSES
        else ZERO
        for invoice in invoices
    }


@dataclass(frozen=True)
class OverdueInvoice:
    invoice: Statement
    open_amount: Money
    # Days since the due date in the company's billing time zone: 1 on the day after it.
    days_overdue: int


def overdue_invoices(today_by_company: Mapping[int, date]) -> list[OverdueInvoice]:
    """The open invoices of these companies due before each company's ``today`` (a date in
    its billing time zone), with what is still open on each, by company and oldest due
    first. Two queries, whatever the number of companies and invoices."""
    companies_by_today: dict[date, list[int]] = defaultdict(list)
    for company_id, today in today_by_company.items():
        companies_by_today[today].append(company_id)
    if not companies_by_today:
        return []
    past_due = Q()
    for today, company_ids in companies_by_today.items():
        past_due |= Q(company_id__in=company_ids, due_date__lt=today)
    invoices = list(
        Statement.objects.filter(
            past_due, kind=Statement.Kind.INVOICE, payment_status__in=OPEN_PAYMENT_STATUSES
        ).order_by("company_id", "due_date", "id")
    )
    open_amount_of = open_amounts(invoices)
    overdue = []
    for invoice in invoices:
        open_amount = open_amount_of[invoice.pk]
        if open_amount <= 0:
            continue
        overdue.append(
            OverdueInvoice(
                invoice=invoice,
                open_amount=Money(open_amount, invoice.currency),
                days_overdue=(today_by_company[invoice.company_id] - invoice.due_date).days,
            )
        )
    return overdue


def companies_with_overdue_invoices(now: datetime, today: date | None = None) -> list[int]:
    """Ids of companies (ascending) with an open invoice that may be overdue at ``now`` in
    their billing time zone (or on ``today``, as if it were that date everywhere). A
    superset: the dunning batch checks each company in its own zone."""
    # The latest date anywhere on Earth (UTC+14): an invoice due before it may be overdue
    # somewhere.
    latest_today = today or (now.astimezone(UTC) + timedelta(hours=14)).date()
    return list(
        Statement.objects.filter(
            kind=Statement.Kind.INVOICE,
            payment_status__in=OPEN_PAYMENT_STATUSES,
            due_date__lt=latest_today,
        )
        .order_by("company_id")
        .values_list("company_id", flat=True)
        .distinct()
    )


def companies_owing(company_ids: Iterable[int]) -> set[int]:
    """The companies among these whose ledger balance is below zero: they owe money overall
    (one query). A company without a ledger account has never been charged: it owes nothing."""
    return set(
        LedgerAccount.objects.filter(
            kind=LedgerAccount.Kind.CUSTOMER,
            company_id__in=list(company_ids),
            balance__lt=0,
        ).values_list("company_id", flat=True)
    )


def invoice_open_amount(invoice: Statement) -> Money:
    """What is still to be paid on one invoice (one query); zero once it is not open."""
    return Money(open_amounts([invoice])[invoice.pk], invoice.currency)


def statements_not_emailed(*, issued_from: datetime, issued_before: datetime) -> list[int]:
    """Statements issued in ``[issued_from, issued_before)`` whose company has billing
    contacts who get statements but that have no issue email at all: the task that was to
    queue them was lost. Their ids, oldest first (one query)."""
    emailed = BillingEmail.objects.filter(
        statement=OuterRef("pk"), kind=BillingEmail.Kind.STATEMENT, requested_by=None
    )
    has_contacts = BillingContact.objects.filter(
        company_id=OuterRef("company_id"), gets_statements=True
    )
    return list(
        Statement.objects.filter(issued_at__gte=issued_from, issued_at__lt=issued_before)
        .filter(Exists(has_contacts))
        .exclude(Exists(emailed))
        .order_by("issued_at", "id")
        .values_list("pk", flat=True)
    )


def blocks_not_emailed(*, changed_from: datetime, changed_before: datetime) -> list[tuple]:
    """Blocks set (or lifted) in ``[changed_from, changed_before)`` whose company has billing
    contacts who get notices but that have no ``blocked`` (or ``unblocked``) notice at all:
    the receiver that was to queue it failed. (block id, kind) pairs, oldest first (two
    queries)."""
    has_contacts = BillingContact.objects.filter(
        company_id=OuterRef("company_id"), gets_notices=True
    )
    found = []
    for kind, at in (
        (BillingEmail.Kind.BLOCKED, "blocked_at"),
        (BillingEmail.Kind.UNBLOCKED, "lifted_at"),
    ):
        noticed = BillingEmail.objects.filter(block=OuterRef("pk"), kind=kind)
        found += [
            (block_id, kind)
            for block_id in CompanyBlock.objects.filter(
                **{f"{at}__gte": changed_from, f"{at}__lt": changed_before}
            )
            .filter(Exists(has_contacts))
            .exclude(Exists(noticed))
            .order_by(at, "id")
            .values_list("pk", flat=True)
        ]
    return found


def billing_emails_stalled(now: datetime, older_than: timedelta, limit: int = 1000) -> list[int]:
    """Emails whose sending task was lost: queued for longer than ``older_than``, or claimed
    by a worker that has not finished for that long (it died). Their ids, oldest first."""
    cutoff = now - older_than
    return list(
        BillingEmail.objects.filter(
            Q(status=BillingEmail.Status.QUEUED, created_at__lt=cutoff)
            | Q(status=BillingEmail.Status.SENDING, claimed_at__lt=cutoff)
        )
        .order_by("created_at", "id")
        .values_list("pk", flat=True)[:limit]
    )


# --- Receivables aging ------------------------------------------------------------------------

# Buckets of days past the due date (in the company's billing time zone): not yet due, then
# up to 30, 60 and 90 days late, then more. (label, last day of the bucket or None).
AGING_BUCKETS: tuple[tuple[str, int | None], ...] = (
    ("current", 0),
    ("1-30", 30),
    ("31-60", 60),
    ("61-90", 90),
    ("over-90", None),
)


def aging_bucket(days_overdue: int) -> str:
    for label, last_day in AGING_BUCKETS:
        if last_day is None or days_overdue <= last_day:
            return label
    raise AssertionError("the last bucket has no end")


@dataclass
class AgingRow:
    """One company's open invoice amounts by bucket (one currency: the company's)."""

    company: Company
    currency: str
    buckets: dict[str, Decimal]
    invoices: int = 0
    oldest_due: date | None = None

    @property
    def total(self) -> Decimal:
        return sum(self.buckets.values(), Decimal(0))

    @property
    def total_money(self) -> Money:
        return Money(self.total, self.currency)

    def amounts(self) -> list[Money]:
        return [Money(self.buckets[label], self.currency) for label, _ in AGING_BUCKETS]


@dataclass(frozen=True)
class AgingReport:
    rows: list[AgingRow]  # companies, most overdue amount first
    totals: list[AgingRow]  # one per currency (``company`` None)


def receivables_aging(now: datetime) -> AgingReport:
    """What each company still owes on its open invoices, by how late it is at ``now``
    (each company's own date), with totals per currency. One query, whatever the number
    of invoices; amounts are the invoices' open amounts (``invoice_amount`` less the
    payments allocated to them), so a balance carried forward is counted once."""
    invoices = (
        Statement.objects.filter(
            kind=Statement.Kind.INVOICE, payment_status__in=OPEN_PAYMENT_STATUSES
        )
        .select_related("company")
        .annotate(paid=Sum("allocations__amount"))
        .order_by("company_id", "due_date", "id")
    )
    rows: dict[int, AgingRow] = {}
    totals: dict[str, AgingRow] = {}
    empty = {label: Decimal(0) for label, _ in AGING_BUCKETS}
    for invoice in invoices:
        open_amount = invoice.invoice_amount.amount - (invoice.paid or Decimal(0))
        if open_amount <= 0:
            continue
        company = invoice.company
        today = now.astimezone(company.tzinfo).date()
        days = (today - invoice.due_date).days if invoice.due_date else 0
        label = aging_bucket(days)
        row = rows.setdefault(company.pk, AgingRow(company, invoice.currency, dict(empty)))
        row.buckets[label] += open_amount
        row.invoices += 1
        row.oldest_due = row.oldest_due or invoice.due_date
        total = totals.setdefault(invoice.currency, AgingRow(None, invoice.currency, dict(empty)))
        total.buckets[label] += open_amount
        total.invoices += 1

    def lateness(row: AgingRow) -> tuple:
        # The longest-overdue money first: what a collector calls about first.
        return tuple(-row.buckets[label] for label, _ in reversed(AGING_BUCKETS))

    return AgingReport(
        rows=sorted(rows.values(), key=lambda row: (row.currency, lateness(row))),
        totals=[totals[currency] for currency in sorted(totals)],
    )


def active_topup_reminders() -> QuerySet[TopUpReminder]:
    """The top-up reminders not stopped: a stopped one keeps its row (its emails refer to
    it) with no recipients."""
    return TopUpReminder.objects.exclude(recipients=[])


def company_topup_reminder(company: Company) -> TopUpReminder | None:
    """The company's top-up reminder, or None when it has none or stopped it (one query)."""
    return active_topup_reminders().filter(company=company).first()
