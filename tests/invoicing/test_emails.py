"""Statement emails: sent to every billing contact after the issuing transaction commits, in
the contact's language, with the PDF; recorded, sent once however often a task runs,
retried on failure, and resent by staff from the admin."""

from datetime import UTC, datetime, timedelta
from smtplib import SMTPServerDisconnected
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.contrib.admin.models import LogEntry
from django.core import mail
from django.core.mail.backends.locmem import EmailBackend
from django.urls import reverse
from kombu.exceptions import OperationalError as KombuOperationalError

from accounts.models import Company
from config import celery_app
from invoicing import tasks
from invoicing.models import BillingEmail, Statement
from invoicing.services import statement_issue, statements_issue
from tests.factories import BillingContactFactory, CompanyFactory

from .helpers import fee, grant

pytestmark = pytest.mark.django_db

TOKYO = ZoneInfo("Asia/Tokyo")
ISSUED_AT = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)
Status = BillingEmail.Status


def postpaid_company(**fields) -> Company:
    company = CompanyFactory(
        mode=Company.Mode.POSTPAID, created_at=datetime(2025, 1, 1, tzinfo=UTC), **fields
    )
    fee(company, "1000", at=datetime(2026, 4, 2, tzinfo=TOKYO))
    return company


def issue(company: Company, capture) -> Statement:
    """Issue the April statement and run what waits for the commit (the emails)."""
    with capture(execute=True):
        return statement_issue(company=company, year=2026, month=4, now=ISSUED_AT)


def pdf_attachment(message) -> tuple[str, bytes, str]:
    [(filename, content, mimetype)] = message.attachments
    return filename, content, mimetype


def html_part(message) -> str:
    [(html, mimetype)] = message.alternatives
    assert mimetype == "text/html"
    return html


def test_issuing_emails_each_contact_after_commit_with_the_pdf(django_capture_on_commit_callbacks):
    company = postpaid_company()
    BillingContactFactory(company=company, email="ap@example.com", name="Aiko Sato")
    BillingContactFactory(company=company, email="cfo@example.com", name="")
    with django_capture_on_commit_callbacks() as callbacks:
        statement = statement_issue(company=company, year=2026, month=4, now=ISSUED_AT)
    # Nothing before the commit, and one callback for the batch, whatever its size.
    assert mail.outbox == [] and not BillingEmail.objects.exists()
    assert len(callbacks) == 1
    with django_capture_on_commit_callbacks(execute=True):
        callbacks[0]()

    assert sorted(message.to[0] for message in mail.outbox) == [
        "ap@example.com",
        "cfo@example.com",
    ]
    for message in mail.outbox:
        assert message.subject == f"Your invoice {statement.number} from Tollgate Communications"
        filename, content, mimetype = pdf_attachment(message)
        assert filename == f"{statement.number}.pdf" and mimetype == "application/pdf"
        assert content.startswith(b"%PDF")
        assert "Total due: ¥1,100" in message.body
        assert "Due date: May 31, 2026" in message.body
        assert f"quoting the invoice number {statement.number}" in message.body
        assert "¥1,100" in html_part(message)
    assert "Dear Aiko Sato," in mail.outbox[0].body
    assert "Hello," in mail.outbox[1].body
    emails = BillingEmail.objects.order_by("id")
    assert [(e.kind, e.status, e.attempts) for e in emails] == [
        (BillingEmail.Kind.STATEMENT, Status.SENT, 1)
    ] * 2
    assert all(e.sent_at is not None and e.requested_by is None for e in emails)


def test_a_japanese_contact_gets_a_japanese_subject_and_body(django_capture_on_commit_callbacks):
    company = postpaid_company()
    BillingContactFactory(company=company, name="佐藤 愛子", language="ja")
    statement = issue(company, django_capture_on_commit_callbacks)
    [message] = mail.outbox
    assert message.subject == f"【Tollgate Communications】請求書 {statement.number} のご案内"
    assert message.body.startswith("佐藤 愛子 様")
    assert "2026年4月分の請求書" in message.body
    assert "ご請求金額: ￥1,100" in message.body
    assert "支払期限: 2026年5月31日" in message.body
    assert "Total due" not in message.body and "invoice" not in message.body
    assert "支払期限" in html_part(message)
    assert BillingEmail.objects.get().language == "ja"


def test_a_prepaid_account_statement_is_emailed_without_anything_due(
    django_capture_on_commit_callbacks,
):
    company = CompanyFactory(created_at=datetime(2025, 1, 1, tzinfo=UTC))
    grant(company, "5000", at=datetime(2026, 4, 1, tzinfo=TOKYO))
    fee(company, "1000", at=datetime(2026, 4, 2, tzinfo=TOKYO))
    BillingContactFactory(company=company)
    statement = issue(company, django_capture_on_commit_callbacks)
    [message] = mail.outbox
    assert message.subject == (
        f"Your account statement {statement.number} from Tollgate Communications"
    )
    assert "Credit balance: ¥4,000" in message.body
    assert "nothing is due" in message.body
    assert "Total due" not in message.body and "Due date" not in message.body
    assert pdf_attachment(message)[1].startswith(b"%PDF")


