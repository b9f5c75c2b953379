"""The pricing arithmetic of ``billing.rating``: increments, units, the one rounding step and
how much a budget affords.

Pure functions: no database, no clock. The property tests check the promise the authorize
API makes to the platform: a call or message of the authorised size is never billed above
the money the company had (and the authorised size is the largest such in whole units).
"""

from decimal import Decimal

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from billing.money import quantize_amount
from billing.rating import (
    PER_UNIT,
    SERVICES,
    affordable_quantity,
    billed_seconds,
    price_event,
)

D = Decimal


# --- Billing increments -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "billed"),
    [("1", 60), ("59", 60), ("60", 60), ("61", 120), ("120", 120), ("121", 180)],
)
def test_60_60_bills_every_started_minute(seconds, billed):
    assert billed_seconds(D(seconds), minimum=0, first=60, increment=60) == billed


@pytest.mark.parametrize(
    ("seconds", "billed"),
    [("1", 30), ("30", 30), ("31", 36), ("36", 36), ("37", 42), ("65", 66), ("90", 90)],
)
def test_30_6_bills_the_first_half_minute_whole_then_six_second_steps(seconds, billed):
    assert billed_seconds(D(seconds), minimum=0, first=30, increment=6) == billed


@pytest.mark.parametrize("seconds", ["1", "2", "59", "61", "3599"])
def test_1_1_bills_every_second(seconds):
    assert billed_seconds(D(seconds), minimum=0, first=1, increment=1) == D(seconds)


def test_minimum_duration_raises_short_calls_to_the_minimum():
    # A 60 s minimum on 1/1: a 5 s call bills 60 s; a longer call bills its own length.
    assert billed_seconds(D(5), minimum=60, first=1, increment=1) == 60
    assert billed_seconds(D(61), minimum=60, first=1, increment=1) == 61
    # A minimum that is not a whole number of increments is itself rounded up to them.
    assert billed_seconds(D(5), minimum=45, first=30, increment=6) == 48


@pytest.mark.parametrize("increments", [(60, 60), (30, 6), (1, 1)])
def test_a_call_of_zero_seconds_bills_nothing_even_with_a_minimum(increments):
    first, increment = increments
    assert billed_seconds(D(0), minimum=60, first=first, increment=increment) == 0
    price = price_event(
        service="voice",
        quantity=D(0),
        unit_price=D(30),
        currency="JPY",
        connection_fee=D(5),
        minimum=60,
        first=first,
        increment=increment,
    )
    assert (price.billed_quantity, price.amount) == (0, 0)  # no connection fee either


@pytest.mark.parametrize(
    ("seconds", "first", "increment", "billed"),
    [("0.4", 1, 1, 1), ("1.0001", 1, 1, 2), ("60.5", 60, 60, 120), ("30.01", 30, 6, 36)],
)
def test_fractional_seconds_start_a_new_increment(seconds, first, increment, billed):
    assert billed_seconds(D(seconds), minimum=0, first=first, increment=increment) == billed


# --- Connection fee and bundles (voice) --------------------------------------------------------


def test_connection_fee_is_added_once_to_a_priced_call():
    # 65 s on 30/6 → 66 s at ¥30/min = ¥33, + ¥5 to connect.
    price = price_event(
        service="voice",
        quantity=D(65),
        unit_price=D(30),
        currency="JPY",
        connection_fee=D(5),
        first=30,
        increment=6,
    )
    assert (price.billed_quantity, price.overage_quantity, price.exact_amount, price.amount) == (
        66,
        66,
        38,
        38,
    )


def test_a_call_wholly_inside_a_bundle_costs_nothing_not_even_the_connection_fee():
    price = price_event(
        service="voice",
        quantity=D(100),
        unit_price=D(30),
        currency="JPY",
        bundle_left=D(120),
        connection_fee=D(5),
        first=60,
        increment=60,
    )
    assert (price.billed_quantity, price.bundle_quantity, price.amount) == (120, 120, 0)


def test_a_call_overrunning_its_bundle_pays_the_overage_and_the_connection_fee():
    # 150 s on 60/60 bills 180 s: 100 s left in the bundle, 80 s at ¥30/min = ¥40, + ¥5.
    price = price_event(
        service="voice",
        quantity=D(150),
        unit_price=D(30),
        currency="JPY",
        bundle_left=D(100),
        connection_fee=D(5),
        first=60,
        increment=60,
    )
    assert (price.bundle_quantity, price.overage_quantity, price.amount) == (100, 80, 45)


