"""An issued statement and a payment's receipt show the parties as they were at issue
(``Statement.parties``, ``Payment.parties``): the company renamed, moved to another billing
time zone or given other contacts, and the operator's details changed, leave the statement's
web page, PDF and admin page, and the receipt, as they were."""

import importlib
import io
from datetime import UTC, date, datetime
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from django.apps import apps
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.test import override_settings
from django.urls import reverse
from djmoney.money import Money
from pypdf import PdfReader

from accounts.models import BillingContact, Company, Membership
from invoicing.models import Payment, Statement
from invoicing.payments import payment_record
from invoicing.services import statement_issue, statements_issue
from tests.factories import BillingContactFactory, CompanyFactory, MembershipFactory

from .helpers import fee

pytestmark = pytest.mark.django_db

TOKYO = ZoneInfo("Asia/Tokyo")
AFTER_ALL = datetime(2027, 1, 1, tzinfo=UTC)
AT_ISSUE = {
    "OPERATOR_NAME": "Kumo Networks KK",
    "TOLLGATE_OPERATOR_ADDRESS": "1-2-3 Shibuya, Tokyo",
    "TOLLGATE_OPERATOR_REGISTRATION": "T1234567890123",
}
LATER = {
    "OPERATOR_NAME": "Renamed Operator Ltd",
    "TOLLGATE_OPERATOR_ADDRESS": "9 Other Street, Osaka",
    "TOLLGATE_OPERATOR_REGISTRATION": "T9999999999999",
}


@pytest.fixture
def issued(client):
    company = CompanyFactory(
        mode=Company.Mode.POSTPAID,
        created_at=datetime(2025, 1, 1, tzinfo=UTC),
        name="Kumo Voice GK",
        billing_timezone="Asia/Tokyo",
    )
    BillingContactFactory(company=company, name="Aiko Sato", email="aiko@kumo.example")
    fee(company, "3000", at=datetime(2026, 4, 1, tzinfo=TOKYO), description="Plan Business, April")
    client.force_login(MembershipFactory(company=company, role=Membership.Role.ADMIN).user)
    with override_settings(**AT_ISSUE):
        return statement_issue(company=company, year=2026, month=4, now=AFTER_ALL)


def change_everything(statement: Statement) -> None:
    """What may change after issue: the company's name and time zone, its contacts."""
    Company.objects.filter(pk=statement.company_id).update(
        name="Renamed Company KK", billing_timezone="America/New_York"
    )
    BillingContact.objects.filter(company_id=statement.company_id).delete()
    BillingContactFactory(
        company_id=statement.company_id, name="Ken Mori", email="ken@renamed.example"
    )


def assert_as_issued(text: str) -> None:
    for shown in (
        "Kumo Voice GK",
        "Aiko Sato",
        "aiko@kumo.example",
        "Kumo Networks KK",
        "1-2-3 Shibuya, Tokyo",
        "T1234567890123",
        "2026-04-01 – 2026-04-30 (Asia/Tokyo)",
    ):
        assert shown in text, shown
    for not_shown in ("Renamed", "Ken Mori", "Osaka", "T9999999999999", "New_York"):
        assert not_shown not in text, not_shown


def test_the_issuing_service_records_the_parties(issued):
    assert Statement.objects.get(pk=issued.pk).parties == {
        "operator": {
            "name": "Kumo Networks KK",
            "address": "1-2-3 Shibuya, Tokyo",
            "registration": "T1234567890123",
            "email": settings.DEFAULT_FROM_EMAIL,
        },
        "company": {
            "name": "Kumo Voice GK",
            "account_code": issued.company.account_code,
            "billing_timezone": "Asia/Tokyo",
        },
        "contact": "Aiko Sato <aiko@kumo.example>",
    }


def test_web_page_and_pdf_show_the_parties_at_issue(client, issued):
    change_everything(issued)
    with override_settings(**LATER):
        page = client.get(reverse("portal:statement", args=[issued.pk])).text
        response = client.get(reverse("portal:statement_pdf", args=[issued.pk]))
    # The portal's own header names the company as it is now; the document below it does not.
    assert "Renamed Company KK" in page.split('class="statement-doc"')[0]
    assert_as_issued(page.split('class="statement-doc"')[1])
    pdf = PdfReader(io.BytesIO(response.content))
    # The PDF's text breaks lines where the layout does; compare it without line breaks.
    assert_as_issued(" ".join("".join(page.extract_text() for page in pdf.pages).split()))


