"""``manage.py reconcile`` holds usage records to the ledger: each record points at rows that
exist (its API key, bundle counter and ledger transaction have no foreign key, migration
0010), a record that moved money links to a transaction of its own company, and each
transaction's records add up to what it took from the customer and to its shortfall.

The books are made through ``POST /api/v1/usage``; the records are then changed around the
service with ``QuerySet.update()``, as a stray script could. On PostgreSQL the database
itself refuses to delete the rows those records point at.
"""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, transaction
from django.db.models import ProtectedError
from djmoney.money import Money

from accounts.models import Company
from billing.models import ApiKey, BundleCounter, LedgerTransaction, UsageRecord
from billing.reconcile import reconcile
from tests.factories import CompanyFactory
from tests.factories.billing import grant
from tests.factories.rating import (
    BundleFactory,
    RateFactory,
    SubscriptionFactory,
    TariffFactory,
    api_key,
)

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
MISSING_ID = 987_654_321


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


def jpy(amount) -> Money:
    return Money(Decimal(amount), "JPY")


def voice(id_, account, seconds):
    return {
        "id": id_,
        "account": account,
        "service": "voice",
        "destination": "+81 90 1234 5678",
        "quantity": seconds,
        "occurred_at": "2026-11-20T11:00:00+09:00",
    }


@pytest.fixture
def books(client):
    """Two prepaid companies charged through the API: ``acme`` partly from a bundle,
    ``small`` beyond its credit (a shortfall)."""
    tariff = TariffFactory()
    RateFactory(tariff=tariff, service="voice", price=Decimal("30"))  # ¥30 a minute
    acme = CompanyFactory(account_code="acme", tariff=tariff, mode=Company.Mode.PREPAID)
    small = CompanyFactory(account_code="small", tariff=tariff, mode=Company.Mode.PREPAID)
    grant(acme, 10_000, now=NOW - timedelta(days=1))
    grant(small, 50, now=NOW - timedelta(days=1))
    plan = BundleFactory(service="voice", included_quantity=Decimal(120)).plan
    SubscriptionFactory(company=acme, plan=plan, started_at=datetime(2026, 11, 1, tzinfo=UTC))
    _, raw = api_key()
    response = client.post(
        "/api/v1/usage",
        {
            "events": [
                voice("bundled", "acme", 60),
                voice("part-bundled", "acme", 120),  # 60 s from the bundle, ¥30 over it
                voice("paid", "acme", 60),
                voice("overdraws", "small", 120),  # ¥60 for ¥50 of credit
            ]
        },
        content_type="application/json",
        headers={"authorization": f"Bearer {raw}"},
    )
    assert response.status_code == 200, response.content
    statuses = [result["status"] for result in response.json()["results"]]
    assert statuses == ["charged"] * 4
    return {"acme": acme, "small": small}


def record(event_id) -> UsageRecord:
    return UsageRecord.objects.get(event_id=event_id)


def problems() -> list[str]:
    return [str(problem) for problem in reconcile(now=NOW).problems]


def test_usage_charged_through_the_api_reconciles(books):
    # What the checks compare is there: counters, transactions, a shortfall.
    assert record("bundled").bundle_counter_id is not None
    assert record("paid").transaction.company == books["acme"]
    assert record("overdraws").shortfall == jpy(10)
    assert problems() == []


def test_a_record_charge_changed_around_the_service_is_named(books):
    paid = record("paid")
    UsageRecord.objects.filter(pk=paid.pk).update(amount=Decimal(25))

    assert problems() == [
        f"company acme: transaction #{paid.transaction_id} took 60.0000 with a shortfall of "
        "0.0000, but its usage records charged 55.0000 with a shortfall of 0.0000"
    ]


def test_a_record_shortfall_changed_around_the_service_is_named(books):
    overdraws = record("overdraws")
    UsageRecord.objects.filter(pk=overdraws.pk).update(shortfall=None)

    assert problems() == [
        f"company small: transaction #{overdraws.transaction_id} took 50.0000 with a shortfall "
        "of 10.0000, but its usage records charged 50.0000 with a shortfall of 0.0000"
    ]


