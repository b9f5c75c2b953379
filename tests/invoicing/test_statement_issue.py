"""Issuing one company's monthly statement: content from the ledger, balance forward,
tax, invoice credits, prepaid account statements, periods in the billing time zone."""

from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from djmoney.money import Money

from accounts.models import Company
from billing.models import LedgerPosting, RecurringCharge, SeatFee, ServiceFee
from billing.reconcile import reconcile
from billing.selectors import company_balance
from billing.services import ledger, recurring
from invoicing.exceptions import InvoicingError, PeriodNotClosed
from invoicing.models import ImmutableError, Statement, StatementLine
from invoicing.payments import payment_record
from invoicing.selectors import statement_totals
from invoicing.services import statement_issue, statement_period, tax_amount
from tests.factories import CompanyFactory, SubaccountFactory
from tests.factories.rating import PlanFactory
from vouchers.models import InvoiceCredit

from .helpers import fee, grant, summary_adds_up, usage

pytestmark = pytest.mark.django_db

TOKYO = ZoneInfo("Asia/Tokyo")
AFTER_ALL = datetime(2027, 1, 1, tzinfo=UTC)


def tokyo(year, month, day, hour=12):
    return datetime(year, month, day, hour, tzinfo=TOKYO)


def jpy(value) -> Money:
    return Money(Decimal(value), "JPY")


def postpaid(**fields):
    return CompanyFactory(
        mode=Company.Mode.POSTPAID, created_at=datetime(2025, 1, 1, tzinfo=UTC), **fields
    )


def ledger_owed_at(statement: Statement) -> Decimal:
    """What the ledger says the company owed at the statement's period end."""
    total = sum(
        (
            p.amount.amount
            for p in LedgerPosting.objects.filter(
                account__company=statement.company,
                transaction__effective_at__lt=statement.period_end,
                transaction_id__lte=statement.last_transaction_id,
            )
        ),
        Decimal(0),
    )
    return -total


def lines_total(statement: Statement) -> Decimal:
    return sum((line.amount.amount for line in statement.lines.all()), Decimal(0))


def test_balance_forward_carries_across_three_months():
    company = postpaid()
    statements = []
    for month, (plan, calls) in enumerate([("1000", "250"), ("1000", "333"), ("2000", "0")], 4):
        fee(company, plan, at=tokyo(2026, month, 1, 0))
        if calls != "0":
            usage(company, calls, at=tokyo(2026, month, 15), quantity=90, records=3)
        statements.append(statement_issue(company=company, year=2026, month=month, now=AFTER_ALL))

    first, second, third = statements
    assert first.balance_forward.amount == 0
    assert first.new_charges.amount == Decimal("1250")
    assert first.tax.amount == Decimal("125")
    assert first.closing_balance.amount == Decimal("1375")
    assert second.balance_forward == first.closing_balance
    assert third.balance_forward == second.closing_balance
    for statement in statements:
        assert statement.closing_balance.amount == statement.balance_forward.amount + lines_total(
            statement
        )
        assert statement.closing_balance.amount == ledger_owed_at(statement)
    assert third.closing_balance.amount == -company_balance(company).amount
    assert third.amount_due == third.closing_balance
    assert third.due_date == date(2026, 7, 31)
    assert [s.number for s in statements] == [
        "INV-2026-000001",
        "INV-2026-000002",
        "INV-2026-000003",
    ]
    assert reconcile(now=AFTER_ALL).ok


