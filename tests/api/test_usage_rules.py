"""The rules of usage charging, through ``POST /api/v1/usage``: bundles first and overage at
the tariff, bundles shared by the company and reset each subscription period, blocking
(prepaid, postpaid credit limit, manual), several companies in one batch, and how a batch
lands in the ledger (one transaction per company, its postings the sum of the records).

``tests/api/test_usage_api.py`` covers the contract itself (result shape, replays, per-event
rejection codes, malformed bodies, keys).
"""

from collections import defaultdict
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
import time_machine
from djmoney.money import Money

from accounts.models import Company, CompanyBlock
from accounts.services import company_block, company_unblock
from billing.models import BundleCounter, LedgerPosting, LedgerTransaction, UsageRecord
from billing.periods import monthly_period
from billing.reconcile import reconcile
from billing.selectors import company_balance
from billing.services.usage import UsageEvent, usage_ingest
from tests.factories import CompanyFactory, SubaccountFactory, UserFactory
from tests.factories.billing import grant
from tests.factories.rating import (
    BundleFactory,
    RateFactory,
    SubscriptionFactory,
    TariffFactory,
    api_key,
)

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
JP_MOBILE = "+81 90 1234 5678"


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture(autouse=True)
def books_reconcile():
    yield
    report = reconcile(now=NOW)
    assert report.ok, report.problems


@pytest.fixture
def tariff():
    tariff = TariffFactory()
    # Voice: ¥30/min in whole minutes, ¥5 to connect.
    RateFactory(
        tariff=tariff,
        service="voice",
        destination="",
        price=Decimal("30"),
        first_increment=60,
        next_increment=60,
        connection_fee=Decimal("5"),
    )
    RateFactory(tariff=tariff, service="sms", destination="", price=Decimal("3"))
    RateFactory(tariff=tariff, service="data", destination="JP", price=Decimal("2"))
    RateFactory(tariff=tariff, service="api", destination="", price=Decimal("0.25"))
    return tariff


@pytest.fixture
def key():
    return api_key()


@pytest.fixture
def acme(tariff):
    company = CompanyFactory(account_code="acme", tariff=tariff, mode=Company.Mode.PREPAID)
    SubaccountFactory(company=company, code="ops")
    SubaccountFactory(company=company, code="sales")
    grant(company, 10_000, now=NOW - timedelta(days=1))
    return company


def post(client, raw, events):
    response = client.post(
        "/api/v1/usage",
        {"events": events},
        content_type="application/json",
        headers={"authorization": f"Bearer {raw}"},
    )
    assert response.status_code == 200, response.content
    return response.json()["results"]


def event(id_, **fields):
    base = {
        "id": id_,
        "account": "acme",
        "subaccount": "ops",
        "service": "voice",
        "destination": JP_MOBILE,
        "quantity": 60,
        "occurred_at": "2026-11-20T11:00:00+09:00",
    }
    return {**base, **fields}


def sms(id_, quantity=1, **fields):
    return event(id_, service="sms", destination="+15551234567", quantity=quantity, **fields)


def summary(results):
    return [
        (
            r["status"],
            r["bundle_quantity"],
            r["charge"]["amount"] if r["charge"] else None,
            r["error"]["code"] if r["error"] else None,
        )
        for r in results
    ]


def jpy(amount) -> Money:
    return Money(Decimal(amount), "JPY")


# --- Bundles -----------------------------------------------------------------------------------


def test_a_call_exhausting_the_bundle_pays_only_its_overage_and_then_the_connection_fee(
    client, acme, key
):
    plan = BundleFactory(service="voice", included_quantity=Decimal(100)).plan
    SubscriptionFactory(company=acme, plan=plan, started_at=datetime(2026, 11, 1, tzinfo=UTC))
    _, raw = key
    results = post(
        client,
        raw,
        [
            event("wholly-inside", quantity=40),  # bills 60 s, all from the bundle, no fee
            event("overruns", quantity=150),  # bills 180 s: 40 from the bundle, 140 at ¥30/min
            event("after", quantity=30),  # bills 60 s at the tariff
        ],
    )
    assert summary(results) == [
        ("charged", 60, "0", None),
        ("charged", 40, "75", None),  # 140 s × ¥0.5 = ¥70 + ¥5 connection
        ("charged", 0, "35", None),  # 60 s × ¥0.5 = ¥30 + ¥5 connection
    ]
    counter = BundleCounter.objects.get()
    assert counter.used == 100
    overrun = UsageRecord.objects.get(event_id="overruns")
    assert (overrun.billed_quantity, overrun.bundle_quantity) == (180, 40)
    assert overrun.bundle_counter == counter
    assert (overrun.unit_price, overrun.connection_fee) == (Decimal(30), Decimal(5))
    assert UsageRecord.objects.get(event_id="after").bundle_counter is None
    assert company_balance(acme) == jpy(10_000 - 110)


