from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from djmoney.money import Money

from accounts.models import Company, Membership, Subaccount
from tests.factories import CompanyFactory, MembershipFactory, SubaccountFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_new_company_is_prepaid_jpy_and_active():
    company = Company.objects.create(account_code="fresh", name="Fresh KK")
    assert company.mode == Company.Mode.PREPAID
    assert company.currency == "JPY"
    assert company.status == Company.Status.ACTIVE
    assert company.credit_limit is None


def test_account_code_is_unique():
    CompanyFactory(account_code="dup")
    with pytest.raises(IntegrityError), transaction.atomic():
        CompanyFactory(account_code="dup")


def test_blocked_company_must_say_why():
    company = CompanyFactory()
    company.status = Company.Status.BLOCKED
    with pytest.raises(IntegrityError), transaction.atomic():
        company.save()
    company.blocked_reason = "manual: fraud check"
    company.save()


def test_credit_limit_in_another_currency_is_refused_by_form_validation_and_database():
    company = CompanyFactory(currency="JPY")
    company.credit_limit = Money(Decimal("100.00"), "USD")
    with pytest.raises(ValidationError) as error:
        company.full_clean()
    assert "credit_limit" in error.value.message_dict
    with pytest.raises(IntegrityError), transaction.atomic():
        company.save()


def test_credit_limit_cannot_be_negative():
    company = CompanyFactory()
    company.credit_limit = Money(Decimal("-1"), "JPY")
    with pytest.raises(IntegrityError), transaction.atomic():
        company.save()


def test_tax_rate_above_one_is_refused():
    company = CompanyFactory()
    company.tax_rate = Decimal("1.5")
    with pytest.raises(IntegrityError), transaction.atomic():
        company.save()


def test_unknown_billing_time_zone_fails_validation():
    company = CompanyFactory.build(billing_timezone="Mars/Olympus")
    with pytest.raises(ValidationError) as error:
        company.full_clean()
    assert "billing_timezone" in error.value.message_dict


def test_subaccount_code_is_unique_within_a_company_only():
    first = SubaccountFactory(code="ops")
    SubaccountFactory(code="ops")  # another company may reuse it
    with pytest.raises(IntegrityError), transaction.atomic():
        SubaccountFactory(company=first.company, code="ops")


def test_inactive_subaccount_records_when_it_was_deactivated():
    subaccount = SubaccountFactory()
    subaccount.is_active = False
    with pytest.raises(IntegrityError), transaction.atomic():
        subaccount.save()
    subaccount.deactivated_at = timezone.now()
    subaccount.save()
    assert not Subaccount.objects.get(pk=subaccount.pk).is_active


def test_a_user_belongs_to_a_company_once():
    membership = MembershipFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        Membership.objects.create(user=membership.user, company=membership.company)


def test_a_user_may_belong_to_several_companies():
    user = UserFactory()
    MembershipFactory(user=user)
    MembershipFactory(user=user, role=Membership.Role.MEMBER)
    assert user.memberships.count() == 2


def test_tariff_in_another_currency_fails_validation():
    from tests.factories.rating import TariffFactory

    company = CompanyFactory(currency="JPY")
    company.tariff = TariffFactory(currency="USD")
    with pytest.raises(ValidationError) as error:
        company.full_clean()
    assert "tariff" in error.value.message_dict
