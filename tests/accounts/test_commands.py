import itertools
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django_celery_beat.models import PeriodicTask

from accounts.models import BillingContact, Company, Membership, Subaccount
from billing.models import CreditLot, LedgerAccount, LedgerTransaction
from billing.reconcile import reconcile
from billing.selectors import company_transactions
from config.schedules import PERIODIC_TASKS
from invoicing.models import CreditNote, Payment, Statement, TopUpReminder

pytestmark = pytest.mark.django_db


def _snapshot():
    User = get_user_model()
    return {
        "companies": sorted(
            Company.objects.values_list("account_code", "name", "mode", "currency", "credit_limit")
        ),
        "subaccounts": sorted(
            Subaccount.objects.values_list("company__account_code", "code", "name")
        ),
        "contacts": sorted(BillingContact.objects.values_list("company__account_code", "email")),
        "memberships": sorted(
            Membership.objects.values_list("user__username", "company__account_code", "role")
        ),
        "users": sorted(
            User.objects.values_list("username", "is_staff", "is_superuser", "password")
        ),
        "user_groups": sorted(
            User.groups.through.objects.values_list("user__username", "group__name")
        ),
        "ledger": sorted(LedgerTransaction.objects.values_list("idempotency_key", "balance_after")),
        "balances": sorted(LedgerAccount.objects.values_list("code", "company_id", "balance")),
        "lots": sorted(CreditLot.objects.values_list("company_id", "source", "remaining")),
        "statements": sorted(
            Statement.objects.values_list("company__account_code", "number", "closing_balance")
        ),
        "topup_reminders": sorted(
            TopUpReminder.objects.values_list("company__account_code", "threshold", "recipients")
        ),
    }


def test_seed_demo_twice_leaves_the_same_data(capsys):
    call_command("seed_demo")
    first = _snapshot()
    call_command("seed_demo")
    assert _snapshot() == first
    modes = {code: mode for code, _, mode, *_ in first["companies"]}
    assert modes == {
        "acme-prepaid": "prepaid",
        "kumo-postpaid": "postpaid",
        "globex-usd": "prepaid",
    }
    assert Company.objects.get(account_code="globex-usd").currency == "USD"
    assert Company.objects.get(account_code="kumo-postpaid").credit_limit.amount > 0
    assert LedgerTransaction.objects.filter(company__account_code="acme-prepaid").exists()
    assert CreditLot.objects.filter(company__account_code="globex-usd", remaining=0).exists()
    # Every ended month of the demo's 90 days has its statement: invoices for the postpaid
    # company, account statements for the prepaid ones.
    kinds = dict(Statement.objects.values_list("company__account_code", "kind").distinct())
    assert kinds == {
        "acme-prepaid": "account_statement",
        "kumo-postpaid": "invoice",
        "globex-usd": "account_statement",
    }
    assert Statement.objects.filter(company__account_code="kumo-postpaid").count() >= 2
    # Each month was issued after it ended and paid before the next was closed: no invoice
    # owes more than its own amount, and each statement shows its month's payments.
    for invoice in Statement.objects.filter(company__account_code="kumo-postpaid"):
        assert invoice.issued_at >= invoice.period_end
        assert invoice.amount_due == invoice.invoice_amount
    paid = Statement.objects.filter(company__account_code="kumo-postpaid", payments__gt=0)
    assert paid.exists() and Payment.objects.exists()
    # One goodwill credit note, settling part of the latest invoice.
    note = CreditNote.objects.get(company__account_code="kumo-postpaid")
    assert note.allocations.get().statement == note.statement
    # Acme's billing team is reminded below ¥10,000, which its credit is above.
    assert first["topup_reminders"] == [
        ("acme-prepaid", Decimal(10000), ["alice@acme.example", "billing@acme.example"])
    ]
    assert reconcile().ok
    # History was posted in the order it happened: in each company's credit history, newest
    # first, every balance after is the one below it plus the row's amount.
    for company in Company.objects.filter(account_code__in=modes):
        rows = list(company_transactions(company))
        for newer, older in itertools.pairwise(rows):
            assert older.balance_after.amount + newer.amount == newer.balance_after.amount
    output = capsys.readouterr().out
    assert "operator" in output and "alice" in output and "tollgate-demo" in output


def test_setup_periodic_tasks_is_idempotent_and_keeps_a_pause():
    call_command("setup_periodic_tasks")
    call_command("setup_periodic_tasks")
    assert set(PeriodicTask.objects.values_list("name", flat=True)) >= set(PERIODIC_TASKS)
    assert PeriodicTask.objects.filter(name__in=PERIODIC_TASKS).count() == len(PERIODIC_TASKS)
    name = next(iter(PERIODIC_TASKS))
    PeriodicTask.objects.filter(name=name).update(enabled=False)
    call_command("setup_periodic_tasks")
    assert PeriodicTask.objects.get(name=name).enabled is False


def test_setup_periodic_tasks_removes_a_schedule_no_longer_declared(settings):
    call_command("setup_periodic_tasks")
    task = PeriodicTask.objects.get(name=next(iter(PERIODIC_TASKS)))
    PeriodicTask.objects.create(
        name="Retired job", task="x.y", crontab=task.crontab, description=task.description
    )
    call_command("setup_periodic_tasks")
    assert not PeriodicTask.objects.filter(name="Retired job").exists()


def test_periodic_schedules_name_real_tasks():
    from config.celery import app

    app.loader.import_default_modules()
    for spec in PERIODIC_TASKS.values():
        assert spec["task"] in app.tasks, spec["task"]


def test_expired_sessions_are_cleared_by_their_task():
    from datetime import timedelta

    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session
    from django.utils import timezone

    from accounts.tasks import sessions_clear_expired

    store = SessionStore()
    store.create()
    Session.objects.filter(pk=store.session_key).update(
        expire_date=timezone.now() - timedelta(days=1)
    )
    assert sessions_clear_expired.delay().get() == 1
    assert sessions_clear_expired.delay().get() == 0
