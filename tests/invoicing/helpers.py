"""Money for statement tests, put on the books through the ledger service."""

import itertools
from datetime import datetime
from decimal import Decimal

from djmoney.money import Money

from billing.models import ApiKey, UsageRecord
from billing.services import ledger

_keys = itertools.count(1)


def fee(company, amount, *, at: datetime, description="Plan monthly fee", kind="recurring_fee"):
    return ledger.company_charge(
        company=company,
        amount=Money(Decimal(amount), company.currency),
        revenue="plan_fee",
        idempotency_key=f"test-fee:{next(_keys)}",
        description=description,
        kind=kind,
        effective_at=at,
        now=at,
    ).transaction


def usage(
    company,
    amount,
    *,
    at: datetime,
    service="voice",
    quantity=60,
    records=1,
    received: datetime | None = None,
):
    """A usage charge and its detail records (``records`` of ``quantity`` each): events
    that happened ``at`` and were received (and charged) then, or ``received`` later."""
    received = received or at
    result = ledger.company_charge(
        company=company,
        amount=Money(Decimal(amount), company.currency),
        revenue=service,
        idempotency_key=f"test-usage:{next(_keys)}",
        description=f"{service} usage",
        now=received,
    )
    api_key = ApiKey.objects.get_or_create(
        name="test", defaults={"prefix": "tg_t", "key_hash": "x"}
    )[0]
    # The records add up to the charge exactly (``manage.py reconcile`` checks it): the last
    # one takes what division leaves.
    per_record = (Decimal(amount) / records).quantize(Decimal("0.0001"))
    amounts = [per_record] * (records - 1) + [Decimal(amount) - per_record * (records - 1)]
    UsageRecord.objects.bulk_create(
        [
            UsageRecord(
                api_key=api_key,
                event_id=f"e{next(_keys)}",
                account_code=company.account_code,
                company=company,
                service=service,
                quantity=Decimal(quantity),
                occurred_at=at,
                received_at=received,
                status=UsageRecord.Status.CHARGED,
                amount=Money(record_amount, company.currency),
                transaction=result.transaction,
            )
            for record_amount in amounts
        ]
    )
    return result.transaction


def grant(company, amount, *, at: datetime, days=90):
    from datetime import timedelta

    return ledger.credits_grant(
        company=company,
        amount=Money(Decimal(amount), company.currency),
        source="grant",
        idempotency_key=f"test-grant:{next(_keys)}",
        description="Welcome credit",
        expires_at=at + timedelta(days=days),
        now=at,
    ).transaction


def summary_adds_up(statement) -> bool:
    """The statement summary's rows before the closing balance add up to it."""
    from invoicing.selectors import statement_totals

    rows = [amount.amount for _label, amount in statement_totals(statement)]
    if statement.is_invoice:  # ... closing balance, total due
        return sum(rows[:-2]) == rows[-2]
    return sum(rows[:-1]) == rows[-1]  # ... credit balance


def prepaid_with_two_contacts():
    """A prepaid company in Tokyo with an English and a Japanese billing contact."""
    from accounts.models import Company
    from tests.factories import BillingContactFactory, CompanyFactory

    company = CompanyFactory(mode=Company.Mode.PREPAID, billing_timezone="Asia/Tokyo")
    BillingContactFactory(company=company, email="ap@example.com", language="en")
    BillingContactFactory(company=company, email="keiri@example.jp", language="ja")
    return company
