"""Recording payments received (bank transfers now; card and credits later) and allocating
them to open invoices: everything in invoicing that writes a payment.

What an invoice has been paid is the sum of its ``PaymentAllocation`` rows (from payments
and credit notes: ``invoicing.settlement``); the statement row itself stays final, only its
``payment_status`` moves (pending → partially paid → paid), the one column the model and the
PostgreSQL trigger let change.

Lock order (the house order, then the documents): the company row, then its open invoices
(oldest first), then the ``RCP-<year>`` number series, then the ledger (which locks the
company again, a no-op, and for a postpaid credit touches no lot). Two payments for the same
company therefore serialise on the company row and can never allocate the same open amount
twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal

from django.db import transaction
from django.utils import timezone
from djmoney.money import Money

from accounts.models import Company
from accounts.services import lock_company
from billing.exceptions import ReversalRefused
from billing.models import LedgerAccount, LedgerTransaction
from billing.money import quantize_amount
from billing.services import ledger

from .exceptions import PaymentRefused
from .models import Payment, Statement
from .numbering import numbers_take
from .selectors import amounts_paid, document_parties, open_amounts
from .settlement import (
    allocations_write,
    open_invoices_lock,
    overdue_block_lift,
    payment_status_after,
)

RECEIPT_PREFIX = "RCP"
CASH_ACCOUNT = (LedgerAccount.Kind.CASH, "cash")
ZERO = Decimal(0)

# One requested allocation: an invoice and how much of the payment goes to it (None: as
# much as it still owes and the payment still has).
AllocationRequest = tuple[Statement, Money | None]


@transaction.atomic
def payment_record(
    *,
    company: Company,
    amount: Money,
    received_on: date,
    reference: str,
    allocations: Sequence[AllocationRequest] | None = None,
    actor=None,
    method: str = Payment.Method.BANK_TRANSFER,
    now: datetime | None = None,
    same_details_confirmed: bool = False,
) -> Payment:
    """Record a successful payment of ``amount`` received on ``received_on`` and allocate it.

    Guarantees: a receipt number from the gapless ``RCP-<year>`` series; the ledger raises
    the company's balance by ``amount`` (counter account ``cash``, key ``payment:<id>``);
    allocations go oldest open invoice first, or to the ``allocations`` asked for, and never
    exceed an invoice's open amount; what no invoice takes stays unallocated on the payment.
    When no overdue invoice is left, an ``overdue`` block is lifted.

    A payment with the same amount, date and reference as one already recorded for the
    company is refused unless ``same_details_confirmed``: a bank line entered twice (or a
    form sent twice) would otherwise credit the company twice.

    Raises ``PaymentRefused`` for an amount of zero or less, another currency, too many
    decimals, a future date, a prepaid company, an invoice of another company or one that
    is not open, or an allocation above the invoice's open amount or the payment.
    """
    now = now or timezone.now()
    _check_amount(company, amount)
    for statement, _ in allocations or ():
        if statement.company_id != company.pk:
            raise PaymentRefused(f"Invoice {statement.number} belongs to another company.")
    company = lock_company(company.pk)
    if company.mode != Company.Mode.POSTPAID:
        raise PaymentRefused(
            f"{company.name} is prepaid: it has no invoices to pay; it buys credits instead."
        )
    if received_on > now.astimezone(company.tzinfo).date():
        raise PaymentRefused("The payment date is in the future.")
    if not same_details_confirmed:
        # Under the company lock: a second request with the same details waits for the
        # first and then finds it.
        twin = Payment.objects.filter(
            company=company,
            amount=amount,
            received_on=received_on,
            reference=reference.strip(),
            status=Payment.Status.SUCCESSFUL,
        ).first()
        if twin is not None:
            raise PaymentRefused(
                f"A payment of {amount} received on {received_on:%Y-%m-%d} with this reference "
                f"is already recorded ({twin.receipt_number}). If this is another payment, "
                "confirm that it is."
            )
    open_invoices = open_invoices_lock(company)
    open_amount = open_amounts(open_invoices)
    plan = _allocation_plan(amount, open_invoices, open_amount, allocations)

    parties = document_parties([company])[company.pk]
    series = f"{RECEIPT_PREFIX}-{now.astimezone(company.tzinfo):%Y}"
    [(_, number)] = numbers_take([series], {series})
    payment = Payment.objects.create(
        company=company,
        method=method,
        amount=amount,
        received_on=received_on,
        recorded_at=now,
        reference=reference.strip(),
        status=Payment.Status.SUCCESSFUL,
        receipt_number=number,
        parties=parties,
        recorded_by=actor,
    )
    payment.transaction = _post_to_ledger(company, payment, now)
    payment.save(update_fields=["transaction"])

    allocations_write(plan, open_amount, payment=payment)
    overdue_block_lift(company, open_invoices, now, note=f"Paid, receipt {payment.receipt_number}")
    return payment


@transaction.atomic
def payment_reverse(
    *, payment: Payment, reason: str, actor, now: datetime | None = None
) -> Payment:
    """Undo a payment recorded by mistake: its ledger transaction is reversed (the company
    owes again), its allocations are removed and the invoices it paid are open again
    (pending, or partially paid by other payments), so dunning sees them on its next run.
    The payment and its receipt number stay, marked reversed.

    Locks the company, then the payment and its invoices. Raises ``ReversalRefused`` for a
    payment that is not successful (one already reversed included: a second submit)."""
    now = now or timezone.now()
    if not reason.strip():
        raise ReversalRefused("Say why the payment is reversed.")
    lock_company(payment.company_id)
    locked = Payment.objects.select_for_update().get(pk=payment.pk)
    if locked.status != Payment.Status.SUCCESSFUL:
        raise ReversalRefused(
            f"Payment {locked.receipt_number} is {locked.get_status_display().lower()}; "
            "only a successful payment can be reversed."
        )
    ledger.ledger_reverse(
        transaction=locked.transaction,
        reason=f"Payment {locked.receipt_number} reversed: {reason.strip()}",
        actor=actor,
        now=now,
        with_its_payment=True,
    )
    invoice_ids = list(locked.allocations.values_list("statement_id", flat=True))
    locked.allocations.all().delete()
    invoices = list(Statement.objects.select_for_update().filter(pk__in=invoice_ids).order_by("pk"))
    paid = amounts_paid(invoice_ids)
    for invoice in invoices:
        invoice.payment_status = payment_status_after(invoice, paid.get(invoice.pk, ZERO))
        invoice.save(update_fields=["payment_status"])
    locked.status = Payment.Status.REVERSED
    locked.save(update_fields=["status"])
    payment.status = locked.status
    return locked


def _check_amount(company: Company, amount: Money) -> None:
    if str(amount.currency) != company.currency:
        raise PaymentRefused(f"{amount} is not in {company.name}'s currency ({company.currency}).")
    if amount.amount <= 0:
        raise PaymentRefused(f"A payment must be more than zero, not {amount}.")
    if quantize_amount(amount.amount, company.currency) != amount.amount:
        raise PaymentRefused(f"{amount.amount} has more decimals than {company.currency} allows.")


def _allocation_plan(
    amount: Money,
    open_invoices: list[Statement],
    open_amount: dict[int, Decimal],
    allocations: Sequence[AllocationRequest] | None,
) -> list[tuple[Statement, Decimal]]:
    """Which invoice gets how much: oldest first by default, else in the order asked."""
    by_pk = {invoice.pk: invoice for invoice in open_invoices}
    if allocations is None:
        requests: list[AllocationRequest] = [(invoice, None) for invoice in open_invoices]
    else:
        requests = list(allocations)
        if len({statement.pk for statement, _ in requests}) != len(requests):
            raise PaymentRefused("An invoice is listed twice.")
    left = amount.amount
    plan = []
    for statement, wanted in requests:
        invoice = by_pk.get(statement.pk)
        if invoice is None:
            raise PaymentRefused(f"Invoice {statement.number} is not open: nothing is owed on it.")
        owed = open_amount[invoice.pk]
        if wanted is None:
            value = min(owed, left)
        else:
            if str(wanted.currency) != str(amount.currency) or wanted.amount <= 0:
                raise PaymentRefused(
                    f"An allocation must be more than zero in {amount.currency}, not {wanted}."
                )
            value = wanted.amount
            if value > owed:
                raise PaymentRefused(
                    f"{wanted} is more than the {Money(owed, amount.currency)} "
                    f"still open on invoice {invoice.number}."
                )
            if value > left:
                raise PaymentRefused("The allocations add up to more than the payment.")
        if value > 0:
            plan.append((invoice, value))
            left -= value
    return plan


def _post_to_ledger(company: Company, payment: Payment, now: datetime) -> LedgerTransaction:
    [[posted]] = ledger.statement_entries_post(
        entries=[
            (
                company,
                [
                    ledger.StatementEntry(
                        amount=payment.amount,
                        kind=LedgerTransaction.Kind.PAYMENT,
                        counter=CASH_ACCOUNT,
                        idempotency_key=f"payment:{payment.pk}",
                        description=f"Payment received ({payment.get_method_display()}), "
                        f"receipt {payment.receipt_number}",
                        cause=payment,
                        actor=payment.recorded_by,
                        metadata={"reference": payment.reference},
                    )
                ],
            )
        ],
        now=now,
    )
    return posted