def test_a_bundle_limited_to_destinations_covers_only_them(client, acme, key):
    plan = BundleFactory(service="voice", destinations="8190, 8180", included_quantity=600).plan
    data = BundleFactory(plan=plan, service="data", destinations="JP", included_quantity=10**6)
    SubscriptionFactory(company=acme, plan=plan, started_at=datetime(2026, 11, 1, tzinfo=UTC))
    RateFactory(tariff=acme.tariff, service="data", destination="US", price=Decimal("4"))
    _, raw = key
    results = post(
        client,
        raw,
        [
            event("mobile", destination="+81 80 1111 2222"),
            event("landline", destination="+81 3 1111 2222"),
            event("data-jp", service="data", destination="JP", quantity=1_500_000),
            event("data-us", service="data", destination="US", quantity=1_000_000),
        ],
    )
    assert summary(results) == [
        ("charged", 60, "0", None),
        ("charged", 0, "35", None),
        # 1 MB from the bundle, 0.5 MB at ¥2/MB.
        ("charged", 1_000_000, "1", None),
        ("charged", 0, "4", None),
    ]
    assert BundleCounter.objects.get(bundle=data).used == 10**6


def test_subaccounts_of_a_company_share_its_bundle(client, acme, key):
    plan = BundleFactory(service="sms", included_quantity=5).plan
    SubscriptionFactory(company=acme, plan=plan, started_at=datetime(2026, 11, 1, tzinfo=UTC))
    _, raw = key
    first = post(client, raw, [sms("ops-1", 3, subaccount="ops")])
    second = post(
        client, raw, [sms("sales-1", 3, subaccount="sales"), sms("company-1", 1, subaccount=None)]
    )
    assert summary(first) == [("charged", 3, "0", None)]
    # Two left for sales: one message is overage; the company itself finds the bundle empty.
    assert summary(second) == [("charged", 2, "3", None), ("charged", 0, "3", None)]
    assert BundleCounter.objects.get().used == 5
    records = {r.event_id: r for r in UsageRecord.objects.select_related("subaccount")}
    assert records["ops-1"].subaccount.code == "ops"
    assert records["sales-1"].subaccount.code == "sales"
    assert records["company-1"].subaccount is None


def test_a_bundle_is_shared_by_subaccounts_but_not_with_another_company(client, acme, key):
    plan = BundleFactory(service="sms", included_quantity=5).plan
    SubscriptionFactory(company=acme, plan=plan, started_at=datetime(2026, 11, 1, tzinfo=UTC))
    other = CompanyFactory(account_code="other", tariff=acme.tariff)
    grant(other, 100, now=NOW - timedelta(days=1))
    _, raw = key
    results = post(client, raw, [sms("o1", 2, account="other", subaccount=None), sms("a1", 5)])
    assert summary(results) == [("charged", 0, "6", None), ("charged", 5, "0", None)]


def test_the_bundle_resets_on_the_subscription_anniversary(client, acme, key):
    # Started on the 15th at 10:00 Tokyo time: periods turn at 10:00 JST on each 15th.
    started = datetime(2026, 10, 15, 10, 0, tzinfo=acme.tzinfo)
    plan = BundleFactory(service="sms", included_quantity=2).plan
    subscription = SubscriptionFactory(company=acme, plan=plan, started_at=started)
    _, raw = key
    results = post(
        client,
        raw,
        [
            # Sent in an order that is not the order of the periods.
            sms("new-period", 2, occurred_at="2026-11-15T10:00:00+09:00"),
            sms("old-period", 2, occurred_at="2026-11-15T09:59:59+09:00"),
            sms("old-period-over", 1, occurred_at="2026-11-14T23:00:00+00:00"),
            sms("new-period-over", 1, occurred_at="2026-11-16T00:00:00+09:00"),
        ],
    )
    assert summary(results) == [
        ("charged", 2, "0", None),
        ("charged", 2, "0", None),
        ("charged", 0, "3", None),
        ("charged", 0, "3", None),
    ]
    counters = list(
        BundleCounter.objects.filter(subscription=subscription).order_by("period_start")
    )
    assert [
        (c.period_start.astimezone(acme.tzinfo), c.period_end.astimezone(acme.tzinfo), c.used)
        for c in counters
    ] == [
        (started, datetime(2026, 11, 15, 10, 0, tzinfo=acme.tzinfo), 2),
        (
            datetime(2026, 11, 15, 10, 0, tzinfo=acme.tzinfo),
            datetime(2026, 12, 15, 10, 0, tzinfo=acme.tzinfo),
            2,
        ),
    ]
    records = {r.event_id: r for r in UsageRecord.objects.all()}
    assert records["new-period"].bundle_counter == counters[1]
    assert records["old-period"].bundle_counter == counters[0]


