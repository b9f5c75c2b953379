"""Tax when a company switches mode within a month: prepaid prices include tax and postpaid
charges are taxed on the invoice, so each charge is taxed once, by the mode it was made in.

A switch to postpaid starts the taxed part of the month: the invoice taxes what was charged
from then on. A switch to prepaid taxes, there and then, the postpaid charges no invoice
has taxed yet; they must be paid, with their tax, before the switch is allowed.
"""

from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from djmoney.money import Money

from accounts.models import Company, CompanyModeChange
from billing.exceptions import ModeSwitchRefused
from billing.models import LedgerTransaction
from billing.reconcile import reconcile
from billing.selectors import company_balance
from billing.services import ledger
from invoicing.payments import payment_record
from invoicing.services import statement_issue
from tests.factories import CompanyFactory

from .helpers import fee, grant, summary_adds_up, usage

pytestmark = pytest.mark.django_db

TOKYO = ZoneInfo("Asia/Tokyo")
AFTER_ALL = datetime(2027, 1, 1, tzinfo=UTC)


def tokyo(month, day, hour=12):
    return datetime(2026, month, day, hour, tzinfo=TOKYO)


def jpy(value) -> Money:
    return Money(Decimal(value), "JPY")


def switch(company, mode, at):
    return ledger.company_mode_switch(
        company=company, mode=mode, actor=None, reason="Contract", now=at
    )


def pay(company, amount, at):
    return payment_record(
        company=company, amount=jpy(amount), received_on=at.date(), reference="BANK", now=at
    )


def company(mode):
    return CompanyFactory(
        mode=mode, created_at=datetime(2025, 1, 1, tzinfo=UTC), tax_rate=Decimal("0.10")
    )


def test_a_switch_is_recorded_with_its_moment_and_reason():
    prepaid = company(Company.Mode.PREPAID)
    switch(prepaid, Company.Mode.POSTPAID, tokyo(4, 10))
    change = CompanyModeChange.objects.get(company=prepaid)
    assert (change.mode, change.changed_at, change.reason) == ("postpaid", tokyo(4, 10), "Contract")


def test_charges_made_while_prepaid_are_not_taxed_again_on_the_invoice():
    customer = company(Company.Mode.PREPAID)
    grant(customer, "1000", at=tokyo(3, 25))
    usage(customer, "1000", at=tokyo(4, 3), service="api", quantity=100)  # paid from credit
    switch(customer, Company.Mode.POSTPAID, tokyo(4, 10))
    fee(customer, "2000", at=tokyo(4, 12))
    april = statement_issue(company=customer, year=2026, month=4, now=AFTER_ALL)

    assert april.is_invoice
    assert april.new_charges == jpy(3000)
    assert (april.taxable, april.tax) == (jpy(2000), jpy(200))
    assert april.amount_due == jpy(2200)
    assert summary_adds_up(april)
    assert reconcile(now=AFTER_ALL).ok


def test_a_switch_to_prepaid_taxes_the_postpaid_charges_no_invoice_has_taxed():
    customer = company(Company.Mode.POSTPAID)
    fee(customer, "1000", at=tokyo(3, 3))
    statement_issue(company=customer, year=2026, month=3, now=tokyo(4, 1, 1))
    pay(customer, 1100, tokyo(4, 2))  # March's invoice
    fee(customer, "1000", at=tokyo(4, 3))
    pay(customer, 1100, tokyo(4, 9))  # April so far, with its tax
    switch(customer, Company.Mode.PREPAID, tokyo(4, 10))

    tax = LedgerTransaction.objects.get(company=customer, metadata__mode_switch_tax=True)
    assert tax.postings.get(account__kind="customer").amount == jpy(-100)
    assert company_balance(customer) == jpy(0)
    april = statement_issue(company=customer, year=2026, month=4, now=AFTER_ALL)
    assert not april.is_invoice
    assert (april.new_charges, april.adjustments, april.payments) == (
        jpy(1000), jpy(100), jpy(2200)
    )  # fmt: skip
    assert april.credit_balance == jpy(0)
    assert summary_adds_up(april)
    assert reconcile(now=AFTER_ALL).ok


