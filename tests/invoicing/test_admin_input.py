"""The admin's payment and credit-note pages: only staff who may add them get the form,
and bad input there is a form error, never a 500."""

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from accounts.models import Company
from accounts.services import staff_groups_sync
from invoicing.models import CreditNote, Payment
from tests.factories import CompanyFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("company", ["abc", "-1", "1.5", "99999999999999999999999"])
def test_payment_add_with_junk_company_in_query_string(admin_client, company):
    response = admin_client.get(reverse("admin:invoicing_payment_add"), {"company": company})
    assert response.status_code == 200


def test_payment_add_with_junk_company_posted(admin_client):
    response = admin_client.post(
        reverse("admin:invoicing_payment_add"),
        {"company": "abc", "amount": "100", "received_on": "2026-01-05"},
    )
    assert response.status_code == 200
    assert Payment.objects.count() == 0


@pytest.mark.parametrize("amount", ["0", "0.5", "-1", "99999999999999999999", "NaN"])
def test_payment_add_bad_amount(admin_client, amount):
    company = CompanyFactory(mode=Company.Mode.POSTPAID)
    response = admin_client.post(
        reverse("admin:invoicing_payment_add"),
        {"company": company.pk, "amount": amount, "received_on": "2026-01-05"},
    )
    assert response.status_code == 200, response.status_code
    assert Payment.objects.count() == 0


@pytest.mark.parametrize("amount", ["0", "0.5", "-1", "99999999999999999999", "NaN"])
def test_credit_note_bad_amount(admin_client, amount):
    company = CompanyFactory()
    response = admin_client.post(
        reverse("admin:invoicing_creditnote_add"),
        {"company": company.pk, "amount": amount, "reason": "x"},
    )
    assert response.status_code == 200, response.status_code
    assert CreditNote.objects.count() == 0


@pytest.fixture
def support_client(client):
    staff_groups_sync()
    user = UserFactory(is_staff=True)
    user.groups.add(Group.objects.get(name="Support"))
    client.force_login(user)
    return client


def test_support_cannot_record_a_payment(support_client):
    company = CompanyFactory(mode=Company.Mode.POSTPAID)
    response = support_client.post(
        reverse("admin:invoicing_payment_add"),
        {"company": company.pk, "amount": "1000", "received_on": "2026-01-05", "reference": "x"},
    )
    assert Payment.objects.count() == 0
    assert response.status_code == 403


def test_support_cannot_issue_a_credit_note(support_client):
    company = CompanyFactory()
    response = support_client.post(
        reverse("admin:invoicing_creditnote_add"),
        {"company": company.pk, "amount": "1000", "reason": "gift"},
    )
    assert CreditNote.objects.count() == 0
    assert response.status_code == 403


def test_support_cannot_even_see_the_payment_form(support_client):
    assert support_client.get(reverse("admin:invoicing_payment_add")).status_code == 403
