"""The portal's Usage page: a month's usage and cost by service and subaccount, and its records."""

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.urls import reverse

from accounts.models import Company, Membership
from billing.selectors_usage import (
    format_bytes,
    format_duration,
    format_gigabytes,
    format_quantity,
    format_unit_price,
    mask_number,
    usage_month,
)
from billing.services.usage import UsageEvent, usage_ingest
from tests.factories import CompanyFactory, MembershipFactory, SubaccountFactory
from tests.factories.billing import grant
from tests.factories.rating import (
    BundleFactory,
    RateFactory,
    SubscriptionFactory,
    TariffFactory,
    api_key,
)

pytestmark = pytest.mark.django_db

# 5 December in Tokyo: November is the last whole month.
NOW = datetime(2026, 12, 5, 3, 0, tzinfo=UTC)
URL = "/portal/usage/"
NOVEMBER = URL + "?month=2026-11"
TOKYO = ZoneInfo("Asia/Tokyo")


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def tariff():
    tariff = TariffFactory()
    RateFactory(
        tariff=tariff,
        service="voice",
        destination="",
        price=Decimal("30"),
        first_increment=30,
        next_increment=6,
        connection_fee=Decimal("5"),
    )
    RateFactory(tariff=tariff, service="sms", destination="", price=Decimal("3"))
    RateFactory(tariff=tariff, service="data", destination="JP", price=Decimal("0.5"))
    return tariff


@pytest.fixture
def key():
    return api_key()[0]


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
    SubaccountFactory(company=membership.company, code="ops", name="Operations")
    SubaccountFactory(company=membership.company, code="sales", name="Sales")
    return membership.company


_ids = iter(range(1, 10**6))


def send(key, company, *events: dict):
    """Report ``events`` (dicts of UsageEvent fields) for ``company`` through the ingest
    service, as the platform would through the API."""
    outcomes = usage_ingest(
        api_key=key,
        events=[
            UsageEvent(
                id=event.get("id", f"ev-{next(_ids)}"),
                account=company.account_code,
                subaccount=event.get("subaccount"),
                service=event.get("service", "voice"),
                destination=event.get("destination", "+819012345678"),
                quantity=Decimal(event.get("quantity", 60)),
                occurred_at=event["at"],
            )
            for event in events
        ],
        now=NOW,
    )
    return outcomes


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def november(company, key):
    """Usage around November in Tokyo (UTC+9), with a voice bundle of 60 s from 1 November.

    Charged in November: voice ops 65 s (66 billed, 60 from the bundle: 6 s × ¥30/min + ¥5 =
    ¥8), voice without subaccount 125 s (126 billed: ¥63 + ¥5 = ¥68), SMS ops 2 messages (¥6),
    data sales 250 MB (¥125). Two November events are refused. One event on each side of
    the month belongs to October and December.
    """
    bundle = BundleFactory(service="voice", included_quantity=Decimal("60"))
    SubscriptionFactory(company=company, plan=bundle.plan, started_at=utc(2026, 10, 31, 15))
    outcomes = send(
        key,
        company,
        # 31 October 23:59:59 in Tokyo: October.
        {"subaccount": "ops", "quantity": 60, "at": utc(2026, 10, 31, 14, 59, 59)},
        # 1 November 00:30 in Tokyo, though still 31 October in UTC: November.
        {"subaccount": "ops", "quantity": 65, "at": utc(2026, 10, 31, 15, 30)},
        {"quantity": 125, "destination": "+14155550123", "at": utc(2026, 11, 15)},
        {"subaccount": "sales", "service": "data", "destination": "JP", "quantity": 250_000_000,
         "at": utc(2026, 11, 10)},
        # 30 November 23:59:59 in Tokyo: November.
        {"subaccount": "ops", "service": "sms", "destination": "+819087654321", "quantity": 2,
         "at": utc(2026, 11, 30, 14, 59, 59)},
        # 1 December 00:00 in Tokyo: December.
        {"subaccount": "sales", "service": "sms", "destination": "+819011112222", "quantity": 1,
         "at": utc(2026, 11, 30, 15)},
        # Refused in November.
        {"subaccount": "ghost", "at": utc(2026, 11, 3)},
        {"destination": "not a number", "at": utc(2026, 11, 4)},
    )  # fmt: skip
    assert [o.status for o in outcomes] == ["charged"] * 6 + ["rejected"] * 2
    return company


