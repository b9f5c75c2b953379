"""A bundle of a whole-unit service (SMS, fax, API calls, bytes) includes a whole number:
the plan form refuses 10.5 messages, which usage could never draw whole."""

import pytest

from billing.forms import BundleForm

pytestmark = pytest.mark.django_db


def test_the_bundle_form_refuses_a_fraction_of_an_sms():
    form = BundleForm(
        data={"name": "SMS", "service": "sms", "destinations": "", "included_quantity": "10.5"}
    )
    assert not form.is_valid(), "a bundle of 10.5 messages was accepted"
    assert "whole number" in form.errors["included_quantity"][0]


@pytest.mark.parametrize(("service", "quantity"), [("sms", "10"), ("voice", "90.5")])
def test_a_whole_number_or_a_fraction_of_voice_seconds_is_fine(service, quantity):
    form = BundleForm(
        data={"name": "B", "service": service, "destinations": "", "included_quantity": quantity}
    )
    form.is_valid()
    assert "included_quantity" not in form.errors