def test_period_stays_in_the_days_of_the_zone_at_issue(issued):
    # Tokyo's April is 2026-03-31 15:00 – 2026-04-30 15:00 UTC: New York's days of it
    # would be 03-31 – 04-29.
    change_everything(issued)
    statement = Statement.objects.get(pk=issued.pk)
    assert (statement.period_first_day.isoformat(), statement.period_last_day.isoformat()) == (
        "2026-04-01",
        "2026-04-30",
    )


def test_admin_shows_the_bill_to_at_issue(admin_client, issued):
    change_everything(issued)
    page = admin_client.get(reverse("admin:invoicing_statement_change", args=[issued.pk])).text
    assert "Kumo Voice GK" in page and "Aiko Sato &lt;aiko@kumo.example&gt;" in page
    assert "2026-04-01 – 2026-04-30 (Asia/Tokyo)" in page


def test_a_company_without_contacts_gets_an_empty_contact(issued):
    company = CompanyFactory(created_at=datetime(2025, 1, 1, tzinfo=UTC))
    [statement] = statements_issue(
        company_ids=[company.pk], year=2026, month=4, now=AFTER_ALL
    ).issued
    assert statement.parties["contact"] == ""
    assert statement.parties["company"]["name"] == company.name


@pytest.mark.postgres
def test_the_migration_records_the_parties_of_statements_issued_before_it(issued):
    """Migration 0007 fills the parties of older statements with the parties as they are,
    holding off the trigger that keeps statements final for that one update only."""
    with connection.cursor() as cursor:
        # The test's transaction has the issue's foreign-key checks pending, and a table
        # with pending trigger events cannot be altered: run them now.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("ALTER TABLE invoicing_statement DISABLE TRIGGER invoicing_statement_final")
        cursor.execute("UPDATE invoicing_statement SET parties = '{}'")
        cursor.execute("ALTER TABLE invoicing_statement ENABLE TRIGGER invoicing_statement_final")
    change_everything(issued)
    migration = importlib.import_module("invoicing.migrations.0007_statement_parties_at_issue")
    with override_settings(**LATER), connection.schema_editor() as editor:
        migration.record_parties(apps, editor)

    parties = Statement.objects.get(pk=issued.pk).parties
    assert parties["company"]["name"] == "Renamed Company KK"
    assert parties["company"]["billing_timezone"] == "America/New_York"
    assert parties["contact"] == "Ken Mori <ken@renamed.example>"
    assert parties["operator"]["registration"] == "T9999999999999"
    # The trigger is on again: the statement is final.
    with pytest.raises(DatabaseError, match="final once issued"), transaction.atomic():
        Statement.objects.filter(pk=issued.pk).update(parties={})


@pytest.fixture
def paid(client, issued):
    with override_settings(**AT_ISSUE):
        return payment_record(
            company=issued.company,
            amount=Money(issued.invoice_amount.amount, issued.currency),
            received_on=date(2026, 12, 20),
            reference="BANK-1",
            now=AFTER_ALL,
        )


def test_a_receipt_shows_the_parties_when_the_payment_was_recorded(client, admin_client, paid):
    assert Payment.objects.get(pk=paid.pk).parties["company"]["name"] == "Kumo Voice GK"
    change_everything(Statement.objects.get(company=paid.company))
    with override_settings(**LATER):
        response = client.get(reverse("portal:payment_receipt", args=[paid.pk]))
        admin_page = admin_client.get(
            reverse("admin:invoicing_payment_change", args=[paid.pk])
        ).text
    pdf = PdfReader(io.BytesIO(response.content))
    text = " ".join("".join(page.extract_text() for page in pdf.pages).split())
    for shown in ("Kumo Voice GK", "Aiko Sato", "Kumo Networks KK", "T1234567890123"):
        assert shown in text, shown
    for not_shown in ("Renamed", "Ken Mori", "T9999999999999"):
        assert not_shown not in text, not_shown
    assert "Kumo Voice GK" in admin_page and "Aiko Sato &lt;aiko@kumo.example&gt;" in admin_page


def test_the_migration_records_the_parties_of_payments_recorded_before_it(paid):
    Payment.objects.filter(pk=paid.pk).update(parties={})
    change_everything(Statement.objects.get(company=paid.company))
    migration = importlib.import_module("invoicing.migrations.0008_payment_parties_at_issue")
    with override_settings(**LATER):
        # It runs no schema statement (SQLite's schema editor cannot open in a test).
        migration.record_parties(apps, SimpleNamespace(connection=connection))
    parties = Payment.objects.get(pk=paid.pk).parties
    assert parties["company"]["name"] == "Renamed Company KK"
    assert parties["contact"] == "Ken Mori <ken@renamed.example>"
    assert parties["operator"]["name"] == "Renamed Operator Ltd"
