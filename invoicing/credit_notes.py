"""Credit notes: a numbered correction that credits a company through the ledger and shows on
its next statement (an issued statement never changes).

For a postpaid company the credit settles open invoices as a payment would: the invoice it
corrects first, then the oldest open ones. So the invoice it corrects reads paid (or
partially paid), dunning stops reminding about it, an ``overdue`` block lifts once nothing
overdue stays open, and only what no open invoice takes lowers the next invoice
(``invoicing.services``).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.db import transaction
from django.utils import timezone
from djmoney.money import Money

from accounts.models import Company
from accounts.services import lock_company
from billing.models import LedgerAccount, LedgerTransaction
from billing.money import quantize_amount
from billing.services import ledger

from .exceptions import InvoicingError
from .models import CreditNote, Statement
from .numbering import numbers_take
from .selectors import document_parties, open_amounts
from .settlement import allocations_write, open_invoices_lock, overdue_block_lift

Kind = LedgerTransaction.Kind
CREDIT_NOTE_PREFIX = "CN"


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
    ledger now, shown on the company's next statement; for a postpaid company it settles open
    invoices (see the module). Locks the company, its open invoices, then the series.
    Raises ``InvoicingError`` (no reason, another company's statement) or the ledger's
    ``InvalidAmount``."""
    now = now or timezone.now()
    if not reason.strip():
        raise InvoicingError("Say why the credit note is issued.")
    if amount.amount <= 0:
        raise InvoicingError(f"A credit note must be more than zero, not {amount}.")
    if statement is not None and statement.company_id != company.pk:
        raise InvoicingError("The statement belongs to another company.")
    company = lock_company(company.pk)
    # The house lock order: the company, its open invoices, the ledger (the company again,
    # then its lots), the number series last.
    postpaid = company.mode == Company.Mode.POSTPAID
    open_invoices = open_invoices_lock(company) if postpaid else []
    key = idempotency_key or f"credit-note:{company.pk}:{now.isoformat()}"
    net, tax = credit_note_split(amount, company)
    entries = [
        ledger.StatementEntry(
            amount=net,
            kind=Kind.CREDIT_NOTE,
            counter=(LedgerAccount.Kind.ADJUSTMENT, "adjustment"),
            idempotency_key=key,
            description=f"Credit note: {reason.strip()}",
            actor=actor,
        )
    ]
    if tax:
        entries.append(
            ledger.StatementEntry(
                amount=tax,
                kind=Kind.CREDIT_NOTE,
                counter=ledger.TAX_ACCOUNT,
                idempotency_key=f"{key}:tax",
                description=f"Tax {(company.tax_rate * 100).normalize():f}% in the credit note",
                actor=actor,
                # The rate at issue, for the note's document (the company's may change).
                metadata={"tax_rate": str(company.tax_rate)},
            )
        )
    [[transaction_, *tax_transaction]] = ledger.statement_entries_post(
        entries=[(company, entries)], now=now
    )
    existing = CreditNote.objects.filter(transaction=transaction_).first()
    if existing is not None:  # the same request again
        return existing
    series = f"{CREDIT_NOTE_PREFIX}-{now.astimezone(company.tzinfo):%Y}"
    [(series, number)] = numbers_take([series], {series})
    note = CreditNote.objects.create(
        company=company,
        number=number,
        parties=document_parties([company])[company.pk],
        amount=amount,
        reason=reason.strip(),
        statement=statement,
        issued_at=now,
        issued_by=actor,
        transaction=transaction_,
        tax_transaction=tax_transaction[0] if tax_transaction else None,
    )
    if open_invoices:
        open_amount = open_amounts(open_invoices)
        allocations_write(
            _settlement_plan(amount.amount, open_invoices, open_amount, statement),
            open_amount,
            credit_note=note,
        )
        overdue_block_lift(company, open_invoices, now, note=f"Credit note {note.number}")
    return note


def credit_note_split(amount: Money, company: Company) -> tuple[Money, Money | None]:
    """A credit note's amount is what the customer gets back, tax included, as an invoice's
    amount is. For a postpaid company with a tax rate it splits into the net credit and the
    tax on it (net rounded once, to the currency's minor unit; the tax is the rest), posted
    together when the note is issued, so the note settles an invoice's tax too and the next
    statement taxes neither. A prepaid company's prices already include tax: no split."""
    rate = company.tax_rate
    if company.mode != Company.Mode.POSTPAID or not rate:
        return amount, None
    currency = str(amount.currency)
    net = quantize_amount(amount.amount / (1 + rate), currency)
    tax = amount.amount - net
    return Money(net, currency), (Money(tax, currency) if tax else None)


def _settlement_plan(
    value: Decimal,
    open_invoices: list[Statement],
    open_amount: dict[int, Decimal],
    corrects: Statement | None,
) -> list[tuple[Statement, Decimal]]:
    """How much of the credit goes to which open invoice: the one it corrects first (when it
    is still open), then the oldest; what none takes stays a credit on the account."""
    ordered = sorted(
        open_invoices, key=lambda invoice: corrects is None or invoice.pk != corrects.pk
    )
    plan, left = [], value
    for invoice in ordered:
        taken = min(open_amount[invoice.pk], left)
        if taken > 0:
            plan.append((invoice, taken))
            left -= taken
    return plan
