"""Credit expiring soon: each billing contact hears once per lot, in their own language, a
week before a lot with credit left expires; not for lots that lived less than that, nor
once the credit is spent or gone."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core import mail
from djmoney.money import Money

from accounts.models import Company
from billing.services import ledger
from config.schedules import PERIODIC_TASKS
from invoicing import tasks
from invoicing.expiry_notices import expiry_notices_queue, lots_to_notice
from invoicing.models import BillingEmail
from tests.factories import BillingContactFactory, CompanyFactory

from .helpers import prepaid_with_two_contacts

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 10, 3, tzinfo=UTC)
Kind, Status = BillingEmail.Kind, BillingEmail.Status


@pytest.fixture(autouse=True)
def at_now():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def company():
    return prepaid_with_two_contacts()


def grant(company, amount, *, granted, expires, key):
    return ledger.credits_grant(
        company=company,
        amount=Money(Decimal(amount), company.currency),
        source="purchase",
        idempotency_key=key,
        description="Credits",
        expires_at=expires,
        now=granted,
    )


def lot_of(result):
    return result.lot


def test_a_lot_expiring_within_a_week_is_noticed_once_to_each_contact(
    company, django_capture_on_commit_callbacks
):
    # Granted 90 days ago, expires in 5 days (2026-06-15 12:00 in Tokyo).
    expires = datetime(2026, 6, 15, 3, tzinfo=UTC)
    grant(company, 3000, granted=NOW - timedelta(days=85), expires=expires, key="g1")
    ledger.company_charge(
        company=company,
        amount=Money(1000, "JPY"),
        revenue="voice",
        idempotency_key="c1",
        description="Usage",
        now=NOW,
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert len(expiry_notices_queue(now=NOW)) == 2
    english = next(message for message in mail.outbox if message.to == ["ap@example.com"])
    japanese = next(message for message in mail.outbox if message.to == ["keiri@example.jp"])
    assert english.subject == (
        f"¥2,000 of credit of your account {company.account_code} expires on 2026-06-15"
    )
    assert "expires on 2026-06-15 12:00 (Asia/Tokyo). What is left of it then is lost." in (
        english.body
    )
    assert "Purchase, ¥3,000" in english.body and "Left: ¥2,000" in english.body
    assert company.account_code in japanese.subject and "失効" in japanese.subject
    # Again, or at the next hourly run: nothing more.
    with django_capture_on_commit_callbacks(execute=True):
        assert expiry_notices_queue(now=NOW) == []
        assert expiry_notices_queue(now=NOW + timedelta(hours=1)) == []
    assert len(mail.outbox) == 2


def test_only_lots_with_credit_left_inside_the_window_that_lived_longer_than_it(company):
    inside = lot_of(
        grant(
            company, 100, granted=NOW - timedelta(days=60), expires=NOW + timedelta(days=7), key="a"
        )
    )
    grant(company, 100, granted=NOW - timedelta(days=60), expires=NOW + timedelta(days=8), key="b")
    # A seven-day trial granted yesterday: its expiry was known when it was given.
    grant(company, 100, granted=NOW - timedelta(days=1), expires=NOW + timedelta(days=6), key="c")
    spent = lot_of(
        grant(
            company, 100, granted=NOW - timedelta(days=60), expires=NOW + timedelta(days=3), key="d"
        )
    )
    spent.remaining = Money(0, "JPY")
    spent.save(update_fields=["remaining"])
    assert [lot.pk for lot in lots_to_notice(NOW)] == [inside.pk]


def test_a_notice_whose_credit_is_spent_before_it_goes_out_is_not_sent(company):
    grant(company, 500, granted=NOW - timedelta(days=60), expires=NOW + timedelta(days=2), key="g1")
    [first, second] = expiry_notices_queue(now=NOW)  # queued; the tasks would run at commit
    ledger.company_charge(
        company=company,
        amount=Money(500, "JPY"),
        revenue="voice",
        idempotency_key="c1",
        description="Usage",
        now=NOW,
    )
    assert tasks.billing_email_send(first) is False
    assert BillingEmail.objects.get(pk=first).status == Status.NOT_NEEDED
    assert mail.outbox == []


def test_a_company_without_contacts_is_skipped_and_its_lot_noticed_once_it_has_one(
    django_capture_on_commit_callbacks,
):
    company = CompanyFactory(mode=Company.Mode.PREPAID)
    grant(company, 500, granted=NOW - timedelta(days=60), expires=NOW + timedelta(days=2), key="g")
    assert expiry_notices_queue(now=NOW) == []
    BillingContactFactory(company=company, email="late@example.com", language="en")
    with django_capture_on_commit_callbacks(execute=True):
        assert len(expiry_notices_queue(now=NOW + timedelta(hours=1))) == 1
    assert [message.to for message in mail.outbox] == [["late@example.com"]]


def test_the_notices_run_every_hour_and_the_task_is_safe_to_run_twice(
    company, django_capture_on_commit_callbacks
):
    assert PERIODIC_TASKS["Credit expiring soon (notices)"] == {
        "task": "invoicing.tasks.expiry_notices_due",
        "crontab": {"minute": "45"},
    }
    grant(company, 500, granted=NOW - timedelta(days=60), expires=NOW + timedelta(days=2), key="g")
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.expiry_notices_due() == 2
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.expiry_notices_due() == 0
    assert len(mail.outbox) == 2
    assert BillingEmail.objects.filter(kind=Kind.EXPIRING, status=Status.SENT).count() == 2
