"""A transaction id in the usage list's address that cannot be one ("²", another script's
digits, 0, past a bigint) does not title the list after it. (That no admin list is a 500
on such values, the ledger and usage searches included, is ``tests/test_odd_query_strings``.)"""

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db

ODD = ["²", "①", "١٢", "99999999999999999999", "-1", "0"]


@pytest.mark.parametrize("term", ODD)
def test_usage_records_opened_for_an_odd_transaction_id(admin_client, term):
    response = admin_client.get(
        reverse("admin:billing_usagerecord_changelist"), {"transaction__id__exact": term}
    )
    assert response.status_code in (200, 302)
    if response.status_code == 200:
        assert f"ledger transaction #{term}" not in response.content.decode()
