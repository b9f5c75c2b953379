"""A bundle of a whole-unit service (SMS, fax, API calls, bytes) includes a whole number:
the plan form refuses 10.5 messages, which usage could never draw whole."""

from datetime import UTC, datetime

import pytest
import time_machine

from billing.forms import BundleForm

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


def test_the_bundle_form_refuses_a_fraction_of_an_sms():
    form = BundleForm(
        data={"name": "SMS", "service": "sms", "destinations": "", "included_quantity": "10.5"}
    )
    assert not form.is_valid(), "a bundle of 10.5 messages was accepted"