def test_base_fees_are_itemised_and_usage_is_grouped_with_quantities():
    company = postpaid()
    plan = fee(company, "3000", at=tokyo(2026, 4, 1, 0), description="Plan Business, April")
    fee(company, "100", at=tokyo(2026, 4, 1, 0), description="DID +81 50 1234 5678, April")
    fee(company, "100", at=tokyo(2026, 4, 1, 0), description="DID +81 50 1234 9999, April")
    usage(company, "300", at=tokyo(2026, 4, 3), service="voice", quantity=120, records=3)
    usage(company, "50", at=tokyo(2026, 4, 9), service="voice", quantity=30, records=1)
    usage(company, "12", at=tokyo(2026, 4, 9), service="sms", quantity=1, records=4)

    statement = statement_issue(company=company, year=2026, month=4, now=AFTER_ALL)

    base = list(statement.lines.filter(group=StatementLine.Group.BASE_FEE))
    assert [line.description for line in base] == [
        "Plan Business, April",
        "DID +81 50 1234 5678, April",
        "DID +81 50 1234 9999, April",
    ] or sorted(line.description for line in base) == sorted(
        ["Plan Business, April", "DID +81 50 1234 5678, April", "DID +81 50 1234 9999, April"]
    )
    assert any(line.transaction_id == plan.pk for line in base)
    voice, sms = statement.lines.filter(group=StatementLine.Group.USAGE).order_by("service")[::-1]
    assert (voice.service, voice.quantity, voice.amount.amount, voice.record_count) == (
        "voice",
        Decimal(390),
        Decimal(350),
        4,
    )
    assert (sms.quantity, sms.amount.amount, sms.unit) == (Decimal(4), Decimal(12), "message")
    assert statement.new_charges.amount == Decimal(3562)
    assert statement.tax.amount == Decimal("356")  # 356.2, rounded once


@pytest.mark.parametrize(
    ("taxable", "rate", "currency", "tax"),
    [
        ("1005", "0.10", "JPY", "101"),  # 100.5 half up
        ("1004", "0.10", "JPY", "100"),  # 100.4
        ("999", "0.08", "JPY", "80"),  # 79.92
        ("10.05", "0.10", "USD", "1.01"),  # 1.005 half up
        ("10.04", "0.10", "USD", "1.00"),
        ("0", "0.10", "USD", "0"),
        ("-50", "0.10", "JPY", "0"),  # credits beyond the charges: no negative tax
    ],
)
def test_tax_is_rounded_once_half_up_to_the_minor_unit(taxable, rate, currency, tax):
    assert tax_amount(Decimal(taxable), Decimal(rate), currency) == Decimal(tax)


def test_tax_is_computed_on_the_total_not_per_line_in_usd():
    company = postpaid(currency="USD", billing_timezone="America/New_York")
    # Three lines of 0.35: per line 0.035 → 0.04 each (0.12); on the total 1.05 → 0.105 → 0.11.
    for day in (2, 3, 4):
        usage(company, "0.35", at=datetime(2026, 4, day, 12, tzinfo=ZoneInfo("America/New_York")))
    statement = statement_issue(company=company, year=2026, month=4, now=AFTER_ALL)
    assert statement.tax == Money("0.11", "USD")
    assert statement.closing_balance == Money("1.16", "USD")
    assert statement.closing_balance.amount == ledger_owed_at(statement)


def test_pending_invoice_credit_is_applied_before_tax_and_marked_applied():
    company = postpaid()
    fee(company, "5000", at=tokyo(2026, 4, 1, 0))
    credit = InvoiceCredit.objects.create(
        company=company,
        amount=Money(1000, "JPY"),
        description="Credit code SPRING-1000",
        created_at=tokyo(2026, 4, 10),
    )
    later = InvoiceCredit.objects.create(
        company=company,
        amount=Money(500, "JPY"),
        description="Credit code redeemed in May",
        created_at=tokyo(2026, 5, 2),
    )

    statement = statement_issue(company=company, year=2026, month=4, now=AFTER_ALL)

    credit.refresh_from_db()
    later.refresh_from_db()
    assert credit.applied_at is not None and credit.applied_transaction is not None
    assert later.applied_at is None
    assert statement.credits_applied == Money(1000, "JPY")
    assert statement.taxable == Money(4000, "JPY")
    assert statement.tax == Money(400, "JPY")
    assert statement.closing_balance == Money(4400, "JPY")
    assert statement.closing_balance.amount == ledger_owed_at(statement)
    assert company_balance(company) == Money(-4400, "JPY")
    credit_line = statement.lines.get(group=StatementLine.Group.CREDIT)
    assert credit_line.transaction_id == credit.applied_transaction_id
    assert reconcile(now=AFTER_ALL).ok