def test_a_company_without_contacts_gets_nothing_and_nothing_fails(
    django_capture_on_commit_callbacks,
):
    issue(postpaid_company(), django_capture_on_commit_callbacks)
    assert mail.outbox == []
    assert not BillingEmail.objects.exists()


def test_a_batch_emails_every_company_and_runs_no_query_per_statement_before_commit(
    django_capture_on_commit_callbacks,
):
    companies = [postpaid_company() for _ in range(3)]
    for company in companies:
        BillingContactFactory(company=company)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        statements_issue(
            company_ids=[company.pk for company in companies], year=2026, month=4, now=ISSUED_AT
        )
    # One callback for the batch, then one per email it queued.
    assert len(callbacks) == 1 + 3
    assert len(mail.outbox) == 3


def test_running_the_tasks_twice_sends_each_email_once(django_capture_on_commit_callbacks):
    company = postpaid_company()
    BillingContactFactory(company=company)
    BillingContactFactory(company=company)
    statement = issue(company, django_capture_on_commit_callbacks)
    assert len(mail.outbox) == 2
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.statement_emails_queue([statement.pk]) == 0  # nothing left queued
        for email in BillingEmail.objects.all():
            assert tasks.billing_email_send(email.pk) is False
    assert len(mail.outbox) == 2
    assert BillingEmail.objects.count() == 2


@pytest.fixture
def eager_retries():
    """Eager tasks retry inline, as a worker would retry them from the broker. (With eager
    exceptions propagating, the test setting, a retry is raised to the caller instead.)"""
    propagates = celery_app.conf.task_eager_propagates
    celery_app.conf.task_eager_propagates = False
    yield
    celery_app.conf.task_eager_propagates = propagates


def test_a_failing_send_is_recorded_as_failed_then_retried(
    django_capture_on_commit_callbacks, monkeypatch, eager_retries
):
    company = postpaid_company()
    BillingContactFactory(company=company, email="ap@example.com")
    real_send = EmailBackend.send_messages
    seen = []

    def down_once(backend, messages):
        seen.append(BillingEmail.objects.get().status)
        if len(seen) == 1:
            raise SMTPServerDisconnected("Connection unexpectedly closed")
        return real_send(backend, messages)

    monkeypatch.setattr(EmailBackend, "send_messages", down_once)
    issue(company, django_capture_on_commit_callbacks)
    email = BillingEmail.objects.get()
    assert seen == [Status.SENDING, Status.SENDING]
    assert (email.status, email.attempts, email.last_error) == (Status.SENT, 2, "")
    assert len(mail.outbox) == 1


def test_a_send_that_keeps_failing_stays_failed_with_its_error(
    django_capture_on_commit_callbacks, monkeypatch, eager_retries
):
    company = postpaid_company()
    BillingContactFactory(company=company)

    def down(backend, messages):
        raise SMTPServerDisconnected("Connection unexpectedly closed")

    monkeypatch.setattr(EmailBackend, "send_messages", down)
    issue(company, django_capture_on_commit_callbacks)
    email = BillingEmail.objects.get()
    assert email.status == Status.FAILED
    assert email.attempts == 1 + tasks.billing_email_send.max_retries
    assert "Connection unexpectedly closed" in email.last_error
    assert mail.outbox == []


def test_an_email_whose_task_was_lost_is_sent_by_the_sweep_once(
    django_capture_on_commit_callbacks,
):
    company = postpaid_company()
    BillingContactFactory(company=company, email="lost@example.com")
    BillingContactFactory(company=company, email="busy@example.com")
    with (
        time_machine.travel(ISSUED_AT, tick=False),
        django_capture_on_commit_callbacks(),  # the send tasks never run: they are lost
    ):
        statement = statement_issue(company=company, year=2026, month=4, now=ISSUED_AT)
        tasks.statement_emails_queue([statement.pk])
    busy = BillingEmail.objects.get(recipient="busy@example.com")
    # A worker is sending "busy" right now: its recent claim must not be taken over.
    BillingEmail.objects.filter(pk=busy.pk).update(
        status=Status.SENDING, claimed_at=ISSUED_AT + timedelta(minutes=59)
    )
    with (
        time_machine.travel(ISSUED_AT + timedelta(hours=1), tick=False),
        django_capture_on_commit_callbacks(execute=True),
    ):
        assert tasks.billing_emails_wake() == 1
    assert [message.to for message in mail.outbox] == [["lost@example.com"]]
    # The busy worker died: once its claim is old, the sweep sends it (at worst a duplicate).
    with (
        time_machine.travel(ISSUED_AT + timedelta(hours=2), tick=False),
        django_capture_on_commit_callbacks(execute=True),
    ):
        assert tasks.billing_emails_wake() == 1
    assert [message.to for message in mail.outbox][1:] == [["busy@example.com"]]
    busy.refresh_from_db()
    assert (busy.status, busy.attempts) == (Status.SENT, 1)


