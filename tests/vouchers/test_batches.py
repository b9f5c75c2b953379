"""Creating batches of codes, and voiding batches and single codes."""

from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from djmoney.money import Money

from tests.factories import CompanyFactory, UserFactory
from tests.factories.vouchers import codes_of, voucher_batch
from vouchers import codes, services
from vouchers.exceptions import BatchInvalid, VoidRefused
from vouchers.models import Voucher, VoucherBatch
from vouchers.selectors import BatchCounts, batch_counts

pytestmark = pytest.mark.django_db

NOW = datetime(2027, 4, 1, 3, 0, tzinfo=UTC)


def statuses_of(batch) -> dict[str, int]:
    return dict(Counter(Voucher.objects.filter(batch=batch).values_list("status", flat=True)))


def test_a_batch_gets_its_count_of_unique_valid_new_codes():
    staff = UserFactory(is_staff=True)
    batch = voucher_batch(
        now=NOW,
        count=250,
        amount="3000",
        lifetime_days=60,
        redeem_by=NOW + timedelta(days=90),
        label="Reseller spring",
        reseller="Denki Shop KK",
        notes="Printed cards",
        actor=staff,
    )
    batch.refresh_from_db()
    assert (batch.count, batch.amount, batch.lifetime_days) == (250, Money(3000, "JPY"), 60)
    assert (batch.reseller, batch.notes, batch.created_by, batch.created_at) == (
        "Denki Shop KK",
        "Printed cards",
        staff,
        NOW,
    )
    stored = list(Voucher.objects.filter(batch=batch).values_list("code", "status"))
    assert len(stored) == 250
    assert len({code for code, _ in stored}) == 250
    assert all(codes.is_valid(code) and status == "new" for code, status in stored)
    assert batch_counts(batch, NOW) == BatchCounts(
        total=250, new=250, redeemed=0, voided=0, expired=0
    )


def test_one_and_a_hundred_thousand_codes_are_the_bounds():
    assert Voucher.objects.filter(batch=voucher_batch(now=NOW, count=1)).count() == 1
    batch = voucher_batch(now=NOW, count=100_000, label="Big reseller run")
    assert Voucher.objects.filter(batch=batch).count() == 100_000


@pytest.mark.parametrize("count", [0, -1, 100_001, 1_000_000, "10", 2.5, True, None])
def test_a_count_outside_1_to_100000_is_refused_clearly_and_nothing_is_written(count):
    with pytest.raises(BatchInvalid, match="from 1 to 100,000 codes"):
        voucher_batch(now=NOW, count=count)
    assert not VoucherBatch.objects.exists()
    assert not Voucher.objects.exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"amount": "0"}, "more than zero"),
        ({"amount": "-100"}, "more than zero"),
        ({"amount": "10.5"}, "more decimals than JPY allows"),
        ({"amount": "10.555", "currency": "USD"}, "more decimals than USD allows"),
        ({"currency": "CHF"}, "not a currency companies are billed in"),
        ({"lifetime_days": 0}, "from 1 to 3650 days"),
        ({"lifetime_days": 3651}, "from 1 to 3650 days"),
        ({"label": "  "}, "Give the batch a label"),
        ({"label": "x" * 201}, "at most 200 characters"),
        ({"reseller": "x" * 201}, "at most 200 characters"),
        ({"amount": "1000000000000000"}, "too large"),
        ({"redeem_by": NOW}, "must be in the future"),
        ({"redeem_by": NOW - timedelta(days=1)}, "must be in the future"),
    ],
)
def test_bad_batch_details_are_refused_and_nothing_is_written(change, message):
    with pytest.raises(BatchInvalid, match=message):
        voucher_batch(now=NOW, **change)
    assert not VoucherBatch.objects.exists()


def test_cents_are_fine_for_usd():
    batch = voucher_batch(now=NOW, amount="12.50", currency="USD")
    assert batch.amount == Money(Decimal("12.50"), "USD")


def test_a_code_that_collides_with_an_existing_one_is_generated_again(monkeypatch):
    existing = voucher_batch(now=NOW, count=1)
    taken = Voucher.objects.get(batch=existing).code
    real = codes.generate_codes
    calls = []

    def colliding(count):
        calls.append(count)
        if len(calls) == 1:  # the first chunk repeats the existing code
            yield taken
            yield from real(count - 1)
        else:
            yield from real(count)

    monkeypatch.setattr(codes, "generate_codes", colliding)
    batch = voucher_batch(now=NOW, count=5)
    assert len(calls) == 2
    assert Voucher.objects.filter(batch=batch).count() == 5
    assert Voucher.objects.filter(code=taken).count() == 1
    assert Voucher.objects.get(code=taken).batch == existing


# --- Voiding --------------------------------------------------------------------------------


def test_voiding_a_batch_voids_its_unused_codes_and_keeps_redeemed_ones():
    company = CompanyFactory()
    staff = UserFactory(is_staff=True)
    batch = voucher_batch(now=NOW, count=4)
    first = codes_of(batch)[0]
    services.voucher_redeem(company=company, code=first, now=NOW)

    assert services.batch_void(batch=batch, actor=staff, reason="Cards lost", now=NOW) == 3
    batch.refresh_from_db()
    assert (batch.voided_at, batch.voided_by, batch.void_reason) == (NOW, staff, "Cards lost")
    assert statuses_of(batch) == {"redeemed": 1, "voided": 3}
    assert Voucher.objects.filter(batch=batch, status="voided", voided_by=staff).count() == 3
    # A second void changes nothing.
    assert services.batch_void(batch=batch, actor=staff, reason="again", now=NOW) == 0
    batch.refresh_from_db()
    assert batch.void_reason == "Cards lost"


def test_voiding_needs_a_reason():
    batch = voucher_batch(now=NOW, count=1)
    with pytest.raises(VoidRefused, match="Say why"):
        services.batch_void(batch=batch, actor=None, reason=" ", now=NOW)
    with pytest.raises(VoidRefused, match="Say why"):
        services.voucher_void(voucher=batch.vouchers.get(), actor=None, reason="", now=NOW)
    assert not Voucher.objects.filter(status="voided").exists()


def test_a_single_unused_code_is_voided_once_and_a_redeemed_one_cannot_be():
    staff = UserFactory(is_staff=True)
    batch = voucher_batch(now=NOW, count=2)
    unused, used = Voucher.objects.filter(batch=batch).order_by("id")
    services.voucher_redeem(company=CompanyFactory(name="Acme"), code=used.code, now=NOW)

    assert services.voucher_void(voucher=unused, actor=staff, reason="Misprinted", now=NOW)
    unused.refresh_from_db()
    assert (unused.status, unused.voided_at, unused.voided_by) == ("voided", NOW, staff)
    assert not services.voucher_void(voucher=unused, actor=staff, reason="again", now=NOW)

    with pytest.raises(VoidRefused, match="was registered by Acme"):
        services.voucher_void(voucher=used, actor=staff, reason="Misprinted", now=NOW)
    used.refresh_from_db()
    assert used.status == "redeemed"
