"""``field__any``: a list of ids or strings as one parameter (billing.bulk.AnyOf)."""

from decimal import Decimal

import pytest
from djmoney.money import Money

from accounts.models import Company
from billing.models import LedgerAccount
from tests.factories import CompanyFactory

pytestmark = pytest.mark.django_db


def test_any_finds_the_rows_whose_field_is_in_the_list():
    first, second, _third = CompanyFactory.create_batch(3)
    wanted = [first.pk, second.pk, 10**9]
    assert sorted(Company.objects.filter(pk__any=wanted).values_list("pk", flat=True)) == sorted(
        [first.pk, second.pk]
    )
    codes = {first.account_code, "nobody"}
    assert list(Company.objects.filter(account_code__any=codes)) == [first]
    assert not Company.objects.filter(pk__any=[]).exists()


def test_any_works_on_relations_by_id():
    company = CompanyFactory()
    account = LedgerAccount.objects.create(
        kind=LedgerAccount.Kind.CUSTOMER,
        company=company,
        code="customer",
        currency=company.currency,
        balance=Money(Decimal(0), company.currency),
    )
    assert list(LedgerAccount.objects.filter(company_id__any=[company.pk])) == [account]
    assert list(LedgerAccount.objects.filter(company__any=[company.pk])) == [account]


def test_a_value_longer_than_the_column_is_never_cut_down_to_one_that_exists():
    limit = Company._meta.get_field("account_code").max_length
    company = CompanyFactory(account_code="a" * limit)
    assert list(Company.objects.filter(account_code__any=["a" * limit])) == [company]
    assert not Company.objects.filter(account_code__any=["a" * limit + "b"]).exists()
