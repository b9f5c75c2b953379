"""Usage ingestion: rate reported events, draw bundles, charge the ledger, keep the records.

Guarantees of ``usage_ingest``:

- Each event id is handled once per API key, whatever its outcome: a replay (also a
  concurrent one) answers ``duplicate`` with the first result, its charge or its error.
- Each company's events are handled in the order given, in one database transaction per
  group of companies (``_chunks``). A group first takes, without waiting, the rows of its
  companies no other transaction holds (``SKIP LOCKED``) and charges those; the companies
  another call holds are charged at the end of the call, in groups whose rows are locked in
  id order, waiting (so concurrent calls never wait in a cycle: a lock not waited for
  closes none). Then their credit lots are read; their bundle
  counters need no lock of their own (only this service writes them, under the company
  lock). Every table is read and written with one statement for the whole group. A call cut
  off between groups has charged whole companies; its replay charges the rest. A prepaid
  company whose credit runs out mid-batch is charged what is left for that event, blocked,
  and its later events are ``rejected``.
- One ledger transaction per company and batch holds the money of that company's events
  (summed by lot and service); every usage record keeps its own amount, shortfall, rate
  and bundle units, and links to the transaction.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import NamedTuple

from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from djmoney.money import Money

from accounts.models import Company, Subaccount
from accounts.services import lock_companies

from ..bulk import (
    ReusableQuery,
    insert_new_rows,
    insert_rows,
    rows_by_key,
    timestamps_as_text,
    update_column,
)
from ..models import ApiKey, Bundle, BundleCounter, Plan, Subscription, Tariff, UsageRecord
from ..periods import monthly_period
from ..rating import WHOLE_COUNT_SERVICES, price_event
from .ledger import UsageBooks
from .rating import RatingError, normalise_destination, tariff_index
from .recurring import subscription_first_use

ZERO = Decimal(0)
# Events stamped further ahead than this are refused: a clock that wrong is a bug upstream.
FUTURE_TOLERANCE = timedelta(minutes=5)
# The size of a call's groups (one database transaction each). The busiest companies are in
# every batch, and concurrent calls lock companies in id order: in groups, a second call
# works on the first group while the first call is on its next one, instead of waiting for
# all of it. A group ends at whichever limit comes first: a few busy companies make a group
# of their own (so their locks are held for a short part of the call), and the many with an
# event or two share one (each group costs a fixed dozen statements). Measured with Zipf
# traffic (bench/usage_api.py): 128 and 400 against 64 companies alone, 5 % more events per
# second with two processes and 8 % less CPU.
COMPANIES_PER_TRANSACTION = 128
EVENTS_PER_TRANSACTION = 400
# No single event costs this much (10^12 of any currency); the ledger's columns hold 10^15.
MAX_EVENT_AMOUNT = Decimal(10) ** 12


# The company fields read before the locks (``_plan``, ``_precheck``, ``_Row.values``,
# bundle periods); any other is read on the locked row.
PLANNING_FIELDS = ("id", "account_code", "tariff_id", "currency", "billing_timezone")
_COMPANIES_BY_CODE = ReusableQuery(
    lambda codes: Company.objects.filter(account_code__any=codes).only(*PLANNING_FIELDS)
)
_TARIFFS = ReusableQuery(lambda ids: Tariff.objects.filter(pk__any=ids).order_by())
# The subaccounts of some codes in some companies.
_SUBACCOUNTS = ReusableQuery(
    lambda company_ids, codes: Subaccount.objects.filter(
        company_id__any=company_ids, code__any=codes
    ).order_by()
)
# The rows of some companies that no other transaction holds, locked (see ``usage_ingest``).
_COMPANIES_FREE_TO_LOCK = ReusableQuery(
    lambda ids: (
        Company.objects.select_for_update(skip_locked=True).filter(pk__any=ids).order_by("pk")
    )
)


@dataclass(frozen=True)
class UsageEvent:
    id: str
    account: str
    subaccount: str | None
    service: str
    destination: str | None
    quantity: Decimal
    occurred_at: datetime


class UsageOutcome(NamedTuple):
    """One event's result. The amounts are kept as decimals in ``currency`` (a ``Money`` per
    amount would cost more than rating the event); ``charge`` and ``balance`` give them as
    ``Money``. A named tuple: immutable as a frozen dataclass, and built in less than half
    its time (one per event)."""

    id: str
    status: str  # charged | duplicate | rejected
    charge_amount: Decimal | None = None
    bundle_quantity: Decimal = ZERO
    balance_amount: Decimal | None = None
    currency: str | None = None
    error_code: str | None = None
    error_message: str | None = None

    @property
    def charge(self) -> Money | None:
        return None if self.charge_amount is None else Money(self.charge_amount, self.currency)

    @property
    def balance(self) -> Money | None:
        return None if self.balance_amount is None else Money(self.balance_amount, self.currency)


def usage_ingest(
    *, api_key: ApiKey, events: list[UsageEvent], now: datetime | None = None
) -> list[UsageOutcome]:
    """Rate and charge ``events`` reported with ``api_key``; one outcome per event, in order."""
    now = now or timezone.now()
    # Everything that needs no lock first: companies (only what planning reads; the rest is
    # read under each company's lock), subaccounts, checks, rate rows.
    companies = {
        company.account_code: company
        for company in _COMPANIES_BY_CODE(list({event.account for event in events}))
    }
    # Few tariffs serve many companies: each read once (not one copy per company row).
    tariffs = {
        tariff.id: tariff
        for tariff in _TARIFFS(
            {company.tariff_id for company in companies.values() if company.tariff_id}
        )
    }
    subaccounts = {
        (sub.company_id, sub.code): sub
        for sub in _SUBACCOUNTS(
            [company.id for company in companies.values()],
            {event.subaccount for event in events if event.subaccount},
        )
    }
    plans: list[_Planned] = []
    first_index: dict[str, int] = {}
    for index, event in enumerate(events):
        if event.id in first_index:
            continue  # the same id twice in one batch: answered as a duplicate at the end
        first_index[event.id] = index
        company = companies.get(event.account)
        plans.append(_plan(index, event, company, subaccounts, tariffs, now))

    # Also before the locks: the ids already recorded (read again under the locks if a
    # concurrent call records one meanwhile: see ``_ingest_planned``), the subscriptions.
    call = _Call(
        api_key=api_key,
        now=now,
        existing=_records_by_event_id(api_key, first_index),
        plans=_Plans(plans),
    )
    outcomes: dict[int, UsageOutcome] = {}
    # First the companies no concurrent call holds (their locks taken without waiting); the
    # rest, the busiest mostly, once this call has done everything else, waiting for them.
    busy: list[_Planned] = []
    for chunk in _chunks(plans):
        done, deferred = _ingest_planned(call, chunk, skip_locked=True)
        outcomes.update(done)
        busy += deferred
    for chunk in _chunks(busy) if busy else []:
        done, _ = _ingest_planned(call, chunk)
        outcomes.update(done)
    for index, event in enumerate(events):
        if outcomes.get(index) is None:  # a repeated id within the batch
            first = outcomes[first_index[event.id]]
            outcomes[index] = first._replace(id=event.id, status="duplicate")
    return [outcomes[index] for index in range(len(events))]


@dataclass
class _Planned:
    """One event as prepared before any lock: its company, its refusal or its rate row."""

    index: int
    event: UsageEvent
    company: Company | None
    subaccount: Subaccount | None
    error: tuple[str, str] | None = None
    destination: str = ""
    rate: object = None
    matched: str = ""
    counter_keys: list = field(default_factory=list)  # the bundle counters it draws from


def _plan(index, event, company, subaccounts, tariffs, now) -> _Planned:
    subaccount = subaccounts.get((company.id, event.subaccount)) if company else None
    planned = _Planned(index, event, company, subaccount)
    tariff = tariffs.get(company.tariff_id) if company else None
    planned.error = _precheck(event, company, subaccounts, tariff, now)
    if planned.error is None:
        try:
            planned.destination = normalise_destination(event.service, event.destination)
            planned.rate, planned.matched = tariff_index(tariff).find(
                event.service, planned.destination, event.occurred_at
            )
        except RatingError as rating_error:
            planned.error = (rating_error.code, str(rating_error))
    return planned


def _chunks(plans: list[_Planned]) -> list[list[_Planned]]:
    """The events in groups of at most ``COMPANIES_PER_TRANSACTION`` companies and, unless
    one company has more, ``EVENTS_PER_TRANSACTION`` events; by company id, each company's
    events in their order (never split). Events refused before any lock go with the first
    group."""
    by_company: dict[int, list[_Planned]] = defaultdict(list)
    refused = []
    for planned in plans:
        if planned.error is None:
            by_company[planned.company.id].append(planned)
        else:
            refused.append(planned)
    chunks: list[list[_Planned]] = [[]]
    companies = 0
    for pk in sorted(by_company):
        events = by_company[pk]
        if chunks[-1] and (
            companies == COMPANIES_PER_TRANSACTION
            or len(chunks[-1]) + len(events) > EVENTS_PER_TRANSACTION
        ):
            chunks.append([])
            companies = 0
        chunks[-1] += events
        companies += 1
    chunks[0] += refused
    return chunks


@dataclass
class _Call:
    """What the groups of one call share, read once before any lock."""

    api_key: ApiKey
    now: datetime
    existing: dict[str, tuple]  # the first results of the ids recorded before, by id
    plans: _Plans
    revenue_accounts: dict = field(default_factory=dict)  # found so far, by currency


def _ingest_planned(
    call: _Call, plans: list[_Planned], *, skip_locked: bool = False
) -> tuple[dict[int, UsageOutcome], list[_Planned]]:
    """One group's events in ONE database transaction, under its companies' row locks.
    Returns their outcomes, and the events left for later: with ``skip_locked``, those of
    the companies whose rows another transaction holds (taken whole: a company's events
    stay in order, and the lock that is not waited for can close no cycle).

    ``call.existing`` (the ids recorded before) was read before the locks, and a concurrent
    call may record one of the same ids between that read and our insert (a replay of the
    same company's event waits for our lock, then charges it again): the insert's unique
    violation rolls the group back, and it runs again with the ids read under the locks.
    Each retry sees at least one more committed id, so this ends.
    """
    for attempt in range(len(plans) + 1):
        try:
            with transaction.atomic():
                locked, now_plans, deferred = _take_company_locks(plans, skip_locked=skip_locked)
                outcomes = _ingest_locked(call, now_plans, locked) if now_plans else {}
                return outcomes, deferred
        except IntegrityError:
            if attempt == len(plans):
                raise
            # Records are never deleted: what was read before still stands.
            call.existing.update(
                _records_by_event_id(call.api_key, [planned.event.id for planned in plans])
            )
            call.revenue_accounts.clear()  # one created in the rolled-back transaction is gone
    raise AssertionError("unreachable")


def _take_company_locks(
    plans: list[_Planned], *, skip_locked: bool
) -> tuple[list[Company] | None, list[_Planned], list[_Planned]]:
    """Lock the rows of every company the group's events name, refused events' included:
    their records reference the company, and the foreign key's check (``FOR KEY SHARE``)
    would wait on a row another call holds while that call waits on one of our records.

    With ``skip_locked``, only the rows no other transaction holds, without waiting
    (``SKIP LOCKED``); the events of the others are returned to be charged later. Without
    it, all of them, in id order, waiting. Returns the rows locked (for the ledger's books,
    which then need not lock them again; None where nothing locks: not PostgreSQL), the
    events to charge now and those left.
    """
    wanted = sorted({planned.company.id for planned in plans if planned.company is not None})
    if not wanted or connection.vendor != "postgresql":
        return None, plans, []
    if not skip_locked:
        return lock_companies(wanted), plans, []
    locked = _COMPANIES_FREE_TO_LOCK(wanted)
    if len(locked) == len(wanted):
        return locked, plans, []
    free = {company.id for company in locked}
    now, later = [], []
    for planned in plans:
        held = planned.company is not None and planned.company.id not in free
        (later if held else now).append(planned)
    return locked, now, later


def _ingest_locked(
    call: _Call, plans: list[_Planned], locked: list[Company] | None = None
) -> dict[int, UsageOutcome]:
    api_key_id, now, existing = call.api_key.id, call.now, call.existing
    chargeable = [planned for planned in plans if planned.error is None]
    books = UsageBooks([planned.company for planned in chargeable], now, locked)
    bundles = _Bundles(
        call.plans, list(books.batches), [planned.event.occurred_at for planned in chargeable]
    )
    bundles.prepare(chargeable)
    outcomes: dict[int, UsageOutcome] = {}
    records: list[_Row] = []
    records_by_company: dict[int, list[_Row]] = defaultdict(list)

    for planned in plans:
        event = planned.event
        first = existing.get(event.id)
        if first is not None:
            outcomes[planned.index] = _duplicate(event, first)
            continue
        error = planned.error
        batch = books.batches[planned.company.id] if error is None else None
        if batch is not None and batch.is_blocked:
            company = batch.company
            error = (
                "account_blocked",
                f"{company.account_code} is blocked: {batch.blocked_reason}.",
            )
        price = None
        if error is None:
            rate = planned.rate
            currency = batch.company.currency
            covering = bundles.covering(planned)
            price = price_event(
                service=event.service,
                quantity=event.quantity,
                unit_price=rate.price,
                currency=currency,
                # A counter can be over its bundle (staff lowered the included quantity in
                # the period): it has nothing left, and hides nothing another one has.
                bundle_left=(
                    sum((max(counter.left, ZERO) for counter in covering), ZERO)
                    if covering
                    else ZERO
                ),
                connection_fee=rate.connection_fee,
                minimum=rate.minimum_seconds,
                first=rate.first_increment,
                increment=rate.next_increment,
            )
            if price.amount > MAX_EVENT_AMOUNT:
                error = ("amount_too_large", "The charge of this event is too large to be real.")
        if error is not None:
            outcomes[planned.index] = _reject(event, error)
            records.append(_Row(planned, error=error))
            continue
        first_counter = bundles.draw(covering, price.bundle_quantity) if covering else None
        taken, shortfall, balance = batch.charge(price.amount, event.service)
        record = _Row(planned)
        record.rate = rate
        record.billed_quantity = price.billed_quantity
        record.bundle_quantity = price.bundle_quantity
        record.bundle_counter_id = first_counter.pk if first_counter else None
        record.amount = taken
        record.shortfall = shortfall or None
        record.balance_after = balance
        records.append(record)
        records_by_company[planned.company.id].append(record)
        outcomes[planned.index] = UsageOutcome(
            id=event.id,
            status="charged",
            charge_amount=taken,
            bundle_quantity=price.bundle_quantity,
            balance_amount=balance,
            currency=currency,
        )

    posts = {}
    for company_id, company_records in records_by_company.items():
        charged_ids = sorted(record.event_id for record in company_records)
        digest = hashlib.sha256("\n".join(charged_ids).encode()).hexdigest()[:32]
        description, metadata = _describe(company_records)
        posts[company_id] = {
            "idempotency_key": f"usage:{api_key_id}:{company_id}:{digest}",
            "fingerprint_payload": {"key": api_key_id, "company": company_id, "events": digest},
            "description": description,
            "metadata": metadata,
        }
    transactions = books.post(posts, call.revenue_accounts)
    for company_id, company_records in records_by_company.items():
        transaction_ = transactions[company_id]
        for record in company_records:
            record.transaction_id = transaction_.id if transaction_ else None
    bundles.save()
    bundles.start_first_use_fees(records)
    # In event id order, so two batches inserting overlapping ids wait rather than deadlock.
    records.sort(key=lambda record: record.event_id)
    as_text = timestamps_as_text()
    received_at = now.isoformat() if as_text else now
    insert_rows(
        UsageRecord,
        RECORD_COLUMNS,
        (record.values(api_key_id, received_at, as_text) for record in records),
        times_as_text=as_text,
    )
    return outcomes


# What a replay answers: the first result, as its usage record keeps it.
FIRST_RESULT_COLUMNS = (
    "event_id", "amount", "amount_currency", "bundle_quantity", "balance_after",
    "balance_after_currency", "error_code", "error_message",
)  # fmt: skip


def _records_by_event_id(api_key: ApiKey, event_ids) -> dict[str, tuple]:
    """The first results of the ids already recorded with ``api_key``, by id (one query,
    one index probe per id)."""
    return {
        row[0]: row
        for row in rows_by_key(
            UsageRecord, FIRST_RESULT_COLUMNS, "event_id", event_ids, "varchar", api_key=api_key
        )
    }


def _duplicate(event: UsageEvent, first: tuple) -> UsageOutcome:
    _, amount, currency, bundle_quantity, balance, balance_currency, error_code, error_message = (
        first
    )
    return UsageOutcome(
        id=event.id,
        status="duplicate",
        charge_amount=amount,
        bundle_quantity=bundle_quantity,
        balance_amount=balance,
        currency=currency or balance_currency,
        error_code=error_code or None,
        error_message=error_message or None,
    )


def _precheck(event, company, subaccounts, tariff, now) -> tuple[str, str] | None:
    if company is None:
        return "unknown_account", f"No account “{event.account}”."
    if event.quantity < 0:
        return "negative_quantity", "The quantity must be zero or more."
    if event.service in WHOLE_COUNT_SERVICES and event.quantity % 1:
        unit = "bytes" if event.service in ("data", "disk") else "units"
        return "fractional_quantity", f"{event.service} is counted in whole {unit}, not parts."
    if event.occurred_at > now + FUTURE_TOLERANCE:
        return "occurred_in_future", "occurred_at is in the future."
    if event.subaccount:
        subaccount = subaccounts.get((company.id, event.subaccount))
        if subaccount is None:
            return "unknown_subaccount", f"No subaccount “{event.subaccount}” in {event.account}."
        if not subaccount.is_active:
            return "subaccount_inactive", f"The subaccount “{event.subaccount}” is deactivated."
    if tariff is None:
        return "no_tariff", f"{event.account} has no tariff to rate usage with."
    if str(tariff.currency) != company.currency:
        return "no_tariff", f"The tariff of {event.account} is not in its currency."
    return None


def _describe(records: list[_Row]) -> tuple[str, dict]:
    """A usage transaction's description and metadata from its records (one company's
    charged events, at least one): the events by service, and the span of their
    ``occurred_at`` (exact in the metadata, where the admin finds the records from: they
    are indexed by company and time, not by transaction)."""
    counts: dict[str, int] = defaultdict(int)
    first = last = records[0].occurred_at
    for record in records:
        event = record.planned.event
        counts[event.service] += 1
        at = event.occurred_at
        if at < first:
            first = at
        elif at > last:
            last = at
    events = len(records)
    # Events come with the offset the platform sent; the transaction speaks UTC. The
    # description's minutes are cut from the ISO text (strftime costs twice as much, and
    # this runs for every company of every batch).
    first_iso, last_iso = first.astimezone(UTC).isoformat(), last.astimezone(UTC).isoformat()
    parts = ", ".join(f"{service} {count}" for service, count in sorted(counts.items()))
    description = (
        f"Usage: {events} events ({parts}), {first_iso[:10]} {first_iso[11:16]} – "
        f"{last_iso[:10]} {last_iso[11:16]} UTC"
    )
    return description, {"events": events, "occurred_from": first_iso, "occurred_until": last_iso}


def _reject(event: UsageEvent, error: tuple[str, str]) -> UsageOutcome:
    return UsageOutcome(id=event.id, status="rejected", error_code=error[0], error_message=error[1])


# The columns of a usage record as ``_Row.values`` lists them (written with ``insert_rows``).
RECORD_COLUMNS = (
    "api_key_id", "event_id", "account_code", "company_id", "subaccount_id", "service",
    "destination", "quantity", "occurred_at", "received_at", "status", "error_code",
    "error_message", "matched_destination", "rate_id", "unit_price", "connection_fee",
    "increments", "billed_quantity", "bundle_quantity", "bundle_counter_id",
    "amount_currency", "amount", "shortfall_currency", "shortfall",
    "balance_after_currency", "balance_after", "transaction_id",
)  # fmt: skip


class _Row:
    """A usage record to write: plain values, no model instance (a batch has a thousand)."""

    __slots__ = (
        "planned", "event_id", "status", "error", "rate", "billed_quantity", "bundle_quantity",
        "bundle_counter_id", "amount", "shortfall", "balance_after", "transaction_id",
    )  # fmt: skip

    def __init__(self, planned: _Planned, *, error: tuple[str, str] | None = None):
        self.planned = planned
        self.event_id = planned.event.id
        self.status = UsageRecord.Status.REJECTED if error else UsageRecord.Status.CHARGED
        self.error = error
        self.rate = None
        self.billed_quantity = None
        self.bundle_quantity = ZERO
        self.bundle_counter_id = None
        self.amount = self.shortfall = self.balance_after = None
        self.transaction_id = None

    @property
    def occurred_at(self) -> datetime:
        return self.planned.event.occurred_at

    def values(self, api_key_id: int, received_at: datetime | str, times_as_text: bool) -> tuple:
        """The row, in the order of ``RECORD_COLUMNS``; ``times_as_text``: see
        ``billing.bulk.timestamps_as_text`` (``received_at`` is given so already)."""
        planned, event, rate, error = self.planned, self.planned.event, self.rate, self.error
        currency = planned.company.currency if self.amount is not None else None
        return (
            api_key_id,
            event.id,
            event.account[:64],
            planned.company.id if planned.company else None,
            planned.subaccount.id if planned.subaccount and event.subaccount else None,
            event.service[:16],
            (event.destination or "")[:32],
            event.quantity,
            event.occurred_at.isoformat() if times_as_text else event.occurred_at,
            received_at,
            self.status,
            error[0] if error else "",
            error[1][:300] if error else "",
            planned.matched if rate else "",
            rate.id if rate else None,
            rate.price if rate else None,
            rate.connection_fee if rate else None,
            rate.increments if rate and event.service == "voice" else "",
            self.billed_quantity,
            self.bundle_quantity,
            self.bundle_counter_id,
            currency,
            self.amount,
            currency if self.shortfall is not None else None,
            self.shortfall,
            currency,
            self.balance_after,
            self.transaction_id,
        )


# A bundle counter as ``_Bundles`` reads it (plain values, no model instance).
COUNTER_COLUMNS = ("pk", "subscription_id", "bundle_id", "period_start", "used")
# The counters of some subscriptions whose period ends after an instant.
_COUNTERS_OPEN_AFTER = ReusableQuery(
    lambda subscription_ids, after: (
        BundleCounter.objects.filter(subscription_id__any=subscription_ids, period_end__gt=after)
        .order_by()
        .values_list(*COUNTER_COLUMNS)
    )
)


class _Counter:
    __slots__ = ("pk", "used", "left", "dirty")

    def __init__(self, pk: int, used: Decimal, included: Decimal):
        self.pk = pk
        self.used = used
        self.left = included - used
        self.dirty = False


# The subscriptions of some companies that are live at some time between two instants.
_SUBSCRIPTIONS_LIVE_BETWEEN = ReusableQuery(
    lambda company_ids, first, last: (
        Subscription.objects.filter(company_id__any=company_ids)
        .exclude(ended_at__lte=first)
        .filter(started_at__lte=last)
        .order_by("started_at", "id")
    )
)
_PLANS = ReusableQuery(lambda ids: Plan.objects.filter(pk__any=ids).order_by())
_BUNDLES_OF_PLANS = ReusableQuery(lambda plan_ids: Bundle.objects.filter(plan_id__any=plan_ids))


class _Plans:
    """The subscriptions of the call's companies live over its events, with their plans and
    each plan's bundles: configuration, read once per call before the locks (a subscription
    started or ended meanwhile is as if it had come just after the call)."""

    def __init__(self, plans: list[_Planned]):
        self.subscriptions: dict[int, list[Subscription]] = defaultdict(list)
        self._bundles_by_plan: dict[int, list[tuple[Bundle, tuple]]] = defaultdict(list)
        self.bundles: dict[int, Bundle] = {}  # by id
        self._by_company: dict[int, list] = {}
        self._periods: dict[int, list[tuple[datetime, datetime]]] = {}
        chargeable = [planned for planned in plans if planned.error is None]
        if not chargeable:
            return
        instants = [planned.event.occurred_at for planned in chargeable]
        subscriptions = _SUBSCRIPTIONS_LIVE_BETWEEN(
            list({planned.company.id for planned in chargeable}), min(instants), max(instants)
        )
        if not subscriptions:
            return
        # Each plan once (many companies share one), for its subscriptions to refer to.
        plans = {plan.id: plan for plan in _PLANS({row.plan_id for row in subscriptions})}
        for subscription in subscriptions:
            subscription._state.fields_cache["plan"] = plans[subscription.plan_id]
            self.subscriptions[subscription.company_id].append(subscription)
        # The bundles of each plan once, with their destination prefixes parsed once; in the
        # plan's order (Bundle.Meta.ordering).
        for bundle in _BUNDLES_OF_PLANS(list(plans)):
            self._bundles_by_plan[bundle.plan_id].append((bundle, tuple(bundle.destination_list)))
            self.bundles[bundle.id] = bundle

    def of(self, company_id: int) -> list[tuple[Subscription, list[tuple[Bundle, tuple]]]]:
        """The company's subscriptions with their bundles and destination prefixes."""
        plans = self._by_company.get(company_id)
        if plans is None:
            plans = self._by_company[company_id] = [
                (subscription, self._bundles_by_plan[subscription.plan_id])
                for subscription in self.subscriptions.get(company_id, ())
            ]
        return plans

    def period(self, subscription: Subscription, at: datetime, tz) -> tuple[datetime, datetime]:
        """The subscription's monthly period holding ``at``; a call's events mostly fall in
        one or two periods, so those found are kept."""
        known = self._periods.setdefault(subscription.id, [])
        for start, end in known:
            if start <= at < end:
                return start, end
        start, end, _ = monthly_period(subscription.started_at, at, tz)
        known.append((start, end))
        return start, end


