"""The portal's Subscriptions & numbers page: plans and bundles, DIDs, seats, service fees and
the recurring charges of the last three months, line by line."""

import itertools
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.urls import reverse
from djmoney.money import Money

from accounts.models import Company, Membership
from billing.models import BundleCounter, SeatFee, ServiceFee
from billing.selectors_recurring import format_bundle_quantity
from billing.services import recurring
from billing.services.usage import UsageEvent, usage_ingest
from tests.factories import CompanyFactory, MembershipFactory, SubaccountFactory
from tests.factories.rating import BundleFactory, PlanFactory, RateFactory, TariffFactory, api_key

pytestmark = pytest.mark.django_db

TOKYO = ZoneInfo("Asia/Tokyo")
# 12:00 on 5 December in Tokyo; the page's "last three months" start on 5 September.
NOW = datetime(2026, 12, 5, 3, 0, tzinfo=UTC)
URL = "/portal/subscriptions/"


def tokyo(*args) -> datetime:
    return datetime(*args, tzinfo=TOKYO)


def jpy(value) -> Money:
    return Money(Decimal(value), "JPY")


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def tariff():
    tariff = TariffFactory()
    RateFactory(tariff=tariff, service="voice", destination="81", price=Decimal("20"))
    RateFactory(tariff=tariff, service="sms", destination="", price=Decimal("3"))
    RateFactory(tariff=tariff, service="data", destination="JP", price=Decimal("0.5"))
    return tariff


@pytest.fixture
def company(client, tariff):
    """A postpaid company in Tokyo, signed in as its administrator."""
    membership = MembershipFactory(
        role=Membership.Role.ADMIN,
        company=CompanyFactory(
            account_code="acme", tariff=tariff, mode=Company.Mode.POSTPAID, credit_limit=None
        ),
    )
    client.force_login(membership.user)
    return membership.company


@pytest.fixture
def business():
    """¥5,000 a month (¥3,000 to activate) with 500 minutes to Japan, 1,000 SMS and 1 GB."""
    plan = PlanFactory(name="Business 500", monthly_fee=jpy(5000), activation_fee=jpy(3000))
    BundleFactory(
        plan=plan,
        name="500 domestic minutes",
        service="voice",
        destinations="81",
        included_quantity=Decimal(30000),
    )
    BundleFactory(plan=plan, name="1,000 SMS", service="sms", included_quantity=Decimal(1000))
    BundleFactory(
        plan=plan,
        name="1 GB in Japan",
        service="data",
        destinations="JP",
        included_quantity=Decimal(10**9),
    )
    return plan


_ids = itertools.count(1)


def send(company, *events: dict):
    key = api_key()[0]
    outcomes = usage_ingest(
        api_key=key,
        events=[
            UsageEvent(
                id=f"ev-{next(_ids)}",
                account=company.account_code,
                subaccount=None,
                service=event.get("service", "voice"),
                destination=event.get("destination", "+819012345678"),
                quantity=Decimal(event["quantity"]),
                occurred_at=event["at"],
            )
            for event in events
        ],
        now=NOW,
    )
    assert [o.status for o in outcomes] == ["charged"] * len(events)


@pytest.fixture
def account(company, business):
    """Business 500 from 1 November with usage in November and December; three DIDs (one
    released on 15 November); three active seats at ¥200; a ¥1,000 monthly fax retention
    fee; every charge due by now made."""
    recurring.subscription_order(company=company, plan=business, at=tokyo(2026, 11, 1))
    send(
        company,
        # November's period: not this period's usage.
        {"quantity": 600, "at": tokyo(2026, 11, 20, 10)},
        {"quantity": 125, "at": tokyo(2026, 12, 3, 10)},
        {"service": "data", "destination": "JP", "quantity": 250_000_000, "at": tokyo(2026, 12, 2)},
    )
    recurring.phone_number_assign(
        company=company, number="+81 50 1234 5678", monthly_price=jpy(300), at=tokyo(2026, 9, 15)
    )
    recurring.phone_number_assign(
        company=company, number="+81 3 1111 2222", monthly_price=jpy(500), at=tokyo(2026, 11, 20)
    )
    gone = recurring.phone_number_assign(
        company=company, number="+81 50 9999 0000", monthly_price=jpy(300), at=tokyo(2026, 10, 1)
    )
    SubaccountFactory.create_batch(3, company=company, created_at=tokyo(2026, 10, 1))
    SubaccountFactory(
        company=company,
        created_at=tokyo(2026, 10, 1),
        is_active=False,
        deactivated_at=tokyo(2026, 10, 2),
    )
    SeatFee.objects.create(
        company=company,
        price_per_seat=jpy(200),
        started_at=tokyo(2026, 11, 1),
        next_charge_at=tokyo(2026, 11, 1),
    )
    ServiceFee.objects.create(
        company=company,
        name="Fax retention",
        amount=jpy(1000),
        started_at=tokyo(2026, 11, 10),
        next_charge_at=tokyo(2026, 11, 10),
    )
    recurring.recurring_charge_company(company=company, as_of=tokyo(2026, 11, 14), now=NOW)
    gone.refresh_from_db()
    recurring.phone_number_release(phone_number=gone, at=tokyo(2026, 11, 15))
    recurring.recurring_charge_company(company=company, as_of=NOW, now=NOW)
    return company


