"""The company page's "Upcoming charges": each live recurring item of one company with its
next charge (instant and amount), read in one query however many items it has.

An item is listed while it runs (no end, or an end still to come) or while a period that
started before its end is still to be charged. The amount is what its next charge would be
if it were made now: the plan's monthly fee (with the activation fee while the first period
is still to charge), the number's monthly price, the seats active now × the seat price, the
service fee. The charge itself counts the seats active at its period's start
(``billing.services.recurring``), and staff may change the seats before then.

Admin-only reads: the portal's page has its own in ``billing.selectors_recurring``.
"""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db.models import (
    BooleanField,
    Case,
    CharField,
    Count,
    DateTimeField,
    DecimalField,
    ExpressionWrapper,
    F,
    IntegerField,
    Q,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Cast, Coalesce
from djmoney.money import Money

from accounts.models import Company, Subaccount

from ..models import PhoneNumber, RecurringCharge, SeatFee, ServiceFee, Subscription
from ..money import MONEY_DECIMAL_PLACES, MONEY_MAX_DIGITS

Item = RecurringCharge.Item

# Enough for any company a person reads on one page; the item lists hold the rest.
UPCOMING_SHOWN = 50

COLUMNS = [
    "u_item",
    "u_pk",
    "u_label",
    "u_period",
    "u_next",
    "u_amount",
    "u_currency",
    "u_activation",
    "u_seats",
    "u_first_use",
    "u_ends",
]


@dataclass(frozen=True)
class UpcomingCharge:
    item: str  # a RecurringCharge.Item (plan_fee for a subscription)
    model_name: str  # the item's admin: subscription, phonenumber, seatfee, servicefee
    pk: int
    label: str  # the plan's name, the number, the fee's name ("" for seats)
    period: str  # a ServiceFee.Period for a service fee, else ""
    next_charge_at: datetime | None  # None: nothing more is scheduled
    price: Money  # the plan's monthly fee, the number's price, per seat, the service fee
    amount: Money  # what the next charge would be now (with seats and activation fee)
    activation_fee: Money | None  # included in ``amount``: the first period is still due
    seats: int | None  # seats active now (seat fees)
    awaiting_first_use: bool  # a PAYGO plan whose fee starts at its first usage, not used
    ends_at: datetime | None

    def due(self, now: datetime) -> bool:
        return self.next_charge_at is not None and self.next_charge_at <= now


def _amount_field() -> DecimalField:
    return DecimalField(max_digits=MONEY_MAX_DIGITS, decimal_places=MONEY_DECIMAL_PLACES)


def _decimal(expression) -> ExpressionWrapper:
    # A money column read as its plain amount (its currency is another column).
    return ExpressionWrapper(expression, output_field=_amount_field())


def _rows(queryset, end_field: str, now: datetime, **columns):
    """One side of the union: ``columns`` in the order of ``COLUMNS`` (defaults: none)."""
    defaults = {
        "u_pk": F("pk"),
        "u_next": ExpressionWrapper(F("next_charge_at"), output_field=DateTimeField()),
        "u_period": Value("", output_field=CharField()),
        # Typed NULLs: PostgreSQL matches each column's type across the union.
        "u_activation": Cast(Value(None), _amount_field()),
        "u_seats": Cast(Value(None), IntegerField()),
        "u_first_use": Value(False, output_field=BooleanField()),
        "u_ends": ExpressionWrapper(F(end_field), output_field=DateTimeField()),
    }
    live = (
        Q(next_charge_at__isnull=False)
        | Q(**{f"{end_field}__isnull": True})
        | Q(**{f"{end_field}__gt": now})
    )
    annotations = {**defaults, **columns}
    return (
        queryset.filter(live)
        .order_by()
        .annotate(**{name: annotations[name] for name in COLUMNS})
        .values(*COLUMNS)
    )


def upcoming_charges(
    company: Company, now: datetime, limit: int = UPCOMING_SHOWN
) -> tuple[list[UpcomingCharge], bool]:
    """The company's live items, soonest next charge first (nothing scheduled last), and
    whether there were more than ``limit``. One query."""
    seats_now = (
        Subaccount.objects.filter(company=company, created_at__lte=now)
        .filter(Q(is_active=True) | Q(deactivated_at__gt=now))
        .order_by()
        .values("company")
        .annotate(count=Count("*"))
        .values("count")
    )
    subscriptions = _rows(
        Subscription.objects.filter(company=company),
        "ended_at",
        now,
        u_item=Value(Item.PLAN_FEE.value, output_field=CharField()),
        u_label=F("plan__name"),
        u_amount=_decimal(F("plan__monthly_fee")),
        u_currency=F("plan__currency"),
        # The first period is charged with the activation fee (``recurring_due``).
        u_activation=Case(
            When(next_charge_at=F("fee_anchor_at"), then=_decimal(F("plan__activation_fee"))),
            default=None,
            output_field=_amount_field(),
        ),
        u_first_use=ExpressionWrapper(Q(fee_anchor_at__isnull=True), output_field=BooleanField()),
    )
    numbers = _rows(
        PhoneNumber.objects.filter(company=company),
        "released_at",
        now,
        u_item=Value(Item.DID.value, output_field=CharField()),
        u_label=F("number"),
        u_amount=_decimal(F("monthly_price")),
        u_currency=F("monthly_price_currency"),
    )
    seat_fees = _rows(
        SeatFee.objects.filter(company=company),
        "ended_at",
        now,
        u_item=Value(Item.SEATS.value, output_field=CharField()),
        u_label=Value("", output_field=CharField()),
        u_amount=_decimal(F("price_per_seat")),
        u_currency=F("price_per_seat_currency"),
        u_seats=Coalesce(Subquery(seats_now, output_field=IntegerField()), 0),
    )
    service_fees = _rows(
        ServiceFee.objects.filter(company=company),
        "ended_at",
        now,
        u_item=Value(Item.SERVICE_FEE.value, output_field=CharField()),
        u_label=F("name"),
        u_period=F("period"),
        u_amount=_decimal(F("amount")),
        u_currency=F("amount_currency"),
    )
    union = subscriptions.union(numbers, seat_fees, service_fees, all=True).order_by(
        F("u_next").asc(nulls_last=True), "u_item", "u_label", "u_pk"
    )
    rows = list(union[: limit + 1])
    return [_upcoming(row) for row in rows[:limit]], len(rows) > limit


MODEL_NAMES = {
    Item.PLAN_FEE: "subscription",
    Item.DID: "phonenumber",
    Item.SEATS: "seatfee",
    Item.SERVICE_FEE: "servicefee",
}


def _upcoming(row: dict) -> UpcomingCharge:
    currency = row["u_currency"]
    seats = row["u_seats"]
    price = Decimal(row["u_amount"])
    amount = price * (1 if seats is None else seats)
    activation = None
    if row["u_activation"] and row["u_activation"] > 0:
        activation = Money(row["u_activation"], currency)
        amount += activation.amount
    return UpcomingCharge(
        item=row["u_item"],
        model_name=MODEL_NAMES[row["u_item"]],
        pk=row["u_pk"],
        label=row["u_label"],
        period=row["u_period"],
        next_charge_at=row["u_next"],
        price=Money(price, currency),
        amount=Money(amount, currency),
        activation_fee=activation,
        seats=seats,
        awaiting_first_use=bool(row["u_first_use"]) and row["u_next"] is None,
        ends_at=row["u_ends"],
    )
