"""Numbers typed or pasted into the admin's addresses and search boxes: digits Python's
``str.isdigit`` accepts but ``int`` refuses ("²", "①"), and ids past what the database holds,
give an empty list or a message, never a 500."""

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db

ODD = ["²", "①", "١٢", "99999999999999999999", "-1", "0"]


@pytest.mark.parametrize("term", ODD)
def test_ledger_search_with_odd_digits(admin_client, term):
    response = admin_client.get(reverse("admin:billing_ledgertransaction_changelist"), {"q": term})
    assert response.status_code == 200


@pytest.mark.parametrize("term", ODD)
def test_usage_records_opened_for_an_odd_transaction_id(admin_client, term):
    response = admin_client.get(
        reverse("admin:billing_usagerecord_changelist"), {"transaction__id__exact": term}
    )
    assert response.status_code in (200, 302)
    if response.status_code == 200:
        assert f"ledger transaction #{term}" not in response.content.decode()


@pytest.mark.parametrize("term", ODD)
def test_usage_record_search_with_odd_digits(admin_client, term):
    response = admin_client.get(reverse("admin:billing_usagerecord_changelist"), {"q": term})
    assert response.status_code == 200
