"""An event id is handled once per API key, whatever the outcome."""

from datetime import UTC, datetime

import pytest
import time_machine

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
