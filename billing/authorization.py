"""Real-time spend authorisation: may the company start this usage now, and how much of it
can it afford? A read: nothing is locked or written."""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db.models import Q

from accounts.models import Company, Subaccount

from .models import BundleCounter, Subscription
from .models.plans import destinations_cover
from .periods import monthly_period
from .rating import affordable_quantity
from .selectors import company_available
from .services.rating import RatingError, normalise_destination, tariff_index

ZERO = Decimal(0)


@dataclass(frozen=True)
class Authorization:
    allowed: bool
    max_quantity: Decimal | None  # None: unlimited
    reason: str | None = None


def _refused(reason: str) -> Authorization:
    return Authorization(allowed=False, max_quantity=ZERO, reason=reason)


def bundle_left(company: Company, service: str, destination: str, at: datetime) -> Decimal:
    """Units of ``service`` to ``destination`` left in the company's bundles at ``at``: two
    queries (live subscriptions with their bundles of the service; their counters)."""
    wanted = []
    for subscription_id, started_at, bundle_id, destinations, included in (
        Subscription.objects.filter(
            company=company, started_at__lte=at, plan__bundles__service=service
        )
        .filter(Q(ended_at__isnull=True) | Q(ended_at__gt=at))
        .order_by()
        .values_list(
            "pk",
            "started_at",
            "plan__bundles__id",
            "plan__bundles__destinations",
            "plan__bundles__included_quantity",
        )
    ):
        if destinations_cover(destinations, destination):
            start, _, _ = monthly_period(started_at, at, company.tzinfo)
            wanted.append((subscription_id, bundle_id, start, included))
    if not wanted:
        return ZERO
    used = {
        (row.subscription_id, row.bundle_id, row.period_start): row.used
        for row in BundleCounter.objects.filter(
            subscription_id__in={subscription_id for subscription_id, *_ in wanted},
            period_start__in={start for _, _, start, _ in wanted},
        ).only("subscription_id", "bundle_id", "period_start", "used")
    }
    return sum(
        (
            max(included - used.get((subscription_id, bundle_id, start), ZERO), ZERO)
            for subscription_id, bundle_id, start, included in wanted
        ),
        ZERO,
    )


def usage_authorize(
    *, account: str, subaccount: str | None, service: str, destination: str | None, now: datetime
) -> Authorization:
    company = Company.objects.select_related("tariff").filter(account_code=account).first()
    if company is None:
        return _refused(f"No account “{account}”.")
    if subaccount:
        seat = Subaccount.objects.filter(company=company, code=subaccount).only("is_active").first()
        if seat is None:
            return _refused(f"No subaccount “{subaccount}” in {account}.")
        if not seat.is_active:
            return _refused(f"The subaccount “{subaccount}” is deactivated.")
    if company.is_blocked:
        return _refused(f"Blocked: {company.blocked_reason}.")
    if company.tariff is None:
        return _refused(f"{account} has no tariff to rate usage with.")
    try:
        digits = normalise_destination(service, destination)
        rate, _ = tariff_index(company.tariff).find(service, digits, now)
    except RatingError as error:
        return _refused(str(error))
    available = company_available(company, now)
    if available is None:
        return Authorization(allowed=True, max_quantity=None)
    quantity = affordable_quantity(
        service=service,
        budget=available.amount,
        unit_price=rate.price,
        bundle_left=bundle_left(company, service, digits, now),
        connection_fee=rate.connection_fee,
        minimum=rate.minimum_seconds,
        first=rate.first_increment,
        increment=rate.next_increment,
    )
    if quantity is None:
        return Authorization(allowed=True, max_quantity=None)
    if quantity <= 0:
        return _refused("Not enough credit for the smallest billable unit.")
    return Authorization(allowed=True, max_quantity=quantity)
