import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from accounts.models import Subaccount
from accounts.services import staff_groups_sync
from tests.factories import CompanyFactory, MembershipFactory, SubaccountFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_user():
    def make(group_name):
        staff_groups_sync()
        user = UserFactory(is_staff=True)
        user.groups.add(Group.objects.get(name=group_name))
        return user

    return make


def test_company_list_costs_a_fixed_number_of_queries(admin_client, django_assert_max_num_queries):
    for _ in range(30):
        company = CompanyFactory()
        SubaccountFactory.create_batch(2, company=company)
    with django_assert_max_num_queries(8):
        response = admin_client.get(reverse("admin:accounts_company_changelist"))
    assert response.status_code == 200


def test_company_page_shows_subaccounts_and_members_inline(admin_client):
    membership = MembershipFactory()
    SubaccountFactory(company=membership.company, code="inline-seat")
    response = admin_client.get(
        reverse("admin:accounts_company_change", args=[membership.company.pk])
    )
    assert response.status_code == 200
    assert "inline-seat" in response.text
    assert membership.user.username in response.text


def test_company_search_and_filters(admin_client):
    CompanyFactory(account_code="needle-co", name="Needle")
    CompanyFactory(account_code="hay-co", name="Hay")
    response = admin_client.get(reverse("admin:accounts_company_changelist"), {"q": "needle"})
    assert "needle-co" in response.text and "hay-co" not in response.text
    response = admin_client.get(
        reverse("admin:accounts_company_changelist"), {"mode__exact": "postpaid"}
    )
    assert response.status_code == 200 and "needle-co" not in response.text


def test_subaccount_and_membership_lists_load(admin_client, django_assert_max_num_queries):
    MembershipFactory.create_batch(10)
    SubaccountFactory.create_batch(10)
    for name in ("admin:accounts_subaccount_changelist", "admin:accounts_membership_changelist"):
        with django_assert_max_num_queries(8):
            assert admin_client.get(reverse(name)).status_code == 200


def test_deactivate_action_records_the_instant_and_a_log_entry(admin_client):
    from django.contrib.admin.models import LogEntry

    subaccount = SubaccountFactory()
    admin_client.post(
        reverse("admin:accounts_subaccount_changelist"),
        {"action": "deactivate", "_selected_action": [subaccount.pk]},
    )
    subaccount.refresh_from_db()
    assert not subaccount.is_active and subaccount.deactivated_at is not None
    assert LogEntry.objects.filter(object_id=str(subaccount.pk)).exists()


def test_support_staff_can_read_but_not_change(client, staff_user):
    client.force_login(staff_user("Support"))
    company = CompanyFactory()
    assert client.get(reverse("admin:accounts_company_changelist")).status_code == 200
    response = client.post(
        reverse("admin:accounts_company_change", args=[company.pk]), {"name": "Hijacked"}
    )
    assert response.status_code == 403
    assert client.get(reverse("admin:accounts_company_add")).status_code == 403


def test_billing_admin_staff_can_add_a_subaccount(client, staff_user):
    client.force_login(staff_user("Billing admin"))
    company = CompanyFactory()
    response = client.post(
        reverse("admin:accounts_subaccount_add"),
        {"company": company.pk, "code": "new-seat", "name": "New seat"},
    )
    assert response.status_code == 302
    assert Subaccount.objects.filter(company=company, code="new-seat").exists()


def test_credit_limit_in_a_foreign_currency_is_a_form_error_not_a_crash(admin_client):
    company = CompanyFactory(currency="JPY")
    response = admin_client.post(
        reverse("admin:accounts_company_change", args=[company.pk]),
        company_form(company, credit_limit_0="100", credit_limit_1="USD"),
    )
    assert response.status_code == 200
    assert "must be in the company" in response.text
    company.refresh_from_db()
    assert company.credit_limit is None


def test_the_add_company_page_has_no_money_section(admin_client):
    response = admin_client.get(reverse("admin:accounts_company_add"))
    assert response.status_code == 200
    assert "Recent transactions" not in response.text
    assert "adjust-balance" not in response.text