def test_the_period_follows_the_companys_billing_time_zone(client, tariff, key):
    company = CompanyFactory(account_code="nyc", tariff=tariff, billing_timezone="America/New_York")
    grant(company, 1000, now=NOW - timedelta(days=1))
    started = datetime(2026, 10, 31, 23, 30, tzinfo=company.tzinfo)  # 03:30Z on 1 Nov
    plan = BundleFactory(service="sms", included_quantity=1).plan
    SubscriptionFactory(company=company, plan=plan, started_at=started)
    _, raw = key
    # The first period ends at 23:30 EST on 30 November: 04:30Z on 1 December.
    with time_machine.travel(datetime(2026, 12, 2, tzinfo=UTC), tick=False):
        results = post(
            client,
            raw,
            [
                sms("a", 1, account="nyc", subaccount=None, occurred_at="2026-12-01T04:29:00Z"),
                sms("b", 1, account="nyc", subaccount=None, occurred_at="2026-12-01T04:30:00Z"),
            ],
        )
    assert summary(results) == [("charged", 1, "0", None), ("charged", 1, "0", None)]
    assert BundleCounter.objects.count() == 2


def test_an_ended_subscription_stops_drawing_its_bundle(client, acme, key):
    ended = datetime(2026, 11, 10, tzinfo=UTC)
    plan = BundleFactory(service="sms", included_quantity=100).plan
    SubscriptionFactory(
        company=acme, plan=plan, started_at=datetime(2026, 11, 1, tzinfo=UTC), ended_at=ended
    )
    _, raw = key
    results = post(
        client,
        raw,
        [
            sms("before-end", 2, occurred_at="2026-11-09T23:59:59Z"),
            sms("at-end", 2, occurred_at="2026-11-10T00:00:00Z"),  # ended_at is exclusive
            sms("after-end", 2, occurred_at="2026-11-19T00:00:00Z"),
        ],
    )
    assert summary(results) == [
        ("charged", 2, "0", None),
        ("charged", 0, "6", None),
        ("charged", 0, "6", None),
    ]


def test_a_subscription_not_started_yet_does_not_draw(client, acme, key):
    plan = BundleFactory(service="sms", included_quantity=100).plan
    SubscriptionFactory(company=acme, plan=plan, started_at=datetime(2026, 11, 20, tzinfo=UTC))
    _, raw = key
    results = post(
        client,
        raw,
        [
            sms("early", 1, occurred_at="2026-11-19T23:59:59Z"),
            sms("on-time", 1, occurred_at="2026-11-20T00:00:00Z"),
        ],
    )
    assert summary(results) == [("charged", 0, "3", None), ("charged", 1, "0", None)]


def test_two_subscriptions_bundles_are_drawn_in_order_of_start(client, acme, key):
    older = BundleFactory(service="sms", included_quantity=2)
    newer = BundleFactory(service="sms", included_quantity=3)
    SubscriptionFactory(company=acme, plan=newer.plan, started_at=datetime(2026, 11, 5, tzinfo=UTC))
    SubscriptionFactory(company=acme, plan=older.plan, started_at=datetime(2026, 11, 1, tzinfo=UTC))
    _, raw = key
    results = post(client, raw, [sms("four", 4), sms("two", 2)])
    assert summary(results) == [("charged", 4, "0", None), ("charged", 1, "3", None)]
    assert BundleCounter.objects.get(bundle=older).used == 2
    assert BundleCounter.objects.get(bundle=newer).used == 3
    assert UsageRecord.objects.get(event_id="four").bundle_counter.bundle == older


def test_a_batch_wholly_inside_bundles_moves_no_money(client, acme, key):
    plan = BundleFactory(service="sms", included_quantity=10).plan
    SubscriptionFactory(company=acme, plan=plan, started_at=datetime(2026, 11, 1, tzinfo=UTC))
    _, raw = key
    before = LedgerTransaction.objects.count()
    results = post(client, raw, [sms("a", 2), sms("b", 3)])
    assert summary(results) == [("charged", 2, "0", None), ("charged", 3, "0", None)]
    assert LedgerTransaction.objects.count() == before
    assert company_balance(acme) == jpy(10_000)
    # Replaying it still answers duplicates and never draws twice.
    assert [r["status"] for r in post(client, raw, [sms("a", 2), sms("b", 3)])] == [
        "duplicate",
        "duplicate",
    ]
    assert BundleCounter.objects.get().used == 5


# --- Blocking ----------------------------------------------------------------------------------


@pytest.fixture
def postpaid(tariff):
    return CompanyFactory(
        account_code="post",
        tariff=tariff,
        mode=Company.Mode.POSTPAID,
        credit_limit=jpy(100),
    )


