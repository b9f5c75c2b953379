"""Issuing statements (closing a month) and credit notes: everything in invoicing that writes.

What a statement covers. The ledger is the source of truth. A company's statement for a
calendar month (``[1st 00:00, next 1st 00:00)`` in its billing time zone) covers its ledger
transactions with ``effective_at`` before the period end that no earlier statement covered.
Each statement records the last ledger transaction id that existed when it was issued
(under the company lock, so no transaction of the company can be in flight); an earlier
statement covered exactly the transactions with ``id <= its last id`` and
``effective_at < its period end``. So a transaction posted late for a closed month (an
expiry posted after midnight, a recurring charge caught up) shows on the next statement, and
nothing shows twice or never.

Money: balance forward is the previous statement's closing balance (for the first one, the
ledger balance at the period start); the closing balance is the balance forward plus the
lines, and equals the ledger balance at the period end as of the last id covered
(``billing.reconcile`` checks both).

Postpaid: pending ``InvoiceCredit``s (created before the period end) are posted as credits
before tax; then tax is computed once on the taxable total (new charges and adjustments
less credits applied, never below zero), ``round half up`` to the currency's minor unit, and
posted to the ledger too (counter account ``tax``), so the ledger keeps saying what is owed.
Prepaid: an account statement; prices include tax (credits are sold tax-inclusive), so no
tax is added and nothing is due.

Exactly once: unique (company, period start); a batch locks its companies first (id order),
and a company whose statement exists is skipped. Numbers come from a ``NumberSeries`` row
locked in the same database transaction as the statement insert: a rollback rolls the
counter back too, so numbers have no gaps. Lock order: company rows, their lots (the
ledger), pending invoice credits, then the number series.
"""

from __future__ import annotations

import calendar
import logging
import traceback
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.db import connection, transaction
from django.db.models import BigIntegerField, Case, Count, F, Max, Min, Q, Sum, When
from django.utils import timezone
from djmoney.money import Money

from accounts.models import Company
from accounts.services import lock_companies, lock_company
from billing.bulk import insert_rows
from billing.models import LedgerAccount, LedgerPosting, LedgerTransaction, UsageRecord
from billing.money import quantize_amount
from billing.periods import add_months, calendar_month
from billing.services import ledger
from vouchers.models import InvoiceCredit

from .emails import statement_emails_after_commit
from .exceptions import InvoicingError, PeriodNotClosed
from .models import (
    CreditNote,
    NumberSeries,
    Statement,
    StatementLine,
    StatementRun,
    StatementRunItem,
)

logger = logging.getLogger(__name__)

Kind = LedgerTransaction.Kind
Group = StatementLine.Group
ZERO = Decimal(0)
# The instant before the period end: credits applied and tax belong to the period.
LAST_INSTANT = timedelta(microseconds=1)

# Which statement group each kind of ledger transaction goes to. Itemised kinds get a line
# per transaction (a customer must be able to check each fee); usage is one line per
# service, expiry one line.
GROUP_OF_KIND = {
    Kind.RECURRING_FEE: Group.BASE_FEE,
    Kind.ONE_TIME_FEE: Group.BASE_FEE,
    Kind.USAGE: Group.USAGE,
    Kind.ADJUSTMENT: Group.ADJUSTMENT,
    Kind.CREDIT_NOTE: Group.ADJUSTMENT,
    Kind.REVERSAL: Group.ADJUSTMENT,
    Kind.ROUNDING: Group.ADJUSTMENT,
    Kind.PURCHASE: Group.CREDIT,
    Kind.VOUCHER: Group.CREDIT,
    Kind.GRANT: Group.CREDIT,
    Kind.TRIAL: Group.CREDIT,
    Kind.PAYMENT: Group.PAYMENT,
    Kind.REFUND: Group.PAYMENT,
    Kind.EXPIRY: Group.EXPIRY,
}
GROUPED_KINDS = (Kind.USAGE, Kind.EXPIRY)
# Taxable: what was charged and corrected; not money paid in or credit granted.
TAXABLE_GROUPS = (Group.BASE_FEE, Group.USAGE, Group.ADJUSTMENT)
GROUP_ORDER = [
    Group.BASE_FEE,
    Group.USAGE,
    Group.ADJUSTMENT,
    Group.CREDIT,
    Group.TAX,
    Group.PAYMENT,
    Group.EXPIRY,
]
# The unit each service's quantity is reported in (billing.models.UsageRecord.quantity).
SERVICE_UNITS = {
    "voice": "s",
    "sms": "message",
    "fax": "page",
    "api": "call",
    "data": "B",
    "disk": "B",
}
SERIES_PREFIX = {
    Statement.Kind.INVOICE: "INV",
    Statement.Kind.ACCOUNT_STATEMENT: "STM",
}
CREDIT_NOTE_PREFIX = "CN"