def test_a_broker_down_at_issue_fails_nothing_and_the_sweep_emails_the_statement_later(
    django_capture_on_commit_callbacks, monkeypatch
):
    company = postpaid_company()
    BillingContactFactory(company=company)
    without_contacts = postpaid_company()

    def broker_down(*args, **kwargs):
        raise KombuOperationalError("Error 111 connecting to 127.0.0.1:6379")

    monkeypatch.setattr(tasks.statement_emails_queue, "delay", broker_down)
    with time_machine.travel(ISSUED_AT, tick=False):
        statement = issue(company, django_capture_on_commit_callbacks)
        issue(without_contacts, django_capture_on_commit_callbacks)
    assert not BillingEmail.objects.exists()
    monkeypatch.undo()

    def sweep_at(after: timedelta) -> int:
        with (
            time_machine.travel(ISSUED_AT + after, tick=False),
            django_capture_on_commit_callbacks(execute=True),
        ):
            return tasks.billing_emails_wake()

    assert sweep_at(timedelta(minutes=10)) == 0  # its task may still be on its way
    assert sweep_at(timedelta(hours=1)) == 1
    assert [message.subject for message in mail.outbox] == [
        f"Your invoice {statement.number} from Tollgate Communications"
    ]
    assert sweep_at(timedelta(hours=2)) == 0
    assert len(mail.outbox) == 1


# --- Admin ---------------------------------------------------------------------------------


def test_staff_resend_from_the_admin_after_a_confirmation_and_it_is_recorded(
    admin_client, admin_user, django_capture_on_commit_callbacks, django_assert_max_num_queries
):
    company = postpaid_company()
    BillingContactFactory(company=company, email="ap@example.com")
    BillingContactFactory(company=company, email="cfo@example.com", language="ja")
    statement = issue(company, django_capture_on_commit_callbacks)
    assert len(mail.outbox) == 2
    changelist = reverse("admin:invoicing_statement_changelist")
    action = {"action": "resend_statement_email", "_selected_action": [statement.pk]}

    confirm = admin_client.post(changelist, action)
    assert confirm.status_code == 200
    assert "ap@example.com" in confirm.text and "cfo@example.com" in confirm.text
    assert len(mail.outbox) == 2

    with django_capture_on_commit_callbacks(execute=True):
        done = admin_client.post(changelist, {**action, "post": "yes"}, follow=True)
    assert "2 emails queued." in done.text
    assert len(mail.outbox) == 4
    resent = BillingEmail.objects.filter(requested_by=admin_user)
    assert sorted(resent.values_list("recipient", "status")) == [
        ("ap@example.com", Status.SENT),
        ("cfo@example.com", Status.SENT),
    ]
    log = LogEntry.objects.get(object_id=str(statement.pk))
    assert log.user == admin_user and "ap@example.com" in log.get_change_message()

    page = admin_client.get(reverse("admin:invoicing_statement_change", args=[statement.pk]))
    # Sent at issue, then again: both shown on the statement's page.
    assert page.text.count('<td class="field-recipient">') == 4
    assert page.text.count("<p>cfo@example.com</p>") == 2
    # The list of emails: statement and requester joined, not read row by row.
    with django_assert_max_num_queries(10):
        assert (
            admin_client.get(reverse("admin:invoicing_billingemail_changelist")).status_code == 200
        )


def test_resending_for_a_company_without_contacts_says_so(
    admin_client, django_capture_on_commit_callbacks
):
    statement = issue(postpaid_company(), django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        done = admin_client.post(
            reverse("admin:invoicing_statement_changelist"),
            {"action": "resend_statement_email", "_selected_action": [statement.pk], "post": "yes"},
            follow=True,
        )
    assert f"No billing contact, nothing sent: {statement.number}." in done.text
    assert mail.outbox == [] and not LogEntry.objects.exists()


def test_staff_without_the_permission_cannot_resend(client, django_capture_on_commit_callbacks):
    from django.contrib.auth.models import Permission

    from tests.factories import UserFactory

    statement = issue(postpaid_company(), django_capture_on_commit_callbacks)
    viewer = UserFactory(is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_statement"))
    client.force_login(viewer)
    page = client.get(reverse("admin:invoicing_statement_changelist"))
    assert page.status_code == 200 and "resend_statement_email" not in page.text
    assert statement.number in page.text
