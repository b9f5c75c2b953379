"""billing.bulk: `field__any` (a list as one parameter, AnyOf), models loaded without
`Model.__init__` (LoadedWithoutInit), new instances built alike (unsaved_instance) and
querysets compiled once (ReusableQuery)."""

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.db import connections, transaction
from django.db.transaction import TransactionManagementError
from django.utils import timezone
from djmoney.money import Money
from psycopg.pq import Format

from accounts.models import Company
from billing.bulk import (
    ReusableQuery,
    array_literal,
    insert_new_rows,
    insert_rows,
    unsaved_instance,
    update_column,
)
from billing.models import CreditLot, LedgerAccount, LedgerTransaction
from billing.services.ledger import credits_grant
from tests.factories import CompanyFactory

pytestmark = pytest.mark.django_db


def _customer_account(company) -> LedgerAccount:
    return LedgerAccount.objects.create(
        kind=LedgerAccount.Kind.CUSTOMER,
        company=company,
        code="customer",
        currency=company.currency,
        balance=Money(Decimal(0), company.currency),
    )


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
    account = _customer_account(company)
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
    _customer_account(company)
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


TRICKY_NAMES = [
    'Quote " Inc.',
    "Back\\slash",
    "Comma, Brace {} Ltd",
    "  spaces  ",
    "NULL",
    "",
    "株式会社テスト",
]


def test_any_matches_strings_that_need_quoting_in_an_array_exactly():
    companies = [CompanyFactory(name=name) for name in TRICKY_NAMES]
    CompanyFactory(name="Back\\\\slash")  # must not be matched by the single backslash
    found = Company.objects.filter(name__any=TRICKY_NAMES).order_by("pk")
    assert list(found) == companies
    for company in companies:
        assert list(Company.objects.filter(name__any=[company.name])) == [company]


def test_array_literal_quotes_strings_and_leaves_other_types_to_the_driver():
    assert array_literal([3, 1, Decimal("-2.50"), None]) == "{3,1,-2.50,NULL}"
    assert array_literal(['a"b', "c\\d"]) == '{"a\\"b","c\\\\d"}'
    assert array_literal([]) == "{}"
    assert array_literal([1, True]) == [1, True]  # not an int: psycopg adapts the list


def test_update_column_writes_each_decimal_to_its_row():
    first, second = CompanyFactory.create_batch(2)
    accounts = [_customer_account(company) for company in (first, second)]
    update_column(
        LedgerAccount, "balance", {accounts[0].pk: Decimal("-12.5"), accounts[1].pk: Decimal(7)}
    )
    balances = dict(
        LedgerAccount.objects.filter(pk__any=[a.pk for a in accounts]).values_list("pk", "balance")
    )
    assert balances == {accounts[0].pk: Decimal("-12.5"), accounts[1].pk: Decimal(7)}


