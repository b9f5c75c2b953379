"""The demo vouchers of ``seed_demo``: found again by label, so a second run adds nothing."""

import pytest
from django.utils import timezone

from accounts.demo import seed_accounts
from billing.reconcile import reconcile
from vouchers import codes
from vouchers.demo import DEMO_BATCH_LABEL, seed_vouchers
from vouchers.models import InvoiceCredit, Voucher, VoucherBatch, VoucherRedemption

pytestmark = pytest.mark.django_db


def test_the_demo_batch_is_seeded_once_with_one_prepaid_and_one_postpaid_redemption():
    seed_accounts()
    now = timezone.now()
    unused = seed_vouchers(now=now)
    assert seed_vouchers(now=now) == unused
    batch = VoucherBatch.objects.get(label=DEMO_BATCH_LABEL)
    assert batch.vouchers.count() == 5
    assert codes.is_valid(codes.normalise(unused))
    assert Voucher.objects.get(code=codes.normalise(unused)).status == "new"
    redeemed = dict(VoucherRedemption.objects.values_list("company__account_code", "mode"))
    assert redeemed == {"acme-prepaid": "prepaid", "kumo-postpaid": "postpaid"}
    assert InvoiceCredit.objects.get().company.account_code == "kumo-postpaid"
    assert reconcile(now=now).ok