def test_postpaid_goes_negative_and_the_event_reaching_the_limit_blocks_the_rest(
    client, postpaid, key
):
    _, raw = key
    results = post(
        client, raw, [sms(f"p{i}", 10, account="post", subaccount=None) for i in range(6)]
    )
    # ¥30 each: −30, −60, −90, −120 (the limit of ¥100 is reached: blocked), then refused.
    assert (
        summary(results)
        == [("charged", 0, "30", None)] * 4 + [("rejected", 0, None, "account_blocked")] * 2
    )
    assert [r["balance"]["amount"] for r in results[:4]] == ["-30", "-60", "-90", "-120"]
    assert company_balance(postpaid) == jpy(-120)
    postpaid.refresh_from_db()
    assert postpaid.is_blocked
    assert CompanyBlock.objects.get(company=postpaid, lifted_at=None).reason == "credit_limit"
    assert UsageRecord.objects.get(event_id="p3").shortfall is None  # postpaid owes, no shortfall
    # A later batch is refused whole, and nothing is posted for it.
    transactions = LedgerTransaction.objects.count()
    later = post(client, raw, [sms("p9", 1, account="post", subaccount=None)])
    assert summary(later) == [("rejected", 0, None, "account_blocked")]
    assert LedgerTransaction.objects.count() == transactions


def test_a_postpaid_company_blocked_at_its_limit_is_charged_again_after_paying(
    client, postpaid, key
):
    _, raw = key
    post(client, raw, [sms(f"p{i}", 10, account="post", subaccount=None) for i in range(5)])
    grant(postpaid, 200, now=NOW)  # back to +80: under the limit, unblocked
    postpaid.refresh_from_db()
    assert not postpaid.is_blocked
    results = post(client, raw, [sms("p5", 10, account="post", subaccount=None)])
    assert summary(results) == [("charged", 0, "30", None)]


def test_postpaid_without_a_limit_is_never_blocked(client, tariff, key):
    company = CompanyFactory(account_code="open", tariff=tariff, mode=Company.Mode.POSTPAID)
    _, raw = key
    results = post(
        client, raw, [sms(f"o{i}", 1000, account="open", subaccount=None) for i in range(3)]
    )
    assert [r["balance"]["amount"] for r in results] == ["-3000", "-6000", "-9000"]
    company.refresh_from_db()
    assert not company.is_blocked


def test_a_manually_blocked_company_has_every_event_rejected(client, acme, key):
    staff = UserFactory(is_staff=True)
    company_block(
        company=acme, reason=CompanyBlock.Reason.MANUAL, note="fraud check", actor=staff, now=NOW
    )
    plan = BundleFactory(service="sms", included_quantity=100).plan
    SubscriptionFactory(company=acme, plan=plan, started_at=datetime(2026, 11, 1, tzinfo=UTC))
    _, raw = key
    transactions = LedgerTransaction.objects.count()
    results = post(client, raw, [event("v"), sms("s", 1), sms("free", 1)])
    assert summary(results) == [("rejected", 0, None, "account_blocked")] * 3
    assert "fraud check" in results[0]["error"]["message"]
    assert LedgerTransaction.objects.count() == transactions
    assert company_balance(acme) == jpy(10_000)
    assert not BundleCounter.objects.filter(used__gt=0).exists()
    assert set(UsageRecord.objects.values_list("status", "error_code")) == {
        ("rejected", "account_blocked")
    }
    # Lifted by staff: its usage is charged again.
    company_unblock(company=acme, reason=CompanyBlock.Reason.MANUAL, actor=staff, now=NOW)
    again = post(client, raw, [event("v2"), sms("s2", 1)])
    assert [r["status"] for r in again] == ["charged", "charged"]


def test_prepaid_running_out_mid_event_charges_what_is_left_and_records_the_shortfall(
    client, tariff, key
):
    company = CompanyFactory(account_code="small", tariff=tariff, mode=Company.Mode.PREPAID)
    grant(company, 50, now=NOW - timedelta(days=1))
    _, raw = key
    results = post(
        client,
        raw,
        [
            sms("fits", 10, account="small", subaccount=None),  # ¥30
            event("overdraws", account="small", subaccount=None, quantity=120),  # ¥65, ¥20 left
            sms("refused", 1, account="small", subaccount=None),
        ],
    )
    assert summary(results) == [
        ("charged", 0, "30", None),
        ("charged", 0, "20", None),
        ("rejected", 0, None, "account_blocked"),
    ]
    assert results[1]["balance"]["amount"] == "0"
    record = UsageRecord.objects.get(event_id="overdraws")
    assert (record.amount, record.shortfall) == (jpy(20), jpy(45))
    transaction_ = record.transaction
    assert transaction_.shortfall == jpy(45)
    company.refresh_from_db()
    assert company.is_blocked
    assert CompanyBlock.objects.get(company=company).reason == "prepaid_depleted"


# --- Several companies; the ledger view of a batch ----------------------------------------------


