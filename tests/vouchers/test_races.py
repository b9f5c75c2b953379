"""A code is redeemed at most once, also when many people submit it at the same instant:
sixteen threads, each with its own database connection, released together by a barrier
against PostgreSQL. What keeps this safe is the voucher row lock taken after the company
row lock (``vouchers.services``), with the one-to-one redemption row and the unique ledger
key ``voucher:<id>`` behind it."""

import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from accounts.models import Company
from billing.models import CreditLot, LedgerTransaction
from billing.reconcile import reconcile
from tests.factories import CompanyFactory
from tests.factories.vouchers import codes_of, voucher_batch
from vouchers.exceptions import VoucherAlreadyRedeemed, VoucherError, VoucherNotFound
from vouchers.models import InvoiceCredit, Voucher, VoucherRedemption
from vouchers.services import batch_void, voucher_redeem

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

THREADS = 16
NOW = datetime(2027, 1, 31, 14, 0, tzinfo=UTC)


def run_together(calls: list[Callable[[], object]]) -> list[object]:
    """Each call in its own thread, all released at once; results (or the domain error
    raised) in order. Any other exception fails the test with its traceback."""
    barrier = threading.Barrier(len(calls), timeout=30)
    results: list[object] = [None] * len(calls)
    errors: list[BaseException] = []

    def work(index: int, call: Callable[[], object]) -> None:
        try:
            connection.ensure_connection()
            barrier.wait()
            try:
                results[index] = call()
            except VoucherError as refused:
                results[index] = refused
        except BaseException as error:  # handed to the main thread, which re-raises it
            errors.append(error)
            barrier.abort()
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a thread is stuck (deadlock?)"
    if errors:
        raise next(
            (e for e in errors if not isinstance(e, threading.BrokenBarrierError)), errors[0]
        )
    return results


def kinds(results) -> Counter:
    return Counter(type(result).__name__ for result in results)


def test_sixteen_simultaneous_submits_of_one_code_by_one_company_make_exactly_one_lot():
    company = CompanyFactory(mode=Company.Mode.PREPAID)
    code = codes_of(voucher_batch(now=NOW - timedelta(days=1), count=1, amount="5000"))[0]

    results = run_together(
        [lambda: voucher_redeem(company=company, code=code, now=NOW) for _ in range(THREADS)]
    )

    assert kinds(results) == {"VoucherRedemption": 1, "VoucherAlreadyRedeemed": THREADS - 1}
    assert all(
        result.redeemed_at == NOW
        for result in results
        if isinstance(result, VoucherAlreadyRedeemed)
    )
    assert VoucherRedemption.objects.count() == 1
    assert CreditLot.objects.filter(company=company, source="voucher").count() == 1
    assert LedgerTransaction.objects.filter(company=company, kind="voucher").count() == 1
    assert Voucher.objects.get().status == "redeemed"
    assert reconcile(now=NOW).ok


def test_sixteen_companies_submitting_one_code_at_once_leave_one_redemption():
    companies = [CompanyFactory(mode=Company.Mode.PREPAID) for _ in range(THREADS)]
    code = codes_of(voucher_batch(now=NOW - timedelta(days=1), count=1))[0]

    results = run_together(
        [lambda c=c: voucher_redeem(company=c, code=code, now=NOW) for c in companies]
    )

    assert kinds(results) == {"VoucherRedemption": 1, "VoucherNotFound": THREADS - 1}
    winner = VoucherRedemption.objects.get().company
    assert CreditLot.objects.filter(source="voucher").get().company == winner
    assert LedgerTransaction.objects.filter(kind="voucher").count() == 1
    assert reconcile(now=NOW).ok


def test_postpaid_companies_racing_for_one_code_leave_one_invoice_credit():
    companies = [CompanyFactory(mode=Company.Mode.POSTPAID) for _ in range(THREADS)]
    code = codes_of(voucher_batch(now=NOW - timedelta(days=1), count=1))[0]

    results = run_together(
        [lambda c=c: voucher_redeem(company=c, code=code, now=NOW) for c in companies]
    )

    assert kinds(results) == {"VoucherRedemption": 1, "VoucherNotFound": THREADS - 1}
    assert InvoiceCredit.objects.count() == 1
    assert not LedgerTransaction.objects.filter(kind="voucher").exists()


def test_a_batch_voided_while_its_codes_are_being_registered_leaves_each_code_one_or_other():
    """Fifteen companies register fifteen codes while staff void the batch: every code ends
    either redeemed with its credit, or voided with none; never both, never neither."""
    companies = [CompanyFactory(mode=Company.Mode.PREPAID) for _ in range(THREADS - 1)]
    batch = voucher_batch(now=NOW - timedelta(days=1), count=THREADS - 1)
    codes = codes_of(batch)
    calls = [
        lambda c=c, code=code: voucher_redeem(company=c, code=code, now=NOW)
        for c, code in zip(companies, codes, strict=True)
    ]
    calls.insert(8, lambda: batch_void(batch=batch, actor=None, reason="Withdrawn", now=NOW))

    results = run_together(calls)

    voided = results[8]
    redeemed = VoucherRedemption.objects.count()
    assert voided + redeemed == THREADS - 1
    assert Voucher.objects.filter(status="voided").count() == voided
    assert CreditLot.objects.filter(source="voucher").count() == redeemed
    refused = [r for r in results if isinstance(r, VoucherError)]
    assert len(refused) == voided and all(type(r).__name__ == "VoucherVoided" for r in refused)
    assert reconcile(now=NOW).ok


def test_the_same_company_racing_with_two_different_codes_gets_both(django_db_blocker):
    company = CompanyFactory(mode=Company.Mode.PREPAID)
    codes = codes_of(voucher_batch(now=NOW - timedelta(days=1), count=THREADS, amount="100"))

    results = run_together(
        [lambda code=code: voucher_redeem(company=company, code=code, now=NOW) for code in codes]
    )

    assert kinds(results) == {"VoucherRedemption": THREADS}
    assert CreditLot.objects.filter(company=company).count() == THREADS
    assert reconcile(now=NOW).ok
    assert not isinstance(results[0], VoucherNotFound)
