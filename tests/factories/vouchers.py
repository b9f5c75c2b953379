"""Voucher batches made through the service itself (never by rows)."""

from datetime import datetime
from decimal import Decimal

from djmoney.money import Money

from vouchers.models import Voucher, VoucherBatch
from vouchers.services import batch_create


def voucher_batch(
    *,
    now: datetime,
    count: int = 3,
    amount="5000",
    currency: str = "JPY",
    lifetime_days: int = 30,
    redeem_by: datetime | None = None,
    label: str = "Spring promotion",
    **fields,
) -> VoucherBatch:
    return batch_create(
        amount=Money(Decimal(amount), currency),
        count=count,
        lifetime_days=lifetime_days,
        redeem_by=redeem_by,
        label=label,
        now=now,
        **fields,
    )


def codes_of(batch: VoucherBatch) -> list[str]:
    """The batch's codes as a person would type them (formatted), in creation order."""
    return [
        voucher.formatted_code for voucher in Voucher.objects.filter(batch=batch).order_by("id")
    ]