def plain(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


def table(response, cls: str) -> str:
    match = re.search(rf'<table class="sub-table {cls}">(.*?)</table>', response.text, re.S)
    assert match, f"no {cls} table"
    return match.group(1)


def rows(response, cls: str, section: str = "tbody") -> list[str]:
    """The rows of a table, as text a reader sees."""
    parts = re.findall(rf"<{section}[^>]*>(.*?)</{section}>", table(response, cls), re.S)
    return [plain(row) for part in parts for row in re.findall(r"<tr[^>]*>(.*?)</tr>", part, re.S)]


# --- Who may see it --------------------------------------------------------------------------


def test_url_and_navigation_after_usage(client, company):
    assert reverse("portal:subscriptions") == URL
    dashboard = client.get(reverse("portal:dashboard")).text
    assert f'href="{URL}"' in dashboard
    assert (
        dashboard.index(">Usage<")
        < dashboard.index(">Subscriptions &amp; numbers<")
        < dashboard.index(">Subaccounts<")
    )


def test_anonymous_visitor_is_sent_to_sign_in(client):
    response = client.get(URL)
    assert response.status_code == 302
    assert response.url.startswith(reverse("portal:login"))


def test_a_member_without_billing_role_sees_the_page_and_the_link(client, account):
    membership = MembershipFactory(role=Membership.Role.MEMBER, company=account)
    client.force_login(membership.user)
    response = client.get(URL)
    assert response.status_code == 200
    assert rows(response, "plans")[0].startswith("Business 500")
    assert f'href="{URL}"' in client.get(reverse("portal:dashboard")).text


def test_another_companys_items_are_never_shown(client, account, tariff):
    other = CompanyFactory(account_code="other", tariff=tariff, mode=Company.Mode.POSTPAID)
    secret = PlanFactory(name="Secret plan")
    BundleFactory(plan=secret, name="Secret minutes")
    recurring.subscription_order(company=other, plan=secret, at=tokyo(2026, 11, 3))
    recurring.phone_number_assign(
        company=other, number="+81 50 0000 0001", monthly_price=jpy(777), at=tokyo(2026, 11, 3)
    )
    SeatFee.objects.create(
        company=other,
        price_per_seat=jpy(999),
        started_at=tokyo(2026, 11, 3),
        next_charge_at=tokyo(2026, 11, 3),
    )
    ServiceFee.objects.create(
        company=other,
        name="Their support",
        amount=jpy(4321),
        started_at=tokyo(2026, 11, 3),
        next_charge_at=tokyo(2026, 11, 3),
    )
    SubaccountFactory.create_batch(2, company=other, created_at=tokyo(2026, 10, 1))
    recurring.recurring_charge_company(company=other, as_of=NOW, now=NOW)
    assert other.recurring_charges.count() == 8
    response = client.get(URL)
    text = plain(response.text)
    for theirs in ("Secret", "0000 0001", "¥777", "¥999", "Their support", "¥4,321"):
        assert theirs not in text
    assert len(rows(response, "charges")) == 12
    assert rows(response, "seats") == ["3 × ¥200 = ¥600 2027-01-01"]


# --- Plans and bundles -----------------------------------------------------------------------


def test_a_plan_shows_its_fee_start_and_next_charge_in_tokyo(client, account):
    response = client.get(URL)
    # The next period starts at midnight on 1 January in Tokyo: still 31 December in UTC.
    assert rows(response, "plans") == ["Business 500 ¥5,000 2026-11-01 2027-01-01 ¥5,000"]


def test_the_first_charge_of_an_ordered_plan_includes_its_activation_fee(client, company, business):
    recurring.subscription_order(company=company, plan=business, at=tokyo(2026, 12, 10))
    assert rows(client.get(URL), "plans") == [
        "Business 500 ¥5,000 Starts 2026-12-10 2026-12-10 ¥8,000 with the ¥3,000 activation fee"
    ]


def test_bundles_show_this_periods_use_in_human_units(client, account):
    response = client.get(URL)
    assert rows(response, "bundles") == [
        "1 GB in Japan Mobile data to JP · plan Business 500 2026-12-01 – 2026-12-31 "
        "1.00 GB 250.00 MB 750.00 MB 25% used",
        "1,000 SMS SMS · plan Business 500 2026-12-01 – 2026-12-31 "
        "1,000 messages 0 messages 1,000 messages 0% used",
        # November's 10 minutes belong to November's period.
        "500 domestic minutes Voice to +81 · plan Business 500 2026-12-01 – 2026-12-31 "
        "500 min 2 min 05 s 497 min 55 s 1% used",
    ]
    assert '<span style="width: 25%"></span>' in table(response, "bundles")


def test_bundle_periods_run_from_the_subscriptions_day_of_the_month(client, company):
    bundle = BundleFactory(name="Minutes", service="voice", included_quantity=Decimal(600))
    subscription = recurring.subscription_order(
        company=company, plan=bundle.plan, at=tokyo(2026, 10, 20, 9, 30)
    )
    BundleCounter.objects.create(
        subscription=subscription,
        bundle=bundle,
        period_start=tokyo(2026, 10, 20, 9, 30),
        period_end=tokyo(2026, 11, 20, 9, 30),
        used=Decimal(600),
    )
    BundleCounter.objects.create(
        subscription=subscription,
        bundle=bundle,
        period_start=tokyo(2026, 11, 20, 9, 30),
        period_end=tokyo(2026, 12, 20, 9, 30),
        used=Decimal(480),
    )
    response = client.get(URL)
    assert rows(response, "bundles") == [
        f"Minutes Voice · plan {bundle.plan.name} 2026-11-20 – 2026-12-19 "
        "10 min 8 min 2 min 80% used"
    ]
    assert 'class="usage-bar high"' in table(response, "bundles")


def test_a_used_up_bundle_shows_nothing_left(client, company):
    bundle = BundleFactory(name="SMS", service="sms", included_quantity=Decimal(100))
    subscription = recurring.subscription_order(
        company=company, plan=bundle.plan, at=tokyo(2026, 12, 1)
    )
    BundleCounter.objects.create(
        subscription=subscription,
        bundle=bundle,
        period_start=tokyo(2026, 12, 1),
        period_end=tokyo(2027, 1, 1),
        used=Decimal(100),
    )
    response = client.get(URL)
    assert rows(response, "bundles")[0].endswith("100 messages 100 messages 0 messages 100% used")
    assert 'class="usage-bar full"' in table(response, "bundles")


def test_a_paygo_plan_from_first_use_says_its_fee_waits_for_the_first_usage(client, company):
    paygo = PlanFactory(
        name="Data PAYGO",
        monthly_fee=jpy(500),
        is_paygo=True,
        fee_starts="first_use",
    )
    subscription = recurring.subscription_order(company=company, plan=paygo, at=tokyo(2026, 11, 2))
    response = client.get(URL)
    assert rows(response, "plans") == [
        "Data PAYGO Pay as you go ¥500 2026-11-02 The monthly fee starts with your first usage."
    ]
    assert "sub-table bundles" not in response.text

    recurring.subscription_first_use(subscription=subscription, at=tokyo(2026, 12, 3, 8))
    recurring.recurring_charge_company(company=company, as_of=NOW, now=NOW)
    assert rows(client.get(URL), "plans") == [
        "Data PAYGO Pay as you go ¥500 2026-11-02 2027-01-03 ¥500"
    ]


def test_ended_plans_are_listed_apart_for_three_months(client, company):
    recent = recurring.subscription_order(
        company=company, plan=PlanFactory(name="Old plan"), at=tokyo(2026, 6, 1)
    )
    recurring.subscription_end(subscription=recent, at=tokyo(2026, 10, 1))
    long_ago = recurring.subscription_order(
        company=company, plan=PlanFactory(name="Ancient plan"), at=tokyo(2025, 1, 1)
    )
    recurring.subscription_end(subscription=long_ago, at=tokyo(2026, 9, 1))
    response = client.get(URL)
    assert rows(response, "plans") == ["You have no plan."]
    assert rows(response, "ended") == ["Old plan ¥1,000 2026-06-01 2026-10-01"]
    assert "Ancient plan" not in response.text


# --- Numbers, seats and service fees ---------------------------------------------------------


def test_numbers_with_their_next_charge_in_tokyo_released_ones_marked_and_a_total(client, account):
    response = client.get(URL)
    assert rows(response, "numbers") == [
        # Assigned at midnight on the 20th in Tokyo: the 19th in UTC.
        "+81 3 1111 2222 ¥500 2026-11-20 2026-12-20 Assigned",
        "+81 50 1234 5678 ¥300 2026-09-15 2026-12-15 Assigned",
        "+81 50 9999 0000 ¥300 2026-10-01 — Released 2026-11-15",
    ]
    assert rows(response, "numbers", "tfoot") == ["2 numbers, ¥800 a month"]


def test_a_single_number_reads_in_the_singular(client, company):
    recurring.phone_number_assign(
        company=company, number="+81 50 1234 5678", monthly_price=jpy(300), at=tokyo(2026, 12, 1)
    )
    assert rows(client.get(URL), "numbers", "tfoot") == ["1 number, ¥300 a month"]


def test_seats_count_active_subaccounts_times_the_price(client, account):
    assert rows(client.get(URL), "seats") == ["3 × ¥200 = ¥600 2027-01-01"]


def test_service_fees_with_amount_period_and_next_charge(client, account):
    ServiceFee.objects.create(
        company=account,
        name="Priority support",
        amount=jpy(250),
        period=ServiceFee.Period.WEEKLY,
        started_at=tokyo(2026, 12, 7),
        next_charge_at=tokyo(2026, 12, 7),
    )
    ServiceFee.objects.create(
        company=account,
        name="Finished fee",
        amount=jpy(1),
        started_at=tokyo(2026, 1, 7),
        ended_at=tokyo(2026, 6, 7),
    )
    assert rows(client.get(URL), "service-fees") == [
        "Fax retention ¥1,000 Monthly 2026-12-10",
        "Priority support ¥250 Weekly 2026-12-07",
    ]


def test_sections_without_items_say_so_or_stay_away(client, company):
    response = client.get(URL)
    assert response.status_code == 200
    assert rows(response, "plans") == ["You have no plan."]
    assert rows(response, "numbers") == ["You have no phone numbers."]
    assert rows(response, "charges") == ["No recurring charges in the last three months."]
    for absent in ("sub-table bundles", "sub-table seats", "sub-table service-fees"):
        assert absent not in response.text


# --- Recent charges --------------------------------------------------------------------------


def test_each_recent_charge_names_its_item_and_period_newest_first(client, account):
    assert rows(client.get(URL), "charges") == [
        "2026-12-01 Plan Business 500, 2026-12-01 – 2026-12-31 ¥5,000",
        "2026-12-01 Seats: 3 × ¥200, 2026-12-01 – 2026-12-31 ¥600",
        "2026-11-20 DID +81 3 1111 2222, 2026-11-20 – 2026-12-19 ¥500",
        "2026-11-15 DID +81 50 1234 5678, 2026-11-15 – 2026-12-14 ¥300",
        "2026-11-10 Fax retention, 2026-11-10 – 2026-12-09 ¥1,000",
        "2026-11-01 Activation fee, plan Business 500 ¥3,000",
        "2026-11-01 DID +81 50 9999 0000, 2026-11-01 – 2026-11-30 ¥300",
        "2026-11-01 Plan Business 500, 2026-11-01 – 2026-11-30 ¥5,000",
        "2026-11-01 Seats: 3 × ¥200, 2026-11-01 – 2026-11-30 ¥600",
        "2026-10-15 DID +81 50 1234 5678, 2026-10-15 – 2026-11-14 ¥300",
        "2026-10-01 DID +81 50 9999 0000, 2026-10-01 – 2026-10-31 ¥300",
        "2026-09-15 DID +81 50 1234 5678, 2026-09-15 – 2026-10-14 ¥300",
    ]
    assert "on or after 2026-09-05" in plain(client.get(URL).text)


def test_charges_older_than_three_months_are_left_out(client, company):
    recurring.phone_number_assign(
        company=company, number="+81 50 1234 5678", monthly_price=jpy(300), at=tokyo(2026, 8, 4)
    )
    recurring.recurring_charge_company(company=company, as_of=NOW, now=NOW)
    starts = [row.split()[0] for row in rows(client.get(URL), "charges")]
    # 4 September is before the start of the window, 5 September in Tokyo.
    assert starts == ["2026-12-04", "2026-11-04", "2026-10-04"]


def test_a_prepaid_charge_that_ran_out_of_credit_shows_what_was_not_covered(client, company):
    company.mode = Company.Mode.PREPAID
    company.save()
    recurring.phone_number_assign(
        company=company, number="+81 50 1234 5678", monthly_price=jpy(300), at=tokyo(2026, 12, 1)
    )
    recurring.recurring_charge_company(company=company, as_of=NOW, now=NOW)
    assert rows(client.get(URL), "charges") == [
        "2026-12-01 DID +81 50 1234 5678, 2026-12-01 – 2026-12-31 ¥300 "
        "¥300 not covered: your credit ran out."
    ]


def test_charges_are_paginated_fifty_a_page(client, company):
    for n in range(60):
        recurring.phone_number_assign(
            company=company,
            number=f"+81 50 0000 {n:04d}",
            monthly_price=jpy(100),
            at=tokyo(2026, 11, 1) + timedelta(hours=n),
        )
    recurring.recurring_charge_company(company=company, as_of=NOW, now=NOW)
    first = client.get(URL)
    assert len(rows(first, "charges")) == 50
    assert "Page 1 of 3 (120 charges)" in plain(first.text)
    assert rows(first, "charges")[0].startswith("2026-12-03 DID +81 50 0000 0059")
    last = client.get(URL + "?page=3")
    assert len(rows(last, "charges")) == 20
    assert rows(last, "charges")[-1].startswith("2026-11-01 DID +81 50 0000 0000")
    # A bad page number is a real page, never an error.
    assert "Page 1 of 3" in plain(client.get(URL + "?page=abc").text)
    assert "Page 3 of 3" in plain(client.get(URL + "?page=999").text)


# --- Cost --------------------------------------------------------------------------------------


def test_the_page_costs_a_fixed_number_of_queries(
    client, account, business, django_assert_max_num_queries
):
    with django_assert_max_num_queries(13) as few:
        client.get(URL)
    # Many more of everything: plans with bundles and usage, numbers, fees, ended plans,
    # seats and pages of charges.
    for n in range(5):
        subscription = recurring.subscription_order(
            company=account, plan=business, at=tokyo(2026, 11, 2 + n)
        )
        BundleCounter.objects.create(
            subscription=subscription,
            bundle=business.bundles.first(),
            period_start=tokyo(2026, 11, 2 + n),
            period_end=tokyo(2026, 12, 2 + n),
            used=Decimal(60),
        )
    ended = recurring.subscription_order(company=account, plan=business, at=tokyo(2026, 10, 1))
    recurring.subscription_end(subscription=ended, at=tokyo(2026, 11, 1))
    for n in range(40):
        recurring.phone_number_assign(
            company=account,
            number=f"+81 50 7000 {n:04d}",
            monthly_price=jpy(100),
            at=tokyo(2026, 10, 1) + timedelta(hours=n),
        )
    for n in range(5):
        ServiceFee.objects.create(
            company=account,
            name=f"Fee {n}",
            amount=jpy(10),
            started_at=tokyo(2026, 11, 1),
            next_charge_at=tokyo(2026, 11, 1),
        )
    SubaccountFactory.create_batch(10, company=account, created_at=tokyo(2026, 10, 1))
    recurring.recurring_charge_company(company=account, as_of=NOW, now=NOW)
    with django_assert_max_num_queries(len(few)) as many:
        response = client.get(URL + "?page=2")
    assert len(rows(response, "charges")) == 50
    assert len(rows(response, "numbers")) == 43
    assert len(rows(response, "bundles")) == 18
    assert len(many) == len(few)


# --- Units -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "quantity", "shown"),
    [
        ("voice", 30000, "500 min"),
        ("voice", 7545, "125 min 45 s"),
        ("voice", 61, "1 min 01 s"),
        ("voice", 0, "0 min"),
        ("sms", 1000, "1,000 messages"),
        ("data", 10**9, "1.00 GB"),
        ("data", 0, "0 B"),
        ("disk", 5 * 10**10, "50.00 GB"),
    ],
)
def test_bundle_quantities_read_in_the_units_they_are_sold_in(service, quantity, shown):
    assert format_bundle_quantity(service, Decimal(quantity)) == shown
