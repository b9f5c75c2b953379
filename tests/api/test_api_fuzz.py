"""The machine API under generated input: never a server error, and every 400 names its fields.

Schemathesis reads ``/api/v1/openapi.json`` from the WSGI application and fuzzes every
operation in it with schema-valid and schema-breaking requests, authenticated with a real
key. Schema-conforming bodies almost never name a real account, so a Hypothesis strategy
of our own also sends near-valid usage events for real accounts (any service, any
destination, quantities up to the schema's 10^15, instants from year 1 to 9999 with any
offset) to reach rating and the ledger. After the run the books must still reconcile.
"""

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
import schemathesis
import time_machine
from django.core import signals
from django.db import close_old_connections, transaction
from djmoney.money import Money
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from accounts.models import Company
from billing.models import LedgerTransaction, UsageRecord
from billing.reconcile import reconcile
from config.wsgi import application
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

schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", application)
# The key is ours to send (a real one); bad keys are the 401 tests' business.
schema.config.generation.update(with_security_parameters=False)


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def keep_the_test_connection():
    """Requests through the bare WSGI application end with ``close_old_connections``, which
    on PostgreSQL closes the test's connection mid-transaction; the Django test client
    unhooks it the same way."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def world():
    """Two companies (prepaid JPY with a bundle, postpaid USD with a limit) and a key."""
    tariff = TariffFactory()
    RateFactory(
        tariff=tariff,
        service="voice",
        destination="",
        price=Decimal("30"),
        first_increment=60,
        next_increment=60,
        connection_fee=Decimal("5"),
    )
    RateFactory(tariff=tariff, service="voice", destination="8190", price=Decimal("25.5"))
    RateFactory(tariff=tariff, service="sms", destination="", price=Decimal("3"))
    RateFactory(tariff=tariff, service="fax", destination="", price=Decimal("10"))
    RateFactory(tariff=tariff, service="api", destination="", price=Decimal("0.0125"))
    RateFactory(tariff=tariff, service="data", destination="JP", price=Decimal("2"))
    RateFactory(tariff=tariff, service="disk", destination="", price=Decimal("15"))
    acme = CompanyFactory(account_code="acme", tariff=tariff, mode=Company.Mode.PREPAID)
    SubaccountFactory(company=acme, code="ops")
    grant(acme, 100_000, now=NOW - timedelta(days=1))
    plan = BundleFactory(service="voice", included_quantity=600).plan
    SubscriptionFactory(company=acme, plan=plan, started_at=datetime(2026, 1, 31, tzinfo=UTC))

    usd = TariffFactory(currency="USD")
    RateFactory(tariff=usd, service="sms", destination="", price=Decimal("0.0075"))
    RateFactory(tariff=usd, service="voice", destination="1", price=Decimal("0.013"))
    CompanyFactory(
        account_code="beta",
        tariff=usd,
        currency="USD",
        mode=Company.Mode.POSTPAID,
        credit_limit=Money(Decimal("50"), "USD"),
    )
    _, raw = api_key()
    return raw


class _RolledBack(Exception):
    """Carries a result out of a savepoint that is rolled back."""


def undone(call):
    """``call()`` in a savepoint that is always rolled back: each example starts from the
    same books, and one that breaks the transaction does not break the next."""
    try:
        with transaction.atomic():
            raise _RolledBack(call())
    except _RolledBack as undo:
        return undo.args[0]


def is_json(raw: bytes | str | None) -> bool:
    try:
        json.loads(raw or b"")
    except ValueError:
        return False
    return True


def assert_a_400_names_its_fields(response) -> None:
    if response.status_code != 400:
        return
    body = response.json()
    assert body.get("errors"), body
    for error in body["errors"]:
        assert error["field"] and error["message"], body


# --- Schemathesis: every operation of the schema --------------------------------------------


@schema.parametrize()
@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
def test_no_operation_answers_a_server_error(case, world, keep_the_test_connection):
    response = undone(lambda: case.call(headers={"Authorization": f"Bearer {world}"}))
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
    assert response.status_code < 500  # also 404 (no such account), 405 (method probes)
    if is_json(response.request.body):  # bodies that are not JSON: see the test below
        assert_a_400_names_its_fields(response)


# --- Near-valid usage for real accounts --------------------------------------------------------

offsets = st.integers(-14 * 60, 14 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes)))
instants = st.one_of(
    st.datetimes(
        min_value=datetime(2026, 1, 1), max_value=datetime(2026, 11, 20), timezones=offsets
    ).map(datetime.isoformat),
    st.datetimes(timezones=offsets).map(datetime.isoformat),  # year 1 to 9999
    st.sampled_from(
        [
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-01:00",
            "2026-11-20T03:04:59Z",
            "2026-11-20T03:05:01Z",
        ]
    ),
)
quantities = st.one_of(
    st.integers(0, 10**15),
    st.decimals(min_value=0, max_value=10**6, places=6).map(str),
    st.sampled_from(["1e15", "0.000001", "999999999999999.999999", 0, -1]),
)
destinations = st.one_of(
    st.none(),
    st.sampled_from(["+819012345678", "+1 555 123 4567", "JP", "jp", "US", "ZZ", "", "+", "81"]),
    st.text(max_size=32),
)
events = st.fixed_dictionaries(
    {
        "id": st.text(min_size=1, max_size=8),
        "account": st.sampled_from(["acme", "beta", "nobody"]),
        "service": st.sampled_from(["voice", "sms", "fax", "api", "data", "disk", "telepathy"]),
        "destination": destinations,
        "quantity": quantities,
        "occurred_at": instants,
    },
    optional={"subaccount": st.sampled_from([None, "", "ops", "ghost"])},
)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
    # No shrinking: a failure is reported as found, in seconds rather than a minute; the
    # bugs this found are pinned by the hand-written tests below.
    phases=[Phase.explicit, Phase.generate],
)
@given(batch=st.lists(events, min_size=1, max_size=6))
def test_near_valid_usage_for_real_accounts_never_fails_the_server(client, world, batch):
    def send():
        return client.post(
            "/api/v1/usage",
            json.dumps({"events": batch}),
            content_type="application/json",
            headers={"authorization": f"Bearer {world}"},
        )

    def send_and_replay():
        first = send()
        assert first.status_code in {200, 400}, first.content
        assert_a_400_names_its_fields(first)
        if first.status_code == 200:
            results = first.json()["results"]
            assert [r["id"] for r in results] == [event["id"] for event in batch]
            # The replay reads back every record the first attempt wrote.
            replay = send()
            assert replay.status_code == 200, replay.content
            assert {r["status"] for r in replay.json()["results"]} == {"duplicate"}
        report = reconcile(now=NOW)
        assert report.ok, report.problems

    undone(send_and_replay)


# --- Hand-written: a malformed body is a 400 that names the field ------------------------------

EVENT = {
    "id": "e1",
    "account": "acme",
    "service": "sms",
    "destination": "+819012345678",
    "quantity": 1,
    "occurred_at": "2026-11-20T11:00:00+09:00",
}


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/usage", {}, "events"),
        ("/api/v1/usage", {"events": {}}, "events"),
        ("/api/v1/usage", {"events": [{**EVENT, "id": ""}]}, "events.0.id"),
        ("/api/v1/usage", {"events": [{**EVENT, "id": "x" * 65}]}, "events.0.id"),
        ("/api/v1/usage", {"events": [{**EVENT, "account": None}]}, "events.0.account"),
        ("/api/v1/usage", {"events": [{**EVENT, "service": 7}]}, "events.0.service"),
        ("/api/v1/usage", {"events": [{**EVENT, "quantity": "1e16"}]}, "events.0.quantity"),
        ("/api/v1/usage", {"events": [{**EVENT, "quantity": "0.0000001"}]}, "events.0.quantity"),
        ("/api/v1/usage", {"events": [{**EVENT, "quantity": True}]}, "events.0.quantity"),
        (
            "/api/v1/usage",
            {"events": [EVENT, {**EVENT, "id": "e2", "occurred_at": "yesterday"}]},
            "events.1.occurred_at",
        ),
        (
            "/api/v1/usage",
            {"events": [{**EVENT, "occurred_at": "2026-11-20T11:00:00"}]},
            "events.0.occurred_at",
        ),
        ("/api/v1/usage", {"events": [{**EVENT, "destination": "1" * 33}]}, "events.0.destination"),
        ("/api/v1/authorize", {"service": "sms"}, "account"),
        ("/api/v1/authorize", {"account": "acme", "service": None}, "service"),
        ("/api/v1/authorize", {"account": "acme", "service": "sms", "subaccount": 3}, "subaccount"),
    ],
)
def test_a_malformed_body_is_a_400_naming_the_field_and_posts_nothing(
    client, world, path, body, field
):
    response = client.post(
        path, body, content_type="application/json", headers={"authorization": f"Bearer {world}"}
    )
    assert response.status_code == 400
    assert_a_400_names_its_fields(response)
    assert any(error["field"].endswith(field) for error in response.json()["errors"]), (
        response.json()
    )
    assert not UsageRecord.objects.exists()
    assert not LedgerTransaction.objects.filter(kind="usage").exists()


@pytest.mark.parametrize("path", ["/api/v1/usage", "/api/v1/authorize"])
@pytest.mark.parametrize("raw", ["{nope", "\x00", ""])
def test_a_body_that_is_not_json_is_a_400_with_the_same_error_shape(client, world, path, raw):
    # BUG (contract): django-ninja's own "Cannot parse request body" 400 has no "errors",
    # unlike every other 400 of the API, so a client reading errors[] breaks on it.
    response = client.post(
        path, raw, content_type="application/json", headers={"authorization": f"Bearer {world}"}
    )
    assert response.status_code == 400
    assert_a_400_names_its_fields(response)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/api/v1/usage", {"events": [{**EVENT, "account": "acme\x00"}]}),
        ("post", "/api/v1/usage", {"events": [{**EVENT, "id": "e\x00"}]}),
        ("post", "/api/v1/usage", {"events": [{**EVENT, "destination": "JP\x00"}]}),
        ("post", "/api/v1/authorize", {"account": "\x00", "service": "sms"}),
        ("post", "/api/v1/authorize", {"account": "acme", "subaccount": "o\x00", "service": "sms"}),
        ("get", "/api/v1/accounts/acme%00", None),
    ],
    ids=["usage-account", "usage-id", "usage-destination", "authorize", "authorize-sub", "get"],
)
def test_a_nul_character_in_a_string_is_no_server_error(client, world, method, path, body):
    # PostgreSQL text cannot hold NUL: the API must refuse it, not fail with a DataError.
    headers = {"authorization": f"Bearer {world}"}
    if method == "get":
        response = client.get(path, headers=headers)
    else:
        response = client.post(path, body, content_type="application/json", headers=headers)
    assert response.status_code in {200, 400, 404}


@pytest.mark.parametrize(
    "occurred_at",
    ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0001-01-01T00:30:00+00:45"],
)
def test_an_instant_at_the_ends_of_the_calendar_is_no_server_error(client, world, occurred_at):
    # In UTC these are in year 0 or 10000, which Python's datetime cannot hold. Sent twice:
    # the replay reads the first attempt's record back.
    for _ in range(2):
        response = client.post(
            "/api/v1/usage",
            {"events": [{**EVENT, "occurred_at": occurred_at}]},
            content_type="application/json",
            headers={"authorization": f"Bearer {world}"},
        )
        assert response.status_code in {200, 400}
        if response.status_code == 200:
            assert response.json()["results"][0]["status"] in {"rejected", "duplicate"}


def test_the_largest_quantity_the_schema_allows_is_no_server_error(client, world):
    # 10^15 seconds (the schema's maximum) at ¥600/min is ¥10^16: more than the ledger's
    # amounts (19 digits, 4 decimals) hold. Postpaid without a limit: nothing caps it, so
    # PostgreSQL refuses the row ("numeric field overflow") and the request fails with 500.
    open_account = CompanyFactory(
        account_code="open",
        tariff=Company.objects.get(account_code="acme").tariff,
        mode=Company.Mode.POSTPAID,
    )
    RateFactory(tariff=open_account.tariff, service="voice", destination="44", price=Decimal("600"))
    response = client.post(
        "/api/v1/usage",
        {
            "events": [
                {
                    **EVENT,
                    "account": "open",
                    "service": "voice",
                    "destination": "+442079460000",
                    "quantity": "1000000000000000",
                }
            ]
        },
        content_type="application/json",
        headers={"authorization": f"Bearer {world}"},
    )
    assert response.status_code in {200, 400}
    if response.status_code == 200:
        assert response.json()["results"][0]["status"] in {"charged", "rejected"}
    assert reconcile(now=NOW).ok
