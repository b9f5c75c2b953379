"""Usage ingestion: rate reported events, draw bundles, charge the ledger, keep the records.

Guarantees of ``usage_ingest``:

- Each event id is handled once per API key, whatever its outcome: a replay (also a
  concurrent one) answers ``duplicate`` with the first result, its charge or its error.
- Events are handled in the order given. A company's events are rated and charged under
  its row lock; a prepaid company whose credit runs out mid-batch is charged what is left
  for that event, blocked, and its later events in the batch are ``rejected``.
- One ledger transaction per company and batch holds the money of that company's events
  (summed by lot and service); every usage record keeps its own amount, shortfall, rate
  and bundle units, and links to the transaction.
"""

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.utils import timezone
from djmoney.money import Money

from accounts.models import Company, Subaccount

from ..models import ApiKey, BundleCounter, Subscription, UsageRecord
from ..periods import monthly_period
from ..rating import price_event
from .ledger import UsageBatch
from .rating import RatingError, normalise_destination, tariff_index
from .recurring import subscription_first_use

ZERO = Decimal(0)
# Events stamped further ahead than this are refused: a clock that wrong is a bug upstream.
FUTURE_TOLERANCE = timedelta(minutes=5)
# No single event costs this much (10^12 of any currency); the ledger's columns hold 10^15.
MAX_EVENT_AMOUNT = Decimal(10) ** 12


@dataclass(frozen=True)
class UsageEvent:
    id: str
    account: str
    subaccount: str | None
    service: str
    destination: str | None
    quantity: Decimal
    occurred_at: datetime


@dataclass(frozen=True)
class UsageOutcome:
    id: str
    status: str  # charged | duplicate | rejected
    charge: Money | None = None
    bundle_quantity: Decimal = ZERO
    balance: Money | None = None
    error_code: str | None = None
    error_message: str | None = None


def usage_ingest(
    *, api_key: ApiKey, events: list[UsageEvent], now: datetime | None = None
) -> list[UsageOutcome]:
    """Rate and charge ``events`` reported with ``api_key``; one outcome per event, in order."""
    now = now or timezone.now()
    outcomes: list[UsageOutcome | None] = [None] * len(events)
    rejected: list[UsageRecord] = []
    first_index: dict[str, int] = {}
    by_company: dict[int, list[int]] = defaultdict(list)

    companies = {
        company.account_code: company
        for company in Company.objects.select_related("tariff").filter(
            account_code__in={event.account for event in events}
        )
    }
    subaccounts = {
        (sub.company_id, sub.code): sub
        for sub in Subaccount.objects.filter(
            company__in=companies.values(),
            code__in={event.subaccount for event in events if event.subaccount},
        )
    }
    destinations: dict[int, str] = {}

    # Seen before: answered from the record, without locking anything. (Events of a company
    # are checked again under its lock, which is what makes concurrent replays safe.)
    seen = _records_by_event_id(api_key, {event.id for event in events})
    for index, event in enumerate(events):
        if event.id in first_index:
            continue  # the same id twice in one batch: answered as a duplicate below
        first_index[event.id] = index
        if event.id in seen:
            outcomes[index] = _duplicate(event, seen[event.id])
            continue
        company = companies.get(event.account)
        error = _precheck(event, company, subaccounts, now)
        if error is None:
            try:
                destinations[index] = normalise_destination(event.service, event.destination)
            except RatingError as rating_error:
                error = (rating_error.code, str(rating_error))
        if error is not None:
            outcomes[index] = _reject(event, error)
            rejected.append(
                (index, _record(api_key, event, company, subaccounts, now, error=error))
            )
            continue
        by_company[company.pk].append(index)

    for company_id in sorted(by_company):
        company_outcomes = _ingest_company(
            api_key=api_key,
            company=next(c for c in companies.values() if c.pk == company_id),
            events=[
                (index, events[index], destinations[index]) for index in by_company[company_id]
            ],
            subaccounts=subaccounts,
            now=now,
        )
        for index, outcome in company_outcomes.items():
            outcomes[index] = outcome

    for index, record in rejected:
        # Refusals found before any lock: a concurrent replay may have recorded the same id
        # first, and then this one is its duplicate. (Each in a savepoint; refusals are few.)
        try:
            with transaction.atomic():
                record.save(force_insert=True)
        except IntegrityError:
            first = _records_by_event_id(api_key, [record.event_id]).get(record.event_id)
            if first is None:
                raise
            outcomes[index] = _duplicate(events[index], first)
    for index, event in enumerate(events):
        if outcomes[index] is None:  # a repeated id within the batch
            first = outcomes[first_index[event.id]]
            outcomes[index] = UsageOutcome(
                id=event.id,
                status="duplicate",
                charge=first.charge,
                bundle_quantity=first.bundle_quantity,
                balance=first.balance,
                error_code=first.error_code,
                error_message=first.error_message,
            )
    return outcomes


def _records_by_event_id(api_key: ApiKey, event_ids) -> dict[str, UsageRecord]:
    return {
        record.event_id: record
        for record in UsageRecord.objects.filter(api_key=api_key, event_id__in=list(event_ids))
    }