def plain(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


def table(response, cls: str) -> str:
    match = re.search(rf'<table class="usage-table {cls}">(.*?)</table>', response.text, re.S)
    assert match, f"no {cls} table"
    return match.group(1)


def rows(response, cls: str, section: str = "tbody") -> list[str]:
    """The rows of a table, as text a reader sees."""
    parts = re.findall(rf"<{section}[^>]*>(.*?)</{section}>", table(response, cls), re.S)
    return [plain(row) for part in parts for row in re.findall(r"<tr[^>]*>(.*?)</tr>", part, re.S)]


# --- Who may see it --------------------------------------------------------------------------


def test_url_and_navigation_after_credits(client, company):
    assert reverse("portal:usage") == URL
    dashboard = client.get(reverse("portal:dashboard")).text
    assert f'href="{URL}"' in dashboard
    assert dashboard.index(">Credits<") < dashboard.index(">Usage<")


def test_anonymous_visitor_is_sent_to_sign_in(client):
    response = client.get(URL)
    assert response.status_code == 302
    assert response.url.startswith(reverse("portal:login"))


def test_a_member_without_billing_role_sees_usage_and_the_link(client, november, key):
    membership = MembershipFactory(role=Membership.Role.MEMBER, company=november)
    client.force_login(membership.user)
    response = client.get(NOVEMBER)
    assert response.status_code == 200
    assert "Voice 2 3 min 12 s 3 min 10 s reported 1 min ¥76" in rows(response, "by-service")
    assert f'href="{URL}"' in client.get(reverse("portal:dashboard")).text


def test_another_companys_usage_is_never_shown(client, november, tariff, key):
    other = CompanyFactory(account_code="other", tariff=tariff, mode=Company.Mode.POSTPAID)
    other_sub = SubaccountFactory(company=other, code="spy", name="Spy")
    send(
        key,
        other,
        {"subaccount": "spy", "service": "sms", "quantity": 7, "at": utc(2026, 11, 20)},
        {"service": "fax", "at": utc(2026, 11, 21)},  # refused: no fax rate
    )
    response = client.get(NOVEMBER)
    text = plain(response.text)
    assert "Spy" not in text and "spy" not in text and "7 messages" not in text
    assert "Total 4 ¥207" in rows(response, "by-service", "tfoot")
    assert "2 more events were refused" in text and "no rate" not in text
    # Naming the other company's subaccount in the filter shows nothing of it.
    response = client.get(f"{NOVEMBER}&subaccount={other_sub.pk}")
    assert len(rows(response, "records")) == 4
    assert "spy" not in plain(response.text)


# --- Totals for the month --------------------------------------------------------------------


def test_totals_by_service_follow_the_month_in_the_billing_time_zone(client, november):
    response = client.get(NOVEMBER)
    assert response.status_code == 200
    text = plain(response.text)
    assert "November 2026" in text
    assert "2026-11-01 00:00 to 2026-12-01 00:00" in text
    assert rows(response, "by-service") == [
        "Voice 2 3 min 12 s 3 min 10 s reported 1 min ¥76",
        "SMS 1 2 messages — ¥6",
        "Mobile data 1 250.00 MB — ¥125",
    ]
    assert rows(response, "by-service", "tfoot") == ["Total 4 ¥207"]
    assert "Charged ¥207" in text
    assert "Events 4" in text


def test_the_events_on_either_side_of_the_month_belong_to_october_and_december(client, november):
    october = client.get(URL + "?month=2026-10")
    assert rows(october, "by-service") == ["Voice 1 1 min — ¥35"]
    december = client.get(URL)  # the current month in Tokyo
    assert "December 2026" in plain(december.text)
    assert rows(december, "by-service") == ["SMS 1 1 message — ¥3"]
    assert "So far this month." in plain(december.text)


def test_totals_by_subaccount_with_subtotals_and_usage_without_one(client, november):
    response = client.get(NOVEMBER)
    assert rows(response, "by-subaccount") == [
        "Operations ops Voice 1 1 min 06 s 1 min ¥8",
        "SMS 1 2 messages — ¥6",
        "Subtotal 2 ¥14",
        "Sales sales Mobile data 1 250.00 MB — ¥125",
        "(no subaccount) Voice 1 2 min 06 s — ¥68",
    ]


def test_refused_events_are_counted_apart_with_their_reasons(client, november):
    text = plain(client.get(NOVEMBER).text)
    assert (
        "2 more events were refused and not charged: invalid destination (1), "
        "unknown subaccount (1)."
    ) in text


def test_an_empty_month_says_so(client, company):
    response = client.get(URL + "?month=2025-01")
    assert response.status_code == 200
    assert rows(response, "by-service") == ["No usage this month."]
    assert "No event was refused." in plain(response.text)


def test_credit_that_ran_out_is_shown_as_not_covered(client, company, key):
    company.mode = Company.Mode.PREPAID
    company.save()
    grant(company, 20, now=NOW - timedelta(days=30))
    # 125 s → 126 billed → ¥68, of which ¥20 is covered.
    send(key, company, {"quantity": 125, "at": utc(2026, 11, 15)})
    response = client.get(NOVEMBER)
    text = plain(response.text)
    assert "Charged ¥20 A further ¥48 could not be charged: your credit ran out." in text
    assert "¥20 ¥48 not covered" in rows(response, "records")[0]


# --- Detail records --------------------------------------------------------------------------


def test_records_newest_first_in_tokyo_time_with_masked_numbers_and_rates(client, november):
    response = client.get(NOVEMBER)
    assert rows(response, "records") == [
        "2026-11-30 23:59:59 ops SMS +81 90 xxxx 4321 2 messages 2 messages — ¥3/message ¥6",
        "2026-11-15 09:00:00 — Voice +1 415 xxx 0123 2 min 05 s 2 min 06 s — "
        "¥30/min 30/6 +¥5 per call ¥68",
        "2026-11-10 09:00:00 sales Mobile data JP 250.00 MB 250.00 MB — ¥0.5/MB ¥125",
        "2026-11-01 00:30:00 ops Voice +81 90 xxxx 5678 1 min 05 s 1 min 06 s 1 min "
        "¥30/min 30/6 +¥5 per call ¥8",
    ]
    assert "12345678" not in response.text and "1234" not in plain(response.text)
    # What "30/6" means is one hover away.
    assert 'title="Billed for the first 30 s, then every 6 s">30/6<' in response.text


def test_records_are_paginated_fifty_a_page(client, company, key):
    send(
        key,
        company,
        *[
            {"service": "sms", "quantity": 1, "at": utc(2026, 11, 1) + timedelta(minutes=n)}
            for n in range(120)
        ],
    )
    first = client.get(NOVEMBER)
    assert len(rows(first, "records")) == 50
    assert "Page 1 of 3 (120 records)" in plain(first.text)
    # Newest first: the last event (119 minutes past 09:00 in Tokyo) leads.
    assert rows(first, "records")[0].startswith("2026-11-01 10:59:00")
    last = client.get(NOVEMBER + "&page=3")
    assert len(rows(last, "records")) == 20
    assert rows(last, "records")[-1].startswith("2026-11-01 09:00:00")
    # A bad page number is a real page, never an error.
    assert "Page 1 of 3" in plain(client.get(NOVEMBER + "&page=abc").text)
    assert "Page 3 of 3" in plain(client.get(NOVEMBER + "&page=999").text)
    # The month's totals count every record, not just the page.
    assert rows(first, "by-service") == ["SMS 120 120 messages — ¥360"]


def test_records_filter_by_service_and_subaccount(client, november):
    ops = november.subaccounts.get(code="ops")
    by_service = rows(client.get(NOVEMBER + "&service=voice"), "records")
    assert [row.split()[3] for row in by_service] == ["Voice", "Voice"]
    by_subaccount = rows(client.get(f"{NOVEMBER}&subaccount={ops.pk}"), "records")
    assert [row.split()[2] for row in by_subaccount] == ["ops", "ops"]
    both = rows(client.get(f"{NOVEMBER}&subaccount={ops.pk}&service=sms"), "records")
    assert len(both) == 1 and "SMS" in both[0]
    without = rows(client.get(NOVEMBER + "&subaccount=none"), "records")
    assert len(without) == 1 and "+1 415 xxx 0123" in without[0]
    nothing = client.get(NOVEMBER + "&service=fax")
    assert rows(nothing, "records") == ["No usage matches these filters this month."]
    # Filters narrow the records, not the month's totals.
    assert rows(nothing, "by-service", "tfoot") == ["Total 4 ¥207"]


@pytest.mark.parametrize(
    "query",
    ["service=bogus", "subaccount=abc", "subaccount=999999", "subaccount=", "service=VOICE"],
)
def test_bad_filter_values_are_ignored(client, november, query):
    response = client.get(f"{NOVEMBER}&{query}")
    assert response.status_code == 200
    assert len(rows(response, "records")) == 4


@pytest.mark.parametrize(
    "month",
    [
        "2026-13",
        "2026-00",
        "abc",
        "2026-1",
        "0000-01",
        "9999-12",
        "",
        "2026-11-01",
        "２０２６-１１",
    ],
)
def test_a_bad_month_shows_the_current_month(client, november, month):
    response = client.get(URL, {"month": month})
    assert response.status_code == 200
    assert "December 2026" in plain(response.text)


def test_the_default_month_is_the_current_month_in_the_billing_time_zone(client, november):
    # 15:30 UTC on 30 November is already 1 December in Tokyo.
    with time_machine.travel(utc(2026, 11, 30, 15, 30), tick=False):
        text = plain(client.get(URL).text)
    assert "December 2026" in text


def test_month_links_go_back_and_forward_but_not_into_the_future(client, company):
    november = client.get(NOVEMBER).text
    assert 'href="?month=2026-10"' in november and 'href="?month=2026-12"' in november
    current = client.get(URL).text
    assert 'href="?month=2026-11"' in current and "month=2027-01" not in current
    # Links keep the filters and drop the page.
    filtered = client.get(NOVEMBER + "&service=sms&page=2").text
    assert 'href="?month=2026-10&amp;service=sms"' in filtered


def test_the_page_costs_a_fixed_number_of_queries(
    client, company, key, django_assert_max_num_queries
):
    def burst(count: int, start: datetime):
        send(
            key,
            company,
            *[
                {
                    "subaccount": ("ops", "sales", None)[n % 3],
                    "service": ("voice", "sms", "data")[n % 3],
                    "destination": "JP" if n % 3 == 2 else "+819012345678",
                    "at": start + timedelta(minutes=n),
                }
                for n in range(count)
            ],
            {"subaccount": "ghost", "at": start},
        )

    burst(3, utc(2026, 11, 2))
    with django_assert_max_num_queries(10) as few:
        client.get(NOVEMBER)
    burst(150, utc(2026, 11, 3))
    with django_assert_max_num_queries(len(few)) as many:
        response = client.get(NOVEMBER + "&page=2")
    assert len(rows(response, "records")) == 50
    assert len(many) == len(few)


# --- The month and the units -----------------------------------------------------------------


def test_usage_month_is_half_open_in_the_zone_across_dst():
    new_york = ZoneInfo("America/New_York")
    month = usage_month("2026-11", new_york, NOW)
    # EDT until 1 November 02:00, EST after.
    assert (month.start, month.end) == (utc(2026, 11, 1, 4), utc(2026, 12, 1, 5))
    assert (month.previous, month.next, month.is_current) == ("2026-10", "2026-12", False)
    assert usage_month("2026-12", TOKYO, NOW).next is None
    assert usage_month("2000-01", TOKYO, NOW).previous is None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (45, "45 s"),
        (60, "1 min"),
        (65, "1 min 05 s"),
        ("65.5", "1 min 05.5 s"),
        (43380, "12 h 03 min"),
        (43385, "12 h 03 min 05 s"),
        (3600 * 1500, "1,500 h 00 min"),
    ],
)
def test_voice_durations_read_as_hours_minutes_and_seconds(seconds, text):
    assert format_duration(Decimal(seconds)) == text


