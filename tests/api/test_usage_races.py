"""Races on ``POST /api/v1/usage``, run for real: sixteen threads, each with its own client and
database connection, released together by a barrier against PostgreSQL.

A company's events are charged under its row lock, and an event id is charged at most once
per API key (a partial unique index backs that up across companies). These tests replay
one batch sixteen times at once, overdraw one prepaid company from sixteen batches, and
send overlapping event ids for sixteen different companies at once; afterwards every
request answered 200, every id was charged once, and ``reconcile`` finds nothing.
"""

import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import connection
from django.test import Client
from djmoney.money import Money

from accounts.models import Company, CompanyBlock
from billing.models import LedgerTransaction, UsageRecord
from billing.reconcile import reconcile
from billing.selectors import company_balance
from tests.factories import CompanyFactory
from tests.factories.billing import grant
from tests.factories.rating import RateFactory, TariffFactory, api_key

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

THREADS = 16
NOW = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


def run_together(calls: list[Callable[[], object]]) -> list[object]:
    """Run each call in its own thread, all released at once; return their results in order.
    An exception in a thread is re-raised here, with its traceback."""
    assert len(calls) == THREADS
    barrier = threading.Barrier(THREADS, timeout=30)
    results: list[object] = [None] * THREADS
    errors: list[BaseException] = []

    def work(index: int, call: Callable[[], object]) -> None:
        try:
            connection.ensure_connection()
            barrier.wait()
            results[index] = call()
        except BaseException as error:  # handed to the main thread, which re-raises it
            errors.append(error)
            barrier.abort()
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a thread is stuck (deadlock?)"
    if errors:
        raise next(
            (e for e in errors if not isinstance(e, threading.BrokenBarrierError)), errors[0]
        )
    return results


def poster(raw: str, events: list[dict]) -> Callable[[], list[dict]]:
    """A request as the platform sends it, from a client of the thread's own."""

    def call():
        response = Client().post(
            "/api/v1/usage",
            {"events": events},
            content_type="application/json",
            headers={"authorization": f"Bearer {raw}"},
        )
        assert response.status_code == 200, response.content
        return response.json()["results"]

    return call


def sms(id_, account, quantity=10):
    return {
        "id": id_,
        "account": account,
        "service": "sms",
        "destination": "+819012345678",
        "quantity": quantity,
        "occurred_at": "2026-11-20T11:00:00+09:00",
    }


@pytest.fixture
def tariff():
    tariff = TariffFactory()
    RateFactory(tariff=tariff, service="sms", destination="", price=Decimal("3"))  # ¥30 a batch
    return tariff


def jpy(amount) -> Money:
    return Money(Decimal(amount), "JPY")


def assert_books_reconcile() -> None:
    report = reconcile(now=NOW)
    assert report.ok, report.problems


def assert_each_id_charged_once(key) -> dict[str, UsageRecord]:
    charged = UsageRecord.objects.filter(api_key=key, status="charged")
    counts = Counter(charged.values_list("event_id", flat=True))
    assert counts and set(counts.values()) == {1}, counts.most_common(3)
    return {record.event_id: record for record in charged}


def test_one_batch_replayed_by_sixteen_threads_is_charged_once(tariff):
    company = CompanyFactory(account_code="acme", tariff=tariff, mode=Company.Mode.PREPAID)
    grant(company, 10_000, now=NOW - timedelta(days=1))
    key, raw = api_key()
    events = [sms(f"e{i}", "acme", quantity=i + 1) for i in range(20)]

    results = run_together([poster(raw, events) for _ in range(THREADS)])

    by_id = assert_each_id_charged_once(key)
    assert len(by_id) == 20
    for position, event in enumerate(events):
        answers = [result[position] for result in results]
        statuses = Counter(answer["status"] for answer in answers)
        assert statuses == {"charged": 1, "duplicate": THREADS - 1}, (event["id"], statuses)
        record = by_id[event["id"]]
        expected = {"amount": str(int(record.amount.amount)), "currency": "JPY"}
        assert {str(answer["charge"]) for answer in answers} == {str(expected)}
        assert {str(answer["balance"]) for answer in answers} == {
            str({"amount": str(int(record.balance_after.amount)), "currency": "JPY"})
        }
    # One thread charged the whole batch: one transaction, the others found nothing new.
    assert LedgerTransaction.objects.filter(company=company, kind="usage").count() == 1
    total = sum(3 * (i + 1) for i in range(20))
    assert company_balance(company) == jpy(10_000 - total)
    assert_books_reconcile()


def test_refused_events_replayed_by_sixteen_threads_are_refused_once_then_duplicate(tariff):
    # Every id is handled once per key whatever its outcome: one request refuses it, the
    # fifteen others answer "duplicate" with that refusal, as for a charge.
    company = CompanyFactory(account_code="acme", tariff=tariff, mode=Company.Mode.PREPAID)
    grant(company, 10_000, now=NOW - timedelta(days=1))
    key, raw = api_key()
    events = [
        sms("ok", "acme"),
        {**sms("no-fax-rate", "acme"), "service": "fax"},  # refused under the company lock
        sms("nobody", "no-such-account"),  # refused before any lock
    ]

    results = run_together([poster(raw, events) for _ in range(THREADS)])

    assert UsageRecord.objects.filter(api_key=key).count() == 3
    for position, event in enumerate(events):
        answers = [result[position] for result in results]
        statuses = Counter(answer["status"] for answer in answers)
        first = "charged" if event["id"] == "ok" else "rejected"
        assert statuses == {first: 1, "duplicate": THREADS - 1}, (event["id"], statuses)
        assert len({str(answer["error"]) for answer in answers}) == 1
    assert_books_reconcile()


