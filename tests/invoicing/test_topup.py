"""Top-up reminders: one email to each recipient when the company's available credit falls
below the threshold, the next only after it has been back; set and stopped in the portal by
the company's billing users, with clear errors; in the company's language."""

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core import mail
from django.urls import reverse
from djmoney.money import Money

from accounts.models import Company, Membership
from billing.services import ledger
from config.schedules import PERIODIC_TASKS
from invoicing import tasks
from invoicing.models import BillingEmail, TopUpReminder
from invoicing.topup import (
    TopUpReminderError,
    topup_reminder_remove,
    topup_reminder_set,
    topup_reminders_check,
)
from tests.factories import CompanyFactory, MembershipFactory
from tests.factories.billing import charge, grant

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 10, 3, tzinfo=UTC)
URL = "/portal/credits/top-up-reminder/"


@pytest.fixture(autouse=True)
def at_now():
    """Emails are sent, and pages read, at the time of the test's events."""
    with time_machine.travel(NOW, tick=False):
        yield


def yen(amount) -> Money:
    return Money(Decimal(amount), "JPY")


def check(at=NOW, capture=None):
    if capture is None:
        return topup_reminders_check(now=at)
    with capture(execute=True):
        return topup_reminders_check(now=at)


@pytest.fixture
def prepaid():
    company = CompanyFactory(mode=Company.Mode.PREPAID, billing_timezone="Asia/Tokyo")
    grant(company, 10000, now=NOW, key="g1")
    return company


def remind(company, threshold="5000", recipients=("ops@example.com", "cfo@example.com")):
    return topup_reminder_set(
        company=company,
        threshold=Money(Decimal(threshold), company.currency),
        recipients=list(recipients),
        now=NOW,
    )


# --- The check --------------------------------------------------------------------------------


def test_a_fall_below_the_threshold_sends_one_email_to_each_recipient_once(
    prepaid, django_capture_on_commit_callbacks
):
    remind(prepaid)
    assert check(capture=django_capture_on_commit_callbacks).fallen == []
    charge(prepaid, 5001, now=NOW, key="c1")  # ¥4,999 left
    result = check(NOW + timedelta(minutes=1), django_capture_on_commit_callbacks)
    assert result.fallen == [prepaid.pk]
    assert sorted(message.to[0] for message in mail.outbox) == [
        "cfo@example.com",
        "ops@example.com",
    ]
    message = mail.outbox[0]
    assert message.subject == (f"The credit of your account {prepaid.account_code} is below ¥5,000")
    assert "can still spend is ¥4,999, below the ¥5,000" in message.body
    assert "Top up before the credit runs out" in message.body
    # Still below, lower still, checked again and again: nothing more.
    charge(prepaid, 1000, now=NOW, key="c2")
    check(NOW + timedelta(minutes=2), django_capture_on_commit_callbacks)
    check(NOW + timedelta(minutes=3), django_capture_on_commit_callbacks)
    assert len(mail.outbox) == 2
    assert BillingEmail.objects.filter(kind=BillingEmail.Kind.TOPUP).count() == 2


def test_the_next_email_comes_only_after_the_credit_has_been_back(
    prepaid, django_capture_on_commit_callbacks
):
    remind(prepaid, recipients=["ops@example.com"])
    charge(prepaid, 6000, now=NOW, key="c1")
    check(NOW, django_capture_on_commit_callbacks)
    grant(prepaid, 3000, now=NOW, key="g2")  # ¥7,000: back above
    result = check(NOW + timedelta(minutes=1), django_capture_on_commit_callbacks)
    assert result.armed == [prepaid.pk] and result.fallen == []
    assert TopUpReminder.objects.get().below_since is None
    charge(prepaid, 2500, now=NOW, key="c2")  # ¥4,500: falls again
    check(NOW + timedelta(minutes=2), django_capture_on_commit_callbacks)
    assert [message.to for message in mail.outbox] == [["ops@example.com"]] * 2


def test_exactly_at_the_threshold_is_not_below(prepaid, django_capture_on_commit_callbacks):
    remind(prepaid)
    charge(prepaid, 5000, now=NOW, key="c1")  # ¥5,000 left
    assert check(capture=django_capture_on_commit_callbacks).fallen == []
    assert mail.outbox == []


def test_credit_that_expires_counts_as_gone(django_capture_on_commit_callbacks):
    company = CompanyFactory(mode=Company.Mode.PREPAID)
    ledger.credits_grant(
        company=company,
        amount=yen(8000),
        source="purchase",
        idempotency_key="short",
        description="Credits",
        expires_at=NOW + timedelta(days=1),
        now=NOW,
    )
    remind(company)
    assert check(NOW, django_capture_on_commit_callbacks).fallen == []
    # The lot expired; the expiry job has not run yet: it cannot be spent any more.
    assert check(NOW + timedelta(days=2), django_capture_on_commit_callbacks).fallen == [company.pk]