def test_prepaid_company_gets_an_account_statement_with_nothing_due():
    company = CompanyFactory(created_at=datetime(2025, 1, 1, tzinfo=UTC))
    grant(company, "10000", at=tokyo(2026, 3, 20), days=20)  # expires 9 April
    grant(company, "5000", at=tokyo(2026, 4, 2))
    usage(company, "1200", at=tokyo(2026, 4, 5), service="api", quantity=1000)
    from billing.services.ledger import credits_expire

    credits_expire(company=company, now=tokyo(2026, 4, 10))

    march = statement_issue(company=company, year=2026, month=3, now=AFTER_ALL)
    april = statement_issue(company=company, year=2026, month=4, now=AFTER_ALL)

    assert march.kind == Statement.Kind.ACCOUNT_STATEMENT
    assert march.number == "STM-2026-000001"
    assert march.credit_balance == Money(10000, "JPY")
    assert april.opening_credit == Money(10000, "JPY")
    assert april.credits_applied == Money(5000, "JPY")
    assert april.new_charges == Money(1200, "JPY")
    assert april.expired == Money(8800, "JPY")
    assert april.tax == Money(0, "JPY") and april.amount_due == Money(0, "JPY")
    assert april.due_date is None
    assert april.credit_balance == company_balance(company) == Money(5000, "JPY")
    assert reconcile(now=AFTER_ALL).ok


def test_new_york_november_period_is_thirty_days_and_one_hour_across_dst():
    company = postpaid(currency="USD", billing_timezone="America/New_York")
    start, end = statement_period(company, 2026, 11)
    assert start == datetime(2026, 11, 1, 4, tzinfo=UTC)  # EDT, UTC-4
    assert end == datetime(2026, 12, 1, 5, tzinfo=UTC)  # EST, UTC-5
    usage(company, "1.00", at=datetime(2026, 11, 1, 4, tzinfo=UTC))  # first instant: in
    usage(company, "2.00", at=datetime(2026, 12, 1, 4, 59, tzinfo=UTC))  # 23:59 on 30th: in
    usage(company, "4.00", at=datetime(2026, 12, 1, 5, tzinfo=UTC))  # 1 December: out
    statement = statement_issue(company=company, year=2026, month=11, now=AFTER_ALL)
    assert statement.new_charges == Money("3.00", "USD")


def test_tokyo_period_starts_at_midnight_utc_plus_nine():
    company = postpaid()
    start, end = statement_period(company, 2026, 4)
    assert start == datetime(2026, 3, 31, 15, tzinfo=UTC)
    assert end == datetime(2026, 4, 30, 15, tzinfo=UTC)
    usage(company, "10", at=datetime(2026, 3, 31, 14, 59, tzinfo=UTC))  # March in Tokyo
    usage(company, "20", at=datetime(2026, 3, 31, 15, tzinfo=UTC))
    statement = statement_issue(company=company, year=2026, month=4, now=AFTER_ALL)
    assert statement.balance_forward == Money(10, "JPY")  # first statement: ledger at start
    assert statement.new_charges == Money(20, "JPY")


def test_a_month_not_ended_in_the_company_time_zone_is_refused():
    company = postpaid()
    with pytest.raises(PeriodNotClosed):
        statement_issue(
            company=company, year=2026, month=4, now=datetime(2026, 4, 30, 14, tzinfo=UTC)
        )


