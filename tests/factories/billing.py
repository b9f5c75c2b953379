"""Helpers that put money on the books through the ledger service itself (never by rows)."""

import itertools
from datetime import datetime, timedelta
from decimal import Decimal

from djmoney.money import Money

from billing.services import ledger

_keys = itertools.count(1)


def next_key(prefix: str = "test") -> str:
    return f"{prefix}:{next(_keys)}"


def grant(company, amount, *, now: datetime, days: int = 90, source: str = "grant", key=None):
    return ledger.credits_grant(
        company=company,
        amount=Money(Decimal(amount), company.currency),
        source=source,
        idempotency_key=key or next_key("grant"),
        description=f"Test credit {amount}",
        expires_at=now + timedelta(days=days),
        now=now,
    )


def charge(company, amount, *, now: datetime, revenue: str = "voice", key=None, kind="usage"):
    return ledger.company_charge(
        company=company,
        amount=Money(Decimal(amount), company.currency),
        revenue=revenue,
        idempotency_key=key or next_key("charge"),
        description=f"Test charge {amount}",
        kind=kind,
        now=now,
    )
