"""Races run for real against PostgreSQL: threads with their own connections released by a
barrier. Numbers stay gapless when some issuing transactions roll back, and closing a month
twice at once issues one statement per company; a PDF and a top-up fall are each kept
once, and an expiry notice sent once, when two ask at once."""

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.db import IntegrityError, InternalError, ProgrammingError, connection, transaction
from djmoney.money import Money

from accounts.models import Company
from billing.reconcile import reconcile
from billing.services import ledger
from invoicing.documents import statement_pdf
from invoicing.expiry_notices import expiry_notices_queue
from invoicing.models import BillingEmail, KeptPdf, Statement
from invoicing.runs import period_close
from invoicing.services import statements_issue
from invoicing.topup import topup_reminder_set, topup_reminders_check
from tests.factories import BillingContactFactory, CompanyFactory

from .helpers import fee, usage

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

TOKYO = ZoneInfo("Asia/Tokyo")
AFTER_ALL = datetime(2027, 1, 1, tzinfo=UTC)


def run_together(calls: list[Callable[[], object]]) -> list[object]:
    barrier = threading.Barrier(len(calls), timeout=30)
    results: list[object] = [None] * len(calls)
    errors: list[BaseException] = []

    def work(index: int, call: Callable[[], object]) -> None:
        try:
            connection.ensure_connection()
            barrier.wait()
            results[index] = call()
        except BaseException as error:  # handed to the main thread
            errors.append(error)
            barrier.abort()
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert not any(thread.is_alive() for thread in threads), "a thread is stuck (deadlock?)"
    if errors:
        raise next(
            (e for e in errors if not isinstance(e, threading.BrokenBarrierError)), errors[0]
        )
    return results


def postpaid_companies(count: int) -> list[Company]:
    made = []
    for _ in range(count):
        company = CompanyFactory(
            mode=Company.Mode.POSTPAID, created_at=datetime(2025, 1, 1, tzinfo=UTC)
        )
        fee(company, "1000", at=datetime(2026, 4, 1, tzinfo=TOKYO))
        usage(company, "77", at=datetime(2026, 4, 9, tzinfo=TOKYO))
        made.append(company)
    return made


class Rollback(Exception):
    pass


def test_sixteen_threads_issue_gapless_numbers_even_when_some_roll_back():
    made = postpaid_companies(16)

    def issue(company: Company, roll_back: bool):
        def call():
            try:
                with transaction.atomic():
                    statements_issue(company_ids=[company.pk], year=2026, month=4, now=AFTER_ALL)
                    if roll_back:
                        raise Rollback
            except Rollback:
                return "rolled back"
            return "issued"

        return call

    results = run_together([issue(company, index % 4 == 0) for index, company in enumerate(made)])
    assert results.count("rolled back") == 4
    numbers = sorted(Statement.objects.values_list("number", flat=True))
    assert numbers == [f"INV-2026-{value:06d}" for value in range(1, 13)]
    # The rolled-back companies get the next numbers, still without a gap.
    rest = [company.pk for index, company in enumerate(made) if index % 4 == 0]
    statements_issue(company_ids=rest, year=2026, month=4, now=AFTER_ALL)
    numbers = sorted(Statement.objects.values_list("number", flat=True))
    assert numbers == [f"INV-2026-{value:06d}" for value in range(1, 17)]
    assert reconcile(now=AFTER_ALL).ok


def test_two_workers_closing_the_same_month_issue_one_statement_per_company():
    made = postpaid_companies(6)
    results = run_together(
        [lambda: period_close(year=2026, month=4, now=AFTER_ALL, batch_size=2) for _ in range(2)]
    )
    assert sum(result.issued for result in results) == 6
    assert sum(result.failed for result in results) == 0
    assert Statement.objects.count() == 6
    assert set(Statement.objects.values_list("company_id", flat=True)) == {c.pk for c in made}
    assert reconcile(now=AFTER_ALL).ok


def test_database_refuses_to_change_or_delete_an_issued_statement():
    [company] = postpaid_companies(1)
    statements_issue(company_ids=[company.pk], year=2026, month=4, now=AFTER_ALL)
    statement = Statement.objects.get()
    assert_refused_as_final(
        [
            "UPDATE invoicing_statement SET number = 'X' WHERE id = %s",
            "DELETE FROM invoicing_statementline WHERE statement_id = %s",
            "DELETE FROM invoicing_statement WHERE id = %s",
        ],
        statement.pk,
    )
    # Only the payment status may move (payments, later).
    Statement.objects.filter(pk=statement.pk).update(payment_status=Statement.PaymentStatus.PAID)


def test_two_first_downloads_at_once_keep_one_pdf_and_hand_it_to_both():
    [company] = postpaid_companies(1)
    statements_issue(company_ids=[company.pk], year=2026, month=4, now=AFTER_ALL)
    statement = Statement.objects.get()
    first, second = run_together([lambda: statement_pdf(statement)] * 2)
    kept = KeptPdf.objects.get()
    assert first == second == bytes(kept.content)
    assert_refused_as_final(
        [
            "UPDATE invoicing_keptpdf SET content = 'x' WHERE id = %s",
            "DELETE FROM invoicing_keptpdf WHERE id = %s",
        ],
        kept.pk,
    )


def assert_refused_as_final(statements: list[str], pk: int) -> None:
    """Each SQL statement, run on row ``pk``, is refused by the database's own rule."""
    for sql in statements:
        with (
            pytest.raises((InternalError, ProgrammingError, IntegrityError), match="final"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(sql, [pk])


def test_two_top_up_checks_at_once_queue_one_email_per_recipient():
    company = CompanyFactory(mode=Company.Mode.PREPAID)
    ledger.credits_grant(
        company=company,
        amount=Money(Decimal(10000), "JPY"),
        source="purchase",
        idempotency_key="g1",
        description="Credits",
        now=AFTER_ALL,
    )
    topup_reminder_set(
        company=company,
        threshold=Money(Decimal(5000), "JPY"),
        recipients=["ops@example.com", "cfo@example.com"],
        now=AFTER_ALL,
    )
    ledger.company_charge(
        company=company,
        amount=Money(Decimal(6000), "JPY"),
        revenue="voice",
        idempotency_key="c1",
        description="Usage",
        now=AFTER_ALL,
    )
    results = run_together([lambda: topup_reminders_check(now=AFTER_ALL)] * 2)
    assert sorted(len(result.fallen) for result in results) == [0, 1]
    assert sorted(
        BillingEmail.objects.filter(kind=BillingEmail.Kind.TOPUP).values_list(
            "recipient", flat=True
        )
    ) == ["cfo@example.com", "ops@example.com"]


def test_two_expiry_notice_runs_at_once_queue_one_email_per_lot_and_contact():
    company = CompanyFactory(mode=Company.Mode.PREPAID)
    BillingContactFactory(company=company, email="ap@example.com")
    ledger.credits_grant(
        company=company,
        amount=Money(Decimal(500), "JPY"),
        source="purchase",
        idempotency_key="g1",
        description="Credits",
        expires_at=AFTER_ALL + timedelta(days=2),
        now=AFTER_ALL - timedelta(days=60),
    )
    run_together([lambda: expiry_notices_queue(now=AFTER_ALL)] * 2)
    assert list(
        BillingEmail.objects.filter(kind=BillingEmail.Kind.EXPIRING).values_list(
            "recipient", flat=True
        )
    ) == ["ap@example.com"]