def test_a_negative_bundle_balance_counts_as_empty():
    price = price_event(
        service="sms", quantity=D(2), unit_price=D(3), currency="JPY", bundle_left=D(-5)
    )
    assert (price.bundle_quantity, price.amount) == (0, 6)


# --- Units per service -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "quantity", "unit_price", "expected"),
    [
        ("voice", "120", "30", "60"),  # 2 min × ¥30
        ("sms", "7", "3", "21"),  # per message
        ("fax", "4", "10", "40"),  # per page
        ("api", "1000", "0.05", "50"),  # per call
        ("data", "2500000", "20", "50"),  # 2.5 MB × ¥20/MB, pro rata
        ("disk", "3000000000", "15", "45"),  # 3 GB × ¥15/GB
    ],
)
def test_each_service_is_priced_per_its_own_unit(service, quantity, unit_price, expected):
    price = price_event(
        service=service, quantity=D(quantity), unit_price=D(unit_price), currency="JPY"
    )
    assert price.amount == D(expected)
    assert price.billed_quantity == D(quantity)


def test_every_service_has_a_unit():
    assert set(PER_UNIT) == set(SERVICES)


@pytest.mark.parametrize("service", [s for s in SERVICES if s != "voice"])
def test_only_voice_has_a_connection_fee_and_increments(service):
    price = price_event(
        service=service,
        quantity=D(1),
        unit_price=PER_UNIT[service],  # one unit costs ¥1 per base unit
        currency="JPY",
        connection_fee=D(100),
        minimum=60,
        first=60,
        increment=60,
    )
    assert price.billed_quantity == 1
    assert price.amount == 1


# --- The one rounding step ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "quantity", "unit_price", "currency", "exact", "rounded"),
    [
        ("sms", "1", "2.5", "JPY", "2.5", "3"),  # half goes up
        ("sms", "1", "2.49", "JPY", "2.49", "2"),
        ("api", "3", "0.5", "JPY", "1.5", "2"),
        ("api", "1", "0.4999", "JPY", "0.4999", "0"),
        ("voice", "1", "1", "JPY", None, "0"),  # 1/60 of a yen rounds to nothing
        ("voice", "90", "1", "JPY", "1.5", "2"),
        ("sms", "1", "0.125", "USD", "0.125", "0.13"),
        ("sms", "1", "0.135", "USD", "0.135", "0.14"),  # half up, not half even
        ("sms", "1", "0.124999", "USD", "0.124999", "0.12"),
        ("voice", "45", "0.01", "USD", "0.0075", "0.01"),
        ("data", "1500000", "0.01", "USD", "0.015", "0.02"),
    ],
)
def test_a_charge_is_rounded_once_half_up_to_the_minor_unit(
    service, quantity, unit_price, currency, exact, rounded
):
    price = price_event(
        service=service, quantity=D(quantity), unit_price=D(unit_price), currency=currency
    )
    if exact is not None:
        assert price.exact_amount == D(exact)
    assert price.amount == D(rounded)
    assert price.amount.as_tuple().exponent == (0 if currency == "JPY" else -2)


def test_rounding_happens_on_the_total_not_on_its_parts():
    # ¥0.5 per-minute part + ¥0.5 connection fee: rounding each part half up would give
    # ¥2; the one rounding step of the exact ¥1 gives ¥1.
    price = price_event(
        service="voice", quantity=D(1), unit_price=D(30), currency="JPY", connection_fee=D("0.5")
    )
    assert (price.exact_amount, price.amount) == (D(1), D(1))


# --- affordable_quantity -----------------------------------------------------------------------


def test_affordable_voice_seconds_are_whole_increments_after_the_connection_fee():
    # ¥1000 − ¥5 at ¥30/min → 1990 s → 30 + 326 × 6 = 1986 s.
    assert (
        affordable_quantity(
            service="voice",
            budget=D(1000),
            unit_price=D(30),
            connection_fee=D(5),
            first=30,
            increment=6,
        )
        == 1986
    )


def test_affordable_voice_adds_bundle_seconds_to_what_money_buys():
    # 120 s of bundle + (¥10 − ¥5) at ¥30/min = 10 s → 130 s on 1/1.
    assert (
        affordable_quantity(
            service="voice",
            budget=D(10),
            unit_price=D(30),
            bundle_left=D(120),
            connection_fee=D(5),
        )
        == 130
    )