def test_sixteen_batches_on_one_prepaid_company_never_take_it_below_zero(tariff):
    company = CompanyFactory(account_code="acme", tariff=tariff, mode=Company.Mode.PREPAID)
    grant(company, 1000, now=NOW - timedelta(days=1))
    key, raw = api_key()
    # 16 batches × 5 events × ¥30 = ¥2,400 against ¥1,000 of credit.
    batches = [[sms(f"t{t}-e{i}", "acme") for i in range(5)] for t in range(THREADS)]

    results = run_together([poster(raw, batch) for batch in batches])

    answers = [answer for result in results for answer in result]
    charged = [a for a in answers if a["status"] == "charged"]
    rejected = [a for a in answers if a["status"] == "rejected"]
    assert len(charged) + len(rejected) == 5 * THREADS
    assert sum(Decimal(a["charge"]["amount"]) for a in charged) == 1000
    assert sorted(Decimal(a["charge"]["amount"]) for a in charged)[:2] == [10, 30]  # one partial
    assert len(charged) == 34  # 33 whole, one of ¥10
    assert all(Decimal(a["balance"]["amount"]) >= 0 for a in charged)
    assert {a["error"]["code"] for a in rejected} == {"account_blocked"}
    assert company_balance(company) == jpy(0)
    assert not LedgerTransaction.objects.filter(company=company, balance_after__lt=0).exists()
    partial = UsageRecord.objects.get(api_key=key, shortfall__isnull=False)
    assert (partial.amount, partial.shortfall) == (jpy(10), jpy(20))
    company.refresh_from_db()
    assert company.is_blocked
    assert CompanyBlock.objects.filter(company=company, lifted_at=None).count() == 1
    # The balances the threads saw, in the order they were written, never repeat or jump.
    running = Decimal(1000)
    for record in UsageRecord.objects.filter(api_key=key, status="charged").order_by(
        "transaction_id", "id"
    ):
        running -= record.amount.amount
        assert record.balance_after.amount == running
    assert_each_id_charged_once(key)
    assert_books_reconcile()


def test_overlapping_event_ids_for_sixteen_companies_at_once_are_each_charged_once(tariff):
    # The platform (one key) sends ids that collide across companies: thread t reports
    # ids t … t+5 (mod 20), each for its own company. Their batches lock different company
    # rows, so only the unique index on (key, event id) stands between them.
    companies = [
        CompanyFactory(account_code=f"c{t}", tariff=tariff, mode=Company.Mode.PREPAID)
        for t in range(THREADS)
    ]
    for company in companies:
        grant(company, 1000, now=NOW - timedelta(days=1))
    key, raw = api_key()
    batches = [[sms(f"shared-{(t + i) % 20}", f"c{t}") for i in range(6)] for t in range(THREADS)]

    results = run_together([poster(raw, batch) for batch in batches])

    by_id = assert_each_id_charged_once(key)
    assert len(by_id) == 20  # every id someone sent, once
    for t, result in enumerate(results):
        for event, answer in zip(batches[t], result, strict=True):
            record = by_id[event["id"]]
            if answer["status"] == "charged":
                assert record.company == companies[t]
            else:
                # Charged for another company in a concurrent batch: the first result.
                assert answer["status"] == "duplicate", answer
                assert answer["charge"] == {"amount": "30", "currency": "JPY"}
    for company in companies:
        mine = sum(1 for record in by_id.values() if record.company_id == company.pk)
        assert company_balance(company) == jpy(1000 - 30 * mine)
        assert LedgerTransaction.objects.filter(company=company, kind="usage").count() == (
            1 if mine else 0
        )
    assert_books_reconcile()


def test_a_call_charges_the_companies_it_can_lock_first_and_waits_for_a_busy_one_last(tariff):
    """Another transaction holds company A's row (a concurrent call, a staff action): the
    call charges B without waiting, then waits for A and charges its events in order."""
    import time

    from django.db import transaction

    from billing.services.usage import UsageEvent, usage_ingest

    key, _raw = api_key()
    busy = CompanyFactory(account_code="busy", tariff=tariff)
    free = CompanyFactory(account_code="free", tariff=tariff)
    for company in (busy, free):
        grant(company, 1000, now=NOW - timedelta(days=1))
    holding, release = threading.Event(), threading.Event()
    results: dict[str, list] = {}

    def hold_busy():
        try:
            with transaction.atomic():
                Company.objects.select_for_update().get(pk=busy.pk)
                holding.set()
                release.wait(timeout=30)
        finally:
            connection.close()

    def ingest():
        try:
            events = [
                UsageEvent(
                    id=f"{account}-{n}", account=account, subaccount=None, service="sms",
                    destination="+819012345678", quantity=Decimal(10), occurred_at=NOW,
                )
                for account in ("busy", "free") for n in range(2)
            ]  # fmt: skip
            results["outcomes"] = usage_ingest(api_key=key, events=events, now=NOW)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_busy)
    holder.start()
    assert holding.wait(timeout=10)
    caller = threading.Thread(target=ingest)
    caller.start()
    deadline = time.monotonic() + 10
    while not UsageRecord.objects.filter(company=free).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    charged_while_busy_was_held = set(UsageRecord.objects.values_list("event_id", flat=True))
    release.set()
    holder.join(timeout=10)
    caller.join(timeout=30)
    assert not caller.is_alive(), "the call is stuck"

    assert charged_while_busy_was_held == {"free-0", "free-1"}
    outcomes = results["outcomes"]
    assert [outcome.status for outcome in outcomes] == ["charged"] * 4
    assert [outcome.balance_amount for outcome in outcomes] == [
        Decimal(970), Decimal(940), Decimal(970), Decimal(940)
    ]  # fmt: skip
    assert_each_id_charged_once(key)
    assert_books_reconcile()