def test_block_list_shows_who_blocked_and_why_and_is_read_only(admin_client):
    from accounts.models import CompanyBlock
    from accounts.services import company_block

    staff = UserFactory(username="ops-lead")
    company = CompanyFactory(account_code="held-co")
    block = company_block(company=company, reason="manual", note="Fraud review", actor=staff)
    response = admin_client.get(
        reverse("admin:accounts_companyblock_changelist"), {"lifted_at__isempty": "1"}
    )
    assert "held-co" in response.text and "Fraud review" in response.text
    assert "ops-lead" in response.text
    assert admin_client.get(reverse("admin:accounts_companyblock_add")).status_code == 403
    delete = reverse("admin:accounts_companyblock_delete", args=[block.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert CompanyBlock.objects.filter(pk=block.pk).exists()


def company_form(company, **changes) -> dict:
    """The company change form as the admin draws it, with ``changes``."""
    data = {
        "account_code": company.account_code,
        "name": company.name,
        "language": company.language,
        "billing_timezone": company.billing_timezone,
        "tax_rate": str(company.tax_rate),
        "credit_limit_0": "" if company.credit_limit is None else str(company.credit_limit.amount),
        "credit_limit_1": company.currency,
        "billing_contacts-TOTAL_FORMS": "0",
        "billing_contacts-INITIAL_FORMS": "0",
        "subaccounts-TOTAL_FORMS": "0",
        "subaccounts-INITIAL_FORMS": "0",
        "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0",
        "mode_changes-TOTAL_FORMS": "0",
        "mode_changes-INITIAL_FORMS": "0",
    }
    return {**data, **changes}


def postpaid_at_its_limit():
    from datetime import UTC, datetime

    from djmoney.money import Money

    from accounts.models import Company
    from tests.factories.billing import charge

    company = CompanyFactory(mode=Company.Mode.POSTPAID, credit_limit=Money(1000, "JPY"))
    charge(company, 1000, now=datetime.now(tz=UTC))
    company.refresh_from_db()
    assert company.status == Company.Status.BLOCKED
    return company


def test_raising_the_credit_limit_lifts_the_credit_limit_block_at_once(admin_client):
    from accounts.models import Company, CompanyBlock

    company = postpaid_at_its_limit()
    response = admin_client.post(
        reverse("admin:accounts_company_change", args=[company.pk]),
        company_form(company, credit_limit_0="50000"),
    )
    assert response.status_code == 302
    company.refresh_from_db()
    assert company.status == Company.Status.ACTIVE and company.credit_limit.amount == 50000
    block = CompanyBlock.objects.get(company=company, reason="credit_limit")
    assert block.lifted_at is not None and block.lift_note == "Back under the credit limit"


def test_lowering_the_credit_limit_below_the_debt_blocks_at_once(admin_client):
    from datetime import UTC, datetime

    from djmoney.money import Money

    from accounts.models import Company
    from tests.factories.billing import charge

    company = CompanyFactory(mode=Company.Mode.POSTPAID, credit_limit=Money(5000, "JPY"))
    charge(company, 1000, now=datetime.now(tz=UTC))
    admin_client.post(
        reverse("admin:accounts_company_change", args=[company.pk]),
        company_form(company, credit_limit_0="800"),
    )
    company.refresh_from_db()
    assert company.status == Company.Status.BLOCKED
    assert company.blocked_reason == "Credit limit reached"


def test_saving_the_company_form_keeps_a_block_set_since_the_page_was_read(admin_client):
    """The form writes what it changed, not the whole row as it read it: a block committed
    between the admin's read and its write stays (and the company stays blocked)."""
    from accounts.admin import CompanyAdmin
    from accounts.models import Company
    from accounts.services import company_block

    company = CompanyFactory()
    original = CompanyAdmin.save_model

    def block_meanwhile(self, request, obj, form, change):
        company_block(company=Company.objects.get(pk=obj.pk), reason="manual", actor=request.user)
        original(self, request, obj, form, change)

    CompanyAdmin.save_model = block_meanwhile
    try:
        admin_client.post(
            reverse("admin:accounts_company_change", args=[company.pk]),
            company_form(company, name="Renamed KK"),
        )
    finally:
        CompanyAdmin.save_model = original
    company.refresh_from_db()
    assert company.name == "Renamed KK"
    assert company.status == Company.Status.BLOCKED
    assert company.blocked_reason == "Blocked by staff"
