from decimal import Decimal

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from accounts.models import BillingContact, Company, Membership, Subaccount

PASSWORD = "correct-horse-battery"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ["username"]
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class CompanyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Company

    account_code = factory.Sequence(lambda n: f"company-{n}")
    name = factory.Sequence(lambda n: f"Company {n} KK")
    currency = "JPY"
    billing_timezone = "Asia/Tokyo"
    tax_rate = Decimal("0.1000")
    created_at = factory.LazyFunction(timezone.now)


class SubaccountFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Subaccount

    company = factory.SubFactory(CompanyFactory)
    code = factory.Sequence(lambda n: f"sub-{n}")
    name = factory.Sequence(lambda n: f"Subaccount {n}")
    created_at = factory.LazyFunction(timezone.now)


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    company = factory.SubFactory(CompanyFactory)
    role = Membership.Role.ADMIN


class BillingContactFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = BillingContact

    company = factory.SubFactory(CompanyFactory)
    email = factory.Sequence(lambda n: f"billing{n}@example.com")
    name = "Billing Contact"