def assert_transaction_matches_its_records(transaction_: LedgerTransaction) -> None:
    """Per service, the revenue posting is the sum of the records' amounts; the customer
    side is the opposite of it all; the shortfall is the records' shortfall."""
    records = list(UsageRecord.objects.filter(transaction=transaction_))
    assert records
    assert all(r.status == "charged" and r.company_id == transaction_.company_id for r in records)
    by_service: dict[str, Decimal] = defaultdict(Decimal)
    for record in records:
        by_service[record.service] += record.amount.amount
    postings = list(
        LedgerPosting.objects.filter(transaction=transaction_).select_related("account")
    )
    revenue = {
        p.account.code.removeprefix("revenue:"): p.amount.amount
        for p in postings
        if p.account.kind == "revenue"
    }
    assert revenue == {service: total for service, total in by_service.items() if total}
    customer = sum(p.amount.amount for p in postings if p.account.kind == "customer")
    assert customer == -sum(by_service.values())
    shortfall = sum((r.shortfall.amount for r in records if r.shortfall), Decimal(0))
    assert (transaction_.shortfall.amount if transaction_.shortfall else Decimal(0)) == shortfall
    assert transaction_.kind == "usage"


def test_one_batch_for_two_companies_charges_each_in_its_own_currency_and_transaction(
    client, acme, key
):
    usd_tariff = TariffFactory(currency="USD")
    RateFactory(tariff=usd_tariff, service="sms", destination="", price=Decimal("0.0125"))
    RateFactory(
        tariff=usd_tariff,
        service="voice",
        destination="1",
        price=Decimal("0.013"),
        first_increment=6,
        next_increment=6,
    )
    beta = CompanyFactory(account_code="beta", tariff=usd_tariff, currency="USD")
    grant(beta, 20, now=NOW - timedelta(days=1))
    _, raw = key
    results = post(
        client,
        raw,
        [
            sms("a1", 2),
            sms("b1", 4, account="beta", subaccount=None),  # 4 × $0.0125 = $0.05
            event("a2", quantity=61),  # 120 s → ¥60 + ¥5
            event(
                "b2", account="beta", subaccount=None, destination="+15551234567", quantity=61
            ),  # 66 s × $0.013/60 = $0.0143 → $0.01
            sms("b3", 1, account="beta", subaccount=None),  # $0.0125 → $0.01 (half up: no)
        ],
    )
    assert [(r["id"], r["charge"]) for r in results] == [
        ("a1", {"amount": "6", "currency": "JPY"}),
        ("b1", {"amount": "0.05", "currency": "USD"}),
        ("a2", {"amount": "65", "currency": "JPY"}),
        ("b2", {"amount": "0.01", "currency": "USD"}),
        ("b3", {"amount": "0.01", "currency": "USD"}),
    ]
    assert company_balance(acme) == jpy(10_000 - 71)
    assert company_balance(beta) == Money(Decimal("19.93"), "USD")
    usage = LedgerTransaction.objects.filter(kind="usage")
    assert usage.count() == 2
    assert {tx.company_id for tx in usage} == {acme.pk, beta.pk}
    for transaction_ in usage:
        assert_transaction_matches_its_records(transaction_)
    assert set(
        UsageRecord.objects.filter(company=beta).values_list("transaction__company", flat=True)
    ) == {beta.pk}


def test_a_batch_is_one_transaction_whose_postings_sum_its_records_and_every_record_links_to_it(
    client, acme, key
):
    plan = BundleFactory(service="sms", included_quantity=3).plan
    SubscriptionFactory(company=acme, plan=plan, started_at=datetime(2026, 11, 1, tzinfo=UTC))
    # A second lot expiring sooner: the batch spends it first, so the customer side has
    # a posting per lot.
    grant(acme, 40, now=NOW - timedelta(days=1), days=10)
    _, raw = key
    events = [
        sms("s1", 2),  # bundle
        sms("s2", 2),  # 1 bundle + ¥3
        event("v1", quantity=59),  # ¥35
        event("v2", quantity=121, subaccount="sales"),  # 180 s → ¥90 + ¥5
        event("d1", service="data", destination="JP", quantity=1_234_567),  # ¥2.469134 → ¥2
        event("x1", service="api", quantity=3, destination=None),  # ¥0.75 → ¥1
        event("x2", service="api", quantity=2, destination=None),  # ¥0.50 → ¥1 (half up)
        event("bad", service="voice", destination="oops"),
    ]
    results = post(client, raw, events)
    assert [r["charge"]["amount"] if r["charge"] else None for r in results] == [
        "0",
        "3",
        "35",
        "95",
        "2",
        "1",
        "1",
        None,
    ]
    transaction_ = LedgerTransaction.objects.get(kind="usage")
    assert_transaction_matches_its_records(transaction_)
    charged = UsageRecord.objects.filter(status="charged")
    assert charged.count() == 7
    assert not charged.filter(transaction=None).exists()  # the free one links to it too
    assert UsageRecord.objects.get(event_id="bad").transaction is None
    lots = LedgerPosting.objects.filter(
        transaction=transaction_, account__kind="customer"
    ).values_list("lot__amount", "amount")
    assert sorted(lots) == [(Decimal(40), Decimal(-40)), (Decimal(10_000), Decimal(-97))]
    # All seven at 11:00 in Tokyo: the description and the span the admin links by are UTC.
    assert transaction_.metadata == {
        "events": 7,
        "occurred_from": "2026-11-20T02:00:00+00:00",
        "occurred_until": "2026-11-20T02:00:00+00:00",
    }
    assert transaction_.description.endswith("2026-11-20 02:00 – 2026-11-20 02:00 UTC")
    assert transaction_.balance_after == company_balance(acme) == jpy(10_040 - 137)
    # A second batch is a second transaction; the first keeps its records.
    post(client, raw, [sms("s3", 1), *events[:2]])
    assert LedgerTransaction.objects.filter(kind="usage").count() == 2
    assert UsageRecord.objects.filter(transaction=transaction_).count() == 7
    for tx in LedgerTransaction.objects.filter(kind="usage"):
        assert_transaction_matches_its_records(tx)


