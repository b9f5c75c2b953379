import pytest
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import ValidationError

from accounts import services
from accounts.exceptions import MembershipExists, SubaccountCodeTaken
from accounts.models import Membership
from tests.factories import CompanyFactory, SubaccountFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_company_create_validates_every_field():
    with pytest.raises(ValidationError) as error:
        services.company_create(account_code="bad code!", name="X", billing_timezone="Nowhere")
    assert {"account_code", "billing_timezone"} <= set(error.value.message_dict)


def test_subaccount_create_refuses_a_code_already_used_in_the_company():
    existing = SubaccountFactory(code="ops")
    with pytest.raises(SubaccountCodeTaken, match="already used"):
        services.subaccount_create(company=existing.company, code="ops", name="Again")


def test_deactivating_a_subaccount_keeps_the_instant_and_reactivating_clears_it():
    subaccount = SubaccountFactory()
    services.subaccount_set_active(subaccount=subaccount, active=False)
    subaccount.refresh_from_db()
    assert subaccount.is_active is False
    assert subaccount.deactivated_at is not None
    services.subaccount_set_active(subaccount=subaccount, active=True)
    subaccount.refresh_from_db()
    assert subaccount.is_active is True
    assert subaccount.deactivated_at is None


def test_membership_grant_twice_is_a_clear_error():
    user, company = UserFactory(), CompanyFactory()
    services.membership_grant(user=user, company=company, role=Membership.Role.BILLING)
    with pytest.raises(MembershipExists, match="already a member"):
        services.membership_grant(user=user, company=company, role=Membership.Role.ADMIN)


def test_staff_groups_give_support_read_only_and_finance_invoicing():
    counts = services.staff_groups_sync()
    assert services.staff_groups_sync() == counts  # idempotent
    from django.contrib.auth.models import Group

    support = set(Group.objects.get(name="Support").permissions.values_list("codename", flat=True))
    assert support and all(code.startswith("view_") for code in support)
    assert "view_company" in support
    finance = Group.objects.get(name="Finance").permissions
    assert not finance.filter(codename="change_company").exists()
    admin = Group.objects.get(name="Billing admin").permissions
    assert admin.filter(codename="change_company").exists()
    assert admin.filter(codename="delete_subaccount").exists()


MONEY_PERMISSIONS = {
    "billing.adjust_balance",
    "billing.grant_credits",
    "billing.reverse_transaction",
    "accounts.block_company",
    "accounts.switch_company_mode",
}


def _group_permissions(name: str) -> set[str]:
    return {
        f"{app_label}.{codename}"
        for app_label, codename in Group.objects.get(name=name).permissions.values_list(
            "content_type__app_label", "codename"
        )
    }


def test_billing_admins_get_every_permission_of_the_apps_and_others_no_money_actions():
    services.staff_groups_sync()
    every_billing = {
        f"billing.{codename}"
        for codename in Permission.objects.filter(content_type__app_label="billing").values_list(
            "codename", flat=True
        )
    }
    billing_admin = _group_permissions("Billing admin")
    assert billing_admin >= MONEY_PERMISSIONS
    assert every_billing <= billing_admin
    assert not MONEY_PERMISSIONS & _group_permissions("Support")
    assert not MONEY_PERMISSIONS & _group_permissions("Finance")
