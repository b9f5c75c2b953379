from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from djmoney.money import Money

from accounts.models import Company
from billing.models import LedgerTransaction, UsageRecord
from billing.reconcile import reconcile
from billing.selectors import company_balance
from tests.factories import CompanyFactory, SubaccountFactory
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


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def setup():
    tariff = TariffFactory()
    RateFactory(tariff=tariff, service="voice", destination="", price=Decimal("20"))
    RateFactory(
        tariff=tariff,
        service="voice",
        destination="8190",
        price=Decimal("30"),
        first_increment=30,
        next_increment=6,
        connection_fee=Decimal("5"),
    )
    RateFactory(tariff=tariff, service="sms", destination="", price=Decimal("3"))
    RateFactory(tariff=tariff, service="data", destination="JP", price=Decimal("0.5"))
    company = CompanyFactory(account_code="acme", tariff=tariff, mode=Company.Mode.PREPAID)
    SubaccountFactory(company=company, code="ops")
    grant(company, 1000, now=NOW - timedelta(days=1))
    key, raw = api_key()
    return company, key, raw


def post(client, raw, events, **extra):
    return client.post(
        "/api/v1/usage",
        {"events": events},
        content_type="application/json",
        headers={"authorization": f"Bearer {raw}"},
        **extra,
    )


def event(id_, **fields):
    base = {
        "id": id_,
        "account": "acme",
        "subaccount": "ops",
        "service": "voice",
        "destination": "+81 90 1234 5678",
        "quantity": 65,
        "occurred_at": "2026-11-20T11:00:00+09:00",
    }
    return {**base, **fields}


def test_voice_event_is_rated_with_the_longest_prefix_and_increments(client, setup):
    company, _, raw = setup
    response = post(client, raw, [event("e1")])
    assert response.status_code == 200
    result = response.json()["results"][0]
    # 65 s on 30/6 → 30 + 6×6 = 66 s billed; ¥30/min → ¥33 + ¥5 connection = ¥38
    assert result == {
        "id": "e1",
        "status": "charged",
        "charge": {"amount": "38", "currency": "JPY"},
        "bundle_quantity": 0,
        "balance": {"amount": "962", "currency": "JPY"},
        "error": None,
    }
    record = UsageRecord.objects.get(event_id="e1")
    assert (record.matched_destination, record.increments, record.billed_quantity) == (
        "8190",
        "30/6",
        66,
    )
    assert record.subaccount.code == "ops"
    assert company_balance(company) == Money(962, "JPY")


def test_replay_answers_duplicate_with_the_first_result_and_charges_once(client, setup):
    company, _, raw = setup
    first = post(client, raw, [event("e1")]).json()["results"][0]
    again = post(client, raw, [event("e1"), event("e1")]).json()["results"]
    assert [r["status"] for r in again] == ["duplicate", "duplicate"]
    assert again[0]["charge"] == first["charge"] and again[0]["balance"] == first["balance"]
    assert UsageRecord.objects.filter(status="charged").count() == 1
    assert company_balance(company) == Money(962, "JPY")


def test_prepaid_depletion_mid_batch_rejects_the_rest(client, setup):
    company, _, raw = setup
    events = [
        event(f"s{i}", service="sms", destination="+15551234567", quantity=100) for i in range(5)
    ]
    results = post(client, raw, events).json()["results"]
    assert [r["status"] for r in results] == [
        "charged",
        "charged",
        "charged",
        "charged",
        "rejected",
    ]
    assert [r["charge"]["amount"] for r in results[:4]] == ["300", "300", "300", "100"]
    assert results[4]["error"]["code"] == "account_blocked"
    assert company_balance(company) == Money(0, "JPY")
    record = UsageRecord.objects.get(event_id="s3")
    assert record.shortfall == Money(200, "JPY")
    company.refresh_from_db()
    assert company.is_blocked
    assert reconcile().ok


