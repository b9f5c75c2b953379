"""What a statement holds, read in one go for a batch of companies: the draft of each
statement (``StatementDraft`` with its ``LineDraft``s) and the reads that fill it from the
ledger, the usage records and the company's open invoices. The rules of what a statement
covers are in ``invoicing.services``; everything here only reads.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import BigIntegerField, Case, Count, F, Max, Min, Q, Sum, When
from django.utils import translation
from django.utils.translation import gettext
from djmoney.money import Money

from accounts.models import Company, CompanyModeChange
from billing.models import (
    LedgerAccount,
    LedgerPosting,
    LedgerTransaction,
    UsageRecord,
)
from billing.selectors_history import recurring_fee_wording
from billing.services import ledger
from vouchers.models import InvoiceCredit

from .exceptions import InvoicingError
from .models import (
    OPEN_PAYMENT_STATUSES,
    Statement,
    StatementLine,
)

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
# A reversal of money paid in or credit granted is shown, and left untaxed, where the
# transaction it undoes was; any other reversal corrects a charge, which is an adjustment.
REVERSAL_GROUPS = (Group.CREDIT, Group.PAYMENT)
# Taxable: what was charged and corrected; not money paid in.
TAXABLE_GROUPS = (Group.BASE_FEE, Group.USAGE, Group.ADJUSTMENT)
# Credit given, not bought, lowers what a postpaid invoice taxes, as a credit code applied to
# it does (a discount); credit bought (a purchase) is money paid in and lowers nothing.
DISCOUNT_KINDS = (Kind.GRANT, Kind.VOUCHER, Kind.TRIAL)
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


@dataclass
class LineDraft:
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
class StatementDraft:
    """One statement being put together in memory, then written with the batch."""

    company: Company
    start: datetime
    end: datetime
    previous: Statement | None
    lines: list[LineDraft] = field(default_factory=list)
    entries: list[ledger.StatementEntry] = field(default_factory=list)
    credits: list[InvoiceCredit] = field(default_factory=list)
    credit_lines: dict[int, LineDraft] = field(default_factory=dict)
    balance_forward: Decimal = ZERO
    taxable: Decimal = ZERO
    # Postpaid: what the company's older invoices still have open, and what it has paid
    # since the period end (posted already, shown on the next statement).
    open_before: Decimal = ZERO
    paid_since_end: Decimal = ZERO
    # The period's credit notes (owed-positive, so zero or less): shown as adjustments, but
    # for the invoice's own amount they count as payments do, since they settle open
    # invoices first (``invoicing.credit_notes``).
    credit_notes: Decimal = ZERO
    tax_transaction: LedgerTransaction | None = None
    # Postpaid: taxable charges of the period not taxed by this invoice (``read_taxed_elsewhere``).
    taxed_elsewhere: Decimal = ZERO
    # The period's credit given (``DISCOUNT_KINDS``, their reversals too; owed-positive, so
    # zero or less), which lowers the taxable total.
    discounts: Decimal = ZERO

    @property
    def currency(self) -> str:
        return self.company.currency

    @property
    def postpaid(self) -> bool:
        return self.company.mode == Company.Mode.POSTPAID

    def money(self, value: Decimal) -> Money:
        return Money(value, self.currency)

    def add_line(self, group: str, description: str, amount: Decimal, **fields) -> LineDraft:
        line = LineDraft(group=group, description=description[:500], amount=amount, **fields)
        self.lines.append(line)
        return line

    def total(self, *groups: str) -> Decimal:
        return sum((line.amount for line in self.lines if line.group in groups), ZERO)


def group_of(kind: str, reversed_kind: str | None) -> str:
    """The statement group of a ledger transaction of ``kind`` (a reversal's by the kind of
    the transaction it reverses)."""
    if kind == Kind.REVERSAL:
        reversed_group = GROUP_OF_KIND.get(reversed_kind, Group.ADJUSTMENT)
        return reversed_group if reversed_group in REVERSAL_GROUPS else Group.ADJUSTMENT
    return GROUP_OF_KIND.get(kind, Group.ADJUSTMENT)


def latest_statements(company_ids: list[int]) -> dict[int, Statement]:
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
        "parties",  # its billing time zone: which month it is for
        "last_transaction_id",
        "closing_balance",
        "closing_balance_currency",
    ):
        current = found.get(statement.company_id)
        if current is None or statement.period_start > current.period_start:
            found[statement.company_id] = statement
    return found


def by_period(drafts: Iterable[StatementDraft], key) -> dict[tuple, list[int]]:
    """Company ids of the drafts grouped by what their conditions share (``key(draft)``):
    a batch's companies mostly share a time zone and a previous run, so a query gets one
    ``company_id = ANY(...)`` term per group instead of one OR-ed term per company, which
    keeps its plan an index scan and its planning time flat as batches grow."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for draft in drafts:
        groups[key(draft)].append(draft.company.pk)
    return groups


