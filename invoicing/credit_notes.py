"""Credit notes: a numbered correction that credits a company through the ledger and shows on
its next statement (an issued statement never changes)."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone
from djmoney.money import Money

from accounts.models import Company
from accounts.services import lock_company
from billing.models import LedgerAccount, LedgerTransaction
from billing.services import ledger

from .exceptions import InvoicingError
from .models import CreditNote, Statement
from .numbering import numbers_take

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
    [(series, number)] = numbers_take([series], {series})
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