# --- Per-event refusals not covered by the contract tests --------------------------------------


def test_events_more_than_five_minutes_ahead_are_refused(client, acme, key):
    _, raw = key
    results = post(
        client,
        raw,
        [
            sms("on-the-edge", 1, occurred_at="2026-11-20T03:05:00Z"),
            sms("too-early", 1, occurred_at="2026-11-20T03:05:01Z"),
        ],
    )
    assert summary(results) == [
        ("charged", 0, "3", None),
        ("rejected", 0, None, "occurred_in_future"),
    ]


def test_a_deactivated_subaccount_or_a_tariff_in_another_currency_refuses_the_event(
    client, acme, key
):
    SubaccountFactory(company=acme, code="gone", is_active=False, deactivated_at=NOW)
    usd = CompanyFactory(account_code="usd", currency="USD", tariff=acme.tariff)  # a JPY tariff
    untariffed = CompanyFactory(account_code="bare", tariff=None)
    _, raw = key
    results = post(
        client,
        raw,
        [
            sms("gone", 1, subaccount="gone"),
            sms("usd", 1, account=usd.account_code, subaccount=None),
            sms("bare", 1, account=untariffed.account_code, subaccount=None),
        ],
    )
    assert [r["error"]["code"] for r in results] == [
        "subaccount_inactive",
        "no_tariff",
        "no_tariff",
    ]
    assert not LedgerTransaction.objects.filter(kind="usage").exists()


def test_an_event_with_no_rate_is_refused_but_the_rest_of_the_batch_is_charged(client, acme, key):
    _, raw = key
    results = post(
        client,
        raw,
        [
            sms("before", 1),
            event("fax", service="fax", destination="+81312345678", quantity=2),  # no fax rate
            event("disk", service="disk", destination=None, quantity=10**9),  # no disk rate
            sms("after", 1),
        ],
    )
    assert summary(results) == [
        ("charged", 0, "3", None),
        ("rejected", 0, None, "no_rate"),
        ("rejected", 0, None, "no_rate"),
        ("charged", 0, "3", None),
    ]
    assert_transaction_matches_its_records(LedgerTransaction.objects.get(kind="usage"))


def test_a_call_over_more_companies_than_one_group_charges_every_company_once(
    client, tariff, key, monkeypatch
):
    from billing.services import usage

    monkeypatch.setattr(usage, "COMPANIES_PER_TRANSACTION", 2)
    _, raw = key
    codes = [f"co{n}" for n in range(5)]
    for code in codes:
        grant(CompanyFactory(account_code=code, tariff=tariff), 1000, now=NOW)
    # Interleaved companies, and one event refused before any lock.
    events = [sms(f"{code}-{i}", account=code, subaccount=None) for i in range(2) for code in codes]
    events.append(sms("ghost", account="nobody", subaccount=None))
    results = post(client, raw, events)

    assert [r["status"] for r in results] == ["charged"] * 10 + ["rejected"]
    for code in codes:
        company = Company.objects.get(account_code=code)
        # Each company's events in order, in one ledger transaction of its own.
        mine = [r for r in results if r["id"].startswith(f"{code}-")]
        assert [r["balance"]["amount"] for r in mine] == ["997", "994"]
        assert LedgerTransaction.objects.filter(company=company, kind="usage").count() == 1
    # A replay touches nothing and answers every event from its record.
    replay = post(client, raw, events)
    assert [r["status"] for r in replay] == ["duplicate"] * 11
    assert [r["balance"] for r in replay] == [r["balance"] for r in results]


