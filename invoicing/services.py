"""Issuing statements: a batch of companies' statements for a month, in one transaction.

Closing a whole month in batches is ``invoicing.runs``; what a statement holds is read by
``invoicing.statement_content``; credit notes, payments, emails and dunning have modules of
their own.

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
less credits applied, never below zero; credit notes are left out, as they carry their own
tax, posted when issued), ``round half up`` to the currency's minor unit, and
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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from django.db import connection, transaction
from django.db.models import Max
from django.utils import timezone

from accounts.models import Company
from accounts.services import lock_companies
from billing.bulk import insert_rows
from billing.models import LedgerAccount, LedgerTransaction
from billing.money import quantize_amount
from billing.periods import add_months, calendar_month
from billing.services import ledger
from vouchers.models import InvoiceCredit

from . import statement_content as content
from .emails import statement_emails_after_commit
from .exceptions import InvoicingError, PeriodNotClosed
from .models import (
    Statement,
    StatementLine,
    StatementRun,
    StatementRunItem,
)
from .numbering import numbers_take
from .selectors import document_parties
from .statement_content import (
    GROUP_ORDER,
    LAST_INSTANT,
    LINE_COLUMNS,
    TAXABLE_GROUPS,
    ZERO,
    Group,
    Kind,
    StatementDraft,
)

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


# --- Issuing ---------------------------------------------------------------------------------


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
    return statement_of_month(company, year, month)


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
    drafts: list[StatementDraft] = []
    already, not_due = [], []
    latest = content.latest_statements([company.pk for company in companies])
    for company in companies:
        start, end = statement_period(company, year, month)
        if end > now:
            not_due.append(company.pk)
            continue
        previous = latest.get(company.pk)
        # Months are compared, not instants: the company's time zone may have changed since
        # the previous statement, which moves where the same month starts.
        if previous is not None and previous.period_month >= (year, month):
            if previous.period_month == (year, month):
                already.append(company.pk)
                continue
            raise InvoicingError(
                f"{company.account_code} already has a statement for a later month "
                f"({previous.number}); months are closed in order."
            )
        drafts.append(StatementDraft(company=company, start=start, end=end, previous=previous))
    if run is not None and already:
        _mark_items(run, already, now)
    if not drafts:
        return BatchResult([], already, not_due)

    content.read_ledger(drafts)
    content.describe_base_fees(drafts)
    content.read_usage_quantities(drafts)
    _apply_invoice_credits(drafts)
    content.read_taxed_elsewhere(drafts)
    for draft in drafts:
        _add_tax(draft)
    _post_entries(drafts, now)
    content.read_open_invoices(drafts)
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


def _apply_invoice_credits(drafts: list[StatementDraft]) -> None:
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


def tax_amount(taxable: Decimal, rate: Decimal, currency: str) -> Decimal:
    """Tax on a statement's taxable total: computed once, rounded once, half up, to the
    currency's minor unit (whole yen for JPY); nothing on a total at or below zero."""
    if taxable <= 0:
        return ZERO
    return quantize_amount(taxable * rate, currency)


def _add_tax(draft: StatementDraft) -> None:
    if not draft.postpaid:
        return
    # Credit notes carry their own tax, posted when issued (``credit_note_split``).
    taxable = draft.total(*TAXABLE_GROUPS) + draft.discounts
    taxable -= draft.credit_notes + draft.taxed_elsewhere
    taxable += sum((-credit.amount.amount for credit in draft.credits), ZERO)
    draft.taxable = max(taxable, ZERO)
    tax = tax_amount(taxable, draft.company.tax_rate, draft.currency)
    if tax == 0:
        return
    label = f"Tax {draft.company.tax_rate * 100:.4g}% on {draft.money(draft.taxable)}"
    draft.entries.append(
        ledger.StatementEntry(
            amount=draft.money(-tax),
            kind=Kind.ADJUSTMENT,
            counter=ledger.TAX_ACCOUNT,
            idempotency_key=f"tax:{draft.company.pk}:{draft.start:%Y-%m}",
            description=label,
            effective_at=draft.end - LAST_INSTANT,
            metadata={"statement_tax": f"{draft.start.astimezone(draft.company.tzinfo):%Y-%m}"},
        )
    )
    draft.add_line(Group.TAX, label, tax)


def _post_entries(drafts: list[StatementDraft], now: datetime) -> None:
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
    drafts: list[StatementDraft], year: int, now: datetime, last_id: int, run: StatementRun | None
) -> list[Statement]:
    """Number and insert the statements and their lines; mark the credits applied. The
    series rows are locked last and held for the shortest time."""
    kinds = {
        draft.company.pk: Statement.Kind.INVOICE
        if draft.postpaid
        else Statement.Kind.ACCOUNT_STATEMENT
        for draft in drafts
    }
    parties = document_parties(draft.company for draft in drafts)
    series_names = {f"{SERIES_PREFIX[kind]}-{year}" for kind in kinds.values()}
    numbers = numbers_take(
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
                parties=parties[draft.company.pk],
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


def _invoice_amount(draft: StatementDraft, closing: Decimal) -> Decimal:
    """The invoice's own amount: the period's charges less credits plus tax, less whatever
    part of it the account already covers, so that the open amounts of all the company's
    invoices add up to what it owes (the closing balance less what it paid since).

    A balance carried forward is owed on the older invoice that charged it, not again on
    this one; a payment beyond the open invoices (or a credit larger than a month's charges)
    is a credit that lowers this amount, down to zero. A credit note is counted as a payment
    is: it has settled older invoices first, and what they did not take lowers this amount
    through the closing balance.
    """
    period_total = draft.total(Group.BASE_FEE, Group.USAGE, Group.ADJUSTMENT, Group.CREDIT)
    period_total += draft.total(Group.TAX) - draft.credit_notes
    not_yet_on_an_invoice = closing - draft.paid_since_end - draft.open_before
    return max(min(period_total, not_yet_on_an_invoice), ZERO)


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
    # Companies issued before (by an earlier call): their statement of the month, one query.
    missing = [item.company_id for item in items if item.company_id not in by_company]
    if missing:
        for statement in Statement.objects.filter(
            company_id__in=missing, period_start__gte=_month_floor(run.year, run.month)
        ).order_by("-period_start"):
            by_company[statement.company_id] = statement  # the earliest one is kept last
    for item in items:
        item.state = StatementRunItem.State.ISSUED
        item.statement = by_company.get(item.company_id)
        item.error = ""
        item.updated_at = now
    StatementRunItem.objects.bulk_update(items, ["state", "statement", "error", "updated_at"])


def statement_of_month(company: Company, year: int, month: int) -> Statement:
    """The company's statement of ``year``-``month``, in whatever time zone it was issued."""
    floor = _month_floor(year, month)
    candidates = Statement.objects.filter(
        company=company, period_start__gte=floor, period_start__lt=floor + timedelta(days=2)
    )
    for statement in candidates:
        if statement.period_month == (year, month):
            return statement
    raise Statement.DoesNotExist(f"{company.account_code} has no statement of {year}-{month:02d}.")


def _month_floor(year: int, month: int) -> datetime:
    # Earlier than any time zone's start of the month (UTC+14), later than the month before.
    return datetime(year, month, 1, tzinfo=UTC) - timedelta(hours=15)
