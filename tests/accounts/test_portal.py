import re

import pytest
from django.core import mail
from django.urls import reverse

from accounts.models import Membership
from accounts.portal import SESSION_COMPANY_KEY
from tests.factories import CompanyFactory, MembershipFactory, SubaccountFactory, UserFactory
from tests.factories.accounts import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def member(client):
    """A signed-in administrator of one company, with two seats."""
    membership = MembershipFactory(role=Membership.Role.ADMIN)
    SubaccountFactory(company=membership.company, code="sales", name="Sales")
    SubaccountFactory(company=membership.company, code="ops", name="Operations")
    client.force_login(membership.user)
    return membership


def test_anonymous_visitor_is_sent_to_sign_in(client):
    response = client.get(reverse("portal:dashboard"))
    assert response.status_code == 302
    assert response.url.startswith(reverse("portal:login"))


def test_sign_in_with_the_real_form_lands_on_the_dashboard(client):
    membership = MembershipFactory()
    response = client.post(
        reverse("portal:login"),
        {"username": membership.user.username, "password": PASSWORD},
        follow=True,
    )
    assert response.status_code == 200
    assert membership.company.name in response.text


def test_wrong_password_shows_a_message_and_does_not_sign_in(client):
    membership = MembershipFactory()
    response = client.post(
        reverse("portal:login"), {"username": membership.user.username, "password": "nope"}
    )
    assert response.status_code == 200
    assert "didn't match" in response.text
    assert "_auth_user_id" not in client.session


def test_sign_out_ends_the_session(client, member):
    response = client.post(reverse("portal:logout"))
    assert response.status_code == 302
    assert client.get(reverse("portal:dashboard")).status_code == 302


def test_password_reset_sends_a_link_that_sets_a_new_password(client):
    user = UserFactory(email="reset-me@example.com")
    MembershipFactory(user=user)
    client.post(reverse("portal:password_reset"), {"email": "reset-me@example.com"})
    assert len(mail.outbox) == 1
    link = re.search(r"http://\S+/portal/password-reset/\S+/", mail.outbox[0].body).group(0)
    response = client.get(link, follow=True)
    assert response.status_code == 200
    response = client.post(
        response.redirect_chain[-1][0],
        {"new_password1": "a-New-pass-9471", "new_password2": "a-New-pass-9471"},
    )
    assert response.status_code == 302
    assert client.login(username=user.username, password="a-New-pass-9471")


def test_dashboard_shows_name_mode_status_and_subaccounts(client, member):
    response = client.get(reverse("portal:dashboard"))
    assert response.status_code == 200
    text = response.text
    assert member.company.name in text
    assert "Prepaid" in text and "Active" in text
    assert "Sales" in text and "Operations" in text


def test_dashboard_costs_a_fixed_number_of_queries(client, member, django_assert_max_num_queries):
    SubaccountFactory.create_batch(20, company=member.company)
    with django_assert_max_num_queries(6):
        assert client.get(reverse("portal:dashboard")).status_code == 200


def test_blocked_company_sees_why_on_the_dashboard(client, member):
    company = member.company
    company.status, company.blocked_reason = "blocked", "prepaid credit used up"
    company.save()
    assert "prepaid credit used up" in client.get(reverse("portal:dashboard")).text


def test_user_without_a_company_is_told_so(client):
    client.force_login(UserFactory())
    response = client.get(reverse("portal:dashboard"))
    assert response.status_code == 403
    assert "not linked to any company" in response.text


def test_switcher_moves_between_the_users_own_companies(client):
    user = UserFactory()
    first = MembershipFactory(user=user, company=CompanyFactory(name="Alpha KK"))
    second = MembershipFactory(user=user, company=CompanyFactory(name="Beta KK"))
    client.force_login(user)
    assert "<h1>Alpha KK</h1>" in client.get(reverse("portal:dashboard")).text
    response = client.post(reverse("portal:company_switch"), {"company": second.company_id})
    assert response.status_code == 302
    assert client.session[SESSION_COMPANY_KEY] == second.company_id
    assert "<h1>Beta KK</h1>" in client.get(reverse("portal:dashboard")).text
    assert first.company.name in client.get(reverse("portal:dashboard")).text  # in the switcher


def test_switching_to_a_company_the_user_is_not_a_member_of_is_a_404(client, member):
    stranger = CompanyFactory()
    response = client.post(reverse("portal:company_switch"), {"company": stranger.pk})
    assert response.status_code == 404
    assert client.session.get(SESSION_COMPANY_KEY) != stranger.pk


def test_stale_company_in_session_falls_back_to_a_company_of_the_user(client, member):
    session = client.session
    session[SESSION_COMPANY_KEY] = CompanyFactory().pk
    session.save()
    assert f"<h1>{member.company.name}</h1>" in client.get(reverse("portal:dashboard")).text


