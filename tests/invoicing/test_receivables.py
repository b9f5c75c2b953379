"""The receivables aging report: open invoice amounts by days past due, per company and in
total per currency, in the admin."""

from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse
from djmoney.money import Money

from accounts.models import Company
from invoicing.payments import payment_record
from invoicing.selectors import aging_bucket, receivables_aging
from invoicing.services import statement_issue
from tests.factories import CompanyFactory, UserFactory

from .helpers import fee

pytestmark = pytest.mark.django_db

TOKYO = ZoneInfo("Asia/Tokyo")
NEW_YORK = ZoneInfo("America/New_York")


def invoiced(months, *, currency="JPY", zone="Asia/Tokyo", amount="1000"):
    company = CompanyFactory(
        mode=Company.Mode.POSTPAID,
        currency=currency,
        billing_timezone=zone,
        created_at=datetime(2025, 1, 1, tzinfo=UTC),
        tax_rate=0,
    )
    invoices = []
    for month in months:
        fee(company, amount, at=datetime(2026, month, 10, tzinfo=company.tzinfo))
        invoices.append(
            statement_issue(
                company=company, year=2026, month=month, now=datetime(2026, 9, 2, tzinfo=UTC)
            )
        )
    return company, invoices


@pytest.mark.parametrize(
    ("days", "bucket"),
    [(-5, "current"), (0, "current"), (1, "1-30"), (30, "1-30"), (31, "31-60"),
     (60, "31-60"), (61, "61-90"), (90, "61-90"), (91, "over-90"), (400, "over-90")],
)  # fmt: skip
def test_buckets_by_days_past_due(days, bucket):
    assert aging_bucket(days) == bucket


def test_each_invoice_is_aged_by_its_own_due_date_and_counted_once():
    # Due 31 May, 30 June, 31 July, 31 August (the last day of the following month).
    company, [april, may, june, july] = invoiced([4, 5, 6, 7])
    payment_record(
        company=company,
        amount=Money(400, "JPY"),
        received_on=date(2026, 9, 1),
        reference="part of April",
        now=datetime(2026, 9, 1, 3, tzinfo=UTC),
    )
    # 15 September in Tokyo: April 107 days late, May 77, June 46, July 15.
    report = receivables_aging(datetime(2026, 9, 15, 3, tzinfo=UTC))
    [row] = report.rows
    assert row.company == company and row.invoices == 4
    assert row.oldest_due == date(2026, 5, 31)
    assert row.buckets == {
        "current": 0,
        "1-30": 1000,
        "31-60": 1000,
        "61-90": 1000,
        "over-90": 600,
    }
    # July's statement shows 4,000 in all, yet the company owes 3,600: no double count.
    assert july.amount_due == Money(4000, "JPY")
    assert row.total == Decimal(3600)
    [total] = report.totals
    assert total.currency == "JPY" and total.total == 3600


def test_totals_per_currency_and_the_company_date_decides_the_bucket():
    # 31 August 23:30 in New York is already 1 September in UTC: July is not late there yet.
    new_york, _ = invoiced([7], currency="USD", zone="America/New_York", amount="10.50")
    tokyo, _ = invoiced([7])
    report = receivables_aging(datetime(2026, 8, 31, 23, 30, tzinfo=NEW_YORK))
    by_company = {row.company: row for row in report.rows}
    assert by_company[new_york].buckets["current"] == Decimal("10.50")
    assert by_company[tokyo].buckets["1-30"] == 1000  # 1 September in Tokyo
    assert [(t.currency, t.total) for t in report.totals] == [
        ("JPY", Decimal(1000)),
        ("USD", Decimal("10.50")),
    ]


def test_paid_invoices_leave_the_report():
    company, [april] = invoiced([4])
    payment_record(
        company=company,
        amount=Money(1000, "JPY"),
        received_on=date(2026, 9, 1),
        reference="all of April",
        now=datetime(2026, 9, 1, 3, tzinfo=UTC),
    )
    assert receivables_aging(datetime(2026, 9, 15, tzinfo=UTC)).rows == []


def test_admin_page_shows_the_report_in_fixed_queries(admin_client, django_assert_max_num_queries):
    for _ in range(3):
        invoiced([4, 5])
    url = reverse("admin:invoicing_receivable_changelist")
    with django_assert_max_num_queries(12):
        page = admin_client.get(url)
    assert page.status_code == 200
    assert "Over 90 days" in page.text or "31–60 days" in page.text
    assert "Total JPY" in page.text
    for _ in range(3):
        invoiced([4, 5])
    with django_assert_max_num_queries(12):
        assert admin_client.get(url).status_code == 200


def test_admin_page_needs_permission_to_see_statements(client):
    user = UserFactory(is_staff=True)
    client.force_login(user)
    assert client.get(reverse("admin:invoicing_receivable_changelist")).status_code == 403