def test_a_transaction_posted_late_for_a_closed_month_shows_on_the_next_statement():
    company = postpaid()
    fee(company, "1000", at=tokyo(2026, 4, 1, 0))
    april = statement_issue(company=company, year=2026, month=4, now=tokyo(2026, 5, 1, 1))
    fee(company, "300", at=tokyo(2026, 4, 20), description="Seat fee caught up")  # late
    may = statement_issue(company=company, year=2026, month=5, now=AFTER_ALL)
    assert may.lines.filter(description="Seat fee caught up").count() == 1
    assert april.closing_balance.amount == ledger_owed_at(april)
    assert may.closing_balance.amount == ledger_owed_at(may) == -company_balance(company).amount
    assert reconcile(now=AFTER_ALL).ok


def test_issuing_again_returns_the_same_statement():
    company = postpaid()
    fee(company, "1000", at=tokyo(2026, 4, 1, 0))
    first = statement_issue(company=company, year=2026, month=4, now=AFTER_ALL)
    again = statement_issue(company=company, year=2026, month=4, now=AFTER_ALL)
    assert first.pk == again.pk
    assert Statement.objects.count() == 1
    assert company_balance(company) == Money(-1100, "JPY")  # tax posted once


def test_an_issued_statement_and_its_lines_cannot_be_changed_or_deleted():
    company = postpaid()
    fee(company, "1000", at=tokyo(2026, 4, 1, 0))
    statement = statement_issue(company=company, year=2026, month=4, now=AFTER_ALL)
    statement.number = "INV-2026-999999"
    with pytest.raises(ImmutableError):
        statement.save()
    with pytest.raises(ImmutableError):
        statement.delete()
    with pytest.raises(ImmutableError):
        statement.lines.first().delete()
    statement.payment_status = Statement.PaymentStatus.PAID
    statement.save(update_fields=["payment_status"])  # what payments will change later


def test_reconcile_names_a_statement_whose_closing_balance_differs_from_the_ledger():
    company = postpaid()
    fee(company, "1000", at=tokyo(2026, 4, 1, 0))
    statement = statement_issue(company=company, year=2026, month=4, now=AFTER_ALL)
    assert reconcile(now=AFTER_ALL).ok
    if connection.vendor == "postgresql":
        pytest.skip("the database itself keeps issued statements final")
    Statement.objects.filter(pk=statement.pk).update(closing_balance=Decimal("999"))
    problems = [str(problem) for problem in reconcile(now=AFTER_ALL).problems]
    assert any(
        statement.number in problem and "ledger says 1100" in problem for problem in problems
    )


@pytest.mark.parametrize("language", ["en", "ja"])
def test_base_fee_lines_are_in_the_statements_language(language):
    """The ledger keeps each recurring charge's description in English; a statement says it
    in the company's language, and in English exactly as the ledger does."""
    company = postpaid(language=language, billing_timezone="Asia/Tokyo")
    at = tokyo(2026, 4, 1, 0)
    plan = PlanFactory(name="Business", monthly_fee=jpy(1000), activation_fee=jpy(3000))
    recurring.subscription_order(company=company, plan=plan, at=at)
    recurring.phone_number_assign(
        company=company, number="+81312345678", monthly_price=jpy(300), at=at
    )
    SubaccountFactory.create_batch(2, company=company, created_at=tokyo(2026, 3, 1))
    SeatFee.objects.create(
        company=company, price_per_seat=jpy(500), started_at=at, next_charge_at=at
    )
    ServiceFee.objects.create(
        company=company, name="Support", amount=jpy(200), started_at=at, next_charge_at=at
    )
    recurring.recurring_charge_company(company=company, as_of=at, now=at)

    statement = statement_issue(company=company, year=2026, month=4, now=AFTER_ALL)
    lines = {
        line.transaction_id: line.description
        for line in statement.lines.filter(group=StatementLine.Group.BASE_FEE)
    }
    ledger = dict(
        RecurringCharge.objects.filter(company=company).values_list("transaction_id", "description")
    )
    assert lines.keys() == ledger.keys() and len(lines) == 5
    period = "2026-04-01 – 2026-04-30"
    if language == "en":
        assert lines == ledger
    else:
        assert sorted(lines.values()) == sorted(
            [
                f"プラン Business（{period}）",
                "初期費用（プラン Business）",
                f"電話番号 +81312345678（{period}）",
                f"シート 2 × ￥500（{period}）",  # the yen sign as Japanese money is written
                f"Support, {period}",
            ]
        )