def covered_q(drafts: Iterable[StatementDraft]) -> Q:
    """The drafts' transactions: the company's, before the period end, not covered before
    (after the previous statement's last id, or effective after its period end)."""

    def shared(draft: StatementDraft) -> tuple:
        previous = draft.previous
        if previous is None:
            return (draft.start, draft.end, None, None)
        return (None, draft.end, previous.last_transaction_id, previous.period_end)

    covered = Q()
    for (start, end, last_id, previous_end), ids in by_period(drafts, shared).items():
        q = Q(transaction__company_id__in=ids, transaction__effective_at__lt=end)
        if last_id is None:
            q &= Q(transaction__effective_at__gte=start)
        else:
            q &= not_covered_by(last_id, previous_end)
        covered |= q
    return covered


def not_covered_by(last_transaction_id: int, period_end: datetime) -> Q:
    """Postings a statement (its last transaction id and period end) did not cover: posted
    after it was issued, or effective after its period."""
    return Q(transaction_id__gt=last_transaction_id) | Q(transaction__effective_at__gte=period_end)


def read_ledger(drafts: list[StatementDraft]) -> None:
    """Every line from the ledger in one grouped query: the customer postings by kind (one row
    per transaction for itemised kinds), and usage revenue by service. Balance forward of
    first statements in one more."""
    by_company = {draft.company.pk: draft for draft in drafts}
    covered = covered_q(drafts)
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
            "transaction__reverses__kind",
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
        group = group_of(kind, row["transaction__reverses__kind"])
        if kind == Kind.EXPIRY:
            draft.add_line(group, "expired", -row["total"], transaction_count=row["transactions"])
            continue
        if kind == Kind.CREDIT_NOTE:
            draft.credit_notes -= row["total"]
        if is_discount(kind, row["transaction__reverses__kind"]):
            draft.discounts -= row["total"]
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
        for (start,), ids in by_period(first, lambda draft: (draft.start,)).items():
            before |= Q(transaction__company_id__in=ids, transaction__effective_at__lt=start)
        forward = dict(
            LedgerPosting.objects.filter(before, account__kind=LedgerAccount.Kind.CUSTOMER)
            .values("transaction__company_id")
            .annotate(total=Sum("amount"))
            .values_list("transaction__company_id", "total")
        )
        for draft in first:
            draft.balance_forward = -(forward.get(draft.company.pk) or ZERO)


def describe_base_fees(drafts: list[StatementDraft]) -> None:
    """Base-fee lines in the statement's language (one query). The ledger keeps each
    recurring charge's description in English ("Plan Business, 2026-11-01 – 2026-11-30");
    the line is written again from the charge itself, with the ledger's wording
    (``billing.services.recurring.DESCRIPTIONS``) translated."""
    lines = {
        line.transaction_id: (draft, line)
        for draft in drafts
        for line in draft.lines
        if line.group == Group.BASE_FEE and line.transaction_id is not None
    }
    wording = recurring_fee_wording({pk: draft.company for pk, (draft, _line) in lines.items()})
    for transaction_id, (pattern, values) in wording.items():
        draft, line = lines[transaction_id]
        with translation.override(draft.company.language or "en"):
            line.description = (gettext(pattern) % values)[:500]


def usage_window_start(start: datetime, previous: Statement | None) -> datetime:
    """Where a statement's usage begins. Its detail records are the company's charged records
    received from here to its period end: the end of the previous statement's period (its
    own start for a first statement). That is the window ``covered_q`` gives the company's
    usage transactions, which are dated when their events were received; so the records
    add up to the usage amounts, an event that happened late on the last day but arrived
    after the month ended is on the next statement with its charge, and an issued
    statement's records never change."""
    return previous.period_end if previous is not None else start


def is_discount(kind: str, reversed_kind: str | None) -> bool:
    return kind in DISCOUNT_KINDS or (kind == Kind.REVERSAL and reversed_kind in DISCOUNT_KINDS)


def taxable_charges(selected: Q) -> dict[int, Decimal]:
    """Owed-positive totals, by company, of what a postpaid statement taxes among the
    customer postings ``selected``: fees, usage and their corrections, less credit given (a
    credit note is left out: it carries its own tax; so are payments and credit bought)."""
    rows = (
        LedgerPosting.objects.filter(selected, account__kind=LedgerAccount.Kind.CUSTOMER)
        .exclude(transaction__kind=Kind.CREDIT_NOTE)
        .values("transaction__company_id", "transaction__kind", "transaction__reverses__kind")
        .annotate(total=Sum("amount"))
        .order_by()
    )
    totals: dict[int, Decimal] = defaultdict(lambda: ZERO)
    for row in rows:
        kind, reversed_kind = row["transaction__kind"], row["transaction__reverses__kind"]
        if group_of(kind, reversed_kind) in TAXABLE_GROUPS or is_discount(kind, reversed_kind):
            totals[row["transaction__company_id"]] -= row["total"]
    return totals