def test_a_budget_below_the_connection_fee_affords_only_the_bundle():
    assert (
        affordable_quantity(
            service="voice",
            budget=D(4),
            unit_price=D(30),
            bundle_left=D(120),
            connection_fee=D(5),
            first=60,
            increment=60,
        )
        == 120
    )


def test_less_than_the_first_increment_affords_nothing():
    assert (
        affordable_quantity(service="voice", budget=D(20), unit_price=D(30), first=60, increment=60)
        == 0
    )


@pytest.mark.parametrize(
    ("service", "budget", "unit_price", "bundle_left", "expected"),
    [
        ("sms", "10", "3", "0", 3),
        ("sms", "10", "3", "5", 8),
        ("fax", "9", "10", "0", 0),
        ("api", "1", "0.05", "0", 20),
        ("data", "1", "20", "0", 50_000),  # bytes: ¥1 at ¥20/MB
        ("disk", "1", "15", "0", 66_666_666),
    ],
)
def test_affordable_units_are_whole_units_of_the_reported_quantity(
    service, budget, unit_price, bundle_left, expected
):
    assert (
        affordable_quantity(
            service=service,
            budget=D(budget),
            unit_price=D(unit_price),
            bundle_left=D(bundle_left),
        )
        == expected
    )


def test_a_negative_budget_affords_nothing_beyond_the_bundle():
    assert affordable_quantity(service="sms", budget=D(-50), unit_price=D(3)) == 0
    assert affordable_quantity(service="sms", budget=D(-50), unit_price=D(3), bundle_left=D(4)) == 4


def test_a_free_rate_is_unlimited():
    assert affordable_quantity(service="sms", budget=D(0), unit_price=D(0)) is None


def test_free_minutes_with_an_unaffordable_connection_fee_are_not_unlimited():
    # BUG: a voice rate of ¥0/min with a ¥5 connection fee is answered "unlimited" (None)
    # for a company with ¥0: the call it authorises costs ¥5, above the budget.
    authorised = affordable_quantity(
        service="voice", budget=D(0), unit_price=D(0), connection_fee=D(5)
    )
    assert authorised is not None
    assert (
        price_event(
            service="voice",
            quantity=authorised,
            unit_price=D(0),
            currency="JPY",
            connection_fee=D(5),
        ).amount
        <= 0
    )


# Budgets are what a company can spend: whole minor units of its currency.
CURRENCIES = {"JPY": D(1), "USD": D("0.01")}


@st.composite
def voice_cases(draw):
    currency = draw(st.sampled_from(sorted(CURRENCIES)))
    minor = CURRENCIES[currency]
    first, increment = draw(
        st.one_of(
            st.sampled_from([(60, 60), (30, 6), (1, 1), (6, 6), (30, 30)]),
            st.tuples(st.integers(1, 120), st.integers(1, 60)),
        )
    )
    price = draw(st.decimals(min_value=D("0.000001"), max_value=D(500), places=6))
    fee = draw(st.one_of(st.just(D(0)), st.decimals(min_value=D(0), max_value=D(50), places=6)))
    budget = draw(st.integers(0, 200_000)) * minor
    bundle = draw(st.one_of(st.just(D(0)), st.integers(0, 7200).map(D)))
    return currency, first, increment, price, fee, budget, bundle


@settings(max_examples=400, deadline=None)
@given(voice_cases())
@example(("JPY", 30, 6, D(30), D(5), D(1000), D(0)))
@example(("JPY", 60, 60, D(7), D(0), D(10), D(0)))
@example(("USD", 1, 1, D("0.013"), D("0.004"), D("0.05"), D(90)))
def test_affordable_voice_seconds_never_cost_more_than_the_budget(case):
    currency, first, increment, price, fee, budget, bundle = case
    authorised = affordable_quantity(
        service="voice",
        budget=budget,
        unit_price=price,
        bundle_left=bundle,
        connection_fee=fee,
        first=first,
        increment=increment,
    )
    assert authorised is not None

    def cost(seconds):
        return price_event(
            service="voice",
            quantity=seconds,
            unit_price=price,
            currency=currency,
            bundle_left=bundle,
            connection_fee=fee,
            first=first,
            increment=increment,
        )

    if authorised == 0:
        # Not even the first increment: it would need more than the bundle and the money.
        assert cost(D(first)).exact_amount > budget
        return
    # A whole number of increments, so the authorised call is billed exactly that long.
    assert authorised >= first and (authorised - first) % increment == 0
    charged = cost(authorised)
    assert charged.billed_quantity == authorised
    assert charged.exact_amount <= budget
    assert charged.amount <= budget
    # One more increment is either beyond the money or (wholly inside the bundle) free
    # only if the bundle could have paid for it, which would have been authorised.
    more = cost(authorised + increment)
    assert more.exact_amount > budget


