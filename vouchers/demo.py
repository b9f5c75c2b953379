"""Demo vouchers: one batch from a reseller, one code registered by the prepaid demo company
(a credit lot) and one by the postpaid one (credit pending for its next invoice).

Found by its label, so running the seed again adds nothing; the codes themselves are random.
"""

from datetime import datetime, timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from djmoney.money import Money

from accounts.models import Company

from .models import Voucher, VoucherBatch
from .services import batch_create, voucher_redeem

DEMO_BATCH_LABEL = "Demo launch codes"
# (account code, portal user who registers the code): the first codes of the batch.
REDEEMERS = [("acme-prepaid", "alice"), ("kumo-postpaid", "carol")]
DEMO_IP = "203.0.113.10"  # an address reserved for documentation


def seed_vouchers(now: datetime) -> str | None:
    """Seed the demo batch; returns an unused code for the README's walkthrough."""
    batch = VoucherBatch.objects.filter(label=DEMO_BATCH_LABEL).first()
    if batch is None:
        batch = batch_create(
            amount=Money(Decimal(5000), "JPY"),
            count=5,
            lifetime_days=90,
            label=DEMO_BATCH_LABEL,
            reseller="Demo Reseller KK",
            notes="Created by seed_demo.",
            redeem_by=now + timedelta(days=365),
            now=now,
        )
    users = get_user_model().objects.in_bulk([name for _, name in REDEEMERS], field_name="username")
    vouchers = list(batch.vouchers.order_by("id")[: len(REDEEMERS)])
    for voucher, (account_code, username) in zip(vouchers, REDEEMERS, strict=False):
        if voucher.status == Voucher.Status.NEW:
            voucher_redeem(
                company=Company.objects.get(account_code=account_code),
                code=voucher.code,
                actor=users.get(username),
                ip=DEMO_IP,
                now=now,
            )
    unused = batch.vouchers.filter(status=Voucher.Status.NEW).order_by("id").first()
    return unused.formatted_code if unused else None