def latest_mode_changes(company_ids: list[int]) -> dict[int, datetime]:
    """When each company last switched mode, for those that ever did (one query)."""
    return dict(
        CompanyModeChange.objects.filter(company_id__in=company_ids)
        .values("company_id")
        .annotate(latest=Max("changed_at"))
        .values_list("company_id", "latest")
        .order_by()
    )


def read_taxed_elsewhere(drafts: list[StatementDraft]) -> None:
    """Postpaid: the period's charges made before the company last became postpaid, which
    its invoice does not tax. They were made while prepaid, whose prices include tax, or
    while postpaid before a switch to prepaid, which taxed them then
    (``untaxed_postpaid_charges``). One query, and one more when a company of the batch
    switched since its previous period began (rare)."""
    postpaid = [draft for draft in drafts if draft.postpaid]
    if not postpaid:
        return
    changes = latest_mode_changes([draft.company.pk for draft in postpaid])
    before, switched = Q(), []
    for draft in postpaid:
        changed_at = changes.get(draft.company.pk)
        # A statement covers its period and what was posted late for the one before (an
        # expiry after midnight): a switch before both has nothing of them to leave out.
        since = draft.previous.period_start if draft.previous is not None else draft.start
        if changed_at is not None and changed_at > since:
            before |= covered_q([draft]) & Q(transaction__effective_at__lt=changed_at)
            switched.append(draft)
    if switched:
        totals = taxable_charges(before)
        for draft in switched:
            draft.taxed_elsewhere = totals.get(draft.company.pk, ZERO)


def untaxed_postpaid_charges(company: Company) -> Decimal:
    """A postpaid company's charges that no invoice has taxed yet and none will if it
    switches to prepaid now: those made since it last became postpaid (if it ever switched)
    that its latest statement does not cover. Owed-positive."""
    selected = Q(transaction__company_id=company.pk)
    previous = latest_statements([company.pk]).get(company.pk)
    if previous is not None:
        selected &= not_covered_by(previous.last_transaction_id, previous.period_end)
    changed_at = latest_mode_changes([company.pk]).get(company.pk)
    if changed_at is not None:
        selected &= Q(transaction__effective_at__gte=changed_at)
    return taxable_charges(selected).get(company.pk, ZERO)


def read_usage_quantities(drafts: list[StatementDraft]) -> None:
    """Quantities of the statement's detail records by service (one grouped query); the CSV
    lists the same records (``usage_window_start``)."""
    in_window = Q()
    windows = by_period(
        drafts, lambda draft: (usage_window_start(draft.start, draft.previous), draft.end)
    )
    for (start, end), ids in windows.items():
        in_window |= Q(company_id__in=ids, received_at__gte=start, received_at__lt=end)
    rows = (
        UsageRecord.objects.filter(in_window, status=UsageRecord.Status.CHARGED)
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


def read_open_invoices(drafts: list[StatementDraft]) -> None:
    """Postpaid: each company's open amount on earlier invoices (one query) and its payments
    and credit notes posted for after the period end (one query): both have settled open
    invoices already."""
    postpaid = {draft.company.pk: draft for draft in drafts if draft.postpaid}
    if not postpaid:
        return
    open_rows = (
        Statement.objects.filter(
            company_id__in=list(postpaid),
            kind=Statement.Kind.INVOICE,
            payment_status__in=OPEN_PAYMENT_STATUSES,
        )
        .annotate(paid=Sum("allocations__amount"))
        .values_list("company_id", "invoice_amount", "paid")
        .order_by()
    )
    for company_id, invoice_amount, paid in open_rows:
        postpaid[company_id].open_before += invoice_amount - (paid or ZERO)
    earliest_end = min(draft.end for draft in postpaid.values())
    paid_kinds = (Kind.PAYMENT, Kind.REFUND)
    paid_rows = (
        LedgerPosting.objects.filter(
            Q(transaction__kind__in=(*paid_kinds, Kind.CREDIT_NOTE))
            # A payment reversed since (bounced, recorded by mistake) is owed again: its
            # invoices are open again, so it no longer counts as paid.
            | Q(transaction__kind=Kind.REVERSAL, transaction__reverses__kind__in=paid_kinds),
            transaction__company_id__in=list(postpaid),
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
