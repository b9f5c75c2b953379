"""A portal user of company A gets a 404 on every URL that names an object of company B."""

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from accounts.models import Membership
from tests.factories import MembershipFactory, SubaccountFactory

pytestmark = pytest.mark.django_db


# For each portal URL that takes an object id: how to make such an object for a company,
# and the methods the URL accepts. A new portal page with an id in its URL must be added
# here, or the completeness test fails.
def _statement(company) -> int:
    from datetime import UTC, datetime

    from invoicing.services import statement_issue

    company.created_at = datetime(2026, 1, 1, tzinfo=UTC)
    company.save(update_fields=["created_at"])
    return statement_issue(
        company=company, year=2026, month=3, now=datetime(2026, 6, 1, tzinfo=UTC)
    ).pk


def _payment(company) -> int:
    from datetime import date

    from djmoney.money import Money

    from accounts.models import Company
    from invoicing.payments import payment_record

    company.mode = Company.Mode.POSTPAID
    company.save(update_fields=["mode"])
    return payment_record(
        company=company,
        amount=Money(100, company.currency),
        received_on=date(2026, 1, 5),
        reference="test",
    ).pk


def _credit_note(company) -> int:
    from djmoney.money import Money

    from invoicing.credit_notes import credit_note_issue

    return credit_note_issue(
        company=company, amount=Money(100, company.currency), reason="test", actor=None
    ).pk


def _billing_contact(company) -> int:
    from tests.factories import BillingContactFactory

    return BillingContactFactory(company=company).pk


OBJECT_URLS = {
    "billing_contact": (_billing_contact, ["get", "post"]),
    "billing_contact_delete": (_billing_contact, ["post"]),
    "credit_note_pdf": (_credit_note, ["get"]),
    "payment_receipt": (_payment, ["get"]),
    "subaccount": (lambda company: SubaccountFactory(company=company).pk, ["get", "post"]),
    "subaccount_toggle": (lambda company: SubaccountFactory(company=company).pk, ["post"]),
    "statement": (_statement, ["get"]),
    "statement_pdf": (_statement, ["get"]),
    "statement_csv": (_statement, ["get"]),
}
CASES = [(name, method) for name, (_, methods) in sorted(OBJECT_URLS.items()) for method in methods]


def _portal_patterns_with_ids():
    portal = next(
        p
        for p in get_resolver().url_patterns
        if isinstance(p, URLResolver) and p.namespace == "portal"
    )

    def walk(patterns):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns)
            elif isinstance(pattern, URLPattern) and pattern.pattern.converters:
                yield pattern.name, list(pattern.pattern.converters)

    return [
        (name, params)
        for name, params in walk(portal.url_patterns)
        if not name.startswith("password_reset")  # uid/token, not a company object
    ]


def test_every_portal_url_with_an_object_id_is_covered():
    assert {name for name, _ in _portal_patterns_with_ids()} == set(OBJECT_URLS)


@pytest.mark.parametrize(("url_name", "method"), CASES)
def test_another_companys_object_is_a_404(client, url_name, method):
    own = MembershipFactory(role=Membership.Role.ADMIN)
    other = MembershipFactory(role=Membership.Role.ADMIN)
    client.force_login(own.user)
    make_object, _ = OBJECT_URLS[url_name]
    foreign_pk = make_object(other.company)
    response = getattr(client, method)(reverse(f"portal:{url_name}", args=[foreign_pk]))
    assert response.status_code == 404
    # The same request for the user's own object is not a 404, so the 404 is about
    # ownership (400: a form that refuses a POST without its fields, after finding the object).
    own_pk = make_object(own.company)
    response = getattr(client, method)(reverse(f"portal:{url_name}", args=[own_pk]))
    assert response.status_code in (200, 302, 400)


def test_another_companys_subaccount_is_not_changed_by_a_post(client):
    own = MembershipFactory(role=Membership.Role.ADMIN)
    foreign = SubaccountFactory(name="Theirs")
    client.force_login(own.user)
    client.post(reverse("portal:subaccount", args=[foreign.pk]), {"name": "Mine now"})
    client.post(reverse("portal:subaccount_toggle", args=[foreign.pk]))
    foreign.refresh_from_db()
    assert (foreign.name, foreign.is_active) == ("Theirs", True)


def test_another_companys_billing_contact_is_not_changed_or_removed(client):
    from accounts.models import BillingContact
    from tests.factories import BillingContactFactory

    own = MembershipFactory(role=Membership.Role.ADMIN)
    foreign = BillingContactFactory(email="theirs@example.com")
    client.force_login(own.user)
    client.post(
        reverse("portal:billing_contact", args=[foreign.pk]),
        {"email": "mine@example.com", "name": "", "language": "en"},
    )
    client.post(reverse("portal:billing_contact_delete", args=[foreign.pk]))
    assert BillingContact.objects.get(pk=foreign.pk).email == "theirs@example.com"


def test_lists_show_only_the_users_company(client):
    own = MembershipFactory()
    SubaccountFactory(company=own.company, name="Our seat")
    SubaccountFactory(name="Their seat")
    client.force_login(own.user)
    for url in (reverse("portal:dashboard"), reverse("portal:subaccounts")):
        text = client.get(url).text
        assert "Our seat" in text and "Their seat" not in text
