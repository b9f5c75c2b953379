"""The portal's billing contacts: the company's billing users add, change and remove the
people who receive its statements and notices; refused input shows the reason and changes
nothing; members without billing rights only see the page's absence."""

import re

import pytest
from django.urls import reverse

from accounts.exceptions import BillingContactError
from accounts.models import BillingContact, Membership
from accounts.services import MAX_BILLING_CONTACTS, billing_contact_save
from tests.factories import BillingContactFactory, CompanyFactory, MembershipFactory

pytestmark = pytest.mark.django_db

URL = "/portal/billing-contacts/"
BOTH = {"gets_statements": "on", "gets_notices": "on"}


def signed_in(client, role=Membership.Role.BILLING):
    membership = MembershipFactory(role=role)
    client.force_login(membership.user)
    return membership.company


def plain(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


def test_billing_users_add_change_and_remove_a_contact(client):
    company = signed_in(client)
    assert reverse("portal:billing_contacts") == URL
    assert "No billing contacts" in client.get(URL).text
    response = client.post(
        URL, {"email": " keiri@example.jp ", "name": "経理部", "language": "ja", **BOTH}
    )
    assert response.status_code == 302
    contact = BillingContact.objects.get(company=company)
    assert (contact.email, contact.name, contact.language) == ("keiri@example.jp", "経理部", "ja")
    page = plain(client.get(URL).text)
    assert "keiri@example.jp 経理部 Japanese Statements and notices" in page
    assert "keiri@example.jp now receives statements and notices." in page

    url = reverse("portal:billing_contact", args=[contact.pk])
    response = client.post(
        url, {"email": "ap@example.jp", "name": "AP", "language": "en", "gets_notices": "on"}
    )
    assert response.status_code == 302
    contact.refresh_from_db()
    assert (contact.email, contact.language) == ("ap@example.jp", "en")
    assert (contact.gets_statements, contact.gets_notices) == (False, True)
    assert "ap@example.jp AP English Notices" in plain(client.get(URL).text)

    response = client.post(reverse("portal:billing_contact_delete", args=[contact.pk]))
    assert response.status_code == 302
    assert not BillingContact.objects.filter(company=company).exists()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"email": "not an address", "name": "", "language": "en"}, "Enter a valid email"),
        ({"email": "", "name": "", "language": "en"}, "This field is required."),
        ({"email": "a@example.com", "name": "", "language": "xx"}, "Select a valid choice."),
        ({"email": "AP@Example.com", "language": "en", **BOTH}, "is a billing contact already"),
        ({"email": "b@example.com", "language": "en"}, "Choose what this person receives"),
    ],
)
def test_refused_input_shows_the_reason_and_changes_nothing(client, data, message):
    company = signed_in(client)
    BillingContactFactory(company=company, email="ap@example.com")
    response = client.post(URL, data)
    assert response.status_code == 400
    assert message in response.text
    assert list(BillingContact.objects.values_list("email", flat=True)) == ["ap@example.com"]


def test_changing_a_contact_to_another_ones_address_is_refused(client):
    company = signed_in(client)
    BillingContactFactory(company=company, email="ap@example.com")
    other = BillingContactFactory(company=company, email="cfo@example.com")
    response = client.post(
        reverse("portal:billing_contact", args=[other.pk]),
        {"email": "ap@example.com", "name": "", "language": "en", **BOTH},
    )
    assert response.status_code == 400 and "is a billing contact already" in response.text
    assert "<h1>cfo@example.com</h1>" in response.text  # the address as saved, not as typed
    other.refresh_from_db()
    assert other.email == "cfo@example.com"


def test_a_company_has_at_most_ten_contacts():
    company = CompanyFactory()
    for number in range(MAX_BILLING_CONTACTS):
        billing_contact_save(company=company, email=f"{number}@example.com", language="en")
    with pytest.raises(BillingContactError, match="at most 10 billing contacts"):
        billing_contact_save(company=company, email="eleven@example.com", language="en")
    # Changing one of the ten is still allowed.
    first = BillingContact.objects.filter(company=company).first()
    billing_contact_save(company=company, contact=first, email="new@example.com", language="ja")
    assert BillingContact.objects.filter(company=company).count() == MAX_BILLING_CONTACTS


def test_members_without_billing_rights_neither_see_nor_change_contacts(client):
    company = signed_in(client, role=Membership.Role.MEMBER)
    contact = BillingContactFactory(company=company, email="ap@example.com")
    assert reverse("portal:billing_contacts") not in client.get(reverse("portal:dashboard")).text
    assert client.get(URL).status_code == 403
    assert client.post(URL, {"email": "x@example.com", "language": "en"}).status_code == 403
    assert client.get(reverse("portal:billing_contact", args=[contact.pk])).status_code == 403
    delete = reverse("portal:billing_contact_delete", args=[contact.pk])
    assert client.post(delete).status_code == 403
    assert BillingContact.objects.count() == 1


def test_the_page_costs_a_fixed_number_of_queries(client, django_assert_max_num_queries):
    company = signed_in(client)
    for number in range(8):
        BillingContactFactory(company=company, email=f"{number}@example.com")
    # Session, user, membership, the switcher's memberships, the contacts.
    with django_assert_max_num_queries(5):
        assert client.get(URL).status_code == 200