def test_a_switch_to_prepaid_is_refused_until_the_tax_is_paid_too_and_posts_nothing():
    customer = company(Company.Mode.POSTPAID)
    fee(customer, "1000", at=tokyo(4, 3))
    pay(customer, 1000, tokyo(4, 9))

    with pytest.raises(ModeSwitchRefused, match="owes ¥100"):
        switch(customer, Company.Mode.PREPAID, tokyo(4, 10))
    customer.refresh_from_db()
    assert customer.mode == Company.Mode.POSTPAID
    assert not LedgerTransaction.objects.filter(metadata__mode_switch_tax=True).exists()
    assert not CompanyModeChange.objects.exists()
    assert company_balance(customer) == jpy(0)


def test_there_and_back_in_one_month_taxes_each_charge_once():
    customer = company(Company.Mode.POSTPAID)
    fee(customer, "1000", at=tokyo(4, 3))
    pay(customer, 1100, tokyo(4, 9))
    switch(customer, Company.Mode.PREPAID, tokyo(4, 10))  # taxes the 1000: 100
    grant(customer, "300", at=tokyo(4, 11))
    usage(customer, "300", at=tokyo(4, 12), service="api", quantity=30)  # prepaid: no tax
    switch(customer, Company.Mode.POSTPAID, tokyo(4, 20))
    fee(customer, "500", at=tokyo(4, 22))
    april = statement_issue(company=customer, year=2026, month=4, now=AFTER_ALL)

    assert april.is_invoice
    assert (april.taxable, april.tax) == (jpy(500), jpy(50))
    assert april.amount_due == jpy(550)
    assert summary_adds_up(april)
    assert reconcile(now=AFTER_ALL).ok


def test_a_switch_to_prepaid_with_nothing_untaxed_posts_no_tax():
    customer = company(Company.Mode.POSTPAID)
    switch(customer, Company.Mode.PREPAID, tokyo(4, 10))
    assert not LedgerTransaction.objects.filter(metadata__mode_switch_tax=True).exists()
    assert customer.mode == Company.Mode.PREPAID


def test_the_company_admin_page_lists_its_mode_changes(admin_client):
    from django.urls import reverse

    customer = company(Company.Mode.PREPAID)
    switch(customer, Company.Mode.POSTPAID, tokyo(4, 10))
    page = admin_client.get(reverse("admin:accounts_company_change", args=[customer.pk]))
    assert page.status_code == 200
    assert "Mode changes" in page.text and "Postpaid: Contract" in page.text


def test_a_switch_after_the_month_ended_but_before_its_close_leaves_that_month_untaxed():
    customer = company(Company.Mode.PREPAID)
    grant(customer, "5000", at=tokyo(2, 20))
    usage(customer, "1000", at=tokyo(3, 10), service="api", quantity=100)
    switch(customer, Company.Mode.POSTPAID, tokyo(4, 1, 3))  # March is over, not yet closed
    fee(customer, "2000", at=tokyo(4, 2))
    march = statement_issue(company=customer, year=2026, month=3, now=tokyo(4, 2, 9))
    april = statement_issue(company=customer, year=2026, month=4, now=AFTER_ALL)

    assert march.is_invoice and (march.taxable, march.tax) == (jpy(0), jpy(0))
    assert (april.taxable, april.tax) == (jpy(2000), jpy(200))
    assert summary_adds_up(march) and summary_adds_up(april)
    assert reconcile(now=AFTER_ALL).ok


def test_companies_that_switched_are_each_taxed_right_in_one_batch():
    from invoicing.services import statements_issue

    customers = [company(Company.Mode.PREPAID) for _ in range(3)]
    for n, customer in enumerate(customers):
        grant(customer, "1000", at=tokyo(3, 25))
        usage(customer, "1000", at=tokyo(4, 3), service="api", quantity=100)
        switch(customer, Company.Mode.POSTPAID, tokyo(4, 10 + n))
        fee(customer, str(1000 * (n + 1)), at=tokyo(4, 20))
    issued = statements_issue(
        company_ids=[customer.pk for customer in customers], year=2026, month=4, now=AFTER_ALL
    ).issued

    by_company = {statement.company_id: statement for statement in issued}
    for n, customer in enumerate(customers):
        april = by_company[customer.pk]
        assert (april.taxable, april.tax) == (jpy(1000 * (n + 1)), jpy(100 * (n + 1)))
        assert summary_adds_up(april)
    assert reconcile(now=AFTER_ALL).ok
