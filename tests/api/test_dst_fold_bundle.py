"""A subscription whose monthly anniversary falls in the repeated autumn hour of the billing
time zone: usage in that period must be rated (bundle first), not a server error; authorize
must count the counter of that period."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.test import Client
from djmoney.money import Money

from accounts.models import Company
from billing.authorization import usage_authorize
from billing.models import BundleCounter, Subscription
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

NOW = datetime(2026, 11, 10, 15, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def world():
    tariff = TariffFactory(currency="USD")
    RateFactory(tariff=tariff, service="sms", destination="", price=Decimal("0.05"))
    company = CompanyFactory(
        account_code="nyc",
        tariff=tariff,
        mode=Company.Mode.PREPAID,
        currency="USD",
        billing_timezone="America/New_York",
    )
    grant(company, 100, now=NOW - timedelta(days=1))
    bundle = BundleFactory(
        service="sms",
        included_quantity=Decimal(10),
        plan__currency="USD",
        plan__monthly_fee=Money(10, "USD"),
    )
    # 1 October 2026 01:30 New York (EDT): its 1 November anniversary, 01:30, is the repeated
    # hour (DST ends 1 November 2026 at 02:00).
    SubscriptionFactory(
        company=company, plan=bundle.plan, started_at=datetime(2026, 10, 1, 5, 30, tzinfo=UTC)
    )
    return company


def post(raw, events):
    client = Client(raise_request_exception=False)
    return client.post(
        "/api/v1/usage",
        {"events": events},
        content_type="application/json",
        headers={"authorization": f"Bearer {raw}"},
    )


def sms(id_, quantity=1):
    return {
        "id": id_,
        "account": "nyc",
        "service": "sms",
        "destination": "+15551234567",
        "quantity": quantity,
        "occurred_at": "2026-11-10T10:00:00-05:00",
    }


def test_usage_in_a_period_starting_in_the_repeated_hour_is_rated(world):
    _, raw = api_key()
    response = post(raw, [sms("a", 4)])
    assert response.status_code == 200, response.content[:300]
    result = response.json()["results"][0]
    assert (result["status"], result["bundle_quantity"]) == ("charged", 4)


def test_authorize_counts_the_bundle_used_in_that_period(world):
    # Use 8 of the 10 included messages in the period starting 1 Nov 01:30 (repeated hour).
    sub = Subscription.objects.get()
    BundleCounter.objects.create(
        subscription=sub,
        bundle=sub.plan.bundles.get(),
        period_start=datetime(2026, 11, 1, 5, 30, tzinfo=UTC),
        period_end=datetime(2026, 12, 1, 6, 30, tzinfo=UTC),
        used=Decimal(8),
    )
    decision = usage_authorize(
        account="nyc", subaccount=None, service="sms", destination="+15551234567", now=NOW
    )
    # $100 at $0.05 = 2000 messages, plus the 2 left in the bundle.
    assert decision.max_quantity == 2002


def test_a_midnight_anchor_in_havana_on_1_november(db):
    """Havana falls back from 01:00 to 00:00 on 1 November 2026: a subscription anchored at
    midnight on the 1st (the usual choice) has its November period start in the repeated
    hour."""
    tariff = TariffFactory()
    RateFactory(tariff=tariff, service="sms", destination="", price=Decimal("3"))
    company = CompanyFactory(
        account_code="hav",
        tariff=tariff,
        mode=Company.Mode.PREPAID,
        billing_timezone="America/Havana",
    )
    grant(company, 1000, now=NOW - timedelta(days=1))
    bundle = BundleFactory(service="sms", included_quantity=Decimal(10))
    SubscriptionFactory(
        company=company, plan=bundle.plan, started_at=datetime(2026, 9, 1, 4, 0, tzinfo=UTC)
    )  # 1 Sep 00:00 CDT
    _, raw = api_key()
    response = post(raw, [{**sms("h1"), "account": "hav"}])
    assert response.status_code == 200, response.status_code
    result = response.json()["results"][0]
    assert (result["status"], result["bundle_quantity"]) == ("charged", 1)
