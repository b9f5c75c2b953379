"""Each billing contact gets what they chose: statements and overdue reminders, account
notices (blocks, credit expiring soon), or both; the sweeps do not keep looking for emails
nobody chose to get."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core import mail
from djmoney.money import Money

from accounts.models import Company, CompanyBlock
from accounts.services import company_block
from billing.services import ledger
from invoicing.expiry_notices import expiry_notices_queue
from invoicing.selectors import blocks_not_emailed, statements_not_emailed
from invoicing.services import statement_issue
from tests.factories import BillingContactFactory, CompanyFactory

from .helpers import fee

pytestmark = pytest.mark.django_db

TOKYO = ZoneInfo("Asia/Tokyo")
ISSUED_AT = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)


def recipients() -> list[str]:
    return sorted(address for message in mail.outbox for address in message.to)


@pytest.fixture
def company():
    company = CompanyFactory(
        mode=Company.Mode.POSTPAID, created_at=datetime(2025, 1, 1, tzinfo=UTC)
    )
    BillingContactFactory(company=company, email="both@example.com")
    BillingContactFactory(company=company, email="cfo@example.com", gets_notices=False)
    BillingContactFactory(company=company, email="ops@example.com", gets_statements=False)
    return company


def test_statements_go_to_those_who_get_statements(company, django_capture_on_commit_callbacks):
    fee(company, "1000", at=datetime(2026, 4, 2, tzinfo=TOKYO))
    with django_capture_on_commit_callbacks(execute=True):
        statement_issue(company=company, year=2026, month=4, now=ISSUED_AT)
    assert recipients() == ["both@example.com", "cfo@example.com"]


def test_block_notices_go_to_those_who_get_notices(company, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        company_block(company=company, reason=CompanyBlock.Reason.OVERDUE, note="", now=ISSUED_AT)
    assert recipients() == ["both@example.com", "ops@example.com"]


def test_expiry_notices_go_to_those_who_get_notices(company, django_capture_on_commit_callbacks):
    ledger.credits_grant(
        company=company,
        amount=Money(500, "JPY"),
        source="grant",
        idempotency_key="g1",
        description="Promotional credit",
        expires_at=ISSUED_AT + timedelta(days=2),
        now=ISSUED_AT - timedelta(days=60),
    )
    with (
        time_machine.travel(ISSUED_AT, tick=False),  # sent while the lot is still unexpired
        django_capture_on_commit_callbacks(execute=True),
    ):
        expiry_notices_queue(now=ISSUED_AT)
    assert recipients() == ["both@example.com", "ops@example.com"]


def test_the_sweeps_do_not_look_for_emails_nobody_chose_to_get():
    company = CompanyFactory(
        mode=Company.Mode.POSTPAID, created_at=datetime(2025, 1, 1, tzinfo=UTC)
    )
    BillingContactFactory(company=company, email="cfo@example.com", gets_notices=False)
    block = company_block(
        company=company, reason=CompanyBlock.Reason.OVERDUE, note="", now=ISSUED_AT
    )
    window = {
        "changed_from": ISSUED_AT - timedelta(hours=1),
        "changed_before": ISSUED_AT + timedelta(hours=1),
    }
    assert blocks_not_emailed(**window) == []
    company.billing_contacts.update(gets_notices=True)
    assert blocks_not_emailed(**window) == [(block.pk, "blocked")]

    other = CompanyFactory(mode=Company.Mode.POSTPAID, created_at=datetime(2025, 1, 1, tzinfo=UTC))
    BillingContactFactory(company=other, email="ops@example.com", gets_statements=False)
    fee(other, "1000", at=datetime(2026, 4, 2, tzinfo=TOKYO))
    statement = statement_issue(company=other, year=2026, month=4, now=ISSUED_AT)
    span = {
        "issued_from": ISSUED_AT - timedelta(hours=1),
        "issued_before": ISSUED_AT + timedelta(hours=1),
    }
    assert statements_not_emailed(**span) == []
    other.billing_contacts.update(gets_statements=True)
    assert statements_not_emailed(**span) == [statement.pk]