def test_a_busy_company_makes_a_group_of_its_own_and_quiet_ones_share_one(
    client, tariff, key, monkeypatch
):
    from billing.services import usage

    monkeypatch.setattr(usage, "EVENTS_PER_TRANSACTION", 3)
    _, raw = key
    counts = {"co0": 5, "co1": 1, "co2": 1, "co3": 2}
    for code in counts:
        grant(CompanyFactory(account_code=code, tariff=tariff), 1000, now=NOW)
    groups = []
    real = usage._ingest_planned

    def record_groups(call, plans, **options):
        groups.append([planned.event.id for planned in plans])
        return real(call, plans, **options)

    monkeypatch.setattr(usage, "_ingest_planned", record_groups)
    # The busy company's events come last and between the others': grouping keeps each
    # company's events together and in order.
    events = [sms(f"{code}-{n}", account=code, subaccount=None) for code in ("co1", "co2", "co3")
              for n in range(counts[code])]  # fmt: skip
    events[1:1] = [sms(f"co0-{n}", account="co0", subaccount=None) for n in range(5)]
    results = post(client, raw, events)

    assert {r["status"] for r in results} == {"charged"}
    # Never split, even over the limit; then as many companies as fit under it.
    assert groups == [
        ["co0-0", "co0-1", "co0-2", "co0-3", "co0-4"],
        ["co1-0", "co2-0"],
        ["co3-0", "co3-1"],
    ]
    assert [r["balance"]["amount"] for r in results if r["id"].startswith("co0")] == [
        "997", "994", "991", "988", "985"
    ]  # fmt: skip


def test_a_call_cut_off_between_groups_keeps_whole_companies_and_its_replay_charges_the_rest(
    client, tariff, key, monkeypatch
):
    from billing.services import usage

    monkeypatch.setattr(usage, "COMPANIES_PER_TRANSACTION", 1)
    _, raw = key
    first, second = (CompanyFactory(account_code=code, tariff=tariff) for code in ("c1", "c2"))
    grant(first, 1000, now=NOW)
    grant(second, 1000, now=NOW)
    events = [sms(f"{c}-{i}", account=c, subaccount=None) for c in ("c1", "c2") for i in range(2)]

    real = usage._ingest_locked
    calls = []

    def crash_on_the_second_group(call, plans, *locked):
        calls.append(plans[0].company.account_code)
        if len(calls) == 2:
            raise RuntimeError("worker killed")
        return real(call, plans, *locked)

    monkeypatch.setattr(usage, "_ingest_locked", crash_on_the_second_group)
    with pytest.raises(RuntimeError):
        post(client, raw, events)
    assert UsageRecord.objects.filter(company=first).count() == 2
    assert not UsageRecord.objects.filter(company=second).exists()

    monkeypatch.setattr(usage, "_ingest_locked", real)
    results = post(client, raw, events)
    assert [r["status"] for r in results] == ["duplicate", "duplicate", "charged", "charged"]
    assert company_balance(first) == jpy(994)
    assert company_balance(second) == jpy(994)


# --- Found in review: each of these was charged wrongly before --------------------------------


def test_another_companys_usage_does_not_start_a_first_use_paygo_fee(client, tariff, key):
    """Two companies in one call's group: the PAYGO fee of the one that used nothing yet
    does not start at the other's event."""
    from billing.models import Plan
    from tests.factories.rating import PlanFactory

    a = CompanyFactory(account_code="a", tariff=tariff)
    b = CompanyFactory(account_code="b", tariff=tariff)
    for company in (a, b):
        grant(company, 1000, now=NOW - timedelta(days=1))
    paygo = PlanFactory(is_paygo=True, fee_starts=Plan.FeeStart.FIRST_USE)
    subscription = SubscriptionFactory(company=a, plan=paygo, started_at=NOW - timedelta(days=10))
    _, raw = key
    data = {"service": "data", "destination": "JP", "quantity": 2_000_000, "subaccount": None}
    results = post(
        client,
        raw,
        [
            event("b1", account="b", occurred_at="2026-11-15T00:00:00+00:00", **data),
            event("a1", account="a", occurred_at="2026-11-20T02:00:00+00:00", **data),
        ],
    )
    assert [result["status"] for result in results] == ["charged", "charged"]
    subscription.refresh_from_db()
    assert subscription.fee_anchor_at == datetime(2026, 11, 20, 2, 0, tzinfo=UTC)


def test_a_bundle_over_its_quantity_hides_nothing_another_bundle_has(client, tariff, key, acme):
    """Staff lowered bundle A below what was used this period: B still covers the event."""
    from tests.factories.rating import PlanFactory

    plan = PlanFactory()
    a = BundleFactory(plan=plan, service="sms", name="A", included_quantity=Decimal("200"))
    BundleFactory(plan=plan, service="sms", name="B", included_quantity=Decimal("100"))
    subscription = SubscriptionFactory(company=acme, plan=plan, started_at=NOW - timedelta(days=5))
    start, end, _ = monthly_period(subscription.started_at, NOW, acme.tzinfo)
    BundleCounter.objects.create(
        subscription=subscription, bundle=a, period_start=start, period_end=end, used=150
    )
    a.included_quantity = Decimal("100")
    a.save()
    [result] = post(client, key[1], [sms("s1", quantity=100)])
    assert (result["bundle_quantity"], result["charge"]["amount"]) == (100, "0")