@pytest.mark.parametrize(
    ("service", "quantity", "text"),
    [
        ("sms", 1, "1 message"),
        ("sms", 1234, "1,234 messages"),
        ("fax", 3, "3 pages"),
        ("api", 1, "1 call"),
        ("data", 512, "512 B"),
        ("data", 1_500, "1.50 kB"),
        ("data", 250_000_000, "250.00 MB"),
        ("data", 1_234_000_000, "1.23 GB"),
        ("disk", 5_000_000_000, "5.00 GB"),
        ("disk", 1_000, "< 0.01 GB"),
        ("disk", 0, "0.00 GB"),
    ],
)
def test_quantities_read_in_units_of_the_service(service, quantity, text):
    assert format_quantity(service, Decimal(quantity)) == text


@pytest.mark.parametrize(
    ("service", "quantity", "text"),
    [("sms", 1234, "1,234 通"), ("fax", 3, "3 ページ"), ("api", 1, "1 回")],
)
def test_quantities_read_in_the_readers_language(service, quantity, text):
    from django.utils import translation

    with translation.override("ja"):
        assert format_quantity(service, Decimal(quantity)) == text


def test_byte_helpers():
    assert format_bytes(Decimal(2) * 10**12) == "2.00 TB"
    assert format_gigabytes(Decimal(10) ** 9 * 120) == "120.00 GB"