def test_a_reminder_set_while_already_below_waits_for_the_next_fall(
    prepaid, django_capture_on_commit_callbacks
):
    charge(prepaid, 9000, now=NOW, key="c1")  # ¥1,000 left
    reminder = remind(prepaid)
    assert reminder.below_since == NOW
    check(NOW + timedelta(minutes=1), django_capture_on_commit_callbacks)
    assert mail.outbox == []


def test_a_postpaid_company_is_reminded_of_its_headroom_under_the_limit(
    django_capture_on_commit_callbacks,
):
    company = CompanyFactory(mode=Company.Mode.POSTPAID, credit_limit=yen(20000), language="ja")
    remind(company, threshold="3000", recipients=["keiri@example.jp"])
    charge(company, 17500, now=NOW, key="c1")  # ¥2,500 of headroom left
    check(NOW, django_capture_on_commit_callbacks)
    [message] = mail.outbox
    assert company.account_code in message.subject and "を下回りました" in message.subject
    assert "お支払い" in message.body and "Top up" not in message.body


def test_an_email_the_customer_no_longer_needs_is_not_sent(
    prepaid, django_capture_on_commit_callbacks
):
    """Queued for a fall, but the credit came back before the email went out."""
    remind(prepaid, recipients=["ops@example.com"])
    charge(prepaid, 6000, now=NOW, key="c1")
    check(NOW)  # queued; its task would run after the commit, which is not run here
    grant(prepaid, 5000, now=NOW, key="g2")
    [email] = BillingEmail.objects.filter(kind=BillingEmail.Kind.TOPUP)
    assert tasks.billing_email_send(email.pk) is False
    email.refresh_from_db()
    assert email.status == BillingEmail.Status.NOT_NEEDED and mail.outbox == []


def test_the_check_is_one_pass_of_a_few_queries_whatever_the_reminders(
    django_assert_max_num_queries,
):
    companies = [CompanyFactory(mode=Company.Mode.PREPAID) for _ in range(20)]
    for company in companies:
        remind(company)
    # Reminders with companies; unexpired lots (prepaid); headroom reads (none here).
    with django_assert_max_num_queries(2):
        result = topup_reminders_check(now=NOW)
    assert result.reminders == 20 and result.fallen == []


def test_the_check_runs_every_minute_and_the_task_is_safe_to_run_twice(
    prepaid, django_capture_on_commit_callbacks
):
    assert PERIODIC_TASKS["Top-up reminders"] == {
        "task": "invoicing.tasks.topup_reminders_check",
        "crontab": {"minute": "*"},
    }
    remind(prepaid, recipients=["ops@example.com"])
    charge(prepaid, 6000, now=NOW, key="c1")
    with time_machine.travel(NOW + timedelta(minutes=1)):
        with django_capture_on_commit_callbacks(execute=True):
            assert tasks.topup_reminders_check() == 1
        with django_capture_on_commit_callbacks(execute=True):
            assert tasks.topup_reminders_check() == 0
    assert len(mail.outbox) == 1


# --- Setting it -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("threshold", "recipients", "field", "message"),
    [
        ("0", ["a@example.com"], "threshold", "The amount must be more than zero."),
        ("-5", ["a@example.com"], "threshold", "The amount must be more than zero."),
        ("10.5", ["a@example.com"], "threshold", "JPY amounts are whole numbers."),
        ("1000000000000", ["a@example.com"], "threshold", "The amount is too large."),
        ("1000", [], "recipients", "Give at least one email address."),
        ("1000", ["not an address"], "recipients", "“not an address” is not an email address."),
        ("1000", [f"{n}@example.com" for n in range(6)], "recipients", "at most 5 email"),
    ],
)
def test_a_bad_threshold_or_address_is_refused_and_nothing_is_set(
    prepaid, threshold, recipients, field, message
):
    with pytest.raises(TopUpReminderError, match=re.escape(message)) as refused:
        remind(prepaid, threshold=threshold, recipients=recipients)
    assert refused.value.field == field
    assert not TopUpReminder.objects.exists()


def test_an_amount_in_another_currency_or_a_credit_that_cannot_run_out_is_refused(prepaid):
    with pytest.raises(TopUpReminderError, match="in your account's currency, JPY"):
        topup_reminder_set(
            company=prepaid, threshold=Money(50, "USD"), recipients=["a@example.com"], now=NOW
        )
    unlimited = CompanyFactory(mode=Company.Mode.POSTPAID, credit_limit=None)
    with pytest.raises(TopUpReminderError, match="no credit limit"):
        remind(unlimited)
    assert not TopUpReminder.objects.exists()


def test_addresses_are_kept_once_each_and_a_stopped_reminder_sends_nothing(
    prepaid, django_capture_on_commit_callbacks
):
    reminder = remind(prepaid, recipients=[" Ops@example.com ", "ops@EXAMPLE.com", ""])
    assert reminder.recipients == ["Ops@example.com"]
    assert topup_reminder_remove(company=prepaid) is True
    assert topup_reminder_remove(company=prepaid) is False
    charge(prepaid, 9000, now=NOW, key="c1")
    assert check(capture=django_capture_on_commit_callbacks).reminders == 0
    assert mail.outbox == []