@pytest.mark.postgres
def test_timestamps_are_read_with_the_fast_loader_and_come_back_as_written():
    from django.db import connection

    from billing.bulk import _TimestamptzLoader

    tokyo, new_york = ZoneInfo("Asia/Tokyo"), ZoneInfo("America/New_York")
    instants = [
        datetime(2026, 12, 4, 18, 26, 58, 123456, tzinfo=UTC),
        datetime(2026, 3, 8, 1, 59, 59, 999999, tzinfo=new_york),  # before the DST gap
        datetime(2026, 3, 8, 3, 0, tzinfo=new_york),  # after it
        datetime(2026, 11, 1, 1, 30, fold=1, tzinfo=new_york),  # the repeated hour
        datetime(2026, 1, 1, 0, 0, tzinfo=tokyo),
        datetime(1, 1, 1, 0, 0, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ]
    with connection.cursor() as cursor:
        loader = connection.connection.adapters.get_loader(1184, Format.TEXT)  # timestamptz
        assert issubclass(loader, _TimestamptzLoader)
        cursor.execute(
            "SELECT value FROM unnest(%s::timestamptz[]) WITH ORDINALITY AS t(value, n) ORDER BY n",
            [instants],
        )
        read = [row[0] for row in cursor.fetchall()]
    # In UTC: an instant of the repeated hour (fold=1) never equals one of another zone.
    assert read == [instant.astimezone(UTC) for instant in instants]
    assert all(value.tzinfo is UTC for value in read)


@pytest.mark.postgres
def test_a_timestamp_python_cannot_hold_fails_as_with_djangos_own_loader():
    from django.db import DataError, connection

    with connection.cursor() as cursor, pytest.raises(DataError, match="infinity"):
        cursor.execute("SELECT 'infinity'::timestamptz")
        cursor.fetchall()


# --- ReusableQuery: compiled once per connection, run with other values ---------------------

_COMPANIES_BY_ID = ReusableQuery(lambda ids: Company.objects.filter(pk__any=ids).order_by("pk"))
_TRANSACTIONS_SINCE = ReusableQuery(
    lambda company_ids, since: LedgerTransaction.objects.filter(
        company_id__any=company_ids, posted_at__gte=since
    ).order_by("id")
)
_CODES_BY_ID = ReusableQuery(
    lambda ids: Company.objects.filter(pk__any=ids).order_by("pk").values_list("pk", "credit_limit")
)


def test_a_reusable_query_gives_what_its_queryset_gives(django_assert_num_queries):
    first = CompanyFactory(credit_limit=Money(5000, "JPY"))
    second = CompanyFactory()
    CompanyFactory()  # not asked for
    granted = granted_from_db(
        credits_grant(
            company=first,
            amount=Money(300, "JPY"),
            source=CreditLot.Source.GRANT,
            idempotency_key="test:reusable",
            description="Welcome credit",
            metadata={"campaign": "spring"},
        ).transaction
    )
    for ids in ([first.pk, second.pk], [second.pk], [10**9]):
        with django_assert_num_queries(1):
            reused = _COMPANIES_BY_ID(ids)
        expected = list(Company.objects.filter(pk__in=ids).order_by("pk"))
        assert [_field_values(company) for company in reused] == [
            _field_values(company) for company in expected
        ]
        assert all(company._state.adding is False for company in reused)
    assert _COMPANIES_BY_ID([first.pk])[0].credit_limit == Money(5000, "JPY")
    assert _CODES_BY_ID([first.pk, second.pk]) == [(first.pk, Decimal(5000)), (second.pk, None)]
    # Values through the fields' converters, as the queryset has them (JSON, aware times).
    reused = _TRANSACTIONS_SINCE([first.pk], granted.posted_at - timedelta(seconds=1))
    assert [_field_values(row) for row in reused] == [_field_values(granted)]
    assert reused[0].metadata == {"campaign": "spring"}
    assert _TRANSACTIONS_SINCE([first.pk], granted.posted_at + timedelta(seconds=1)) == []


def granted_from_db(transaction_) -> LedgerTransaction:
    return LedgerTransaction.objects.get(pk=transaction_.pk)


@pytest.mark.postgres
def test_a_reusable_query_is_compiled_once_for_each_connection():
    company = CompanyFactory()
    compile_calls = []
    query = ReusableQuery(
        lambda ids: compile_calls.append(ids) or Company.objects.filter(pk__any=ids)
    )
    assert query([company.pk]) == [company]
    assert query([company.pk, 10**9]) == [company]
    assert len(compile_calls) == 1  # built once, with a stand-in, never with the values
    assert compile_calls[0] != [company.pk]

    # Another thread has its own connection: its own compiled query, its own converters.
    found = []

    def in_another_thread():
        try:
            found.append(len(query([10**9])))
        finally:
            connections.close_all()  # this thread's own

    thread = threading.Thread(target=in_another_thread)
    thread.start()
    thread.join()
    assert found == [0] and len(compile_calls) == 2


@pytest.mark.postgres
def test_a_reusable_query_refuses_what_it_cannot_reuse_faithfully():
    company = CompanyFactory()
    twice = ReusableQuery(lambda ids: Company.objects.filter(pk__any=ids).exclude(pk__any=ids))
    with pytest.raises(ValueError, match="used 2 times"):
        twice([company.pk])
    joined = ReusableQuery(
        lambda ids: LedgerAccount.objects.select_related("company").filter(pk__any=ids)
    )
    with pytest.raises(ValueError, match="one model only"):
        joined([1])
    with pytest.raises(TypeError, match="lists and datetimes, not int"):
        _COMPANIES_BY_ID(company.pk)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_reusable_locking_query_still_needs_a_transaction():
    company = CompanyFactory()
    locking = ReusableQuery(lambda ids: Company.objects.select_for_update().filter(pk__any=ids))
    with transaction.atomic():
        assert locking([company.pk]) == [company]
    with pytest.raises(TransactionManagementError):
        locking([company.pk])  # compiled already, in a transaction: refused outside one


@pytest.mark.postgres
def test_insert_new_rows_gives_back_the_rows_it_inserted_and_skips_those_that_exist():
    first, second = CompanyFactory.create_batch(2)
    existing = _customer_account(first)
    columns = ("kind", "code", "company_id", "currency", "balance_currency", "balance")
    customer = LedgerAccount.Kind.CUSTOMER
    created = insert_new_rows(
        LedgerAccount,
        columns,
        [
            (customer, "customer", first.pk, "JPY", "JPY", Decimal(0)),  # exists: skipped
            (customer, "customer", second.pk, "JPY", "JPY", Decimal(7)),
        ],
        returning=("pk", "company_id", "balance"),
    )
    new = LedgerAccount.objects.get(company=second, kind=customer)
    assert created == [(new.pk, second.pk, Decimal(7))]
    assert LedgerAccount.objects.filter(company=first, kind=customer).get() == existing
    assert insert_new_rows(LedgerAccount, columns, [], returning=("pk",)) == []


@pytest.mark.postgres
def test_typed_copy_refuses_a_column_it_has_no_writer_for():
    """``insert_rows(times_as_text=True)`` finds each column's writer from its field; a type
    it does not know (JSON here) is refused before anything is written."""
    company = CompanyFactory()
    with pytest.raises(ValueError, match="cannot write metadata"):
        insert_rows(
            LedgerTransaction,
            ("company_id", "metadata"),
            [(company.pk, "{}")],
            times_as_text=True,
        )
    assert not LedgerTransaction.objects.exists()