def test_per_event_rejections_have_codes_and_do_not_stop_the_batch(client, setup):
    _, _, raw = setup
    results = post(
        client,
        raw,
        [
            event("a", account="nobody"),
            event("b", service="telepathy"),
            event("c", quantity=-1),
            event("d", destination="not-a-number"),
            event("e", subaccount="ghost"),
            event("f", service="data", destination="ZZ", quantity=10),
            event("g", service="sms", destination="+15551234567", quantity=1),
            event("h", service="sms", destination="+15551234567", quantity=0.5),
            event("i", service="sms", destination="+15551234567", quantity="2.000"),
            event("j", service="data", destination="JP", quantity=1.5),
            event("k", service="data", destination="JP", quantity=2048),
        ],
    ).json()["results"]
    codes = [r["error"]["code"] if r["error"] else r["status"] for r in results]
    assert codes == [
        "unknown_account",
        "unknown_service",
        "negative_quantity",
        "invalid_destination",
        "unknown_subaccount",
        "invalid_destination",
        "charged",
        "fractional_quantity",
        "charged",
        "fractional_quantity",
        "charged",
    ]


def test_bundle_is_used_first_then_overage(client, setup):
    company, _, raw = setup
    SubscriptionFactory(
        company=company, plan=BundleFactory(service="sms", included_quantity=3).plan
    )
    results = post(
        client,
        raw,
        [
            event("b1", service="sms", destination="+15551234567", quantity=2),
            event("b2", service="sms", destination="+15551234567", quantity=2),
        ],
    ).json()["results"]
    assert [(r["bundle_quantity"], r["charge"]["amount"]) for r in results] == [(2, "0"), (1, "3")]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"events": []},
        {"events": [{"id": "x"}]},
        {"events": [event(str(i)) for i in range(1001)]},
        {"events": [event("x", occurred_at="2026-11-20T11:00:00")]},
        {"events": [event("x", occurred_at=1794000000)]},  # not Unix time: ISO 8601 text
        {"events": [event("", quantity=1)]},
        {"events": [event("x", quantity="lots")]},
    ],
)
def test_malformed_bodies_are_400_with_field_errors_and_post_nothing(client, setup, body):
    _, _, raw = setup
    response = client.post(
        "/api/v1/usage",
        body,
        content_type="application/json",
        headers={"authorization": f"Bearer {raw}"},
    )
    assert response.status_code == 400
    assert response.json()["errors"]
    assert not UsageRecord.objects.exists()
    assert not LedgerTransaction.objects.filter(kind="usage").exists()


def test_not_json_is_a_400(client, setup):
    _, _, raw = setup
    response = client.post(
        "/api/v1/usage",
        "{nope",
        content_type="application/json",
        headers={"authorization": f"Bearer {raw}"},
    )
    assert response.status_code == 400


def test_missing_or_revoked_key_is_401(client, setup):
    _, key, raw = setup
    assert post(client, "wrong", [event("x")]).status_code == 401
    key.revoked_at = NOW
    key.save()
    assert post(client, raw, [event("x")]).status_code == 401


def test_authorize_answers_affordable_seconds(client, setup):
    _, _, raw = setup
    response = client.post(
        "/api/v1/authorize",
        {"account": "acme", "service": "voice", "destination": "+819012345678"},
        content_type="application/json",
        headers={"authorization": f"Bearer {raw}"},
    )
    # ¥1000 − ¥5 connection at ¥30/min → 1990 s → in 30/6 increments: 30 + 326×6 = 1986
    assert response.json() == {"allowed": True, "max_quantity": 1986, "reason": None}


def test_account_endpoint(client, setup):
    _, _, raw = setup
    body = client.get("/api/v1/accounts/acme", headers={"authorization": f"Bearer {raw}"}).json()
    assert body["balance"] == {"amount": "1000", "currency": "JPY"}
    assert body["available"] == {"amount": "1000", "currency": "JPY"}
    assert (body["mode"], body["status"], body["credit_limit"]) == ("prepaid", "active", None)
    assert (
        client.get("/api/v1/accounts/none", headers={"authorization": f"Bearer {raw}"}).status_code
        == 404
    )


def test_nul_characters_are_a_400_not_a_server_error(client, setup):
    _, _, raw = setup
    response = post(client, raw, [event("nul\x00id")])
    assert response.status_code == 400
    assert "NUL" in response.json()["errors"][0]["message"]
    response = client.post(
        "/api/v1/authorize",
        {"account": "ac\x00me", "service": "sms"},
        content_type="application/json",
        headers={"authorization": f"Bearer {raw}"},
    )
    assert response.status_code == 400
    response = client.get("/api/v1/accounts/ac%00me", headers={"authorization": f"Bearer {raw}"})
    assert response.status_code == 404