@st.composite
def unit_cases(draw):
    service = draw(st.sampled_from([s for s in SERVICES if s != "voice"]))
    currency = draw(st.sampled_from(sorted(CURRENCIES)))
    minor = CURRENCIES[currency]
    price = draw(st.decimals(min_value=D("0.000001"), max_value=D(1000), places=6))
    budget = draw(st.integers(0, 1_000_000)) * minor
    bundle = draw(st.one_of(st.just(D(0)), st.integers(0, 10**9).map(D)))
    return service, currency, price, budget, bundle


@settings(max_examples=300, deadline=None)
@given(unit_cases())
def test_affordable_units_never_cost_more_than_the_budget(case):
    service, currency, price, budget, bundle = case
    authorised = affordable_quantity(
        service=service, budget=budget, unit_price=price, bundle_left=bundle
    )
    assert authorised is not None and authorised == authorised.to_integral_value()

    def cost(quantity):
        return price_event(
            service=service,
            quantity=quantity,
            unit_price=price,
            currency=currency,
            bundle_left=bundle,
        )

    charged = cost(authorised)
    assert charged.bundle_quantity == min(authorised, bundle)
    assert charged.exact_amount <= budget
    assert charged.amount <= budget
    assert cost(authorised + 1).exact_amount > budget


def test_with_its_currency_what_counts_is_the_rounded_charge():
    # ¥3/min, ¥5 to connect, 61 s at least, per second: 61 s cost ¥8.05, charged ¥8;
    # 69 s cost ¥8.45, charged ¥8; 70 s cost ¥8.50, charged ¥9.
    terms = {"service": "voice", "unit_price": D(3), "connection_fee": D(5), "minimum": 61}
    assert affordable_quantity(budget=D(8), **terms) == 0
    assert affordable_quantity(budget=D(8), currency="JPY", **terms) == 69
    # Exactly half a yen over rounds up: 2 SMS at ¥0.75 cost ¥1.5, charged ¥2.
    assert affordable_quantity(service="sms", budget=D(1), unit_price=D("0.75")) == 1
    assert (
        affordable_quantity(service="sms", budget=D(1), unit_price=D("0.75"), currency="JPY") == 1
    )
    assert (
        affordable_quantity(service="sms", budget=D(1), unit_price=D("0.7"), currency="JPY") == 2
    )  # ¥1.4, charged ¥1


@settings(max_examples=300, deadline=None)
@given(voice_cases())
@example(("JPY", 1, 1, D(3), D(5), D(8), D(0)))
def test_with_its_currency_the_most_whose_rounded_charge_fits_is_authorised(case):
    currency, first, increment, price, fee, budget, bundle = case
    terms = {
        "service": "voice",
        "unit_price": price,
        "bundle_left": bundle,
        "connection_fee": fee,
        "first": first,
        "increment": increment,
    }
    authorised = affordable_quantity(budget=budget, currency=currency, **terms)

    def charged(seconds):
        return price_event(quantity=seconds, currency=currency, **terms).amount

    if authorised == 0:
        assert charged(D(first)) > budget
        return
    assert (authorised - first) % increment == 0
    assert charged(authorised) <= budget
    assert charged(authorised + increment) > budget


@settings(max_examples=300, deadline=None)
@given(unit_cases())
def test_with_its_currency_the_most_units_whose_rounded_charge_fits_are_authorised(case):
    service, currency, price, budget, bundle = case
    terms = {"service": service, "unit_price": price, "bundle_left": bundle}
    authorised = affordable_quantity(budget=budget, currency=currency, **terms)

    def charged(quantity):
        return price_event(quantity=quantity, currency=currency, **terms).amount

    assert charged(authorised) <= budget
    assert charged(authorised + 1) > budget


@given(
    st.decimals(min_value=D(0), max_value=D(10) ** 9, places=6),
    st.sampled_from(sorted(CURRENCIES)),
)
def test_the_rounded_charge_is_within_half_a_minor_unit_of_the_exact_one(exact, currency):
    assume(exact.is_finite())
    rounded = quantize_amount(exact, currency)
    half = CURRENCIES[currency] / 2
    assert -half < rounded - exact <= half