# --- The portal -------------------------------------------------------------------------------


def signed_in(client, company, role=Membership.Role.BILLING):
    membership = MembershipFactory(company=company, role=role, user__email="me@example.com")
    client.force_login(membership.user)
    return membership


def test_billing_users_set_the_reminder_and_credits_shows_it(client, prepaid):
    signed_in(client, prepaid)
    page = client.get(URL)
    assert page.status_code == 200
    assert "me@example.com" in page.text  # the user's own address, to start with
    assert "Your available credit is ¥10,000 now." in page.text
    response = client.post(
        URL, {"threshold": "3000", "recipients": "ops@example.com\nme@example.com"}
    )
    assert response.status_code == 302 and response["Location"].endswith("/portal/credits/#topup")
    reminder = TopUpReminder.objects.get(company=prepaid)
    assert reminder.threshold == yen(3000)
    assert reminder.recipients == ["ops@example.com", "me@example.com"]
    credits = client.get("/portal/credits/").text
    assert (
        "We email ops@example.com, me@example.com when your available credit falls below ¥3,000."
        in credits
    )


def test_a_refused_amount_shows_the_form_again_with_the_reason(client, prepaid):
    signed_in(client, prepaid)
    response = client.post(URL, {"threshold": "12.5", "recipients": "ops@example.com"})
    assert response.status_code == 400
    assert "JPY amounts are whole numbers." in response.text
    assert "ops@example.com" in response.text
    response = client.post(URL, {"threshold": "abc", "recipients": "x"})
    assert response.status_code == 400 and "Enter a number." in response.text
    assert not TopUpReminder.objects.exists()


def test_stopping_in_the_portal(client, prepaid):
    remind(prepaid)
    signed_in(client, prepaid)
    page = client.get(URL).text
    assert "Stop the reminder" in page
    # The amount as yen are written, not as the column keeps it (5000.0000).
    assert 'value="5000"' in page and "falls below (JPY)" in page
    response = client.post(URL, {"action": "stop"})
    assert response.status_code == 302
    assert TopUpReminder.objects.get().recipients == []
    assert "Set up a reminder" in client.get("/portal/credits/").text


def test_members_without_billing_rights_cannot_set_it(client, prepaid):
    signed_in(client, prepaid, role=Membership.Role.MEMBER)
    assert client.post(URL, {"threshold": "3000", "recipients": "a@example.com"}).status_code == 403
    assert not TopUpReminder.objects.exists()


def test_the_reminder_set_is_always_the_users_own_companys(client, prepaid):
    other = CompanyFactory(mode=Company.Mode.PREPAID)
    remind(other, recipients=["theirs@example.com"])
    signed_in(client, prepaid)
    assert "theirs@example.com" not in client.get(URL).text
    client.post(URL, {"threshold": "3000", "recipients": "mine@example.com"})
    assert TopUpReminder.objects.get(company=other).recipients == ["theirs@example.com"]
    assert TopUpReminder.objects.get(company=prepaid).recipients == ["mine@example.com"]


def test_a_company_whose_credit_cannot_run_out_is_told_so(client):
    company = CompanyFactory(mode=Company.Mode.POSTPAID, credit_limit=None)
    signed_in(client, company)
    assert "its credit cannot run out" in client.get(URL).text
    assert "Top-up reminder" not in client.get("/portal/credits/").text
    response = client.post(URL, {"threshold": "3000", "recipients": "a@example.com"})
    assert response.status_code == 400 and "its credit cannot run out" in response.text
    assert reverse("portal:topup_reminder") == URL


def test_staff_read_the_reminders_in_the_admin(admin_client, prepaid):
    remind(prepaid)
    page = admin_client.get(reverse("admin:invoicing_topupreminder_changelist")).text
    assert "ops@example.com, cfo@example.com" in page and "¥5,000" in page
    detail = admin_client.get(
        reverse("admin:invoicing_topupreminder_change", args=[TopUpReminder.objects.get().pk])
    )
    assert detail.status_code == 200 and "ops@example.com, cfo@example.com" in detail.text


def test_many_falls_at_once_cost_a_fixed_number_of_queries(django_assert_max_num_queries):
    companies = [CompanyFactory(mode=Company.Mode.PREPAID) for _ in range(20)]
    for number, company in enumerate(companies):
        remind(company, threshold="100")
        grant(company, 50, now=NOW, key=f"g{number}")
    TopUpReminder.objects.update(below_since=None)  # armed, with ¥50 left of ¥100: all fall
    # Reminders; lots; the locked reminders; marking the falls; the emails inserted and
    # read back; the savepoint and its release.
    with django_assert_max_num_queries(8):
        result = topup_reminders_check(now=NOW)
    assert len(result.fallen) == 20
    assert BillingEmail.objects.filter(kind=BillingEmail.Kind.TOPUP).count() == 40
