"""Overdue invoices: reminders at set days after the due date (each once), the overdue block
after the grace period, days counted in the company's billing time zone, a batch in a fixed
number of queries, and runs twice or at once changing nothing more."""

from datetime import UTC, date, datetime, time, timedelta
from io import StringIO
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core import mail
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from djmoney.money import Money

from accounts.models import Company, CompanyBlock
from accounts.services import company_block
from invoicing import tasks
from invoicing.credit_notes import credit_note_issue
from invoicing.dunning import dunning_run, reminder_due
from invoicing.models import BillingEmail, Statement
from invoicing.payments import payment_record
from invoicing.services import statement_issue
from tests.factories import BillingContactFactory, CompanyFactory, UserFactory

from .helpers import fee, grant

pytestmark = pytest.mark.django_db

TOKYO = ZoneInfo("Asia/Tokyo")
NEW_YORK = ZoneInfo("America/New_York")
Kind = BillingEmail.Kind


@pytest.fixture(autouse=True)
def dunning_settings(settings):
    settings.TOLLGATE_OVERDUE_REMINDER_DAYS = [1, 7, 14]
    settings.TOLLGATE_OVERDUE_BLOCK_AFTER_DAYS = 21


def invoiced(month: int = 4, *, zone: str = "Asia/Tokyo", contacts=("en",), **fields):
    """A postpaid company with a fee in ``month`` of 2026 and that month's invoice, due the
    last day of the next month; one billing contact per language given."""
    tz = ZoneInfo(zone)
    company = CompanyFactory(
        mode=Company.Mode.POSTPAID,
        billing_timezone=zone,
        created_at=datetime(2025, 1, 1, tzinfo=UTC),
        **fields,
    )
    fee(
        company,
        "1000" if company.currency == "JPY" else "10.00",
        at=datetime(2026, month, 2, tzinfo=tz),
    )
    for language in contacts:
        BillingContactFactory(company=company, language=language)
    invoice = statement_issue(
        company=company, year=2026, month=month, now=datetime(2026, month + 1, 3, tzinfo=UTC)
    )
    return company, invoice


def run_hourly_task_at(instant: datetime, capture) -> None:
    """The beat task at ``instant``, with what it queues after commit (the batches, then
    the emails) run as a worker would."""
    with time_machine.travel(instant, tick=False), capture(execute=True):
        tasks.dunning_run_due()


def reminders(invoice: Statement) -> list[tuple[str, int, str]]:
    return list(
        BillingEmail.objects.filter(statement=invoice, kind=Kind.REMINDER)
        .order_by("reminder_days", "recipient")
        .values_list("recipient", "reminder_days", "status")
    )


def is_blocked(company: Company) -> bool:
    """Blocked for an overdue invoice (and so refused by the authorize API)."""
    company.refresh_from_db()
    overdue = CompanyBlock.objects.filter(
        company=company, reason=CompanyBlock.Reason.OVERDUE, lifted_at=None
    )
    return company.status == Company.Status.BLOCKED and overdue.exists()


def test_the_latest_reminder_day_reached_is_the_one_due():
    due = {days: reminder_due(days, [1, 7, 14]) for days in (0, 1, 6, 7, 13, 14, 30)}
    assert due == {0: None, 1: 1, 6: 1, 7: 7, 13: 7, 14: 14, 30: 14}


def test_reminders_go_out_on_each_day_once_then_the_company_is_blocked(
    django_capture_on_commit_callbacks,
):
    company, invoice = invoiced(contacts=("en", "ja"))
    assert invoice.due_date == date(2026, 5, 31)
    sent_on: dict[int, list[str]] = {}
    for days in range(0, 24):
        # 09:00 in Tokyo, twice a day: the second run must change nothing.
        morning = datetime.combine(invoice.due_date + timedelta(days=days), time(9), TOKYO)
        before = len(mail.outbox)
        run_hourly_task_at(morning, django_capture_on_commit_callbacks)
        run_hourly_task_at(morning + timedelta(hours=1), django_capture_on_commit_callbacks)
        if len(mail.outbox) > before:
            sent_on[days] = [message.subject for message in mail.outbox[before:]]
        assert is_blocked(company) == (days >= 21), f"day {days}"

    assert sorted(sent_on) == [1, 7, 14, 21]
    # On the 21st day the block's notice, to each contact in their language.
    assert sorted(sent_on.pop(21)) == sorted(
        [
            f"Your account {company.account_code} is suspended",
            f"アカウント {company.account_code} のご利用を停止しました",
        ]
    )
    for subjects in sent_on.values():
        assert sorted(subjects) == sorted(
            [
                f"Reminder: invoice {invoice.number} is overdue",
                f"【お支払いのお願い】請求書 {invoice.number} の支払期限が過ぎています",
            ]
        )
    assert [(days, status) for _to, days, status in reminders(invoice)] == [
        (1, "sent"),
        (1, "sent"),
        (7, "sent"),
        (7, "sent"),
        (14, "sent"),
        (14, "sent"),
    ]
    block = CompanyBlock.objects.get(company=company)
    assert invoice.number in block.note
    assert block.blocked_at == datetime(2026, 6, 21, 9, tzinfo=TOKYO)


