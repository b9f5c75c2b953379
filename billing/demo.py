"""Demo money and usage: tariffs, plans with bundles, credits, and three months of usage
reported through the usage service itself, day by day.

Everything is found or created by a natural key, and every event and grant has a fixed id,
so running the seed again (even days later) adds nothing.
"""

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from djmoney.money import Money

from accounts.models import Company, Subaccount

from .models import (
    ApiKey,
    Bundle,
    PhoneNumber,
    Plan,
    Rate,
    SeatFee,
    Subscription,
    Tariff,
    api_key_hash,
)
from .services import ledger, recurring
from .services.usage import UsageEvent, usage_ingest

# Demo only: a fixed key so the README can show API calls. Never run seed_demo in production.
DEMO_API_KEY = "tg_demo_key_do_not_use_in_production"
DAYS = 90
EPOCH = datetime(2020, 1, 1, tzinfo=UTC)

# service, destination, price per unit, connection fee, minimum, first, next increment
JPY_RATES = [
    ("voice", "", "60", "0", 0, 60, 60),
    ("voice", "81", "8", "0", 0, 60, 60),  # Japanese landlines
    ("voice", "8150", "8", "0", 0, 60, 60),  # 050 IP phones
    ("voice", "8170", "16", "0", 0, 30, 6),  # mobiles
    ("voice", "8180", "16", "0", 0, 30, 6),
    ("voice", "8190", "16", "0", 0, 30, 6),
    ("voice", "1", "12", "0", 0, 6, 6),  # US and Canada
    ("voice", "44", "15", "0", 0, 60, 60),
    ("voice", "447", "30", "0", 0, 60, 60),  # UK mobiles
    ("voice", "82", "18", "0", 0, 60, 60),
    ("voice", "86", "20", "0", 0, 60, 60),
    ("voice", "65", "14", "10", 0, 60, 60),
    ("sms", "", "10", "0", 0, 1, 1),
    ("sms", "81", "4", "0", 0, 1, 1),
    ("fax", "", "30", "0", 0, 1, 1),
    ("fax", "81", "10", "0", 0, 1, 1),
    ("api", "", "0.05", "0", 0, 1, 1),
    ("data", "", "5", "0", 0, 1, 1),
    ("data", "JP", "0.5", "0", 0, 1, 1),
    ("data", "US", "1.2", "0", 0, 1, 1),
    ("data", "KR", "1.5", "0", 0, 1, 1),
    ("disk", "", "20", "0", 0, 1, 1),
]
USD_RATES = [
    ("voice", "", "0.08", "0", 0, 60, 60),
    ("voice", "1", "0.01", "0", 0, 6, 6),
    ("voice", "81", "0.06", "0", 0, 60, 60),
    ("sms", "", "0.05", "0", 0, 1, 1),
    ("sms", "1", "0.0079", "0", 0, 1, 1),
    ("api", "", "0.0004", "0", 0, 1, 1),
    ("data", "", "0.004", "0", 0, 1, 1),
    ("data", "US", "0.002", "0", 0, 1, 1),
    ("disk", "", "0.15", "0", 0, 1, 1),
]
NUMBERS = {
    "JPY": [
        "+81312345678",
        "+819012345678",
        "+818023456789",
        "+815012345678",
        "+12125550100",
        "+447700900123",
        "+6561234567",
    ],
    "USD": ["+12125550100", "+14155550123", "+819012345678"],
}


def _tariff(name: str, currency: str, rows) -> Tariff:
    tariff, created = Tariff.objects.get_or_create(
        name=name, defaults={"currency": currency, "description": "Demo price list"}
    )
    if created:
        Rate.objects.bulk_create(
            Rate(
                tariff=tariff,
                service=service,
                destination=destination,
                price=Decimal(price),
                connection_fee=Decimal(fee),
                minimum_seconds=minimum,
                first_increment=first,
                next_increment=step,
                effective_from=EPOCH,
            )
            for service, destination, price, fee, minimum, first, step in rows
        )
    return tariff


def _plan(
    name: str, currency: str, monthly: str, activation: str | None, bundles, **fields
) -> Plan:
    plan, created = Plan.objects.get_or_create(
        name=name,
        defaults={
            "currency": currency,
            "monthly_fee": Money(Decimal(monthly), currency),
            "activation_fee": Money(Decimal(activation), currency) if activation else None,
            **fields,
        },
    )
    if created:
        Bundle.objects.bulk_create(
            Bundle(
                plan=plan,
                name=label,
                service=service,
                destinations=dests,
                included_quantity=Decimal(qty),
            )
            for label, service, dests, qty in bundles
        )
    return plan


def _day_events(company: Company, day: datetime, seats: list[str]) -> list[UsageEvent]:
    """A day's traffic, the same every time for the same company and day offset."""
    rng = random.Random(f"{company.account_code}:{day:%Y-%m-%d}")
    numbers = NUMBERS[company.currency]
    events = []
    for n in range(rng.randint(6, 14)):
        service = rng.choice(["voice", "voice", "voice", "sms", "sms", "api", "data"])
        quantity = {
            "voice": rng.randint(5, 600),
            "sms": rng.randint(1, 3),
            "api": rng.randint(50, 2000),
            "data": rng.randint(1, 80) * 1_000_000,
        }[service]
        destination = None
        if service in ("voice", "sms"):
            destination = rng.choice(numbers)
        elif service == "data":
            destination = rng.choice(["JP", "JP", "US", "KR"])
        events.append(
            UsageEvent(
                id=f"demo:{company.account_code}:{day:%Y%m%d}:{n}",
                account=company.account_code,
                subaccount=rng.choice(seats),
                service=service,
                destination=destination,
                quantity=Decimal(quantity),
                occurred_at=day + timedelta(minutes=rng.randint(0, 600)),
            )
        )
    return events


