"""A postpaid company that reaches its credit limit mid-batch: the later events are
rejected, and their message gives the block's reason (credit limit reached), as a later
batch does, not "credit used up" (the prepaid reason)."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine
from djmoney.money import Money

from accounts.models import Company
from tests.factories import CompanyFactory
from tests.factories.rating import RateFactory, TariffFactory, api_key

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


def sms(id_):
    return {
        "id": id_,
        "account": "post",
        "service": "sms",
        "destination": "+15551234567",
        "quantity": 10,
        "occurred_at": "2026-11-20T11:00:00+09:00",
    }


def test_mid_batch_block_message_names_the_credit_limit(client):
    tariff = TariffFactory()
    RateFactory(tariff=tariff, service="sms", destination="", price=Decimal("3"))
    CompanyFactory(
        account_code="post",
        tariff=tariff,
        mode=Company.Mode.POSTPAID,
        credit_limit=Money(100, "JPY"),
    )
    _, raw = api_key()
    headers = {"authorization": f"Bearer {raw}"}
    first = client.post(
        "/api/v1/usage",
        {"events": [sms(f"p{i}") for i in range(5)]},
        content_type="application/json",
        headers=headers,
    ).json()["results"]
    later = client.post(
        "/api/v1/usage", {"events": [sms("p9")]}, content_type="application/json", headers=headers
    ).json()["results"]
    assert [r["status"] for r in first] == ["charged"] * 4 + ["rejected"]
    mid_batch, next_batch = first[4]["error"]["message"], later[0]["error"]["message"]
    assert mid_batch == next_batch == "post is blocked: Credit limit reached."