def _duplicate(event: UsageEvent, first: UsageRecord) -> UsageOutcome:
    return UsageOutcome(
        id=event.id,
        status="duplicate",
        charge=first.amount,
        bundle_quantity=first.bundle_quantity,
        balance=first.balance_after,
        error_code=first.error_code or None,
        error_message=first.error_message or None,
    )


def _precheck(event, company, subaccounts, now) -> tuple[str, str] | None:
    if company is None:
        return "unknown_account", f"No account “{event.account}”."
    if event.quantity < 0:
        return "negative_quantity", "The quantity must be zero or more."
    if event.occurred_at > now + FUTURE_TOLERANCE:
        return "occurred_in_future", "occurred_at is in the future."
    if event.subaccount:
        subaccount = subaccounts.get((company.pk, event.subaccount))
        if subaccount is None:
            return "unknown_subaccount", f"No subaccount “{event.subaccount}” in {event.account}."
        if not subaccount.is_active:
            return "subaccount_inactive", f"The subaccount “{event.subaccount}” is deactivated."
    if company.tariff_id is None:
        return "no_tariff", f"{event.account} has no tariff to rate usage with."
    if str(company.tariff.currency) != company.currency:
        return "no_tariff", f"The tariff of {event.account} is not in its currency."
    return None


def _ingest_company(*, api_key, company, events, subaccounts, now) -> dict[int, UsageOutcome]:
    """One company's events under its row lock.

    Event ids are unique per key across companies, and a concurrent batch for another
    company may record one of the same ids between our check and our insert: then the
    whole company batch rolls back and runs again, and the check sees that id. Each retry
    sees at least one more committed id, so this ends.
    """
    for attempt in range(len(events) + 1):
        try:
            with transaction.atomic():
                return _ingest_company_locked(
                    api_key=api_key,
                    company=company,
                    events=events,
                    subaccounts=subaccounts,
                    now=now,
                )
        except IntegrityError:
            if attempt == len(events):
                raise
    raise AssertionError("unreachable")


def _ingest_company_locked(
    *, api_key, company, events, subaccounts, now
) -> dict[int, UsageOutcome]:
    batch = UsageBatch(company, now)  # locks the company row
    company = batch.company
    outcomes: dict[int, UsageOutcome] = {}
    existing = _records_by_event_id(api_key, [event.id for _, event, _ in events])
    index = tariff_index(company.tariff)
    bundles = _Bundles(company, [event.occurred_at for _, event, _ in events])
    records: list[UsageRecord] = []
    charged_ids: list[str] = []

    for position, event, destination in events:
        first = existing.get(event.id)
        if first is not None:
            outcomes[position] = _duplicate(event, first)
            continue
        if batch.is_blocked:
            error = (
                "account_blocked",
                f"{company.account_code} is blocked: {company.blocked_reason or 'credit used up'}.",
            )
            outcomes[position] = _reject(event, error)
            records.append(_record(api_key, event, company, subaccounts, now, error=error))
            continue
        try:
            rate, matched = index.find(event.service, destination, event.occurred_at)
        except RatingError as rating_error:
            error = (rating_error.code, str(rating_error))
            outcomes[position] = _reject(event, error)
            records.append(_record(api_key, event, company, subaccounts, now, error=error))
            continue
        covering = bundles.covering(event.service, destination, event.occurred_at)
        price = price_event(
            service=event.service,
            quantity=event.quantity,
            unit_price=rate.price,
            currency=company.currency,
            bundle_left=sum((counter.left for counter in covering), ZERO),
            connection_fee=rate.connection_fee,
            minimum=rate.minimum_seconds,
            first=rate.first_increment,
            increment=rate.next_increment,
        )
        if price.amount > MAX_EVENT_AMOUNT:
            error = ("amount_too_large", "The charge of this event is too large to be real.")
            outcomes[position] = _reject(event, error)
            records.append(_record(api_key, event, company, subaccounts, now, error=error))
            continue
        first_counter = bundles.draw(covering, price.bundle_quantity)
        taken, shortfall, balance = batch.charge(price.amount, event.service)
        charged_ids.append(event.id)
        record = _record(api_key, event, company, subaccounts, now)
        record.matched_destination = matched
        record.rate_id = rate.id
        record.unit_price = rate.price
        record.connection_fee = rate.connection_fee
        record.increments = rate.increments if event.service == "voice" else ""
        record.billed_quantity = price.billed_quantity
        record.bundle_quantity = price.bundle_quantity
        record.bundle_counter = first_counter
        record.amount = batch.money(taken)
        record.shortfall = batch.money(shortfall) if shortfall else None
        record.balance_after = batch.money(balance)
        records.append(record)
        outcomes[position] = UsageOutcome(
            id=event.id,
            status="charged",
            charge=record.amount,
            bundle_quantity=price.bundle_quantity,
            balance=record.balance_after,
        )

    digest = hashlib.sha256("\n".join(sorted(charged_ids)).encode()).hexdigest()[:32]
    ledger_transaction = batch.post(
        idempotency_key=f"usage:{api_key.pk}:{company.pk}:{digest}",
        fingerprint_payload={"key": api_key.pk, "company": company.pk, "events": digest},
        description=_describe(records),
        metadata={"events": len(charged_ids)},
    )
    for record in records:
        if record.status == UsageRecord.Status.CHARGED:
            record.transaction = ledger_transaction
    bundles.save()
    bundles.start_first_use_fees(records)
    # In event id order, so two batches inserting overlapping ids wait rather than deadlock.
    UsageRecord.objects.bulk_create(sorted(records, key=lambda record: record.event_id))
    return outcomes