def seed_billing(now: datetime, midday: Callable[[datetime], None] | None = None) -> str:
    """Seed tariffs, plans, credits and usage; returns the demo API key.

    ``midday(at)`` is called each simulated day before its usage is charged, so that a
    caller can post what happened by then (statements, payments) in the order it
    happened: a company's balance after each transaction follows its history."""
    jpy = _tariff("Standard JPY", "JPY", JPY_RATES)
    usd = _tariff("Standard USD", "USD", USD_RATES)
    business = _plan(
        "Business 500",
        "JPY",
        "5000",
        "3000",
        [("500 domestic minutes", "voice", "81", "30000"), ("1,000 SMS", "sms", "", "1000")],
        description="500 minutes to Japanese numbers and 1,000 SMS a month",
    )
    _plan(
        "Data PAYGO",
        "JPY",
        "500",
        None,
        [],
        is_paygo=True,
        fee_starts=Plan.FeeStart.FIRST_USE,
        description="Data per MB by country at the tariff; monthly fee from first use",
    )
    key, _ = ApiKey.objects.get_or_create(
        key_hash=api_key_hash(DEMO_API_KEY),
        defaults={"name": "Demo platform", "prefix": DEMO_API_KEY[:10]},
    )

    companies = {
        c.account_code: c
        for c in Company.objects.filter(
            account_code__in=["acme-prepaid", "kumo-postpaid", "globex-usd"]
        )
    }
    start = (now - timedelta(days=DAYS)).replace(hour=0, minute=0, second=0, microsecond=0)
    for code, tariff in [("acme-prepaid", jpy), ("kumo-postpaid", jpy), ("globex-usd", usd)]:
        Company.objects.filter(pk=companies[code].pk, tariff=None).update(tariff=tariff)
        companies[code].refresh_from_db()
    ordered = start + timedelta(days=3)
    for code in ("acme-prepaid", "kumo-postpaid"):
        if not Subscription.objects.filter(company=companies[code], plan=business).exists():
            recurring.subscription_order(company=companies[code], plan=business, at=ordered)
    for code, number, price in [
        ("acme-prepaid", "+81 50 3000 0001", 300),
        ("kumo-postpaid", "+81 50 3000 0101", 300),
        ("kumo-postpaid", "+81 50 3000 0102", 300),
        ("kumo-postpaid", "+81 3 4500 0100", 500),
    ]:
        if not PhoneNumber.objects.filter(number=number, released_at=None).exists():
            recurring.phone_number_assign(
                company=companies[code],
                number=number,
                monthly_price=Money(price, "JPY"),
                at=ordered,
            )
    if not SeatFee.objects.filter(company=companies["kumo-postpaid"]).exists():
        SeatFee.objects.create(
            company=companies["kumo-postpaid"],
            price_per_seat=Money(200, "JPY"),
            started_at=ordered,
            next_charge_at=ordered,
        )

    grants = {
        ("acme-prepaid", 0): ("trial", "5000", 30, "Welcome trial credit"),
        ("acme-prepaid", 10): ("purchase", "30000", 90, "Credit purchase (bank transfer)"),
        ("acme-prepaid", 55): ("purchase", "30000", 90, "Credit purchase (card)"),
        ("kumo-postpaid", 20): ("grant", "3000", 60, "Promotional credit"),
        ("globex-usd", 0): ("trial", "10.00", 7, "Welcome trial credit"),
        ("globex-usd", 8): ("purchase", "150.00", 90, "Credit purchase (card)"),
    }
    seats = {
        code: list(Subaccount.objects.filter(company=company).values_list("code", flat=True))
        for code, company in companies.items()
    }
    for offset in range(DAYS):
        day = start + timedelta(days=offset)
        for code, company in companies.items():
            if (code, offset) in grants:
                source, amount, days, description = grants[(code, offset)]
                ledger.credits_grant(
                    company=company,
                    amount=Money(Decimal(amount), company.currency),
                    source=source,
                    lifetime=timedelta(days=days),
                    idempotency_key=f"demo:{code}:{source}:{offset}",
                    description=description,
                    now=day,
                )
            ledger.credits_expire(company=company, now=day)
        if midday is not None:
            midday(day + timedelta(hours=12))
        for code, company in companies.items():
            events = _day_events(company, day + timedelta(hours=1), seats[code])
            usage_ingest(api_key=key, events=events, now=day + timedelta(hours=12))
            recurring.recurring_charge_company(
                company=company, as_of=day + timedelta(hours=12), now=day + timedelta(hours=12)
            )
    for company in companies.values():
        ledger.credits_expire(company=company, now=now)
    return DEMO_API_KEY