def test_rates_keep_their_own_decimals():
    assert format_unit_price("api", Decimal("0.012500"), "USD") == "$0.0125/call"
    assert format_unit_price("voice", Decimal("3.000000"), "USD") == "$3.00/min"
    assert format_unit_price("data", Decimal("0.500000"), "JPY") == "¥0.5/MB"


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("+819012345678", "+81 90 xxxx 5678"),
        ("+81 90 1234 5678", "+81 90 xxxx 5678"),
        ("81-3-1234-5678", "+81 31 xxx 5678"),
        ("+14155550123", "+1 415 xxx 0123"),
        ("+447911123456", "+44 79 xxxx 3456"),
        ("+3531234567", "+353 1 xx 4567"),
        ("+12345", "+12345"),  # a short code names nobody
    ],
)
def test_phone_numbers_keep_country_prefix_and_last_four_digits(number, masked):
    assert mask_number(number) == masked


def test_the_credit_history_describes_usage_in_the_readers_language_and_time_zone(
    client, company, key
):
    send(
        key,
        company,
        {"at": utc(2026, 11, 19, 23, 30)},
        {"at": utc(2026, 11, 19, 23, 50)},
        {"service": "sms", "at": utc(2026, 11, 19, 23, 40)},
    )
    english = client.get("/portal/credits/").text
    japanese = client.get("/portal/credits/", headers={"accept-language": "ja"}).text

    assert "Usage: 3 events (SMS 1, Voice 2), 2026-11-20 08:30 – 2026-11-20 08:50" in english
    assert "UTC" not in english
    assert "2026-11-20 08:30 – 2026-11-20 08:50" in japanese
    assert "Usage: 3 events" not in japanese and "Voice" not in japanese