def _describe(records: list[UsageRecord]) -> str:
    counts: dict[str, int] = defaultdict(int)
    for record in records:
        if record.status == UsageRecord.Status.CHARGED:
            counts[record.service] += 1
    times = [
        record.occurred_at for record in records if record.status == UsageRecord.Status.CHARGED
    ]
    parts = ", ".join(f"{service} {count}" for service, count in sorted(counts.items()))
    if not times:
        return "Usage"
    first, last = min(times), max(times)
    return (
        f"Usage: {sum(counts.values())} events ({parts}), "
        f"{first:%Y-%m-%d %H:%M} – {last:%Y-%m-%d %H:%M} UTC"
    )


def _reject(event: UsageEvent, error: tuple[str, str]) -> UsageOutcome:
    return UsageOutcome(id=event.id, status="rejected", error_code=error[0], error_message=error[1])


def _record(api_key, event, company, subaccounts, now, *, error=None) -> UsageRecord:
    return UsageRecord(
        api_key=api_key,
        event_id=event.id,
        account_code=event.account[:64],
        company=company,
        subaccount=subaccounts.get((company.pk, event.subaccount))
        if company and event.subaccount
        else None,
        service=event.service[:16],
        destination=(event.destination or "")[:32],
        quantity=event.quantity,
        occurred_at=event.occurred_at,
        received_at=now,
        status=UsageRecord.Status.REJECTED if error else UsageRecord.Status.CHARGED,
        error_code=error[0] if error else "",
        error_message=error[1][:300] if error else "",
    )


class _Counter:
    __slots__ = ("row", "left", "dirty")

    def __init__(self, row: BundleCounter):
        self.row = row
        self.left = row.bundle.included_quantity - row.used
        self.dirty = False


class _Bundles:
    """The company's bundles and their counters for the periods the batch touches, locked."""

    def __init__(self, company: Company, instants: list[datetime]):
        self.company = company
        self.tz = company.tzinfo
        self.subscriptions = list(
            Subscription.objects.filter(company=company)
            .exclude(ended_at__lte=min(instants))
            .filter(started_at__lte=max(instants))
            .select_related("plan")
            .prefetch_related("plan__bundles")
            .order_by("started_at", "id")
        )
        self.counters: dict[tuple[int, int, datetime], _Counter] = {}
        if self.subscriptions:
            # Lock only the counters (of=self): the joined Bundle rows are shared by every
            # company on the plan, and locking them too deadlocks concurrent batches.
            for row in (
                BundleCounter.objects.select_for_update(of=("self",))
                .select_related("bundle")
                .filter(subscription__in=self.subscriptions, period_end__gt=min(instants))
                .order_by("pk")
            ):
                self.counters[(row.subscription_id, row.bundle_id, row.period_start)] = _Counter(
                    row
                )

    def covering(self, service: str, destination: str, at: datetime) -> list[_Counter]:
        found = []
        for subscription in self.subscriptions:
            if not subscription.is_live(at):
                continue
            for bundle in subscription.plan.bundles.all():
                if bundle.service != service or not bundle.covers(destination):
                    continue
                start, end, _ = monthly_period(subscription.started_at, at, self.tz)
                key = (subscription.pk, bundle.pk, start)
                if key not in self.counters:
                    row, _ = BundleCounter.objects.get_or_create(
                        subscription=subscription,
                        bundle=bundle,
                        period_start=start,
                        defaults={"period_end": end},
                    )
                    row.bundle = bundle
                    self.counters[key] = _Counter(
                        BundleCounter.objects.select_for_update(of=("self",))
                        .select_related("bundle")
                        .get(pk=row.pk)
                    )
                found.append(self.counters[key])
        return found

    def draw(self, counters: list[_Counter], quantity: Decimal) -> BundleCounter | None:
        """Take ``quantity`` from the counters in order; returns the first one drawn from."""
        first = None
        for counter in counters:
            if quantity <= 0:
                break
            take = min(counter.left, quantity)
            if take <= 0:
                continue
            counter.left -= take
            counter.row.used += take
            counter.dirty = True
            quantity -= take
            first = first or counter.row
        return first

    def start_first_use_fees(self, records: list[UsageRecord]) -> None:
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
                and subscription.is_live(record.occurred_at)
            ]
            if used:
                subscription_first_use(subscription=subscription, at=min(used))

    def save(self) -> None:
        changed = [counter.row for counter in self.counters.values() if counter.dirty]
        if changed:
            BundleCounter.objects.bulk_update(changed, ["used"])