# --- Periods ----------------------------------------------------------------------------------


def statement_period(company: Company, year: int, month: int) -> tuple[datetime, datetime]:
    """The company's calendar month, ``[start, end)``, in its billing time zone."""
    return calendar_month(year, month, company.tzinfo)


def due_date_for(company: Company, period_end: datetime) -> date:
    """Postpaid invoices are due on the last day of the month after the period."""
    local_end = period_end.astimezone(company.tzinfo)  # the 1st of the following month
    return date(
        local_end.year,
        local_end.month,
        calendar.monthrange(local_end.year, local_end.month)[1],
    )


def previous_month_of(at: datetime, company: Company) -> tuple[int, int]:
    local = at.astimezone(company.tzinfo)
    return add_months(local.year, local.month, -1)


def format_number(series: str, value: int) -> str:
    return f"{series}-{value:06d}"


# --- Issuing ------------------------------------------------------------------------------------


@dataclass
class _Line:
    """One statement line being put together (written with ``insert_rows``: a batch has a
    thousand of them, and model instances would cost more than the rest of the batch)."""

    group: str
    description: str
    amount: Decimal  # owed-positive, in the statement's currency
    service: str = ""
    quantity: Decimal | None = None
    unit: str = ""
    transaction_id: int | None = None
    transaction_count: int = 0
    record_count: int = 0


LINE_COLUMNS = (
    "statement_id",
    "group",
    "service",
    "description",
    "quantity",
    "unit",
    "amount_currency",
    "amount",
    "transaction_id",
    "transaction_count",
    "record_count",
    "sort_order",
)


@dataclass
class _Draft:
    """One statement being put together in memory, then written with the batch."""

    company: Company
    start: datetime
    end: datetime
    previous: Statement | None
    lines: list[_Line] = field(default_factory=list)
    entries: list[ledger.StatementEntry] = field(default_factory=list)
    credits: list[InvoiceCredit] = field(default_factory=list)
    credit_lines: dict[int, _Line] = field(default_factory=dict)
    balance_forward: Decimal = ZERO
    taxable: Decimal = ZERO
    # Postpaid: what the company's older invoices still have open, and what it has paid
    # since the period end (posted already, shown on the next statement).
    open_before: Decimal = ZERO
    paid_since_end: Decimal = ZERO
    tax_transaction: LedgerTransaction | None = None

    @property
    def currency(self) -> str:
        return self.company.currency

    @property
    def postpaid(self) -> bool:
        return self.company.mode == Company.Mode.POSTPAID

    def money(self, value: Decimal) -> Money:
        return Money(value, self.currency)

    def add_line(self, group: str, description: str, amount: Decimal, **fields) -> _Line:
        line = _Line(group=group, description=description[:500], amount=amount, **fields)
        self.lines.append(line)
        return line

    def total(self, *groups: str) -> Decimal:
        return sum((line.amount for line in self.lines if line.group in groups), ZERO)


@dataclass(frozen=True)
class BatchResult:
    issued: list[Statement]
    already_issued: list[int]  # company ids whose statement for the month existed
    not_due: list[int]  # company ids whose month has not ended yet in their time zone


def statement_issue(
    *, company: Company, year: int, month: int, now: datetime | None = None
) -> Statement:
    """Issue ``company``'s statement for ``year``-``month`` (or return the one issued).

    Idempotent and safe to run at once in many workers (see ``statements_issue``). Raises
    ``PeriodNotClosed`` while the month has not ended in the company's billing time zone.
    """
    result = statements_issue(company_ids=[company.pk], year=year, month=month, now=now)
    if result.not_due:
        raise PeriodNotClosed(
            f"{year}-{month:02d} has not ended yet in {company.billing_timezone}."
        )
    if result.issued:
        return result.issued[0]
    return Statement.objects.get(
        company=company, period_start=statement_period(company, year, month)[0]
    )