class _Bundles:
    """The bundle counters of one group's companies for the periods its events touch, read
    under the company row locks."""

    def __init__(self, plans: _Plans, company_ids, instants: list[datetime]):
        self.plans = plans
        self.subscriptions = [
            subscription
            for company_id in company_ids
            for subscription in plans.subscriptions.get(company_id, ())
        ]
        self.counters: dict[tuple[int, int, datetime], _Counter] = {}
        if self.subscriptions and instants:
            self._read_counters(
                _COUNTERS_OPEN_AFTER(
                    [subscription.id for subscription in self.subscriptions], min(instants)
                )
            )

    def prepare(self, plans: list[_Planned]) -> None:
        """Find the counters each event draws from; start the missing ones (a new period)
        in one insert, which on PostgreSQL gives them back; elsewhere, or for any the
        insert skipped as existing, read them in one query."""
        starts: dict[tuple[int, int, datetime], tuple[Subscription, Bundle, datetime]] = {}
        for planned in plans:
            keys = planned.counter_keys = []
            at = planned.event.occurred_at
            for subscription, bundles in self.plans.of(planned.company.id):
                if not subscription.is_live(at):
                    continue
                period = None
                for bundle, prefixes in bundles:
                    if bundle.service != planned.event.service or (
                        prefixes and not planned.destination.upper().startswith(prefixes)
                    ):
                        continue
                    if period is None:
                        period = self.plans.period(subscription, at, planned.company.tzinfo)
                    key = (subscription.id, bundle.id, period[0])
                    keys.append(key)
                    if key not in self.counters:
                        starts[key] = (subscription, bundle, period[1])
        if not starts:
            return
        if connection.vendor == "postgresql":
            created = insert_new_rows(
                BundleCounter,
                ("subscription_id", "bundle_id", "period_start", "period_end", "used"),
                [(key[0], key[1], key[2], end, ZERO) for key, (_, _, end) in starts.items()],
                returning=COUNTER_COLUMNS,
            )
            self._read_counters(created, only=starts)
            # None is skipped: the company lock keeps out other calls.
            starts = {key: start for key, start in starts.items() if key not in self.counters}
            if not starts:
                return
        BundleCounter.objects.bulk_create(
            [
                BundleCounter(
                    subscription=subscription, bundle=bundle, period_start=key[2], period_end=end
                )
                for key, (subscription, bundle, end) in starts.items()
            ],
            ignore_conflicts=True,  # as a guard: the company lock keeps out other calls
        )
        self._read_counters(
            BundleCounter.objects.filter(
                subscription_id__any={subscription.id for subscription, _, _ in starts.values()},
                period_start__in={key[2] for key in starts},
            )
            .order_by()
            .values_list(*COUNTER_COLUMNS),
            only=starts,
        )

    def _read_counters(self, counters, only=None) -> None:
        """Keep ``counters`` (rows of ``COUNTER_COLUMNS``): those of ``only``'s keys, if given.

        Without row locks of their own: only the usage service writes counters, under the
        lock of their company's row, which this transaction holds; read after taking it,
        they are the latest."""
        for pk, subscription_id, bundle_id, start, used in counters:
            key = (subscription_id, bundle_id, start)
            if only is None or key in only:
                included = self.plans.bundles[bundle_id].included_quantity
                self.counters[key] = _Counter(pk, used, included)

    def covering(self, planned: _Planned) -> list[_Counter]:
        return [self.counters[key] for key in planned.counter_keys]

    def draw(self, counters: list[_Counter], quantity: Decimal) -> _Counter | None:
        """Take ``quantity`` from the counters in order; returns the first one drawn from."""
        first = None
        for counter in counters:
            if quantity <= 0:
                break
            take = min(counter.left, quantity)
            if take <= 0:
                continue
            counter.left -= take
            counter.used += take
            counter.dirty = True
            quantity -= take
            first = first or counter
        return first

    def start_first_use_fees(self, records: list[_Row]) -> None:
        """A PAYGO plan billed from first use starts its monthly fee at the first usage."""
        waiting = [
            subscription
            for subscription in self.subscriptions
            if subscription.fee_anchor_at is None
            and subscription.plan.is_paygo
            and subscription.plan.fee_starts == subscription.plan.FeeStart.FIRST_USE
        ]
        for subscription in waiting:
            used = [
                record.occurred_at
                for record in records
                if record.status == UsageRecord.Status.CHARGED
                and record.planned.company.id == subscription.company_id
                and subscription.is_live(record.occurred_at)
            ]
            if used:
                subscription_first_use(subscription=subscription, at=min(used))

    def save(self) -> None:
        update_column(
            BundleCounter,
            "used",
            {counter.pk: counter.used for counter in self.counters.values() if counter.dirty},
        )
