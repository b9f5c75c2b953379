"""Pure pricing arithmetic: billing increments, units and the one rounding step.

Nothing here reads the database or the clock; ``billing.services.rating`` feeds it rates
and bundle balances and keeps the explanation.

Units. Each service is priced per unit of its own:

============  ==================  ======================================
service       quantity reported   price is per
============  ==================  ======================================
voice         seconds             minute (billed seconds × price / 60)
sms           messages            message
fax           pages               page
api           calls               call
data          bytes               MB (10^6 bytes), pro rata
disk          bytes               GB (10^9 bytes), pro rata
============  ==================  ======================================

Precision. Rates keep six decimal places; quantities are exact decimals; a charge is
computed exactly and rounded once, half up, to the currency's minor unit (JPY 0, USD 2),
which is the one rounding step of an event (``billing.money.quantize_amount``).
"""

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import NamedTuple

from .money import currency_exponent, quantize_amount

SERVICES = ("voice", "sms", "fax", "api", "data", "disk")
PER_UNIT: dict[str, Decimal] = {
    "voice": Decimal(60),
    "sms": Decimal(1),
    "fax": Decimal(1),
    "api": Decimal(1),
    "data": Decimal(10) ** 6,
    "disk": Decimal(10) ** 9,
}
UNIT_NAMES = {
    "voice": "min",
    "sms": "SMS",
    "fax": "page",
    "api": "call",
    "data": "MB",
    "disk": "GB",
}
# Reported in whole units (messages, pages, calls, bytes): a fraction of one is malformed.
# Voice seconds may have a fraction: increments round them up.
WHOLE_COUNT_SERVICES = frozenset({"sms", "fax", "api", "data", "disk"})
# Destinations: E.164 numbers (longest prefix) for these, ISO countries for data.
NUMBER_SERVICES = frozenset({"voice", "sms", "fax"})
COUNTRY_SERVICES = frozenset({"data"})
ZERO = Decimal(0)


def billed_seconds(seconds: Decimal, *, minimum: int, first: int, increment: int) -> Decimal:
    """Seconds billed for a call of ``seconds``: at least ``minimum``, the first increment
    whole, then whole next increments (60/60 bills per started minute, 1/1 per second).

    A call of zero seconds (not answered) bills nothing.
    """
    if seconds <= 0:
        return ZERO
    seconds = max(Decimal(seconds), Decimal(minimum))
    if seconds <= first:
        return Decimal(first)
    steps = ((seconds - first) / increment).to_integral_value(rounding=ROUND_CEILING)
    return Decimal(first) + steps * increment


class Price(NamedTuple):
    """What one event costs and why (before and after the one rounding step). A named
    tuple, immutable like a frozen dataclass, which costs over twice as much to build:
    every usage event makes one."""

    billed_quantity: Decimal  # after increments (voice), else the quantity
    bundle_quantity: Decimal  # drawn from a bundle
    overage_quantity: Decimal  # priced at the tariff
    exact_amount: Decimal
    amount: Decimal  # rounded to the currency's minor unit


def price_event(
    *,
    service: str,
    quantity: Decimal,
    unit_price: Decimal,
    currency: str,
    bundle_left: Decimal = ZERO,
    connection_fee: Decimal = ZERO,
    minimum: int = 0,
    first: int = 1,
    increment: int = 1,
) -> Price:
    """Price one event: bundle first, the rest at ``unit_price`` per unit of the service.

    For voice the billed seconds (after minimum and increments) are what the bundle and
    the tariff count, and the connection fee is due only when some of the call is priced
    at the tariff (a call wholly inside a bundle costs nothing).
    """
    if service == "voice":
        billed = billed_seconds(quantity, minimum=minimum, first=first, increment=increment)
    else:
        billed = Decimal(quantity)
    from_bundle = min(billed, max(bundle_left, ZERO))
    overage = billed - from_bundle
    exact = overage * unit_price / PER_UNIT[service]
    if service == "voice" and overage > 0:
        exact += connection_fee
    return Price(
        billed_quantity=billed,
        bundle_quantity=from_bundle,
        overage_quantity=overage,
        exact_amount=exact,
        amount=quantize_amount(exact, currency),
    )


def affordable_quantity(
    *,
    service: str,
    budget: Decimal,
    unit_price: Decimal,
    bundle_left: Decimal = ZERO,
    connection_fee: Decimal = ZERO,
    minimum: int = 0,
    first: int = 1,
    increment: int = 1,
    currency: str | None = None,
) -> Decimal | None:
    """The most of ``service`` that ``budget`` (money) and ``bundle_left`` (units) pay for;
    None when it is unlimited (free at the tariff and the budget covers any fee).

    For voice the answer is a length whose billed seconds (after the minimum duration and
    the increments) are all paid for, so a call of that length is never billed above the
    budget.

    With ``currency``, what counts is the charge after the one rounding step, as
    ``price_event`` makes it: with ¥8 left, a call whose exact price is ¥8.05 is charged
    ¥8, so it is affordable.
    """
    terms = {
        "service": service,
        "unit_price": unit_price,
        "bundle_left": bundle_left,
        "connection_fee": connection_fee,
        "minimum": minimum,
        "first": first,
        "increment": increment,
    }
    if currency is None or budget < 0:
        return _affordable_exactly(budget=budget, **terms)
    # Up to half a minor unit over the budget, the charge rounds to the budget or less.
    half_unit = Decimal(1).scaleb(-currency_exponent(currency)) / 2
    quantity = _affordable_exactly(budget=budget + half_unit, **terms)
    if quantity is None or quantity <= 0:
        return quantity
    charged = price_event(quantity=quantity, currency=currency, **terms).amount
    if charged <= budget:
        return quantity
    # Exactly half a unit over, which rounds up: one step less is the most.
    if service != "voice":
        return quantity - 1
    shorter = quantity - increment
    return shorter if shorter >= first and shorter >= minimum else ZERO


def _affordable_exactly(
    *,
    service: str,
    budget: Decimal,
    unit_price: Decimal,
    bundle_left: Decimal,
    connection_fee: Decimal,
    minimum: int,
    first: int,
    increment: int,
) -> Decimal | None:
    """``affordable_quantity`` with the exact price held to the budget."""
    bundle_left = max(bundle_left, ZERO)
    budget = max(budget, ZERO)
    if service != "voice":
        if unit_price <= 0:
            return None
        # Whole messages, pages, calls or bytes.
        money_units = (budget * PER_UNIT[service] / unit_price).to_integral_value(
            rounding=ROUND_FLOOR
        )
        return bundle_left + money_units
    if unit_price <= 0:
        if budget >= connection_fee:
            return None  # free minutes, and the fee is paid for
        money_seconds = ZERO  # only what the bundle covers (no fee is due inside it)
    else:
        money_seconds = ZERO
        if budget > connection_fee:
            money_seconds = (budget - connection_fee) * PER_UNIT["voice"] / unit_price
    total = bundle_left + money_seconds
    if total < first:
        return ZERO
    steps = ((total - first) / increment).to_integral_value(rounding=ROUND_FLOOR)
    seconds = Decimal(first) + steps * increment
    if seconds < minimum:
        # Any call shorter than the minimum is billed the minimum: affordable or not at all.
        shortest = billed_seconds(
            Decimal(minimum), minimum=minimum, first=first, increment=increment
        )
        return shortest if shortest <= total else ZERO
    return seconds
