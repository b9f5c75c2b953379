from datetime import UTC, datetime
from decimal import Decimal

import factory
from djmoney.money import Money

from billing.models import (
    ApiKey,
    Bundle,
    Plan,
    Rate,
    Subscription,
    Tariff,
    api_key_generate,
    api_key_hash,
)

EPOCH = datetime(2020, 1, 1, tzinfo=UTC)


class TariffFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tariff

    name = factory.Sequence(lambda n: f"Tariff {n}")
    currency = "JPY"


class RateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Rate

    tariff = factory.SubFactory(TariffFactory)
    service = "voice"
    destination = ""
    price = Decimal("10")
    effective_from = EPOCH


class PlanFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Plan

    name = factory.Sequence(lambda n: f"Plan {n}")
    currency = "JPY"
    monthly_fee = Money(Decimal("1000"), "JPY")


class BundleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Bundle

    plan = factory.SubFactory(PlanFactory)
    name = "Included minutes"
    service = "voice"
    destinations = ""
    included_quantity = Decimal("600")


class SubscriptionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Subscription

    plan = factory.SubFactory(PlanFactory)
    started_at = EPOCH


def api_key(name: str = "platform") -> tuple[ApiKey, str]:
    """A new API key and its secret (as staff would be shown it once)."""
    raw = api_key_generate()
    return ApiKey.objects.create(name=name, prefix=raw[:10], key_hash=api_key_hash(raw)), raw