def test_admin_adds_renames_and_deactivates_a_subaccount(client, member):
    response = client.post(reverse("portal:subaccount_create"), {"code": "bots", "name": "Bots"})
    assert response.status_code == 302
    subaccount = member.company.subaccounts.get(code="bots")
    client.post(reverse("portal:subaccount", args=[subaccount.pk]), {"name": "Robots"})
    client.post(reverse("portal:subaccount_toggle", args=[subaccount.pk]))
    subaccount.refresh_from_db()
    assert (subaccount.name, subaccount.is_active) == ("Robots", False)


def test_duplicate_subaccount_code_shows_a_form_error_and_adds_nothing(client, member):
    response = client.post(reverse("portal:subaccount_create"), {"code": "sales", "name": "Again"})
    assert response.status_code == 400
    assert "already used" in response.text
    assert member.company.subaccounts.filter(code="sales").count() == 1


def test_invalid_subaccount_code_is_a_form_error(client, member):
    response = client.post(reverse("portal:subaccount_create"), {"code": "no spaces!", "name": ""})
    assert response.status_code == 400
    assert "Use only letters, digits, - and _" in response.text
    assert "slug" not in response.text
    assert member.company.subaccounts.count() == 2


def test_a_code_differing_only_in_case_is_already_used(client, member):
    response = client.post(reverse("portal:subaccount_create"), {"code": "SALES", "name": "Again"})
    assert response.status_code == 400
    assert "already used" in response.text
    assert member.company.subaccounts.count() == 2


def test_subaccount_code_errors_are_in_the_readers_language(client, member):
    japanese = {"headers": {"accept-language": "ja"}}
    taken = client.post(
        reverse("portal:subaccount_create"), {"code": "sales", "name": "Again"}, **japanese
    )
    invalid = client.post(
        reverse("portal:subaccount_create"), {"code": "no spaces!", "name": "X"}, **japanese
    )
    assert "already used" not in taken.text and "「sales」" in taken.text
    assert "Use only letters" not in invalid.text and "slug" not in invalid.text


@pytest.mark.parametrize("role", [Membership.Role.MEMBER, Membership.Role.BILLING])
def test_only_administrators_manage_subaccounts(client, role):
    membership = MembershipFactory(role=role)
    subaccount = SubaccountFactory(company=membership.company, name="Keep")
    client.force_login(membership.user)
    page = client.get(reverse("portal:subaccounts"))
    assert page.status_code == 200
    assert "Add a subaccount" not in page.text
    assert (
        client.post(reverse("portal:subaccount_create"), {"code": "x", "name": "X"}).status_code
        == 403
    )
    assert (
        client.post(
            reverse("portal:subaccount", args=[subaccount.pk]), {"name": "Changed"}
        ).status_code
        == 403
    )
    assert client.post(reverse("portal:subaccount_toggle", args=[subaccount.pk])).status_code == 403
    subaccount.refresh_from_db()
    assert (subaccount.name, subaccount.is_active) == ("Keep", True)
    assert membership.company.subaccounts.count() == 1


def test_japanese_is_served_when_the_browser_asks_for_it(client, member):
    response = client.get(reverse("portal:dashboard"), headers={"accept-language": "ja"})
    assert "ダッシュボード" in response.text
    assert "前払い" in response.text


def test_switching_to_an_id_beyond_the_database_is_a_message_not_a_crash(client):
    membership = MembershipFactory()
    client.force_login(membership.user)
    response = client.post(reverse("portal:company_switch"), {"company": str(10**30)}, follow=True)
    assert response.status_code == 200
    assert "Choose a company to switch to." in response.text


@pytest.mark.parametrize(
    ("page", "lands_on"),
    [
        ("/portal/statements/12/", "/portal/statements/"),
        ("/portal/payments/7/receipt/", "/portal/payments/"),
        ("/portal/usage/?month=2026-11", "/portal/usage/?month=2026-11"),
    ],
)
def test_switching_from_an_objects_page_lands_on_its_list(client, page, lands_on):
    """An object of the company just left would be a 404 in the other one."""
    user = UserFactory()
    MembershipFactory(user=user)
    other = MembershipFactory(user=user)
    client.force_login(user)
    response = client.post(
        reverse("portal:company_switch"), {"company": other.company_id, "next": page}
    )
    assert response.status_code == 302 and response["Location"] == lands_on


def test_subaccount_times_are_in_the_companys_time_zone(client, member):
    from datetime import UTC, datetime

    member.company.billing_timezone = "Asia/Tokyo"
    member.company.save(update_fields=["billing_timezone"])
    subaccount = SubaccountFactory(
        company=member.company, code="late", created_at=datetime(2026, 11, 30, 20, 0, tzinfo=UTC)
    )
    detail = client.get(reverse("portal:subaccount", args=[subaccount.pk]))
    listing = client.get(reverse("portal:subaccounts"))
    assert "2026-12-01 05:00" in detail.text
    assert "2026-12-01" in listing.text and "2026-11-30" not in listing.text
