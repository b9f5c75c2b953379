"""Reads for the portal's Subscriptions & numbers page: what a company pays for on a schedule.

Plans with their bundles (how much of each is used this period), phone numbers (DIDs), the
per-seat fee, service fees, and the recurring charges of the last three months, each of
which names its item and its period so that a customer can check every line.

``recurring_overview`` costs a fixed number of queries whatever the number of rows (one per
kind of item, the plans' bundles prefetched, the bundle counters in one query), and
``recent_recurring_charges`` is a queryset the view paginates (a count and a page).

Dates are computed in the company's billing time zone, as the charges themselves are
(``billing.periods``); a period's last day is the day before the next one starts, as in the
charges' descriptions.
"""

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal

from django.db.models import Q, QuerySet
from django.utils.translation import gettext as _
from djmoney.money import Money

from accounts.models import Company, Subaccount

from .models import (
    Bundle,
    BundleCounter,
    PhoneNumber,
    RecurringCharge,
    SeatFee,
    ServiceFee,
    Subscription,
)
from .periods import anniversary, monthly_period
from .rating import NUMBER_SERVICES
from .selectors_usage import _number, format_quantity, service_label

ZERO = Decimal(0)
RECENT_MONTHS = 3


def _last_day(end: datetime, tz) -> date:
    return end.astimezone(tz).date() - timedelta(days=1)