def test_digits_of_other_scripts_are_not_a_number(client, tariff, key, acme):
    results = post(
        client,
        key[1],
        [event("u1", destination="+٨١٩٠١٢٣٤٥٦٧٨"), event("u2", destination="+²³⁴⁵⁶⁷")],
    )
    assert [result["error"]["code"] for result in results] == ["invalid_destination"] * 2
    answer = client.post(
        "/api/v1/authorize",
        {"account": "acme", "service": "voice", "destination": "+٨١٩٠١٢٣٤٥٦٧٨"},
        content_type="application/json",
        headers={"authorization": f"Bearer {key[1]}"},
    ).json()
    assert answer["allowed"] is False


def test_a_bundle_destination_written_with_a_plus_covers_its_numbers(client, tariff, key, acme):
    from tests.factories.rating import PlanFactory

    plan = PlanFactory()
    BundleFactory(plan=plan, service="voice", destinations="+8190", included_quantity=600)
    SubscriptionFactory(company=acme, plan=plan, started_at=NOW - timedelta(days=5))
    [result] = post(client, key[1], [event("v1", quantity=60)])
    assert result["bundle_quantity"] == 60


def test_a_charge_beyond_any_real_amount_is_rejected_not_a_server_error(client, key):
    # 10^15 seconds at $9,000,000,000,000 a minute: 27 digits before the cents.
    dollars = TariffFactory(currency="USD")
    RateFactory(tariff=dollars, service="voice", destination="", price=Decimal("9000000000000"))
    CompanyFactory(account_code="big", tariff=dollars, currency="USD", mode=Company.Mode.POSTPAID)
    [result] = post(
        client, key[1], [event("huge", account="big", subaccount=None, quantity=10**15)]
    )
    assert result["status"] == "rejected"
    assert result["error"]["code"] == "amount_too_large"


def test_a_counter_of_the_period_already_there_is_drawn_from_not_started_again(client, acme, key):
    """The insert that starts a period's counters skips one that exists (the unique
    constraint holds it) and reads it, whatever period end it was stored with."""
    bundle = BundleFactory(service="sms", included_quantity=5)
    subscription = SubscriptionFactory(
        company=acme, plan=bundle.plan, started_at=datetime(2026, 11, 1, tzinfo=UTC)
    )
    at = datetime(2026, 11, 20, 2, tzinfo=UTC)
    start, _end, _ = monthly_period(subscription.started_at, at, acme.tzinfo)
    # Its stored end is before the event: not among the counters read as open at the start.
    BundleCounter.objects.create(
        subscription=subscription,
        bundle=bundle,
        period_start=start,
        period_end=start + timedelta(days=1),
        used=2,
    )
    _, raw = key
    assert summary(post(client, raw, [sms("four", 4)])) == [("charged", 3, "3", None)]
    assert BundleCounter.objects.get().used == 5


def test_times_are_written_as_the_same_instants_to_the_microsecond(tariff, key, acme):
    """Records and ledger transactions are written with COPY, their times as ISO text
    (``billing.bulk.timestamps_as_text``): each must come back as the instant it was."""
    other = CompanyFactory(account_code="other", tariff=tariff, mode=Company.Mode.POSTPAID)
    api_key_row, _ = key
    received = datetime(2026, 11, 20, 2, 59, 58, 654321, tzinfo=UTC)
    tokyo, new_york = timezone(timedelta(hours=9)), timezone(timedelta(hours=-5))
    sent = {
        "tokyo": datetime(2026, 11, 20, 11, 0, 0, 123456, tzinfo=tokyo),
        "new-york": datetime(2026, 11, 19, 21, 59, 59, 999999, tzinfo=new_york),
    }
    events = [
        UsageEvent("tokyo", "acme", None, "sms", "+15551234567", Decimal(1), sent["tokyo"]),
        UsageEvent("new-york", "other", None, "sms", "+15551234567", Decimal(1), sent["new-york"]),
    ]
    outcomes = usage_ingest(api_key=api_key_row, events=events, now=received)
    assert [outcome.status for outcome in outcomes] == ["charged", "charged"]
    for record in UsageRecord.objects.all():
        assert record.occurred_at == sent[record.event_id]
        assert record.received_at == received
    transactions = LedgerTransaction.objects.filter(kind="usage", company__in=[acme, other])
    assert transactions.count() == 2  # one per company, copied together
    for transaction_ in transactions:
        assert transaction_.posted_at == transaction_.effective_at == received