def test_a_reminder_states_the_invoice_due_date_open_amount_and_how_to_pay(
    django_capture_on_commit_callbacks, settings
):
    settings.TOLLGATE_BANK_TRANSFER_DETAILS = "Mizuho Bank, Shibuya branch\nOrdinary 1234567"
    company, invoice = invoiced(contacts=("en", "ja"))
    payment_record(
        company=company,
        amount=Money(400, "JPY"),
        received_on=date(2026, 6, 1),
        reference="part",
        now=datetime(2026, 6, 1, 3, tzinfo=UTC),
    )
    run_hourly_task_at(datetime(2026, 6, 7, 9, tzinfo=TOKYO), django_capture_on_commit_callbacks)
    english, japanese = sorted(mail.outbox, key=lambda message: "Reminder" not in message.subject)
    assert f"invoice {invoice.number}, due on May 31, 2026, has not been paid" in english.body
    assert "Amount still open: ¥700" in english.body
    assert "Please pay by bank transfer" in english.body and "Ordinary 1234567" in english.body
    assert "If it is still unpaid on June 21, 2026, your use of the service will be" in (
        english.body
    )
    assert not english.attachments
    assert "未払い残額: ￥700" in japanese.body
    assert "支払期限 2026年5月31日 の請求書" in japanese.body
    assert "お振込先" in japanese.body
    assert "￥700" in japanese.alternatives[0][0]


def test_a_paid_invoice_is_neither_reminded_again_nor_blocked(
    django_capture_on_commit_callbacks,
):
    company, invoice = invoiced()
    run_hourly_task_at(datetime(2026, 6, 1, 9, tzinfo=TOKYO), django_capture_on_commit_callbacks)
    assert len(mail.outbox) == 1
    payment_record(
        company=company,
        amount=invoice.invoice_amount,
        received_on=date(2026, 6, 3),
        reference="paid",
        now=datetime(2026, 6, 3, 3, tzinfo=UTC),
    )
    for day in (7, 14, 21, 30):
        run_hourly_task_at(
            datetime(2026, 6, day, 9, tzinfo=TOKYO), django_capture_on_commit_callbacks
        )
    assert len(mail.outbox) == 1
    assert not is_blocked(company)


def test_a_reminder_queued_before_the_payment_is_not_sent_after_it(
    django_capture_on_commit_callbacks,
):
    company, invoice = invoiced()
    with django_capture_on_commit_callbacks():  # queued; its send task not run yet
        dunning_run(company_ids=[company.pk], now=datetime(2026, 6, 1, 9, tzinfo=TOKYO))
    payment_record(
        company=company,
        amount=invoice.invoice_amount,
        received_on=date(2026, 6, 1),
        reference="paid",
        now=datetime(2026, 6, 1, 5, tzinfo=UTC),
    )
    email = BillingEmail.objects.get()
    assert tasks.billing_email_send(email.pk) is False
    email.refresh_from_db()
    assert email.status == BillingEmail.Status.NOT_NEEDED
    assert mail.outbox == []


def test_a_company_in_credit_overall_is_not_blocked_though_an_invoice_looks_open(
    django_capture_on_commit_callbacks,
):
    company, invoice = invoiced()
    # An operator's grant covers the invoice without being allocated to it (a grant lowers
    # the next invoice): the invoice stays "pending", the company owes nothing overall.
    grant(company, invoice.invoice_amount.amount, at=datetime(2026, 6, 2, tzinfo=UTC))
    run_hourly_task_at(datetime(2026, 6, 25, 9, tzinfo=TOKYO), django_capture_on_commit_callbacks)
    invoice.refresh_from_db()
    assert invoice.payment_status == Statement.PaymentStatus.PENDING
    assert not is_blocked(company)
    assert mail.outbox == []