@transaction.atomic
def statements_issue(
    *,
    company_ids: Sequence[int],
    year: int,
    month: int,
    run: StatementRun | None = None,
    now: datetime | None = None,
) -> BatchResult:
    """Issue the statements of ``year``-``month`` for these companies in one database
    transaction and a fixed number of queries (about twenty, whatever the batch size).

    Guarantees: at most one statement per company and period (a company already issued is
    skipped; the unique constraint backs it); content from the ledger only; invoice credits
    applied and tax posted through the ledger service in the same transaction; numbers
    gapless. With ``run``, the run items of the batch are marked issued in the same
    transaction. Raises ``InvoicingError`` for a month issued out of order (a later month
    already has a statement); any error rolls the whole batch back.
    """
    now = now or timezone.now()
    _prefer_index_reads()
    companies = lock_companies(company_ids)
    drafts: list[_Draft] = []
    already, not_due = [], []
    latest = _latest_statements([company.pk for company in companies])
    for company in companies:
        start, end = statement_period(company, year, month)
        if end > now:
            not_due.append(company.pk)
            continue
        previous = latest.get(company.pk)
        if previous is not None and previous.period_start >= start:
            if previous.period_start == start:
                already.append(company.pk)
                continue
            raise InvoicingError(
                f"{company.account_code} already has a statement for a later month "
                f"({previous.number}); months are closed in order."
            )
        drafts.append(_Draft(company=company, start=start, end=end, previous=previous))
    if run is not None and already:
        _mark_items(run, already, now)
    if not drafts:
        return BatchResult([], already, not_due)

    _read_ledger(drafts)
    _read_usage_quantities(drafts)
    _apply_invoice_credits(drafts)
    for draft in drafts:
        _add_tax(draft)
    _post_entries(drafts, now)
    _read_open_invoices(drafts)
    last_id = LedgerTransaction.objects.aggregate(last=Max("id"))["last"] or 0
    statements = _write(drafts, year, now, last_id, run)
    if run is not None:
        _mark_items(run, [statement.company_id for statement in statements], now, statements)
    # Emailed to the billing contacts after commit: one task for the batch, no query here.
    statement_emails_after_commit(statements)
    return BatchResult(statements, already, not_due)


def _prefer_index_reads() -> None:
    """Tell PostgreSQL, for this transaction only, that reading a row through an index costs
    little more than reading it in sequence (true of SSDs and of a ledger kept in memory).

    A batch reads a few thousand postings of its companies, reached through their ledger
    transactions. With the default cost (``random_page_cost = 4``, set for spinning disks)
    the planner prefers to scan the whole postings table for them, and that table only
    grows: closing a month would get slower with every month of history. Measured closing
    10,000 companies (``bench/statement_close.py``): 66 s with the default, 15 s with this.
    Servers tuned already lose nothing."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL random_page_cost = 1.1")


def _latest_statements(company_ids: list[int]) -> dict[int, Statement]:
    """Each company's latest statement (one query)."""
    latest_start = (
        Statement.objects.filter(company_id__in=company_ids)
        .values("company_id")
        .annotate(latest=Max("period_start"))
        .values("latest")
    )
    found: dict[int, Statement] = {}
    for statement in Statement.objects.filter(
        company_id__in=company_ids, period_start__in=latest_start
    ).only(
        "id",
        "company_id",
        "number",
        "period_start",
        "period_end",
        "last_transaction_id",
        "closing_balance",
        "closing_balance_currency",
    ):
        current = found.get(statement.company_id)
        if current is None or statement.period_start > current.period_start:
            found[statement.company_id] = statement
    return found