@pytest.mark.parametrize(
    ("field", "name"),
    [
        ("api_key_id", "API key"),
        ("bundle_counter_id", "bundle counter"),
        ("transaction_id", "ledger transaction"),
    ],
)
def test_a_record_pointing_at_a_missing_row_is_named(books, field, name):
    part_bundled = record("part-bundled")  # it has all three
    UsageRecord.objects.filter(pk=part_bundled.pk).update(**{field: MISSING_ID})

    found = problems()
    assert (
        f"company acme: 1 usage record(s) point at a missing {name} (the first #{part_bundled.pk})"
        in found
    )
    # Repointing the transaction also takes its charge from the real one.
    assert len(found) == (2 if field == "transaction_id" else 1)


def test_a_record_linked_to_another_company_transaction_is_named(books):
    paid = record("paid")
    UsageRecord.objects.filter(pk=paid.pk).update(transaction_id=record("overdraws").transaction_id)

    found = problems()
    assert (
        f"company acme: 1 usage record(s) link to another company's transaction "
        f"(the first #{paid.pk})"
    ) in found
    # Both transactions no longer match their records.
    assert len(found) == 3


def test_a_charged_record_without_a_transaction_is_named(books):
    paid = record("paid")
    UsageRecord.objects.filter(pk=paid.pk).update(transaction=None)

    found = problems()
    assert (
        f"company acme: 1 usage record(s) charged money without a transaction "
        f"(the first #{paid.pk})"
    ) in found


def test_the_command_counts_the_usage_records_it_checked(books):
    out = StringIO()
    call_command("reconcile", stdout=out, stderr=StringIO())
    assert out.getvalue().startswith("OK: every invariant holds")
    assert out.getvalue().rstrip().endswith("2 companies, 4 usage records.")


def test_the_command_fails_and_names_the_record(books):
    paid = record("paid")
    UsageRecord.objects.filter(pk=paid.pk).update(bundle_counter_id=MISSING_ID)
    err = StringIO()
    with pytest.raises(CommandError, match=r"problem\(s\) found"):
        call_command("reconcile", stdout=StringIO(), stderr=err)
    assert "point at a missing bundle counter" in err.getvalue()


# --- What PostgreSQL keeps ---------------------------------------------------------------


@pytest.mark.postgres
def test_usage_records_keep_foreign_keys_only_to_rows_staff_can_delete():
    constraints = connection.introspection.get_constraints(
        connection.cursor(), UsageRecord._meta.db_table
    )
    checked = sorted(
        columns[0]
        for columns, foreign_key in (
            (constraint["columns"], constraint["foreign_key"])
            for constraint in constraints.values()
        )
        if foreign_key
    )
    assert checked == ["company_id", "subaccount_id"]


@pytest.mark.postgres
def test_postgresql_never_deletes_an_api_key(books):
    unused, _ = api_key("never used")
    refused = pytest.raises(IntegrityError, match="billing_apikey rows are never deleted")
    with refused, transaction.atomic():
        ApiKey.objects.filter(pk=unused.pk).delete()
    assert ApiKey.objects.filter(pk=unused.pk).exists()


@pytest.mark.postgres
def test_postgresql_never_deletes_a_bundle_counter(books):
    counter = BundleCounter.objects.get()
    refused = pytest.raises(IntegrityError, match="billing_bundlecounter rows are never deleted")
    with refused, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM billing_bundlecounter WHERE id = %s", [counter.pk])
    assert BundleCounter.objects.filter(pk=counter.pk).exists()


def test_the_orm_still_protects_what_a_record_points_at(books):
    # on_delete=PROTECT is Django's own check: it stands without the foreign key.
    paid = record("paid")
    with pytest.raises(ProtectedError), transaction.atomic():
        LedgerTransaction.objects.filter(pk=paid.transaction_id).delete()
    assert LedgerTransaction.objects.filter(pk=paid.transaction_id).exists()
    with pytest.raises(ProtectedError), transaction.atomic():
        ApiKey.objects.filter(pk=paid.api_key_id).delete()