def format_bundle_quantity(service: str, quantity: Decimal) -> str:
    """Like ``format_quantity``, but voice in minutes: bundles are sold as "500 minutes", and
    "8 h 20 min" would not read as the same thing."""
    if service != "voice":
        return format_quantity(service, quantity)
    quantity = Decimal(quantity)
    minutes = int(quantity // 60)
    seconds = quantity - minutes * 60
    values = {"minutes": _number(Decimal(minutes), 0), "seconds": _number(seconds)}
    if seconds:
        if seconds < 10:
            values["seconds"] = "0" + values["seconds"]
        return _("%(minutes)s min %(seconds)s s") % values
    return _("%(minutes)s min") % values


# --- Plans and bundles ------------------------------------------------------------------------


@dataclass(frozen=True)
class BundleLine:
    """One bundle of a subscription in the period that contains ``now``."""

    bundle: Bundle
    period_start: datetime
    period_end: datetime  # exclusive
    last_day: date  # the period's last day in the billing time zone
    used: Decimal

    @property
    def included(self) -> Decimal:
        return self.bundle.included_quantity

    @property
    def remaining(self) -> Decimal:
        return max(self.included - self.used, ZERO)

    @property
    def percent_used(self) -> int:
        """Whole percent for the bar (an int renders the same in every language); a little
        use shows as 1 %, never as an empty bar."""
        if self.used <= 0:
            return 0
        return max(1, min(100, int(self.used * 100 / self.included)))

    @property
    def used_up(self) -> bool:
        return self.remaining <= 0

    @property
    def included_display(self) -> str:
        return format_bundle_quantity(self.bundle.service, self.included)

    @property
    def used_display(self) -> str:
        return format_bundle_quantity(self.bundle.service, self.used)

    @property
    def remaining_display(self) -> str:
        return format_bundle_quantity(self.bundle.service, self.remaining)

    @property
    def scope(self) -> str:
        """ "Voice to +81", "Mobile data to JP, KR", "SMS"."""
        service = self.bundle.service
        destinations = self.bundle.destination_list
        if not destinations:
            return service_label(service)
        if service in NUMBER_SERVICES:
            destinations = ["+" + prefix.lstrip("+") for prefix in destinations]
        return _("%(service)s to %(destinations)s") % {
            "service": service_label(service),
            "destinations": ", ".join(destinations),
        }


@dataclass(frozen=True)
class PlanLine:
    subscription: Subscription
    bundles: list[BundleLine]
    awaiting_first_use: bool  # PAYGO from first use, not used yet: no fee so far
    next_amount: Money | None  # None: nothing more is scheduled
    includes_activation: bool  # the next charge is the first one, with the activation fee
    starts_later: bool  # ordered to start in the future

    @property
    def plan(self):
        return self.subscription.plan


def _plan_line(subscription: Subscription, used: dict, now: datetime, tz) -> PlanLine:
    plan = subscription.plan
    bundles = []
    # A subscription ordered to start later shows its first period.
    at = max(now, subscription.started_at)
    for bundle in plan.bundles.all():
        start, end, _index = monthly_period(subscription.started_at, at, tz)
        bundles.append(
            BundleLine(
                bundle=bundle,
                period_start=start,
                period_end=end,
                last_day=_last_day(end, tz),
                used=used.get((subscription.pk, bundle.pk, start), ZERO),
            )
        )
    awaiting = subscription.fee_anchor_at is None and plan.fee_starts == plan.FeeStart.FIRST_USE
    next_amount = None
    includes_activation = False
    if subscription.next_charge_at is not None:
        amount = plan.monthly_fee.amount
        # The first period is charged with the activation fee (``recurring_due``).
        if (
            subscription.next_charge_at == subscription.fee_anchor_at
            and plan.activation_fee
            and plan.activation_fee.amount > 0
        ):
            amount += plan.activation_fee.amount
            includes_activation = True
        next_amount = Money(amount, plan.currency)
    return PlanLine(
        subscription=subscription,
        bundles=bundles,
        awaiting_first_use=awaiting,
        next_amount=next_amount,
        includes_activation=includes_activation,
        starts_later=subscription.started_at > now,
    )


def _bundle_usage(subscriptions: list[Subscription], now: datetime, tz) -> dict:
    """Units used, by (subscription, bundle, period start), in each subscription's period
    that contains ``now``: one query (none without bundles), as ``authorization.bundle_left``
    reads them."""
    wanted = {
        (sub.pk, monthly_period(sub.started_at, max(now, sub.started_at), tz)[0])
        for sub in subscriptions
        if sub.plan.bundles.all()
    }
    if not wanted:
        return {}
    return {
        (row.subscription_id, row.bundle_id, row.period_start): row.used
        for row in BundleCounter.objects.filter(
            subscription_id__in={sub for sub, _start in wanted},
            period_start__in={start for _sub, start in wanted},
        ).only("subscription_id", "bundle_id", "period_start", "used")
    }


# --- Numbers and seats ------------------------------------------------------------------------


@dataclass(frozen=True)
class NumberLine:
    number: PhoneNumber
    released: bool  # released by now (a release set for later still counts as assigned)


@dataclass(frozen=True)
class NumbersTotal:
    count: int  # numbers assigned now
    monthly: Money  # what they cost a month


@dataclass(frozen=True)
class SeatLine:
    fee: SeatFee
    seats: int  # active subaccounts now
    monthly: Money  # at today's count; a charge counts the seats active when it is made


# --- The page ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecurringOverview:
    plans: list[PlanLine]  # live (and not yet started) subscriptions, oldest first
    ended: list[Subscription]  # ended since ``since``, latest first
    numbers: list[NumberLine]  # assigned by number, then released since ``since``
    numbers_total: NumbersTotal
    seats: list[SeatLine]
    service_fees: list[ServiceFee]
    since: datetime  # start of the "recent" window, in the billing time zone

    @property
    def bundles(self) -> list[tuple[PlanLine, BundleLine]]:
        return [(plan, line) for plan in self.plans for line in plan.bundles]


def recent_since(company: Company, now: datetime) -> datetime:
    """Midnight in the billing time zone, ``RECENT_MONTHS`` months before today."""
    tz = company.tzinfo
    today = datetime.combine(now.astimezone(tz).date(), time(0), tzinfo=tz)
    return anniversary(today, -RECENT_MONTHS, tz)


def _live(queryset: QuerySet, now: datetime, end_field: str = "ended_at") -> QuerySet:
    return queryset.filter(Q(**{f"{end_field}__isnull": True}) | Q(**{f"{end_field}__gt": now}))


def recurring_overview(company: Company, now: datetime) -> RecurringOverview:
    """Everything the company is charged for on a schedule, as of ``now``. At most seven
    queries: subscriptions, their bundles, bundle counters, numbers, seat fees, the seat
    count, service fees."""
    tz = company.tzinfo
    since = recent_since(company, now)

    subscriptions = list(
        Subscription.objects.filter(company=company)
        .filter(Q(ended_at__isnull=True) | Q(ended_at__gte=since))
        .select_related("plan")
        .prefetch_related("plan__bundles")
        .order_by("started_at", "id")
    )
    live = [sub for sub in subscriptions if sub.ended_at is None or sub.ended_at > now]
    ended = sorted(
        (sub for sub in subscriptions if sub.ended_at is not None and sub.ended_at <= now),
        key=lambda sub: (sub.ended_at, sub.pk),
        reverse=True,
    )
    used = _bundle_usage(live, now, tz)

    numbers = list(
        PhoneNumber.objects.filter(company=company)
        .filter(Q(released_at__isnull=True) | Q(released_at__gte=since))
        .order_by("number", "-assigned_at", "id")
    )
    # Assigned numbers first, then released ones, latest release first.
    assigned = [n for n in numbers if n.released_at is None or n.released_at > now]
    released = sorted(
        (n for n in numbers if n.released_at is not None and n.released_at <= now),
        key=lambda n: (n.released_at, n.pk),
        reverse=True,
    )
    numbers_total = NumbersTotal(
        count=len(assigned),
        monthly=Money(sum((n.monthly_price.amount for n in assigned), ZERO), company.currency),
    )

    seat_fees = list(_live(SeatFee.objects.filter(company=company), now).order_by("id"))
    seats = []
    if seat_fees:
        active = Subaccount.objects.filter(
            company=company, is_active=True, created_at__lte=now
        ).count()
        seats = [
            SeatLine(
                fee=fee,
                seats=active,
                monthly=Money(fee.price_per_seat.amount * active, company.currency),
            )
            for fee in seat_fees
        ]

    service_fees = list(
        _live(ServiceFee.objects.filter(company=company), now).order_by("name", "id")
    )

    return RecurringOverview(
        plans=[_plan_line(sub, used, now, tz) for sub in live],
        ended=ended,
        numbers=[NumberLine(n, released=False) for n in assigned]
        + [NumberLine(n, released=True) for n in released],
        numbers_total=numbers_total,
        seats=seats,
        service_fees=service_fees,
        since=since,
    )


def recent_recurring_charges(company: Company, since: datetime) -> QuerySet[RecurringCharge]:
    """The company's recurring and one-time charges for periods that started since
    ``since``, newest period first, with their ledger transaction and its reversal (one
    query a page; the ``(company, period_start)`` index)."""
    return (
        RecurringCharge.objects.filter(company=company, period_start__gte=since)
        .select_related("transaction", "transaction__reversed_by")
        .order_by("-period_start", "item", "description", "-id")
    )
