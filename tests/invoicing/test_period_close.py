"""Closing a month for every company: the command, the hourly task, resuming a killed run,
and the query budget per statement."""

from datetime import UTC, datetime
from io import StringIO
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.management import CommandError, call_command
from djmoney.money import Money

from accounts.models import Company
from billing.reconcile import reconcile
from invoicing import runs, statement_content
from invoicing.models import Statement, StatementRun, StatementRunItem
from invoicing.runs import period_close
from invoicing.services import statements_issue
from invoicing.tasks import statements_close_due
from tests.factories import CompanyFactory

from .helpers import fee, grant, usage

pytestmark = pytest.mark.django_db

TOKYO = ZoneInfo("Asia/Tokyo")
AFTER_ALL = datetime(2027, 1, 1, tzinfo=UTC)


def companies(count: int, **fields) -> list[Company]:
    made = []
    for index in range(count):
        company = CompanyFactory(
            mode=Company.Mode.POSTPAID if index % 2 else Company.Mode.PREPAID,
            created_at=datetime(2025, 1, 1, tzinfo=UTC),
            **fields,
        )
        if company.mode == Company.Mode.PREPAID:
            grant(company, "50000", at=datetime(2026, 3, 28, tzinfo=TOKYO), days=200)
        fee(company, "1000", at=datetime(2026, 4, 1, tzinfo=TOKYO))
        usage(company, "120", at=datetime(2026, 4, 3, tzinfo=TOKYO), quantity=60, records=2)
        usage(company, "30", at=datetime(2026, 4, 3, tzinfo=TOKYO), service="sms", quantity=1)
        made.append(company)
    return made


def test_close_period_command_prints_counts_and_a_second_run_changes_nothing():
    companies(3)
    out = StringIO()
    call_command("close_period", "2026-04", stdout=out)
    assert "3 issued, 0 already issued, 0 failed" in out.getvalue()
    out = StringIO()
    finished = StatementRun.objects.get().finished_at
    call_command("close_period", "2026-04", stdout=out)
    assert "0 issued, 3 already issued" in out.getvalue()
    assert Statement.objects.count() == 3
    run = StatementRun.objects.get()
    assert (run.companies, run.issued, run.failed) == (3, 3, 0)
    assert run.finished_at == finished is not None  # the second run changed nothing at all
    assert reconcile().ok


@pytest.mark.parametrize(
    "bad",
    ["2026-13", "2026-4", "April", "2026-00", "0000-01", "9999-12", "２０２６-０４", "2026-04\n"],
)
def test_close_period_refuses_a_bad_month_in_one_sentence(bad):
    with pytest.raises(CommandError, match="is not a month like 2026-03"):
        call_command("close_period", bad)


def test_close_period_refuses_a_month_that_has_ended_nowhere():
    from datetime import UTC, datetime, timedelta

    later = datetime.now(tz=UTC) + timedelta(days=62)
    with pytest.raises(CommandError, match="has not ended yet in any time zone"):
        call_command("close_period", f"{later:%Y-%m}")
    assert not StatementRun.objects.exists()


def test_a_killed_run_is_resumed_and_issues_each_company_once(monkeypatch):
    made = companies(4)
    real = statement_content.read_usage_quantities
    victim = made[2].pk

    def crash_for_one(drafts):
        if any(draft.company.pk == victim for draft in drafts):
            raise RuntimeError("worker killed")
        return real(drafts)

    monkeypatch.setattr(statement_content, "read_usage_quantities", crash_for_one)
    first = period_close(year=2026, month=4, now=AFTER_ALL)
    assert (first.issued, first.failed) == (3, 1)
    item = StatementRunItem.objects.get(company_id=victim)
    assert item.state == StatementRunItem.State.FAILED and "worker killed" in item.error
    assert first.run.finished_at is None

    monkeypatch.setattr(statement_content, "read_usage_quantities", real)
    second = period_close(year=2026, month=4, now=AFTER_ALL)
    assert (second.issued, second.skipped, second.failed) == (1, 3, 0)
    assert Statement.objects.count() == 4
    assert second.run.finished_at is not None
    numbers = sorted(Statement.objects.values_list("number", flat=True))
    assert numbers == [
        "INV-2026-000001",
        "INV-2026-000002",
        "STM-2026-000001",
        "STM-2026-000002",
    ]


def test_hourly_task_closes_a_month_only_where_it_has_ended(django_capture_on_commit_callbacks):
    tokyo = companies(1)[0]
    new_york = CompanyFactory(
        billing_timezone="America/New_York",
        currency="USD",
        mode=Company.Mode.POSTPAID,
        created_at=datetime(2025, 1, 1, tzinfo=UTC),
    )
    fee(new_york, "10.00", at=datetime(2026, 4, 2, tzinfo=UTC))
    # 1 May 01:00 in Tokyo, still 30 April in New York.
    with (
        time_machine.travel(datetime(2026, 4, 30, 16, 0, tzinfo=UTC), tick=False),
        django_capture_on_commit_callbacks(execute=True),
    ):
        statements_close_due()
    april = Statement.objects.filter(run__year=2026, run__month=4)
    # March has ended everywhere: both got it; April only in Tokyo.
    assert list(april.values_list("company_id", flat=True)) == [tokyo.pk]
    with time_machine.travel(datetime(2026, 5, 1, 5, 0, tzinfo=UTC), tick=False):
        with django_capture_on_commit_callbacks(execute=True):
            statements_close_due()
        with django_capture_on_commit_callbacks(execute=True):
            statements_close_due()  # again: nothing new
    assert april.count() == 2
    assert Statement.objects.count() == 4
    assert april.get(company=new_york).amount_due == Money("11.00", "USD")


def test_a_statement_costs_at_most_ten_queries_in_a_batch(django_assert_max_num_queries):
    made = companies(10)
    ids = [company.pk for company in made]
    with django_assert_max_num_queries(10 * len(ids)):
        result = statements_issue(company_ids=ids, year=2026, month=4, now=AFTER_ALL)
    assert len(result.issued) == 10
    assert reconcile(now=AFTER_ALL).ok


def test_one_statement_alone_stays_within_a_fixed_budget(django_assert_max_num_queries):
    [company] = companies(2)[1:]
    with django_assert_max_num_queries(35):  # ~25 plus savepoints
        statements_issue(company_ids=[company.pk], year=2026, month=4, now=AFTER_ALL)


def test_companies_due_lists_each_company_once_whatever_its_name():
    # Company's default ordering (by name) once made DISTINCT over the time zones return one
    # row per company, and each company was then listed once per company.
    made = companies(4)
    due = runs.companies_due(2026, 4, datetime(2026, 6, 1, tzinfo=UTC))
    assert due == sorted(company.pk for company in made)


def test_a_run_links_statements_issued_outside_it_in_one_query(django_assert_max_num_queries):
    made = companies(4)
    statements_issue(company_ids=[c.pk for c in made], year=2026, month=4, now=AFTER_ALL)
    run = runs.run_prepare(year=2026, month=4, now=AFTER_ALL)
    ids = runs.run_pending(run)
    assert len(ids) == 4
    # The statements exist already: the batch only marks the items, whatever their number.
    with django_assert_max_num_queries(8):  # was 7 + one per company
        statements_issue(company_ids=ids, year=2026, month=4, run=run, now=AFTER_ALL)
    items = StatementRunItem.objects.filter(run=run).select_related("statement")
    assert {item.state for item in items} == {StatementRunItem.State.ISSUED}
    assert {item.company_id: item.statement.company_id for item in items} == {
        c.pk: c.pk for c in made
    }
