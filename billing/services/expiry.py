"""Expiring credit across all companies: the batch around ``ledger.credits_expire``."""

from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from accounts.models import Company

from ..models import CreditLot
from .ledger import credits_expire


@dataclass(frozen=True)
class ExpirySummary:
    companies: int
    lots: int


def companies_with_expired_credit(now: datetime) -> list[int]:
    return list(
        CreditLot.objects.filter(remaining__gt=0, expires_at__lte=now)
        .values_list("company_id", flat=True)
        .distinct()
        .order_by("company_id")
    )


def credits_expire_due(*, now: datetime | None = None) -> ExpirySummary:
    """Expire every expired remainder, one company per database transaction (so one company's
    failure or a kill midway leaves the others done; a rerun finishes the rest)."""
    now = now or timezone.now()
    companies = lots = 0
    for company in Company.objects.filter(pk__in=companies_with_expired_credit(now)):
        posted = credits_expire(company=company, now=now)
        companies += bool(posted)
        lots += len(posted)
    return ExpirySummary(companies=companies, lots=lots)