def test_a_credit_note_settles_the_invoice_so_no_reminder_and_no_block(
    django_capture_on_commit_callbacks,
):
    company, invoice = invoiced()
    credit_note_issue(
        company=company,
        amount=invoice.invoice_amount,
        reason="Billed twice",
        statement=invoice,
        actor=UserFactory(),
        now=datetime(2026, 6, 2, tzinfo=UTC),
    )
    run_hourly_task_at(datetime(2026, 6, 25, 9, tzinfo=TOKYO), django_capture_on_commit_callbacks)
    invoice.refresh_from_db()
    assert invoice.payment_status == Statement.PaymentStatus.PAID
    assert not is_blocked(company)
    assert mail.outbox == []


def test_an_existing_overdue_block_is_kept_not_set_twice(django_capture_on_commit_callbacks):
    company, _invoice = invoiced()
    first = company_block(
        company=company, reason=CompanyBlock.Reason.OVERDUE, now=datetime(2026, 6, 22, tzinfo=UTC)
    )
    result = dunning_run(company_ids=[company.pk], now=datetime(2026, 6, 25, tzinfo=UTC))
    assert result.blocked == []
    assert list(CompanyBlock.objects.all()) == [first]


def test_days_count_in_the_billing_time_zone_at_month_end_and_after_dst(
    django_capture_on_commit_callbacks,
):
    # New York: the February invoice is due 31 March, after the switch to summer time (8
    # March). Tokyo: the January invoice is due 28 February.
    new_york, ny_invoice = invoiced(2, zone="America/New_York", currency="USD")
    tokyo, tokyo_invoice = invoiced(1)
    assert (ny_invoice.due_date, tokyo_invoice.due_date) == (date(2026, 3, 31), date(2026, 2, 28))

    # 28 February 23:30 in Tokyo: not overdue yet; 1 March 00:30: the first day.
    run_hourly_task_at(
        datetime(2026, 2, 28, 14, 30, tzinfo=UTC), django_capture_on_commit_callbacks
    )
    assert reminders(tokyo_invoice) == []
    run_hourly_task_at(
        datetime(2026, 2, 28, 15, 30, tzinfo=UTC), django_capture_on_commit_callbacks
    )
    assert [days for _to, days, _s in reminders(tokyo_invoice)] == [1]

    # 31 March 23:30 in New York (EDT, UTC-4): not yet; 1 April 00:30: the first day.
    run_hourly_task_at(datetime(2026, 4, 1, 3, 30, tzinfo=UTC), django_capture_on_commit_callbacks)
    assert reminders(ny_invoice) == []
    run_hourly_task_at(datetime(2026, 4, 1, 4, 30, tzinfo=UTC), django_capture_on_commit_callbacks)
    assert [days for _to, days, _s in reminders(ny_invoice)] == [1]
    assert datetime(2026, 4, 1, 4, 30, tzinfo=UTC).astimezone(NEW_YORK).day == 1

    # Blocked from the 21st day after the due date, local midnight: 21 April 04:00 UTC.
    run_hourly_task_at(datetime(2026, 4, 21, 3, 59, tzinfo=UTC), django_capture_on_commit_callbacks)
    assert not is_blocked(new_york)
    run_hourly_task_at(datetime(2026, 4, 21, 4, 1, tzinfo=UTC), django_capture_on_commit_callbacks)
    assert is_blocked(new_york)
    assert is_blocked(tokyo)  # long past its own grace by then


def test_a_company_without_contacts_is_reminded_of_nothing_but_still_blocked(
    django_capture_on_commit_callbacks,
):
    company, invoice = invoiced(contacts=())
    run_hourly_task_at(datetime(2026, 6, 22, 9, tzinfo=TOKYO), django_capture_on_commit_callbacks)
    assert reminders(invoice) == [] and mail.outbox == []
    assert is_blocked(company)


