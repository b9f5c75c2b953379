"""Demo money: credits, purchases and a few weeks of charges, posted through the ledger.

Every posting has a fixed idempotency key (by company and day offset), so running the seed
again, even on another day, posts nothing new.
"""

from datetime import timedelta
from decimal import Decimal

from djmoney.money import Money

from accounts.models import Company

from .services import ledger

# Daily usage pattern: (revenue account, description, amount in major units) per day offset.
USAGE_JPY = [("voice", "Voice calls", Decimal(180)), ("sms", "SMS", Decimal(95))]
USAGE_USD = [("api", "API calls", Decimal("1.25")), ("sms", "SMS", Decimal("0.40"))]


def _daily_usage(company: Company, now, days: int, pattern) -> None:
    for offset in range(days, 0, -1):
        day = now - timedelta(days=offset)
        ledger.company_charge_many(
            company=company,
            now=day,
            charges=[
                ledger.ChargeRequest(
                    amount=Money(amount * (1 + offset % 3), company.currency),
                    revenue=revenue,
                    idempotency_key=f"demo:{company.account_code}:usage:{offset}:{revenue}",
                    description=f"{label}, {day:%Y-%m-%d}",
                    effective_at=day,
                )
                for revenue, label, amount in pattern
            ],
        )


def seed_billing(now) -> None:
    acme = Company.objects.get(account_code="acme-prepaid")
    ledger.credits_grant(
        company=acme,
        amount=Money(5000, "JPY"),
        source="trial",
        lifetime=timedelta(days=30),
        idempotency_key="demo:acme:trial",
        description="Welcome trial credit",
        now=now - timedelta(days=25),
    )
    ledger.credits_grant(
        company=acme,
        amount=Money(20000, "JPY"),
        source="purchase",
        lifetime=timedelta(days=90),
        idempotency_key="demo:acme:purchase:1",
        description="Credit purchase (bank transfer)",
        now=now - timedelta(days=21),
    )
    _daily_usage(acme, now, 20, USAGE_JPY)

    kumo = Company.objects.get(account_code="kumo-postpaid")
    ledger.credits_grant(
        company=kumo,
        amount=Money(3000, "JPY"),
        source="grant",
        lifetime=timedelta(days=60),
        idempotency_key="demo:kumo:promo",
        description="Promotional credit",
        now=now - timedelta(days=20),
    )
    _daily_usage(kumo, now, 20, USAGE_JPY)

    globex = Company.objects.get(account_code="globex-usd")
    ledger.credits_grant(
        company=globex,
        amount=Money(Decimal("10.00"), "USD"),
        source="trial",
        lifetime=timedelta(days=7),
        idempotency_key="demo:globex:trial",
        description="Welcome trial credit",
        now=now - timedelta(days=30),
    )
    ledger.credits_grant(
        company=globex,
        amount=Money(Decimal("50.00"), "USD"),
        source="purchase",
        lifetime=timedelta(days=90),
        idempotency_key="demo:globex:purchase:1",
        description="Credit purchase (card)",
        now=now - timedelta(days=15),
    )
    _daily_usage(globex, now, 12, USAGE_USD)
    ledger.credits_expire(company=globex, now=now)
