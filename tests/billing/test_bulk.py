"""billing.bulk: `field__any` (a list as one parameter, AnyOf), models loaded without
`Model.__init__` (LoadedWithoutInit) and new instances built alike (unsaved_instance)."""

from decimal import Decimal

import pytest
from django.utils import timezone
from djmoney.money import Money

from accounts.models import Company
from billing.bulk import unsaved_instance
from billing.models import LedgerAccount, LedgerTransaction
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


def _field_values(instance) -> dict:
    return {
        field.attname: getattr(instance, field.attname)
        for field in type(instance)._meta.concrete_fields
    }


def test_a_loaded_instance_is_what_model_init_would_have_built(django_assert_num_queries):
    company = CompanyFactory(credit_limit=Money(5000, "JPY"))
    loaded = Company.objects.get(pk=company.pk)
    # The same instance through the documented constructor, for comparison.
    names = [field.attname for field in Company._meta.concrete_fields]
    row = Company.objects.values_list(*names).get(pk=company.pk)
    built = Company(*row)
    assert _field_values(loaded) == _field_values(built)
    assert loaded.credit_limit == Money(5000, "JPY")  # a Money, made when read
    assert loaded._state.adding is False and loaded._state.db == "default"
    assert loaded.get_deferred_fields() == set()
    loaded.name = "Renamed"
    with django_assert_num_queries(1):
        loaded.save(update_fields=["name"])  # an UPDATE: known to exist
    assert Company.objects.get(pk=company.pk).name == "Renamed"


def test_fields_not_selected_are_deferred_and_read_when_first_used(django_assert_num_queries):
    company = CompanyFactory(name="Deferred Inc.")
    partial = Company.objects.only("id", "account_code").get(pk=company.pk)
    assert partial.get_deferred_fields() >= {"name", "currency"}
    with django_assert_num_queries(1):
        assert partial.name == "Deferred Inc."
    with django_assert_num_queries(0):
        assert partial.name == "Deferred Inc."


def test_related_rows_read_with_select_related_are_cached(django_assert_num_queries):
    company = CompanyFactory()
    LedgerAccount.objects.create(
        kind=LedgerAccount.Kind.CUSTOMER,
        company=company,
        code="customer",
        currency=company.currency,
        balance=Money(Decimal(0), company.currency),
    )
    with django_assert_num_queries(1):
        account = LedgerAccount.objects.select_related("company").get(company=company)
        assert account.company.account_code == company.account_code


def _transaction_values(company, **changes) -> dict:
    values = {field.attname: None for field in LedgerTransaction._meta.concrete_fields}
    values.update(
        idempotency_key="test:unsaved",
        fingerprint="f" * 64,
        kind=LedgerTransaction.Kind.ADJUSTMENT,
        company_id=company.pk,
        description="Built without __init__",
        posted_at=timezone.now(),
        effective_at=timezone.now(),
        metadata={},
    )
    values.update(changes)
    return values


def test_an_unsaved_instance_needs_every_field_and_keeps_related_objects(
    django_assert_num_queries,
):
    company = CompanyFactory()
    values = _transaction_values(company)
    transaction_ = unsaved_instance(LedgerTransaction, values, {"company": company})
    assert transaction_._state.adding is True and transaction_.pk is None
    with django_assert_num_queries(0):
        assert transaction_.company is company
    transaction_.balance_after = Money(10, company.currency)
    assert transaction_.balance_after_currency == company.currency

    without_metadata = {name: value for name, value in values.items() if name != "metadata"}
    with pytest.raises(TypeError, match=r"missing \['metadata'\]"):
        unsaved_instance(LedgerTransaction, without_metadata)
    with pytest.raises(TypeError, match=r"unknown \['colour'\]"):
        unsaved_instance(LedgerTransaction, {**values, "colour": "red"})
