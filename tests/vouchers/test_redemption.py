"""Registering a code: what prepaid and postpaid companies get, when the credit expires,
and every refusal (each leaves everything as it was)."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from djmoney.money import Money

from accounts.models import Company, CompanyBlock
from billing.models import CreditLot, LedgerAccount, LedgerTransaction
from billing.reconcile import reconcile
from billing.selectors import company_available, company_balance
from tests.factories import CompanyFactory, UserFactory
from tests.factories.billing import charge, grant
from tests.factories.vouchers import codes_of, voucher_batch
from vouchers import codes
from vouchers.exceptions import (
    VoucherAlreadyRedeemed,
    VoucherCodeMalformed,
    VoucherCurrencyMismatch,
    VoucherExpired,
    VoucherNotFound,
    VoucherVoided,
)
from vouchers.models import InvoiceCredit, Voucher, VoucherRedemption
from vouchers.services import batch_void, credit_expires_at, voucher_redeem
from vouchers.signals import voucher_redeemed

pytestmark = pytest.mark.django_db

NOW = datetime(2027, 4, 10, 2, 0, tzinfo=UTC)
TOKYO = ZoneInfo("Asia/Tokyo")
NEW_YORK = ZoneInfo("America/New_York")


def nothing_written():
    assert not VoucherRedemption.objects.exists()
    assert not InvoiceCredit.objects.exists()
    assert not LedgerTransaction.objects.filter(kind="voucher").exists()
    assert not Voucher.objects.exclude(status="new").exclude(status="voided").exists()


# --- Prepaid --------------------------------------------------------------------------------


def test_a_prepaid_company_gets_a_voucher_lot_expiring_lifetime_days_after_registering():
    company = CompanyFactory(mode=Company.Mode.PREPAID)
    user = UserFactory()
    batch = voucher_batch(now=NOW - timedelta(days=5), amount="5000", lifetime_days=30)
    code = codes_of(batch)[0]

    redemption = voucher_redeem(company=company, code=code, actor=user, ip="198.51.100.7", now=NOW)

    voucher = Voucher.objects.get(code=code.replace("-", ""))
    assert voucher.status == "redeemed"
    assert (redemption.voucher, redemption.company, redemption.user) == (voucher, company, user)
    assert (redemption.ip, redemption.redeemed_at, redemption.mode) == (
        "198.51.100.7",
        NOW,
        "prepaid",
    )
    assert redemption.amount == Money(5000, "JPY")

    transaction_ = redemption.transaction
    assert transaction_.kind == LedgerTransaction.Kind.VOUCHER
    assert transaction_.idempotency_key == f"voucher:{voucher.pk}"
    assert transaction_.cause == voucher
    assert transaction_.description == f"Credit code {codes.mask_code(voucher.code)}"
    assert voucher.code not in transaction_.description  # the ledger never shows a whole code
    lot = transaction_.created_lot
    assert lot.source == CreditLot.Source.VOUCHER
    assert lot.amount == lot.remaining == Money(5000, "JPY")
    assert lot.granted_at == NOW
    assert lot.expires_at == NOW + timedelta(days=30)  # Tokyo has no DST: 30 × 24 h
    counter = transaction_.postings.exclude(account__kind="customer").get()
    assert counter.account.kind == LedgerAccount.Kind.VOUCHER
    assert counter.amount == Money(-5000, "JPY")

    assert company_available(company, NOW) == Money(5000, "JPY")
    assert reconcile(now=NOW).ok


def test_registering_a_code_lifts_the_block_of_a_company_whose_credit_ran_out():
    company = CompanyFactory(mode=Company.Mode.PREPAID)
    grant(company, 100, now=NOW - timedelta(days=2))
    charge(company, 150, now=NOW - timedelta(days=1))
    company.refresh_from_db()
    assert company.is_blocked

    voucher_redeem(company=company, code=codes_of(voucher_batch(now=NOW))[0], now=NOW)

    company.refresh_from_db()
    assert not company.is_blocked
    assert CompanyBlock.objects.get(company=company).lifted_at == NOW
    assert reconcile(now=NOW).ok


@pytest.mark.parametrize(
    ("zone", "redeemed_local", "days", "expires_local"),
    [
        # Month ends: calendar days, not months (no clamping is involved).
        ("Asia/Tokyo", datetime(2027, 1, 31, 10, 0), 30, datetime(2027, 3, 2, 10, 0)),
        ("Asia/Tokyo", datetime(2028, 1, 31, 10, 0), 30, datetime(2028, 3, 1, 10, 0)),  # leap
        ("Asia/Tokyo", datetime(2027, 2, 28, 23, 59), 1, datetime(2027, 3, 1, 23, 59)),
        ("Asia/Tokyo", datetime(2027, 12, 31, 23, 30), 1, datetime(2028, 1, 1, 23, 30)),
        # DST: the same wall-clock time, so a day is 23 or 25 hours across the change.
        ("America/New_York", datetime(2027, 3, 1, 12, 0), 30, datetime(2027, 3, 31, 12, 0)),
        ("America/New_York", datetime(2027, 10, 15, 12, 0), 30, datetime(2027, 11, 14, 12, 0)),
    ],
)
def test_credit_expires_lifetime_calendar_days_later_in_the_billing_time_zone(
    zone, redeemed_local, days, expires_local
):
    tz = ZoneInfo(zone)
    redeemed_at = redeemed_local.replace(tzinfo=tz).astimezone(UTC)
    company = CompanyFactory(billing_timezone=zone)
    batch = voucher_batch(now=redeemed_at - timedelta(days=1), lifetime_days=days)

    redemption = voucher_redeem(company=company, code=codes_of(batch)[0], now=redeemed_at)

    expires_at = redemption.transaction.created_lot.expires_at
    assert expires_at == expires_local.replace(tzinfo=tz)
    assert expires_at.astimezone(tz).replace(tzinfo=None) == expires_local


def test_lifetime_across_dst_is_an_hour_shorter_in_spring_and_longer_in_autumn():
    spring = datetime(2027, 3, 1, 17, 0, tzinfo=UTC)  # 12:00 EST
    autumn = datetime(2027, 10, 15, 16, 0, tzinfo=UTC)  # 12:00 EDT
    assert credit_expires_at(spring, 30, NEW_YORK) - spring == timedelta(days=30, hours=-1)
    assert credit_expires_at(autumn, 30, NEW_YORK) - autumn == timedelta(days=30, hours=1)


def test_a_wall_time_missing_or_repeated_on_the_expiry_day_is_read_before_the_change():
    # 02:30 on 14 March 2027 does not exist in New York: the lot expires after the gap.
    before_gap = datetime(2027, 3, 13, 2, 30, tzinfo=NEW_YORK)
    assert credit_expires_at(before_gap, 1, NEW_YORK) == datetime(2027, 3, 14, 7, 30, tzinfo=UTC)
    # 01:30 on 7 November 2027 happens twice: the first (EDT) one.
    before_repeat = datetime(2027, 11, 6, 1, 30, tzinfo=NEW_YORK)
    assert credit_expires_at(before_repeat, 1, NEW_YORK) == datetime(2027, 11, 7, 5, 30, tzinfo=UTC)


def test_an_instant_just_after_midnight_utc_counts_days_from_the_local_date():
    # 2027-01-31 15:30 UTC is already 1 February, 00:30, in Tokyo.
    redeemed_at = datetime(2027, 1, 31, 15, 30, tzinfo=UTC)
    assert credit_expires_at(redeemed_at, 28, TOKYO) == datetime(2027, 3, 1, 0, 30, tzinfo=TOKYO)


# --- Postpaid -------------------------------------------------------------------------------


def test_a_postpaid_company_gets_a_pending_invoice_credit_and_no_ledger_money():
    company = CompanyFactory(mode=Company.Mode.POSTPAID)
    charge(company, 700, now=NOW - timedelta(days=1))
    batch = voucher_batch(now=NOW, amount="2000")
    code = codes_of(batch)[0]

    redemption = voucher_redeem(company=company, code=code, actor=None, now=NOW)

    assert (redemption.mode, redemption.transaction) == ("postpaid", None)
    credit = InvoiceCredit.objects.get()
    assert (credit.company, credit.amount, credit.redemption) == (
        company,
        Money(2000, "JPY"),
        redemption,
    )
    assert (credit.created_at, credit.applied_at, credit.applied_transaction) == (NOW, None, None)
    assert credit.is_pending
    assert not LedgerTransaction.objects.filter(kind="voucher").exists()
    assert not CreditLot.objects.filter(source="voucher").exists()
    assert company_balance(company) == Money(-700, "JPY")  # still exactly what is owed
    assert Voucher.objects.get(code=code.replace("-", "")).status == "redeemed"
    assert reconcile(now=NOW).ok


# --- Refusals -------------------------------------------------------------------------------


def test_a_code_in_another_currency_is_refused_with_both_currencies_named():
    company = CompanyFactory(currency="USD")
    code = codes_of(voucher_batch(now=NOW, amount="5000", currency="JPY"))[0]
    with pytest.raises(VoucherCurrencyMismatch) as refused:
        voucher_redeem(company=company, code=code, now=NOW)
    assert "credit in JPY" in str(refused.value) and "billed in USD" in str(refused.value)
    nothing_written()
    # The right company can still register it.
    voucher_redeem(company=CompanyFactory(currency="JPY"), code=code, now=NOW)


def test_a_voided_code_is_refused():
    batch = voucher_batch(now=NOW, count=2)
    batch_void(batch=batch, actor=None, reason="Lost", now=NOW)
    with pytest.raises(VoucherVoided, match="cancelled"):
        voucher_redeem(company=CompanyFactory(), code=codes_of(batch)[0], now=NOW)
    nothing_written()


def test_a_code_past_its_redeem_by_instant_is_refused_and_one_at_the_instant_is_not():
    deadline = datetime(2027, 4, 30, 14, 59, 59, tzinfo=UTC)  # 23:59:59 in Tokyo
    batch = voucher_batch(now=NOW, count=2, redeem_by=deadline)
    late, on_time = codes_of(batch)
    company = CompanyFactory()
    with pytest.raises(VoucherExpired) as refused:
        voucher_redeem(company=company, code=late, now=deadline + timedelta(seconds=1))
    assert "could be registered until" in str(refused.value)
    assert "2027" in str(refused.value)
    nothing_written()
    voucher_redeem(company=company, code=on_time, now=deadline)


def test_a_code_registered_again_by_the_same_company_says_when_it_was():
    company = CompanyFactory(billing_timezone="Asia/Tokyo")
    code = codes_of(voucher_batch(now=NOW))[0]
    voucher_redeem(company=company, code=code, now=NOW)

    with pytest.raises(VoucherAlreadyRedeemed) as refused:
        voucher_redeem(company=company, code=code.lower(), now=NOW + timedelta(days=3))
    # 02:00 UTC is 11:00 in Tokyo.
    assert "You already registered this code on" in str(refused.value)
    assert "11 a.m." in str(refused.value) or "11:00" in str(refused.value)
    assert VoucherRedemption.objects.count() == 1
    assert CreditLot.objects.count() == 1


def test_a_code_used_by_another_company_reads_exactly_like_a_wrong_code():
    code = codes_of(voucher_batch(now=NOW))[0]
    voucher_redeem(company=CompanyFactory(), code=code, now=NOW)
    other = CompanyFactory()

    with pytest.raises(VoucherNotFound) as used_elsewhere:
        voucher_redeem(company=other, code=code, now=NOW)
    wrong = codes.format_code(codes.generate_code())  # valid shape, not issued
    with pytest.raises(VoucherNotFound) as unknown:
        voucher_redeem(company=other, code=wrong, now=NOW)

    assert type(used_elsewhere.value) is type(unknown.value)
    assert str(used_elsewhere.value) == str(unknown.value)
    assert used_elsewhere.value.counts_as_failure == unknown.value.counts_as_failure
    assert not VoucherRedemption.objects.filter(company=other).exists()


def test_a_malformed_code_is_refused_without_touching_the_database(django_assert_num_queries):
    company = CompanyFactory()
    for typed in ["", "hello", "K7QM-3XTD-9PWR-2HCVT", "\x00" * 17, "コード" * 6, "x" * 10_000]:
        with django_assert_num_queries(0), pytest.raises(VoucherCodeMalformed):
            voucher_redeem(company=company, code=typed, now=NOW)


def test_the_books_reconcile_after_many_redemptions_of_both_kinds():
    prepaid = CompanyFactory(mode=Company.Mode.PREPAID)
    postpaid = CompanyFactory(mode=Company.Mode.POSTPAID)
    batch = voucher_batch(now=NOW, count=6, amount="1000")
    for index, code in enumerate(codes_of(batch)):
        voucher_redeem(
            company=prepaid if index % 2 else postpaid,
            code=code,
            now=NOW + timedelta(minutes=index),
        )
    charge(prepaid, 2500, now=NOW + timedelta(hours=1))
    assert company_available(prepaid, NOW + timedelta(hours=1)) == Money(Decimal(500), "JPY")
    assert InvoiceCredit.objects.filter(company=postpaid, applied_at=None).count() == 3
    assert reconcile(now=NOW + timedelta(hours=1)).ok


def test_a_redemption_is_announced_after_commit_and_a_refusal_is_not(
    django_capture_on_commit_callbacks,
):
    heard = []

    def receiver(sender, redemption, **kwargs):
        heard.append(redemption)

    voucher_redeemed.connect(receiver)
    try:
        code = codes_of(voucher_batch(now=NOW))[0]
        with django_capture_on_commit_callbacks(execute=True):
            redemption = voucher_redeem(company=CompanyFactory(), code=code, now=NOW)
        with django_capture_on_commit_callbacks(execute=True), pytest.raises(VoucherNotFound):
            voucher_redeem(company=CompanyFactory(), code=code, now=NOW)
    finally:
        voucher_redeemed.disconnect(receiver)
    assert heard == [redemption]
