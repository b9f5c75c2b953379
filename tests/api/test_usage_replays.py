"""An event id is handled once per API key, whatever the outcome."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine
from django.test.utils import CaptureQueriesContext

from accounts.models import Company
from accounts.services import company_block, company_unblock
from billing.models import UsageRecord
from billing.selectors import company_balance
from tests.factories import CompanyFactory, UserFactory
from tests.factories.billing import grant
from tests.factories.rating import RateFactory, TariffFactory, api_key

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)


def _post(client, raw, events):
    return client.post(
        "/api/v1/usage",
        {"events": events},
        content_type="application/json",
        headers={"authorization": f"Bearer {raw}"},
    ).json()["results"]


def _sms(id_, account="acme"):
    return {
        "id": id_,
        "account": account,
        "service": "sms",
        "destination": "+819012345678",
        "quantity": 1,
        "occurred_at": "2026-11-20T11:00:00+09:00",
    }


@time_machine.travel(NOW, tick=False)
def test_a_rejected_event_replayed_answers_duplicate_with_its_error_even_after_the_cause_clears(
    client,
):
    tariff = TariffFactory()
    RateFactory(tariff=tariff, service="sms", price=10)
    company = CompanyFactory(account_code="acme", tariff=tariff, mode=Company.Mode.PREPAID)
    grant(company, 1000, now=NOW)
    staff = UserFactory(is_staff=True)
    company_block(company=company, reason="manual", note="fraud check", actor=staff)
    _, raw = api_key()

    first = _post(client, raw, [_sms("e1"), _sms("ghost-1", account="nobody")])
    assert [r["error"]["code"] for r in first] == ["account_blocked", "unknown_account"]

    company_unblock(company=company, reason="manual", actor=staff)
    again = _post(client, raw, [_sms("e1"), _sms("ghost-1", account="nobody"), _sms("e2")])
    assert [r["status"] for r in again] == ["duplicate", "duplicate", "charged"]
    assert [r["error"]["code"] for r in again[:2]] == ["account_blocked", "unknown_account"]
    assert again[0]["charge"] is None
    assert UsageRecord.objects.count() == 3
    assert company_balance(company).amount == 990  # only e2 was charged


@time_machine.travel(NOW, tick=False)
def test_an_id_recorded_after_the_unlocked_lookup_is_answered_duplicate_and_charged_once(
    client, monkeypatch
):
    """The ids already recorded are read before the locks. A concurrent call that records
    one of them after that read (here: the read is made to miss it) makes the insert fail
    on the unique constraint; the group is rolled back and runs again with the ids read
    under the locks."""
    from billing.services import usage

    tariff = TariffFactory()
    RateFactory(tariff=tariff, service="sms", price=10)
    company = CompanyFactory(account_code="acme", tariff=tariff, mode=Company.Mode.PREPAID)
    grant(company, 1000, now=NOW)
    _, raw = api_key()
    first = _post(client, raw, [_sms("e1")])
    assert first[0]["status"] == "charged"

    real = usage._records_by_event_id
    lookups = []

    def stale_then_real(api_key, event_ids):
        lookups.append(sorted(event_ids))
        return {} if len(lookups) == 1 else real(api_key, event_ids)

    monkeypatch.setattr(usage, "_records_by_event_id", stale_then_real)
    again = _post(client, raw, [_sms("e1"), _sms("e2")])

    assert [r["status"] for r in again] == ["duplicate", "charged"]
    assert again[0]["balance"] == first[0]["balance"] == {"amount": "990", "currency": "JPY"}
    assert again[1]["balance"] == {"amount": "980", "currency": "JPY"}
    assert lookups == [["e1", "e2"], ["e1", "e2"]]  # the second under the locks
    assert UsageRecord.objects.filter(event_id="e1").count() == 1
    assert company_balance(company).amount == 980


@time_machine.travel(NOW, tick=False)
def test_a_batch_costs_the_same_queries_for_ten_companies_as_for_forty():
    """Statements per call do not grow with the events or the companies of a group: the
    planning read takes only the company fields it needs (a deferred field read later
    would be a query per company)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from billing.services.usage import UsageEvent, usage_ingest

    tariff = TariffFactory()
    RateFactory(tariff=tariff, service="sms", price=10)
    for n in range(40):
        grant(CompanyFactory(account_code=f"co{n}", tariff=tariff), 1000, now=NOW)
    key, _ = api_key()

    def batch(label: str, companies: int) -> list[UsageEvent]:
        return [
            UsageEvent(
                id=f"{label}{n}",
                account=f"co{n % companies}",
                subaccount=None,
                service="sms",
                destination="+819012345678",
                quantity=Decimal(1),
                occurred_at=NOW,
            )
            for n in range(200)
        ]

    usage_ingest(api_key=key, events=batch("warm", 40))  # customer accounts, tariff index
    counts = []
    for label, companies in (("a", 10), ("b", 40)):
        with CaptureQueriesContext(connection) as queries:
            outcomes = usage_ingest(api_key=key, events=batch(label, companies))
        assert {outcome.status for outcome in outcomes} == {"charged"}
        counts.append(len(queries))
    assert counts[0] == counts[1] <= 25


@pytest.mark.postgres
@time_machine.travel(NOW, tick=False)
def test_replays_are_found_by_one_index_probe_per_id_however_many_records_the_key_has(client):
    """A key's history grows without end. Given a thousand ids as one array, PostgreSQL
    would rather read all of the key's records (a sequential or bitmap scan: 35 ms a batch
    at 80,000 records, and growing); the lookup probes the unique index once per id."""
    from django.db import connection

    from billing.services.usage import _records_by_event_id

    tariff = TariffFactory()
    RateFactory(tariff=tariff, service="sms", price=10)
    company = CompanyFactory(account_code="acme", tariff=tariff, mode=Company.Mode.PREPAID)
    grant(company, 1000, now=NOW)
    key, raw = api_key()
    _post(client, raw, [_sms("e1")])
    # 20,000 more records of the key, copied from the first, then fresh statistics.
    columns = [
        field.column
        for field in UsageRecord._meta.concrete_fields
        if field.column not in ("id", "event_id")
    ]
    names = ", ".join(columns)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO billing_usagerecord (event_id, {names}) "  # noqa: S608
            f"SELECT 'old-' || n, {names} FROM billing_usagerecord, generate_series(1, 20000) n"
        )
        cursor.execute("ANALYZE billing_usagerecord")
    wanted = [f"new-{n}" for n in range(999)] + ["e1"]

    with CaptureQueriesContext(connection) as captured:
        found = _records_by_event_id(key, wanted)
    assert list(found) == ["e1"]
    (query,) = captured.captured_queries
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {query['sql']}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Index Scan using usage_event_once_per_key" in plan, plan
    assert "Seq Scan on billing_usagerecord" not in plan and "Bitmap" not in plan, plan
