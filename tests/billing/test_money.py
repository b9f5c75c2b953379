"""billing.money: the one rounding step by currency, and a MoneyField's amount read and set
without building a ``Money`` (as django-money itself would)."""

from decimal import Decimal

import pytest
from djmoney.money import Money

from billing.models import LedgerAccount
from billing.money import currency_exponent, money_amount, quantize_amount, set_money_amount
from tests.factories import CompanyFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("currency", "exponent", "amount", "rounded"),
    [
        ("JPY", 0, "10.5", "11"),
        ("USD", 2, "0.125", "0.13"),
        ("KWD", 3, "1.0005", "1.001"),
        ("JPY", 0, "-2.5", "-3"),  # half away from zero
    ],
)
def test_each_currency_rounds_once_to_its_minor_unit(currency, exponent, amount, rounded):
    for _ in range(2):  # the second time from the cached exponent
        assert currency_exponent(currency) == exponent
        assert str(quantize_amount(Decimal(amount), currency)) == rounded


def _account(**fields) -> LedgerAccount:
    company = CompanyFactory()
    return LedgerAccount.objects.create(
        kind=LedgerAccount.Kind.CUSTOMER,
        company=company,
        code="customer",
        currency="JPY",
        balance=Money(1500, "JPY"),
        **fields,
    )


def test_the_amount_is_read_as_loaded_and_once_read_as_money():
    account = _account()
    loaded = LedgerAccount.objects.get(pk=account.pk)
    assert money_amount(loaded, "balance") == Decimal(1500)  # not read as Money yet
    assert loaded.balance == Money(1500, "JPY")
    assert money_amount(loaded, "balance") == Decimal(1500)  # now a Money in __dict__


def test_an_amount_set_without_money_reads_and_saves_as_a_money_would():
    account = _account()
    set_money_amount(account, "balance", Decimal(-250), "JPY")
    assert account.balance == Money(-250, "JPY")
    account.save(update_fields=["balance", "balance_currency"])
    assert LedgerAccount.objects.get(pk=account.pk).balance == Money(-250, "JPY")
