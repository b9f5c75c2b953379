"""Reads of vouchers shared by the admin, the portal and the export."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone
from djmoney.money import Money

from accounts.models import Company
from billing.money import quantize_amount

from . import codes
from .models import InvoiceCredit, Voucher, VoucherBatch, VoucherRedemption

Status = Voucher.Status


@dataclass(frozen=True)
class BatchCounts:
    """A batch's codes by state; ``new`` and ``expired`` split the unused codes by whether
    the batch's redeem-by instant has passed."""

    total: int
    new: int
    redeemed: int
    voided: int
    expired: int


def with_counts(batches: QuerySet[VoucherBatch]) -> QuerySet[VoucherBatch]:
    """Each batch with ``unused_count``, ``redeemed_count`` and ``voided_count``: one
    grouped query for a whole page of batches (served by the (batch, status) index)."""
    return batches.annotate(
        unused_count=Count("vouchers", filter=Q(vouchers__status=Status.NEW)),
        redeemed_count=Count("vouchers", filter=Q(vouchers__status=Status.REDEEMED)),
        voided_count=Count("vouchers", filter=Q(vouchers__status=Status.VOIDED)),
    )


def batch_counts(batch: VoucherBatch, now: datetime) -> BatchCounts:
    """Counts of a batch annotated by ``with_counts`` (else counted with one query)."""
    if not hasattr(batch, "unused_count"):
        batch = with_counts(VoucherBatch.objects.filter(pk=batch.pk)).get()
    expired = batch.unused_count if batch.is_past_redeem_by(now) else 0
    return BatchCounts(
        total=batch.unused_count + batch.redeemed_count + batch.voided_count,
        new=batch.unused_count - expired,
        redeemed=batch.redeemed_count,
        voided=batch.voided_count,
        expired=expired,
    )


def vouchers_in_state(vouchers: QuerySet[Voucher], state: str, now: datetime) -> QuerySet[Voucher]:
    """Narrow ``vouchers`` to a derived state: a status, or ``Voucher.EXPIRED``."""
    past = Q(batch__redeem_by__isnull=False) & Q(batch__redeem_by__lt=now)
    if state == Voucher.EXPIRED:
        return vouchers.filter(past, status=Status.NEW)
    if state == Status.NEW:
        return vouchers.filter(status=Status.NEW).exclude(past)
    return vouchers.filter(status=state)


@dataclass(frozen=True)
class DayLine:
    day: date
    redemptions: int
    amount: Money


def batch_redemptions_per_day(batch: VoucherBatch, *, limit: int = 90) -> list[DayLine]:
    """Registrations of the batch's codes per day (days in the server's time zone), newest
    first, at most ``limit`` days. One query."""
    rows = (
        VoucherRedemption.objects.filter(voucher__batch=batch)
        .annotate(day=TruncDate("redeemed_at", tzinfo=timezone.get_current_timezone()))
        .values("day")
        .annotate(redemptions=Count("id"), total=Sum("amount"))
        .order_by("-day")[:limit]
    )
    return [
        DayLine(row["day"], row["redemptions"], Money(row["total"], batch.currency)) for row in rows
    ]


@dataclass(frozen=True)
class HistoryEvent:
    """One line of a code's history, oldest first."""

    at: datetime
    what: str  # "created", "redeemed" or "voided"
    by: object | None  # the user (staff for created/voided, the customer for redeemed)
    redemption: VoucherRedemption | None = None
    reason: str = ""


def voucher_history(voucher: Voucher) -> list[HistoryEvent]:
    """Created (with its batch), registered (by whom, for which company, from which IP, the
    ledger transaction or the invoice credit), voided (by whom, why). Two queries."""
    batch = voucher.batch
    events = [HistoryEvent(batch.created_at, "created", batch.created_by)]
    redemption = (
        VoucherRedemption.objects.filter(voucher=voucher)
        .select_related("company", "user", "transaction", "invoice_credit")
        .first()
    )
    if redemption is not None:
        events.append(HistoryEvent(redemption.redeemed_at, "redeemed", redemption.user, redemption))
    if voucher.voided_at is not None:
        events.append(
            HistoryEvent(voucher.voided_at, "voided", voucher.voided_by, reason=voucher.void_reason)
        )
    return sorted(events, key=lambda event: event.at)


def batch_export_rows(batch: VoucherBatch, now: datetime) -> Iterator[list[str]]:
    """The CSV a reseller gets: a header, then one row per code in creation order, read
    from the database in chunks (a 100,000-code batch never sits in memory whole)."""
    yield ["code", "amount", "currency", "credit_lifetime_days", "redeem_by", "status"]
    amount = str(quantize_amount(batch.amount.amount, batch.currency))  # "1000", "12.50"
    redeem_by = batch.redeem_by.isoformat() if batch.redeem_by else ""
    expired = batch.is_past_redeem_by(now)
    rows = (
        Voucher.objects.filter(batch=batch)
        .order_by("id")
        .values_list("code", "status")
        .iterator(chunk_size=5000)
    )
    for code, status in rows:
        state = Voucher.EXPIRED if expired and status == Status.NEW else status
        yield [
            codes.format_code(code),
            amount,
            batch.currency,
            str(batch.lifetime_days),
            redeem_by,
            state,
        ]


def company_pending_credits(company: Company) -> list[InvoiceCredit]:
    """Credits waiting for the company's next statement, oldest first (with their codes)."""
    return list(
        InvoiceCredit.objects.filter(company=company, applied_at=None)
        .select_related("redemption__voucher")
        .order_by("created_at", "id")
    )


def pending_total(credits: list[InvoiceCredit], currency: str) -> Money | None:
    """The sum of ``credits`` (None when there are none)."""
    if not credits:
        return None
    return Money(sum((credit.amount.amount for credit in credits), Decimal(0)), currency)
