"""The invoicing back-office: runs, read-only statements with their PDF, credit notes."""

import uuid
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse
from djmoney.money import Money

from accounts.models import Company
from billing.selectors import company_balance
from invoicing.models import CreditNote, Statement
from invoicing.runs import period_close
from tests.factories import CompanyFactory

from .helpers import fee

pytestmark = pytest.mark.django_db

TOKYO = ZoneInfo("Asia/Tokyo")
AFTER_ALL = datetime(2027, 1, 1, tzinfo=UTC)


@pytest.fixture
def closed():
    made = []
    for _ in range(5):
        company = CompanyFactory(
            mode=Company.Mode.POSTPAID, created_at=datetime(2025, 1, 1, tzinfo=UTC)
        )
        fee(company, "1000", at=datetime(2026, 4, 1, tzinfo=TOKYO))
        made.append(company)
    period_close(year=2026, month=4, now=AFTER_ALL)
    return made


def test_lists_cost_a_fixed_number_of_queries(admin_client, closed, django_assert_max_num_queries):
    for name in ("statementrun", "statement", "creditnote"):
        with django_assert_max_num_queries(12):
            assert (
                admin_client.get(reverse(f"admin:invoicing_{name}_changelist")).status_code == 200
            )


def test_statement_is_read_only_and_not_deletable_and_staff_get_its_pdf(admin_client, closed):
    statement = Statement.objects.first()
    page = admin_client.get(reverse("admin:invoicing_statement_change", args=[statement.pk]))
    assert page.status_code == 200 and 'name="_save"' not in page.text
    # The period in the company's own days; each amount once, not beside its currency.
    assert f"2026-04-01 – 2026-04-30 ({statement.company.billing_timezone})" in page.text
    assert "Closing balance currency" not in page.text
    delete = admin_client.post(reverse("admin:invoicing_statement_delete", args=[statement.pk]))
    assert delete.status_code == 403
    pdf = admin_client.get(reverse("admin:invoicing_statement_pdf", args=[statement.pk]))
    assert pdf["Content-Type"] == "application/pdf"
    run_page = admin_client.get(
        reverse("admin:invoicing_statementrun_change", args=[statement.run_id])
    )
    assert statement.number in run_page.text


def test_credit_note_is_issued_through_the_service_and_numbered(admin_client, closed):
    company = closed[0]
    response = admin_client.post(
        reverse("admin:invoicing_creditnote_add"),
        {
            "company": company.pk,
            "amount": "300",
            "reason": "Doubled DID charge in April",
            "idempotency_key": str(uuid.uuid4()),
        },
    )
    assert response.status_code == 302
    note = CreditNote.objects.get()
    assert note.number.startswith("CN-") and note.number.endswith("-000001")
    assert company_balance(company) == Money(-1100 + 300, "JPY")
