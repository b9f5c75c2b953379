"""Block notices: when a company is blocked, and when that block is lifted, each billing
contact hears of it after the commit, in their own language, once; a notice that would
come too late (the block already lifted, or still blocked for another reason) is not sent;
the sweep queues a notice whose receiver failed."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core import mail
from djmoney.money import Money

from accounts.models import Company, CompanyBlock
from accounts.services import company_block, company_unblock
from billing.services import ledger
from invoicing import emails, tasks
from invoicing.models import BillingEmail
from tests.factories import CompanyFactory, UserFactory

from .helpers import prepaid_with_two_contacts

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 10, 3, tzinfo=UTC)
Kind, Status = BillingEmail.Kind, BillingEmail.Status


@pytest.fixture
def company():
    return prepaid_with_two_contacts()


def yen(amount) -> Money:
    return Money(Decimal(amount), "JPY")


def grant(company, amount, key):
    return ledger.credits_grant(
        company=company,
        amount=yen(amount),
        source="purchase",
        idempotency_key=key,
        description="Credits",
        now=NOW,
    )


def spend(company, amount, key):
    return ledger.company_charge(
        company=company,
        amount=yen(amount),
        revenue="voice",
        idempotency_key=key,
        description="Usage",
        now=NOW,
    )


def sent_to(address: str):
    return [message for message in mail.outbox if message.to == [address]]


def test_running_out_of_credit_and_topping_up_each_send_one_notice(
    company, django_capture_on_commit_callbacks
):
    grant(company, 1000, "g1")
    with django_capture_on_commit_callbacks(execute=True):
        spend(company, 1000, "c1")  # the credit is used up: blocked
    company.refresh_from_db()
    assert company.status == Company.Status.BLOCKED
    [english] = sent_to("ap@example.com")
    [japanese] = sent_to("keiri@example.jp")
    assert english.subject == f"Your account {company.account_code} is suspended"
    assert "Prepaid credit used up" in english.body and "Add credit in the portal" in english.body
    assert company.account_code in japanese.subject and "停止" in japanese.subject
    assert "Add credit" not in japanese.body

    with django_capture_on_commit_callbacks(execute=True):
        grant(company, 500, "g2")  # lifts the block
    assert [m.subject for m in sent_to("ap@example.com")][1] == (
        f"Your account {company.account_code} is active again"
    )
    assert len(mail.outbox) == 4
    assert set(BillingEmail.objects.values_list("kind", "status")) == {
        (Kind.BLOCKED, Status.SENT),
        (Kind.UNBLOCKED, Status.SENT),
    }


def test_queuing_twice_sends_nothing_more(company, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        block = company_block(
            company=company, reason=CompanyBlock.Reason.MANUAL, actor=UserFactory(), now=NOW
        )
    assert len(mail.outbox) == 2
    with django_capture_on_commit_callbacks(execute=True):
        emails.block_emails_queue(block_id=block.pk, kind=Kind.BLOCKED)
    assert len(mail.outbox) == 2
    assert BillingEmail.objects.count() == 2


def test_a_block_lifted_before_its_notice_went_out_is_not_announced_either_way(
    company, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks():  # queued, the send tasks not run yet
        block = company_block(company=company, reason=CompanyBlock.Reason.OVERDUE, now=NOW)
    company_unblock(company=company, reason=CompanyBlock.Reason.OVERDUE, now=NOW)
    for email in BillingEmail.objects.filter(kind=Kind.BLOCKED):
        assert emails.billing_email_send(email_id=email.pk) is False
    with django_capture_on_commit_callbacks(execute=True):
        emails.block_emails_queue(block_id=block.pk, kind=Kind.UNBLOCKED)
    assert mail.outbox == []
    assert set(BillingEmail.objects.values_list("status", flat=True)) == {Status.NOT_NEEDED}


def test_lifting_one_block_while_another_holds_sends_no_all_clear(
    company, django_capture_on_commit_callbacks
):
    staff = UserFactory()
    with django_capture_on_commit_callbacks(execute=True):
        company_block(company=company, reason=CompanyBlock.Reason.OVERDUE, now=NOW)
        company_block(company=company, reason=CompanyBlock.Reason.MANUAL, actor=staff, now=NOW)
    assert len(mail.outbox) == 4
    with django_capture_on_commit_callbacks(execute=True):
        company_unblock(company=company, reason=CompanyBlock.Reason.OVERDUE, now=NOW)
    assert len(mail.outbox) == 4  # still blocked by staff
    with django_capture_on_commit_callbacks(execute=True):
        company_unblock(company=company, reason=CompanyBlock.Reason.MANUAL, actor=staff, now=NOW)
    assert sorted(m.subject for m in mail.outbox[4:]) == sorted(
        [
            f"Your account {company.account_code} is active again",
            f"アカウント {company.account_code} のご利用を再開しました",
        ]
    )


def test_a_company_without_contacts_gets_nothing(django_capture_on_commit_callbacks):
    company = CompanyFactory()
    with django_capture_on_commit_callbacks(execute=True):
        company_block(company=company, reason=CompanyBlock.Reason.OVERDUE, now=NOW)
    assert not BillingEmail.objects.exists() and mail.outbox == []


def test_the_sweep_queues_a_notice_whose_receiver_failed(
    company, django_capture_on_commit_callbacks, monkeypatch
):
    def broken(**kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(emails, "block_emails_queue", broken)
    with django_capture_on_commit_callbacks(execute=True):
        company_block(company=company, reason=CompanyBlock.Reason.OVERDUE, now=NOW)
    company.refresh_from_db()
    assert company.status == Company.Status.BLOCKED  # the block stands
    assert not BillingEmail.objects.exists()
    monkeypatch.undo()

    with (
        time_machine.travel(NOW + timedelta(minutes=20), tick=False),
        django_capture_on_commit_callbacks(execute=True),
    ):
        tasks.billing_emails_wake()
    assert len(mail.outbox) == 2
    with (
        time_machine.travel(NOW + timedelta(minutes=40), tick=False),
        django_capture_on_commit_callbacks(execute=True),
    ):
        tasks.billing_emails_wake()
    assert len(mail.outbox) == 2