def _by_period(drafts: Iterable[_Draft], key) -> dict[tuple, list[int]]:
    """Company ids of the drafts grouped by what their conditions share (``key(draft)``):
    a batch's companies mostly share a time zone and a previous run, so a query gets one
    ``company_id = ANY(...)`` term per group instead of one OR-ed term per company, which
    keeps its plan an index scan and its planning time flat as batches grow."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for draft in drafts:
        groups[key(draft)].append(draft.company.pk)
    return groups


def _covered_q(drafts: Iterable[_Draft]) -> Q:
    """The drafts' transactions: the company's, before the period end, not covered before
    (after the previous statement's last id, or effective after its period end)."""

    def shared(draft: _Draft) -> tuple:
        previous = draft.previous
        if previous is None:
            return (draft.start, draft.end, None, None)
        return (None, draft.end, previous.last_transaction_id, previous.period_end)

    covered = Q()
    for (start, end, last_id, previous_end), ids in _by_period(drafts, shared).items():
        q = Q(transaction__company_id__in=ids, transaction__effective_at__lt=end)
        if last_id is None:
            q &= Q(transaction__effective_at__gte=start)
        else:
            q &= Q(transaction_id__gt=last_id) | Q(transaction__effective_at__gte=previous_end)
        covered |= q
    return covered


def _read_ledger(drafts: list[_Draft]) -> None:
    """Every line from the ledger in one grouped query: the customer postings by kind (one row
    per transaction for itemised kinds), and usage revenue by service. Balance forward of
    first statements in one more."""
    by_company = {draft.company.pk: draft for draft in drafts}
    covered = _covered_q(drafts)
    itemised = Case(
        When(~Q(transaction__kind__in=GROUPED_KINDS), then=F("transaction_id")),
        default=None,
        output_field=BigIntegerField(),
    )
    rows = (
        LedgerPosting.objects.filter(covered)
        .filter(
            Q(account__kind=LedgerAccount.Kind.CUSTOMER)
            | Q(transaction__kind=Kind.USAGE, account__kind=LedgerAccount.Kind.REVENUE)
        )
        .annotate(line_transaction=itemised)
        .values(
            "transaction__company_id",
            "transaction__kind",
            "account__kind",
            "account__code",
            "line_transaction",
        )
        .annotate(
            total=Sum("amount"),
            transactions=Count("transaction_id", distinct=True),
            effective=Min("transaction__effective_at"),
            description=Max("transaction__description"),
            quantity=Max("transaction__recurring_charge__quantity"),
        )
        .order_by("transaction__company_id", "effective", "line_transaction", "account__code")
    )
    usage_customer: dict[int, Decimal] = defaultdict(lambda: ZERO)
    for row in rows:
        draft = by_company[row["transaction__company_id"]]
        kind = row["transaction__kind"]
        # Owed-positive: a charge (negative for the customer account) is a positive line.
        customer_side = row["account__kind"] == LedgerAccount.Kind.CUSTOMER
        if kind == Kind.USAGE:
            if customer_side:
                usage_customer[draft.company.pk] += row["total"]
            else:
                service = row["account__code"].removeprefix("revenue:")
                draft.add_line(
                    Group.USAGE,
                    service,
                    row["total"],
                    service=service,
                    unit=SERVICE_UNITS.get(service, ""),
                    transaction_count=row["transactions"],
                )
            continue
        group = GROUP_OF_KIND.get(kind, Group.ADJUSTMENT)
        if kind == Kind.EXPIRY:
            draft.add_line(group, "expired", -row["total"], transaction_count=row["transactions"])
            continue
        draft.add_line(
            group,
            row["description"],
            -row["total"],
            transaction_id=row["line_transaction"],
            transaction_count=1,
            quantity=row["quantity"] if group == Group.BASE_FEE else None,
        )
    for draft in drafts:
        # Revenue of usage is what the customer account gave (a prepaid shortfall is neither).
        if draft.total(Group.USAGE) != -usage_customer[draft.company.pk]:
            raise InvoicingError(
                f"{draft.company.account_code}: usage revenue {draft.total(Group.USAGE)} does "
                f"not match the customer postings {-usage_customer[draft.company.pk]}."
            )
    first = [draft for draft in drafts if draft.previous is None]
    for draft in drafts:
        if draft.previous is not None:
            draft.balance_forward = draft.previous.closing_balance.amount
    if first:
        before = Q()
        for (start,), ids in _by_period(first, lambda draft: (draft.start,)).items():
            before |= Q(transaction__company_id__in=ids, transaction__effective_at__lt=start)
        forward = dict(
            LedgerPosting.objects.filter(before, account__kind=LedgerAccount.Kind.CUSTOMER)
            .values("transaction__company_id")
            .annotate(total=Sum("amount"))
            .values_list("transaction__company_id", "total")
        )
        for draft in first:
            draft.balance_forward = -(forward.get(draft.company.pk) or ZERO)


def _read_usage_quantities(drafts: list[_Draft]) -> None:
    """Quantities of the period's detail records by service (one grouped query): what the
    customer used, by when it happened (the CSV lists the same records)."""
    in_period = Q()
    for (start, end), ids in _by_period(drafts, lambda draft: (draft.start, draft.end)).items():
        in_period |= Q(company_id__in=ids, occurred_at__gte=start, occurred_at__lt=end)
    rows = (
        UsageRecord.objects.filter(in_period, status=UsageRecord.Status.CHARGED)
        .values("company_id", "service")
        .annotate(quantity=Sum("quantity"), records=Count("id"))
        .order_by()
    )
    by_company = {draft.company.pk: draft for draft in drafts}
    for row in rows:
        draft = by_company[row["company_id"]]
        line = next(
            (
                line
                for line in draft.lines
                if line.group == Group.USAGE and line.service == row["service"]
            ),
            None,
        )
        if line is None:  # all of it from a bundle: a quantity and nothing to pay
            line = draft.add_line(
                Group.USAGE,
                row["service"],
                ZERO,
                service=row["service"],
                unit=SERVICE_UNITS.get(row["service"], ""),
            )
        line.quantity = row["quantity"]
        line.record_count = row["records"]


def _apply_invoice_credits(drafts: list[_Draft]) -> None:
    """Postpaid: the pending invoice credits created before the period end, locked (the
    company rows are already locked: the lock order of ``InvoiceCredit``), become credit
    entries of the statement, before tax. Marked applied when the statement is written."""
    postpaid = {draft.company.pk: draft for draft in drafts if draft.postpaid}
    if not postpaid:
        return
    pending = (
        InvoiceCredit.objects.select_for_update()
        .filter(company_id__in=list(postpaid), applied_at=None)
        .order_by("company_id", "created_at", "id")
    )
    for credit in pending:
        draft = postpaid[credit.company_id]
        if credit.created_at >= draft.end or str(credit.amount.currency) != draft.currency:
            continue
        draft.credits.append(credit)
        draft.entries.append(
            ledger.StatementEntry(
                amount=credit.amount,
                kind=Kind.VOUCHER,
                counter=(LedgerAccount.Kind.VOUCHER, "voucher"),
                idempotency_key=f"invoice-credit:{credit.pk}",
                description=credit.description,
                effective_at=draft.end - LAST_INSTANT,
                cause=credit,
                metadata={"invoice_credit": credit.pk},
            )
        )
        draft.credit_lines[credit.pk] = draft.add_line(
            Group.CREDIT, credit.description, -credit.amount.amount, transaction_count=1
        )


def _read_open_invoices(drafts: list[_Draft]) -> None:
    """Postpaid: each company's open amount on earlier invoices (one query) and its payments
    posted for after the period end (one query)."""
    postpaid = {draft.company.pk: draft for draft in drafts if draft.postpaid}
    if not postpaid:
        return
    open_rows = (
        Statement.objects.filter(
            company_id__in=list(postpaid),
            kind=Statement.Kind.INVOICE,
            payment_status__in=(
                Statement.PaymentStatus.PENDING,
                Statement.PaymentStatus.PARTIALLY_PAID,
            ),
        )
        .annotate(paid=Sum("allocations__amount"))
        .values_list("company_id", "invoice_amount", "paid")
        .order_by()
    )
    for company_id, invoice_amount, paid in open_rows:
        postpaid[company_id].open_before += invoice_amount - (paid or ZERO)
    earliest_end = min(draft.end for draft in postpaid.values())
    paid_rows = (
        LedgerPosting.objects.filter(
            transaction__company_id__in=list(postpaid),
            transaction__kind__in=(Kind.PAYMENT, Kind.REFUND),
            transaction__effective_at__gte=earliest_end,
            account__kind=LedgerAccount.Kind.CUSTOMER,
        )
        .values_list("transaction__company_id", "transaction__effective_at", "amount")
        .order_by()
    )
    for company_id, effective_at, amount in paid_rows:
        draft = postpaid[company_id]
        if effective_at >= draft.end:
            draft.paid_since_end += amount


def tax_amount(taxable: Decimal, rate: Decimal, currency: str) -> Decimal:
    """Tax on a statement's taxable total: computed once, rounded once, half up, to the
    currency's minor unit (whole yen for JPY); nothing on a total at or below zero."""
    if taxable <= 0:
        return ZERO
    return quantize_amount(taxable * rate, currency)


def _add_tax(draft: _Draft) -> None:
    if not draft.postpaid:
        return
    taxable = draft.total(*TAXABLE_GROUPS) + sum(
        (-credit.amount.amount for credit in draft.credits), ZERO
    )
    draft.taxable = max(taxable, ZERO)
    tax = tax_amount(taxable, draft.company.tax_rate, draft.currency)
    if tax == 0:
        return
    label = f"Tax {draft.company.tax_rate * 100:.4g}% on {draft.money(draft.taxable)}"
    draft.entries.append(
        ledger.StatementEntry(
            amount=draft.money(-tax),
            kind=Kind.ADJUSTMENT,
            counter=(LedgerAccount.Kind.TAX, "tax"),
            idempotency_key=f"tax:{draft.company.pk}:{draft.start:%Y-%m}",
            description=label,
            effective_at=draft.end - LAST_INSTANT,
            metadata={"statement_tax": f"{draft.start.astimezone(draft.company.tzinfo):%Y-%m}"},
        )
    )
    draft.add_line(Group.TAX, label, tax)


def _post_entries(drafts: list[_Draft], now: datetime) -> None:
    with_entries = [draft for draft in drafts if draft.entries]
    if not with_entries:
        return
    posted = ledger.statement_entries_post(
        entries=[(draft.company, draft.entries) for draft in with_entries], now=now
    )
    for draft, transactions in zip(with_entries, posted, strict=True):
        by_key = {tx.idempotency_key: tx for tx in transactions}
        for credit in draft.credits:
            credit.applied_at = now
            credit.applied_transaction = by_key[f"invoice-credit:{credit.pk}"]
            draft.credit_lines[credit.pk].transaction_id = credit.applied_transaction.pk
        draft.tax_transaction = next(
            (tx for key, tx in by_key.items() if key.startswith("tax:")), None
        )
        for line in draft.lines:
            if line.group == Group.TAX:
                line.transaction_id = draft.tax_transaction.pk
                line.transaction_count = 1


def _write(
    drafts: list[_Draft], year: int, now: datetime, last_id: int, run: StatementRun | None
) -> list[Statement]:
    """Number and insert the statements and their lines; mark the credits applied. The
    series rows are locked last and held for the shortest time."""
    kinds = {
        draft.company.pk: Statement.Kind.INVOICE
        if draft.postpaid
        else Statement.Kind.ACCOUNT_STATEMENT
        for draft in drafts
    }
    series_names = {f"{SERIES_PREFIX[kind]}-{year}" for kind in kinds.values()}
    numbers = _take_numbers(
        [f"{SERIES_PREFIX[kinds[draft.company.pk]]}-{year}" for draft in drafts], series_names
    )
    statements = []
    for draft, (series, number) in zip(drafts, numbers, strict=True):
        lines = sorted(draft.lines, key=lambda line: (GROUP_ORDER.index(line.group), line.service))
        draft.lines = lines
        sums = {group: draft.total(group) for group in GROUP_ORDER}
        closing = draft.balance_forward + sum(sums.values(), ZERO)
        # Lines and totals are the same numbers added two ways: they must agree exactly.
        assert closing == draft.balance_forward + sum((line.amount for line in lines), ZERO)
        postpaid = draft.postpaid
        amount_due = max(closing, ZERO) if postpaid else ZERO
        invoice_amount = _invoice_amount(draft, closing) if postpaid else ZERO
        statements.append(
            Statement(
                company=draft.company,
                kind=kinds[draft.company.pk],
                number=number,
                series=series,
                period_start=draft.start,
                period_end=draft.end,
                issued_at=now,
                due_date=due_date_for(draft.company, draft.end) if postpaid else None,
                currency=draft.currency,
                tax_rate=draft.company.tax_rate if postpaid else ZERO,
                language=draft.company.language,
                balance_forward=draft.money(draft.balance_forward),
                new_charges=draft.money(sums[Group.BASE_FEE] + sums[Group.USAGE]),
                adjustments=draft.money(sums[Group.ADJUSTMENT]),
                credits_applied=draft.money(-sums[Group.CREDIT]),
                payments=draft.money(-sums[Group.PAYMENT]),
                expired=draft.money(sums[Group.EXPIRY]),
                taxable=draft.money(draft.taxable),
                tax=draft.money(sums[Group.TAX]),
                closing_balance=draft.money(closing),
                amount_due=draft.money(amount_due),
                invoice_amount=draft.money(invoice_amount),
                payment_status=Statement.PaymentStatus.PENDING
                if invoice_amount > 0
                else Statement.PaymentStatus.NOT_DUE,
                last_transaction_id=last_id,
                tax_transaction=draft.tax_transaction,
                run=run,
            )
        )
    Statement.objects.bulk_create(statements)
    insert_rows(
        StatementLine,
        LINE_COLUMNS,
        (
            (
                statement.pk,
                line.group,
                line.service,
                line.description,
                line.quantity,
                line.unit,
                draft.currency,
                line.amount,
                line.transaction_id,
                line.transaction_count,
                line.record_count,
                order,
            )
            for draft, statement in zip(drafts, statements, strict=True)
            for order, line in enumerate(draft.lines, start=1)
        ),
    )
    credits = [credit for draft in drafts for credit in draft.credits]
    if credits:
        InvoiceCredit.objects.bulk_update(credits, ["applied_at", "applied_transaction"])
    return statements


def _invoice_amount(draft: _Draft, closing: Decimal) -> Decimal:
    """The invoice's own amount: the period's charges less credits plus tax, less whatever
    part of it the account already covers, so that the open amounts of all the company's
    invoices add up to what it owes (the closing balance less what it paid since).

    A balance carried forward is owed on the older invoice that charged it, not again on
    this one; a payment beyond the open invoices (or a credit larger than a month's charges)
    is a credit that lowers this amount, down to zero.
    """
    period_total = draft.total(Group.BASE_FEE, Group.USAGE, Group.ADJUSTMENT, Group.CREDIT)
    period_total += draft.total(Group.TAX)
    not_yet_on_an_invoice = closing - draft.paid_since_end - draft.open_before
    return max(min(period_total, not_yet_on_an_invoice), ZERO)


def _take_numbers(series_of_each: list[str], names: set[str]) -> list[tuple[str, str]]:
    """The next numbers of each series, in order, from counter rows locked until commit."""
    NumberSeries.objects.bulk_create(
        [NumberSeries(name=name) for name in sorted(names)], ignore_conflicts=True
    )
    counters = {
        series.name: series
        for series in NumberSeries.objects.select_for_update()
        .filter(name__in=sorted(names))
        .order_by("name")
    }
    taken = []
    for name in series_of_each:
        counter = counters[name]
        taken.append((name, format_number(name, counter.next_value)))
        counter.next_value += 1
    NumberSeries.objects.bulk_update(list(counters.values()), ["next_value"])
    return taken


# --- Runs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunResult:
    run: StatementRun
    issued: int
    skipped: int  # already issued before this call
    failed: int
    not_due: int


def _mark_items(
    run: StatementRun,
    company_ids: Iterable[int],
    now: datetime,
    statements: Sequence[Statement] = (),
) -> None:
    by_company = {statement.company_id: statement for statement in statements}
    items = list(
        StatementRunItem.objects.filter(run=run, company_id__in=list(company_ids)).exclude(
            state=StatementRunItem.State.ISSUED
        )
    )
    for item in items:
        item.state = StatementRunItem.State.ISSUED
        item.statement = by_company.get(item.company_id)
        if item.statement is None:
            item.statement = (
                Statement.objects.filter(
                    company_id=item.company_id, period_start__gte=_month_floor(run)
                )
                .order_by("period_start")
                .first()
            )
        item.error = ""
        item.updated_at = now
    StatementRunItem.objects.bulk_update(items, ["state", "statement", "error", "updated_at"])


def _month_floor(run: StatementRun) -> datetime:
    # Earlier than any time zone's start of the month (UTC+14), later than the month before.
    return datetime(run.year, run.month, 1, tzinfo=UTC) - timedelta(hours=15)


def companies_due(year: int, month: int, now: datetime) -> list[int]:
    """Companies whose ``year``-``month`` has ended in their billing time zone and that
    existed before it ended, in id order."""
    due = []
    # order_by(): Company's default ordering (by name) would make DISTINCT return one row
    # per company, and every company would be listed once per company.
    zones = Company.objects.order_by().values_list("billing_timezone", flat=True).distinct()
    for tz_name in zones:
        _start, end = calendar_month(year, month, ZoneInfo(tz_name))
        if end <= now:
            due.extend(
                Company.objects.filter(billing_timezone=tz_name, created_at__lt=end).values_list(
                    "pk", flat=True
                )
            )
    return sorted(due)


@transaction.atomic
def run_prepare(*, year: int, month: int, now: datetime | None = None) -> StatementRun:
    """The run of ``year``-``month`` (created once) with an item for every company whose
    month has ended. Idempotent: items are unique per run and company."""
    now = now or timezone.now()
    run, _ = StatementRun.objects.get_or_create(
        year=year, month=month, defaults={"started_at": now}
    )
    run = StatementRun.objects.select_for_update().get(pk=run.pk)
    StatementRunItem.objects.bulk_create(
        [
            StatementRunItem(run=run, company_id=company_id, updated_at=now)
            for company_id in companies_due(year, month, now)
        ],
        ignore_conflicts=True,
        batch_size=1000,
    )
    return run


def run_pending(run: StatementRun) -> list[int]:
    """Company ids of the run not issued yet (pending, or failed and to retry)."""
    return list(
        run.items.exclude(state=StatementRunItem.State.ISSUED)
        .order_by("company_id")
        .values_list("company_id", flat=True)
    )


def run_issue(
    *, run: StatementRun, company_ids: Sequence[int], now: datetime | None = None
) -> tuple[int, int]:
    """Issue these companies' statements of the run's month: the batch in one transaction;
    if it fails, each company alone, so one bad company fails alone and is recorded.
    Returns (issued, failed). Safe to run twice or at once (``statements_issue``)."""
    now = now or timezone.now()
    if not company_ids:
        return 0, 0
    try:
        result = statements_issue(
            company_ids=company_ids, year=run.year, month=run.month, run=run, now=now
        )
        return len(result.issued), 0
    except Exception:
        if len(company_ids) == 1:
            _record_failure(run, company_ids[0], now)
            return 0, 1
    issued = failed = 0
    for company_id in company_ids:
        one_issued, one_failed = run_issue(run=run, company_ids=[company_id], now=now)
        issued += one_issued
        failed += one_failed
    return issued, failed


def _record_failure(run: StatementRun, company_id: int, now: datetime) -> None:
    logger.exception("Statement of company %s for %s failed", company_id, run.label)
    StatementRunItem.objects.filter(run=run, company_id=company_id).exclude(
        state=StatementRunItem.State.ISSUED
    ).update(
        state=StatementRunItem.State.FAILED,
        error=traceback.format_exc(limit=3)[-2000:],
        attempts=F("attempts") + 1,
        updated_at=now,
    )


@transaction.atomic
def run_refresh(run: StatementRun, now: datetime | None = None) -> StatementRun:
    """Recount the run's items; finished once none is left to issue."""
    now = now or timezone.now()
    counts = dict(
        run.items.values("state").annotate(n=Count("id")).order_by().values_list("state", "n")
    )
    total = sum(counts.values())
    issued = counts.get(StatementRunItem.State.ISSUED, 0)
    failed = counts.get(StatementRunItem.State.FAILED, 0)
    finished = now if total and issued == total else None
    StatementRun.objects.filter(pk=run.pk).update(
        companies=total, issued=issued, failed=failed, finished_at=finished
    )
    run.companies, run.issued, run.failed, run.finished_at = total, issued, failed, finished
    return run


def period_close(
    *, year: int, month: int, now: datetime | None = None, batch_size: int = 50
) -> RunResult:
    """Close ``year``-``month``: a statement for every company whose month has ended in its
    billing time zone. Idempotent and resumable: a second run (or one after a crash)
    issues only what is missing; two at once issue each statement once."""
    now = now or timezone.now()
    if not 1 <= month <= 12:
        raise InvoicingError(f"There is no month {month}.")
    run = run_prepare(year=year, month=month, now=now)
    pending = run_pending(run)
    total_items = run.items.count()
    issued = failed = 0
    for index in range(0, len(pending), batch_size):
        batch_issued, batch_failed = run_issue(
            run=run, company_ids=pending[index : index + batch_size], now=now
        )
        issued += batch_issued
        failed += batch_failed
    run = run_refresh(run, now)
    return RunResult(
        run=run,
        issued=issued,
        skipped=total_items - len(pending),
        failed=failed,
        not_due=0,
    )


# --- Credit notes -----------------------------------------------------------------------------


@transaction.atomic
def credit_note_issue(
    *,
    company: Company,
    amount: Money,
    reason: str,
    actor,
    statement: Statement | None = None,
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> CreditNote:
    """Issue a credit note: a numbered credit (series ``CN-<year>``, gapless) posted to the
    ledger now, shown on the company's next statement. Locks the company, then the series.
    Raises ``InvoicingError`` (no reason, another company's statement) or the ledger's
    ``InvalidAmount``."""
    now = now or timezone.now()
    if not reason.strip():
        raise InvoicingError("Say why the credit note is issued.")
    if statement is not None and statement.company_id != company.pk:
        raise InvoicingError("The statement belongs to another company.")
    company = lock_company(company.pk)
    # The ledger first (company, then its lots), the number series last: the lock order.
    [[transaction_]] = ledger.statement_entries_post(
        entries=[
            (
                company,
                [
                    ledger.StatementEntry(
                        amount=amount,
                        kind=Kind.CREDIT_NOTE,
                        counter=(LedgerAccount.Kind.ADJUSTMENT, "adjustment"),
                        idempotency_key=idempotency_key
                        or f"credit-note:{company.pk}:{now.isoformat()}",
                        description=f"Credit note: {reason.strip()}",
                        actor=actor,
                    )
                ],
            )
        ],
        now=now,
    )
    existing = CreditNote.objects.filter(transaction=transaction_).first()
    if existing is not None:  # the same request again
        return existing
    series = f"{CREDIT_NOTE_PREFIX}-{now.astimezone(company.tzinfo):%Y}"
    [(series, number)] = _take_numbers([series], {series})
    return CreditNote.objects.create(
        company=company,
        number=number,
        amount=amount,
        reason=reason.strip(),
        statement=statement,
        issued_at=now,
        issued_by=actor,
        transaction=transaction_,
    )
