"""The portal's statements: list, web view, PDF (checked with pypdf) and the streamed CSV;
another company's statement is a 404."""

import io
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.http import StreamingHttpResponse
from django.urls import reverse
from djmoney.money import Money
from pypdf import PdfReader

from accounts.models import Company, Membership
from billing.models import ApiKey, UsageRecord
from invoicing.services import statement_issue
from tests.factories import CompanyFactory, MembershipFactory

from .helpers import fee, usage

pytestmark = pytest.mark.django_db

TOKYO = ZoneInfo("Asia/Tokyo")
AFTER_ALL = datetime(2027, 1, 1, tzinfo=UTC)


@pytest.fixture
def statement(client):
    company = CompanyFactory(
        mode=Company.Mode.POSTPAID,
        created_at=datetime(2025, 1, 1, tzinfo=UTC),
        name="Kumo Voice GK",
    )
    fee(company, "3000", at=datetime(2026, 4, 1, tzinfo=TOKYO), description="Plan Business, April")
    usage(company, "450", at=datetime(2026, 4, 3, tzinfo=TOKYO), quantity=300, records=5)
    membership = MembershipFactory(company=company, role=Membership.Role.ADMIN)
    client.force_login(membership.user)
    return statement_issue(company=company, year=2026, month=4, now=AFTER_ALL)


def test_statements_page_lists_newest_first_with_web_pdf_and_csv_links(client, statement):
    page = client.get(reverse("portal:statements")).text
    assert statement.number in page
    for name in ("portal:statement", "portal:statement_pdf", "portal:statement_csv"):
        assert reverse(name, args=[statement.pk]) in page
    assert reverse("portal:statements") in client.get(reverse("portal:dashboard")).text


def test_web_view_shows_lines_and_totals(client, statement):
    page = client.get(reverse("portal:statement", args=[statement.pk])).text
    assert "Plan Business, April" in page
    assert "¥3,795" in page  # 3,450 + tax 345


def test_pdf_has_the_number_totals_and_page_numbers(client, statement):
    response = client.get(reverse("portal:statement_pdf", args=[statement.pk]))
    assert response["Content-Type"] == "application/pdf"
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(response.content)).pages)
    assert statement.number in text
    assert "3,795" in text and "345" in text
    assert "Page 1 / 1" in text
    assert "Plan Business, April" in text


def test_pdf_labels_follow_the_company_language(client):
    company = CompanyFactory(
        mode=Company.Mode.POSTPAID, language="ja", created_at=datetime(2025, 1, 1, tzinfo=UTC)
    )
    fee(company, "1000", at=datetime(2026, 4, 1, tzinfo=TOKYO))
    statement = statement_issue(company=company, year=2026, month=4, now=AFTER_ALL)
    client.force_login(MembershipFactory(company=company).user)
    response = client.get(reverse("portal:statement_pdf", args=[statement.pk]))
    text = PdfReader(io.BytesIO(response.content)).pages[0].extract_text()
    assert "請求書" in text


@pytest.mark.parametrize(
    "name", ["portal:statement", "portal:statement_pdf", "portal:statement_csv"]
)
def test_another_companys_statement_is_a_404(client, statement, name):
    other = MembershipFactory(company=CompanyFactory())
    client.force_login(other.user)
    assert client.get(reverse(name, args=[statement.pk])).status_code == 404


def test_member_role_without_billing_access_cannot_open_statements(client, statement):
    member = MembershipFactory(company=statement.company, role=Membership.Role.MEMBER)
    client.force_login(member.user)
    assert client.get(reverse("portal:statement_pdf", args=[statement.pk])).status_code == 403


def test_csv_of_a_hundred_thousand_records_streams(client, statement):
    company = statement.company
    api_key = ApiKey.objects.first()
    at = datetime(2026, 4, 20, tzinfo=TOKYO)
    fields = {
        "api_key": api_key,
        "account_code": company.account_code,
        "company": company,
        "service": "api",
        "quantity": Decimal(1),
        "occurred_at": at,
        "received_at": at,
        "status": UsageRecord.Status.CHARGED,
        "amount": Money(Decimal("0.0125"), "JPY"),
    }
    UsageRecord.objects.bulk_create(
        (UsageRecord(event_id=f"bulk-{n}", **fields) for n in range(100_000)), batch_size=5000
    )
    response = client.get(reverse("portal:statement_csv", args=[statement.pk]))
    assert isinstance(response, StreamingHttpResponse)
    assert not isinstance(response.streaming_content, list | tuple)
    lines = 0
    for chunk in response.streaming_content:
        lines += chunk.count(b"\n")
    assert lines == 1 + 5 + 100_000  # header, the fixture's records, the bulk ones
    assert connection.vendor in ("sqlite", "postgresql")