def test_a_run_that_missed_days_sends_only_the_latest_reminder_due(
    django_capture_on_commit_callbacks,
):
    _company, invoice = invoiced()
    run_hourly_task_at(datetime(2026, 6, 16, 9, tzinfo=TOKYO), django_capture_on_commit_callbacks)
    assert [days for _to, days, _s in reminders(invoice)] == [14]
    assert len(mail.outbox) == 1


def test_the_batch_costs_the_same_queries_for_two_or_twenty_invoices(
    django_assert_max_num_queries,
):
    def companies_with_two_overdue_invoices(count: int) -> list[int]:
        ids = []
        for _ in range(count):
            company, _april = invoiced(contacts=("en", "ja"))
            fee(company, "500", at=datetime(2026, 5, 10, tzinfo=TOKYO))
            statement_issue(
                company=company, year=2026, month=5, now=datetime(2026, 6, 2, tzinfo=UTC)
            )
            ids.append(company.pk)
        return ids

    one, ten = companies_with_two_overdue_invoices(1), companies_with_two_overdue_invoices(10)
    # April's invoice is 38 days overdue, May's 8: a reminder each, to each contact.
    now = datetime(2026, 7, 8, 9, tzinfo=TOKYO)
    counted = []
    for ids in (one, ten):
        with django_assert_max_num_queries(10), CaptureQueriesContext(connection) as queries:
            dunning_run(company_ids=ids, now=now, block_after_days=99)
        counted.append(len(queries))
    assert counted[0] == counted[1]
    assert BillingEmail.objects.count() == (1 + 10) * 2 * 2  # companies × invoices × contacts

    # Blocking costs a few queries per company blocked, and nothing more per invoice.
    five = companies_with_two_overdue_invoices(5)
    with django_assert_max_num_queries(counted[0] + 8 * 5):
        result = dunning_run(company_ids=five, now=now)
    assert len(result.blocked) == 5


def test_running_twice_changes_nothing_more(django_capture_on_commit_callbacks):
    company, _invoice = invoiced(contacts=("en", "en"))
    now = datetime(2026, 6, 22, 9, tzinfo=TOKYO)
    with django_capture_on_commit_callbacks(execute=True):
        first = dunning_run(company_ids=[company.pk], now=now)
    with django_capture_on_commit_callbacks(execute=True):
        second = dunning_run(company_ids=[company.pk], now=now)
    assert (len(first.reminders), first.blocked) == (2, [company.pk])
    assert (second.reminders, second.blocked) == ([], [])
    assert len(mail.outbox) == 4  # two reminders, two notices of the block
    assert CompanyBlock.objects.filter(company=company).count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_runs_at_once_remind_and_block_once():
    from .test_races import run_together

    company, invoice = invoiced(contacts=("en", "ja"))
    now = datetime(2026, 6, 22, 9, tzinfo=TOKYO)
    results = run_together([lambda: dunning_run(company_ids=[company.pk], now=now)] * 2)
    assert sorted(len(result.blocked) for result in results) == [0, 1]
    assert BillingEmail.objects.filter(kind=Kind.REMINDER).count() == 2
    # The invoice's own emails went out when it was issued; each reminder once, after commit.
    reminder_subjects = {
        f"Reminder: invoice {invoice.number} is overdue",
        f"【お支払いのお願い】請求書 {invoice.number} の支払期限が過ぎています",
    }
    sent = [message.subject for message in mail.outbox if message.subject in reminder_subjects]
    assert sorted(sent) == sorted(reminder_subjects)
    assert CompanyBlock.objects.filter(company=company).count() == 1


def test_the_command_runs_as_of_a_date_and_refuses_a_bad_one():
    company, _invoice = invoiced()
    out = StringIO()
    call_command("dunning_run", "--date", "2026-06-22", stdout=out)
    assert "1 reminder email(s) queued, 1 company(ies) blocked." in out.getvalue()
    assert is_blocked(company)
    with pytest.raises(CommandError, match="is not a date like 2026-11-30"):
        call_command("dunning_run", "--date", "22/06/2026")


def test_the_command_refuses_a_day_that_has_not_come_anywhere():
    company, _invoice = invoiced()
    sent = len(mail.outbox)
    with pytest.raises(CommandError, match="in the future"):
        call_command("dunning_run", "--date", "9999-12-31")
    assert not is_blocked(company)
    assert len(mail.outbox) == sent