def test_a_month_issued_before_the_time_zone_changed_is_not_issued_again():
    company = postpaid(billing_timezone="Asia/Tokyo", tax_rate=Decimal("0.10"))
    fee(company, "1000", at=tokyo(2026, 11, 2))
    november = statement_issue(company=company, year=2026, month=11, now=AFTER_ALL)
    company.billing_timezone = "America/New_York"
    company.save(update_fields=["billing_timezone"])
    fee(company, "500", at=datetime(2026, 12, 3, tzinfo=UTC))

    later = datetime(2027, 1, 2, tzinfo=UTC)
    again = statement_issue(company=company, year=2026, month=11, now=later)
    december = statement_issue(company=company, year=2026, month=12, now=later)

    assert again == november
    assert Statement.objects.filter(company=company).count() == 2
    assert december.balance_forward == november.closing_balance == jpy(1100)
    assert december.new_charges == jpy(500)
    assert december.closing_balance.amount == ledger_owed_at(december) == 1650
    assert reconcile().ok


def test_a_month_before_one_issued_in_another_time_zone_is_refused():
    company = postpaid(billing_timezone="Asia/Tokyo")
    statement_issue(company=company, year=2026, month=11, now=AFTER_ALL)
    company.billing_timezone = "America/New_York"
    company.save(update_fields=["billing_timezone"])

    with pytest.raises(InvoicingError, match="later month"):
        statement_issue(company=company, year=2026, month=10, now=AFTER_ALL)
    assert Statement.objects.filter(company=company).count() == 1


def test_an_invoice_summary_shows_credit_that_expired_in_the_period():
    company = CompanyFactory(created_at=datetime(2025, 1, 1, tzinfo=UTC), tax_rate=0)
    grant(company, "2000", at=tokyo(2026, 3, 20), days=20)  # expires 9 April
    ledger.company_mode_switch(
        company=company, mode=Company.Mode.POSTPAID, actor=None, reason="Contract",
        now=tokyo(2026, 4, 1),
    )  # fmt: skip
    fee(company, "1000", at=tokyo(2026, 4, 3))
    ledger.credits_expire(company=company, now=tokyo(2026, 4, 10))
    april = statement_issue(company=company, year=2026, month=4, now=AFTER_ALL)

    assert april.expired == jpy(1000)
    assert ("Credits expired", jpy(1000)) in statement_totals(april)
    assert summary_adds_up(april)


def test_an_account_statement_summary_shows_payments_made_while_postpaid():
    company = postpaid(tax_rate=0)
    fee(company, "1000", at=tokyo(2026, 4, 2))
    payment_record(
        company=company, amount=jpy(1000), received_on=date(2026, 4, 5), reference="BANK",
        now=tokyo(2026, 4, 5),
    )  # fmt: skip
    ledger.company_mode_switch(
        company=company, mode=Company.Mode.PREPAID, actor=None, reason="Contract ended",
        now=tokyo(2026, 4, 6),
    )  # fmt: skip
    april = statement_issue(company=company, year=2026, month=4, now=AFTER_ALL)

    assert april.kind == Statement.Kind.ACCOUNT_STATEMENT
    assert april.payments == jpy(1000)
    assert ("Payments received", jpy(1000)) in statement_totals(april)
    assert summary_adds_up(april)


def test_summaries_leave_out_rows_the_statement_has_nothing_in():
    company = postpaid(tax_rate=0)
    fee(company, "1000", at=tokyo(2026, 4, 2))
    april = statement_issue(company=company, year=2026, month=4, now=AFTER_ALL)
    labels = [label for label, _amount in statement_totals(april)]
    assert "Credits expired" not in labels
    assert summary_adds_up(april)
