"""Recurring and one-time fees: plan fees and activation, DIDs, seats, service fees.

Guarantees of ``recurring_charge_company`` (one company) and ``recurring_charge_companies``
(a batch of companies in one database transaction, what the scheduled task runs):

- Exactly once per (item, period): the company rows are locked first, in id order (the
  ledger's lock order), due periods are read from each item's ``next_charge_at`` under
  those locks, every charge is a ``RecurringCharge`` unique per (item key, period number),
  and its ledger transaction has the idempotency key ``recurring:<item key>:<period
  number>``. Running it twice, or in two workers at once, leaves one charge per period.
- A batch that fails is charged again one company per transaction, so a company whose
  charge is refused does not hold up the others.
- Catch-up: every period that started at or before ``as_of`` is charged, oldest first.
- Periods are half-open and computed in the company's billing time zone (``periods``):
  monthly on the day of the month the item started, clamped to the month's last day; or
  weekly. No proration: a period is charged in full at its start.
- Prepaid companies that cannot pay are charged what is left, the rest is the charge's
  shortfall and the company is blocked (the ledger's rules).
"""

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone, translation
from django.utils.translation import gettext_noop
from djmoney.money import Money

from accounts.models import Company, Subaccount, SubaccountInactivity
from accounts.services import lock_companies, lock_company

from ..bulk import insert_rows, update_column
from ..exceptions import BillingError, InvalidAmount, NumberInUse, RecurringChargesFailed
from ..models import PhoneNumber, RecurringCharge, SeatFee, ServiceFee, Subscription
from ..money import quantize_amount
from ..periods import calendar_day, monthly_period, weekly_period
from . import ledger

Item = RecurringCharge.Item
Kind = ledger.Kind
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DueCharge:
    item: str
    item_key: str
    period_index: int
    period_start: datetime
    period_end: datetime
    quantity: Decimal
    amount: Money
    description: str
    source: object  # the subscription, phone number, seat fee or service fee


# Each kind's description, in English in the ledger; a statement says it in the company's
# language (``invoicing.statement_content.describe_base_fees``). A plan, number or fee name
# is staff's and stays as written.
DESCRIPTIONS = {
    Item.PLAN_FEE: gettext_noop("Plan %(plan)s, %(period)s"),
    Item.ACTIVATION: gettext_noop("Activation fee, plan %(plan)s"),
    Item.DID: gettext_noop("DID %(number)s, %(period)s"),
    Item.SEATS: gettext_noop("Seats: %(count)s × %(price)s, %(period)s"),
    Item.SERVICE_FEE: "%(name)s, %(period)s",
}


def period_label(start: datetime, end: datetime, company: Company) -> str:
    """Dates in the billing time zone, the last one the day before the next period starts:
    "2026-11-01 – 2026-11-30" (periods run from the day of the month the item started)."""
    tz = company.tzinfo
    last_day = end.astimezone(tz).date() - timedelta(days=1)
    return f"{start.astimezone(tz):%Y-%m-%d} – {last_day:%Y-%m-%d}"


def _periods(anchor, start_from, until, ended_at, tz, weekly=False):
    """(index, start, end) of each period whose start is in [start_from, until] and before
    ``ended_at``, in order."""
    period_of = weekly_period if weekly else monthly_period
    at = start_from
    while at <= until and (ended_at is None or at < ended_at):
        start, end, index = period_of(anchor, at, tz)
        yield index, start, end
        at = end


def _seat_counter(companies: list[Company], bound: datetime):
    """``count(company_id, at)``: the subaccounts of the company active at ``at`` (created by
    then, active or deactivated after it, and not in a stretch it was deactivated and then
    activated again), for every ``at`` up to ``bound``, read in two queries for all
    ``companies``."""
    seats: dict[int, list[tuple[int, datetime, datetime | None]]] = {c.pk: [] for c in companies}
    gaps: dict[int, list[tuple[datetime, datetime]]] = defaultdict(list)
    if companies:
        for pk, company_id, created_at, is_active, deactivated_at in (
            Subaccount.objects.filter(company_id__in=list(seats), created_at__lte=bound)
            .order_by()
            .values_list("pk", "company_id", "created_at", "is_active", "deactivated_at")
        ):
            if is_active:
                seats[company_id].append((pk, created_at, None))
            elif deactivated_at is not None:
                seats[company_id].append((pk, created_at, deactivated_at))
        for subaccount_id, started_at, ended_at in (
            SubaccountInactivity.objects.filter(
                subaccount__company_id__in=list(seats), started_at__lte=bound
            )
            .order_by()
            .values_list("subaccount_id", "started_at", "ended_at")
        ):
            gaps[subaccount_id].append((started_at, ended_at))

    def active(pk: int, created_at: datetime, gone_at: datetime | None, at: datetime) -> bool:
        if created_at > at or (gone_at is not None and gone_at <= at):
            return False
        return not any(started_at <= at < ended_at for started_at, ended_at in gaps.get(pk, ()))

    def count(company_id: int, at: datetime) -> int:
        return sum(1 for seat in seats[company_id] if active(*seat, at))

    return count


def recurring_due(company: Company, as_of: datetime) -> list[DueCharge]:
    """Every charge of ``company`` due at ``as_of`` and not made yet, oldest first."""
    return _due_by_company([company], {company.pk: as_of})[company.pk]


def _due_by_company(
    companies: list[Company], as_of: dict[int, datetime]
) -> dict[int, list[DueCharge]]:
    """``recurring_due`` for many companies (each with its own ``as_of``), in one query per
    kind of item for all of them (and one for the seats)."""
    # The descriptions are the ledger's English record, whatever language the caller runs
    # in (a plan ordered in the portal runs in the customer's): "¥500", never "￥500".
    with translation.override("en"):
        return _due_in_english(companies, as_of)


def _due_in_english(
    companies: list[Company], as_of: dict[int, datetime]
) -> dict[int, list[DueCharge]]:
    by_id = {company.pk: company for company in companies}
    due: dict[int, list[DueCharge]] = {company.pk: [] for company in companies}
    if not companies:
        return due
    bound = max(as_of.values())

    def items(model, *related):
        # order_by(): the models' Meta.ordering would join the company table to sort.
        rows = model.objects.filter(company_id__in=list(by_id), next_charge_at__lte=bound)
        for item in rows.select_related(*related).order_by():
            if item.next_charge_at <= as_of[item.company_id]:
                yield by_id[item.company_id], item

    for company, subscription in items(Subscription, "plan"):
        plan = subscription.plan
        for index, start, end in _periods(
            subscription.fee_anchor_at,
            subscription.next_charge_at,
            as_of[company.pk],
            subscription.ended_at,
            company.tzinfo,
        ):
            if index == 0 and plan.activation_fee and plan.activation_fee.amount > 0:
                due[company.pk].append(
                    DueCharge(
                        Item.ACTIVATION,
                        f"activation:{subscription.pk}",
                        0,
                        start,
                        end,
                        Decimal(1),
                        plan.activation_fee,
                        DESCRIPTIONS[Item.ACTIVATION] % {"plan": plan.name},
                        subscription,
                    )
                )
            due[company.pk].append(
                DueCharge(
                    Item.PLAN_FEE,
                    f"plan_fee:{subscription.pk}",
                    index,
                    start,
                    end,
                    Decimal(1),
                    plan.monthly_fee,
                    DESCRIPTIONS[Item.PLAN_FEE]
                    % {"plan": plan.name, "period": period_label(start, end, company)},
                    subscription,
                )
            )

    for company, number in items(PhoneNumber):
        for index, start, end in _periods(
            number.assigned_at,
            number.next_charge_at,
            as_of[company.pk],
            number.released_at,
            company.tzinfo,
        ):
            due[company.pk].append(
                DueCharge(
                    Item.DID,
                    f"did:{number.pk}",
                    index,
                    start,
                    end,
                    Decimal(1),
                    number.monthly_price,
                    DESCRIPTIONS[Item.DID]
                    % {"number": number.number, "period": period_label(start, end, company)},
                    number,
                )
            )

    seat_fees = list(items(SeatFee))
    active_seats = _seat_counter(
        list({company.pk: company for company, _ in seat_fees}.values()), bound
    )
    for company, fee in seat_fees:
        for index, start, end in _periods(
            fee.started_at, fee.next_charge_at, as_of[company.pk], fee.ended_at, company.tzinfo
        ):
            seats = active_seats(company.pk, start)
            due[company.pk].append(
                DueCharge(
                    Item.SEATS,
                    f"seats:{fee.pk}",
                    index,
                    start,
                    end,
                    Decimal(seats),
                    Money(fee.price_per_seat.amount * seats, company.currency),
                    DESCRIPTIONS[Item.SEATS]
                    % {
                        "count": seats,
                        "price": fee.price_per_seat,
                        "period": period_label(start, end, company),
                    },
                    fee,
                )
            )

    for company, fee in items(ServiceFee):
        weekly = fee.period == ServiceFee.Period.WEEKLY
        for index, start, end in _periods(
            fee.started_at,
            fee.next_charge_at,
            as_of[company.pk],
            fee.ended_at,
            company.tzinfo,
            weekly=weekly,
        ):
            due[company.pk].append(
                DueCharge(
                    Item.SERVICE_FEE,
                    f"service_fee:{fee.pk}",
                    index,
                    start,
                    end,
                    Decimal(1),
                    fee.amount,
                    DESCRIPTIONS[Item.SERVICE_FEE]
                    % {"name": fee.name, "period": period_label(start, end, company)},
                    fee,
                )
            )

    for charges in due.values():
        charges.sort(key=lambda charge: (charge.period_start, charge.item_key))
    return due


REVENUE = {
    Item.PLAN_FEE: "plan_fee",
    Item.ACTIVATION: "activation",
    Item.DID: "did",
    Item.SEATS: "seats",
    Item.SERVICE_FEE: "service_fee",
}
SOURCE_FIELD = {
    Item.PLAN_FEE: "subscription",
    Item.ACTIVATION: "subscription",
    Item.DID: "phone_number",
    Item.SEATS: "seat_fee",
    Item.SERVICE_FEE: "service_fee",
}
SOURCE_FIELDS = ("subscription", "phone_number", "seat_fee", "service_fee")
# A batch writes its charges with COPY (``billing.bulk``): the ORM's per-field preparation
# of each row would cost more than everything else the batch does.
CHARGE_COLUMNS = (
    "company_id", "item", "item_key", "period_index", "period_start", "period_end",
    *(f"{field}_id" for field in SOURCE_FIELDS),
    "quantity", "amount_currency", "amount", "description", "transaction_id", "created_at",
)  # fmt: skip


@transaction.atomic
def recurring_charge_company(
    *, company: Company, as_of: datetime | None = None, now: datetime | None = None
) -> list[RecurringCharge]:
    """Charge every period of ``company``'s recurring items that started by ``as_of``.

    Locks the company row, then posts all due charges as one ledger batch, records them and
    moves each item's ``next_charge_at`` on. Idempotent (see the module docstring).
    """
    now = now or timezone.now()
    as_of = as_of or now
    locked = lock_company(company.pk)
    records: list[RecurringCharge] = []
    _charge_locked([locked], {locked.pk: as_of}, now, records)
    return records


def recurring_charge_companies(
    *,
    company_ids: list[int],
    as_of: datetime | None = None,
    day: date | None = None,
    now: datetime | None = None,
) -> int:
    """Charge several companies (a batch of ``TOLLGATE_RECURRING_BATCH``) in ONE database
    transaction, with the same guarantees as ``recurring_charge_company`` for each: their
    rows are locked first, in id order (so batches that overlap wait for each other and
    cannot deadlock), and everything is read and written in a few statements per table
    for all of them. Returns the number of charges recorded.

    ``day``: as of the end of that calendar day in each company's billing time zone (see
    ``recurring_charge_all``); otherwise as of the instant ``as_of`` (default ``now``).

    If the batch fails (one company's charge is refused, say), nothing of it is kept and
    each company is charged again in its own transaction, so one company cannot hold up
    the others; the first error is raised once all have been tried (a task retries on its
    kind), with a note naming its company and one for each other company refused.
    """
    charged, errors = _charge_batch(company_ids, as_of, day, now)
    if errors:
        first = errors[0]
        for other in errors[1:]:
            first.add_note(f"{' '.join(getattr(other, '__notes__', []))}: {other}")
        raise first
    return charged


def _charge_batch(
    company_ids: list[int], as_of: datetime | None, day: date | None, now: datetime | None
) -> tuple[int, list[Exception]]:
    """``recurring_charge_companies``'s work: the charges recorded, and each refusal (its
    note names the company)."""
    now = now or timezone.now()
    as_of = as_of or now
    try:
        with transaction.atomic():
            companies = lock_companies(company_ids)
            as_of_by_id = {company.pk: _as_of(company, as_of, day) for company in companies}
            return _charge_locked(companies, as_of_by_id, now), []
    except Exception as error:
        if len(company_ids) == 1:
            code = Company.objects.filter(pk=company_ids[0]).values_list("account_code").first()
            error.add_note(f"company {code[0] if code else company_ids[0]}")
            return 0, [error]
        logger.exception("Recurring batch of %d companies failed; one by one.", len(company_ids))
    charged, errors = 0, []
    for company in Company.objects.filter(pk__in=company_ids).order_by("pk"):
        try:
            records = recurring_charge_company(
                company=company, as_of=_as_of(company, as_of, day), now=now
            )
        except Exception as error:  # noqa: BLE001 - returned, after the others are tried
            error.add_note(f"company {company.account_code}")
            errors.append(error)
        else:
            charged += len(records)
    return charged, errors


def _as_of(company: Company, as_of: datetime, day: date | None) -> datetime:
    return as_of if day is None else calendar_day_end(day, company.tzinfo)


def _charge_locked(
    companies: list[Company],
    as_of: dict[int, datetime],
    now: datetime,
    records: list[RecurringCharge] | None = None,
) -> int:
    """Charge the due periods of ``companies``, whose rows the caller has locked; returns
    the number of charges recorded. With ``records``, the new ``RecurringCharge`` rows are
    written as model instances and added to it; without, they are written from plain
    values (``CHARGE_COLUMNS``), which costs a batch much less."""
    due = _due_by_company(companies, as_of)
    keys = {charge.item_key for charges in due.values() for charge in charges}
    if not keys:
        return 0
    already = set(
        RecurringCharge.objects.filter(item_key__in=keys)
        .order_by()
        .values_list("item_key", "period_index")
    )
    # The pointers move past every due period, also those a previous run recorded but
    # whose pointer update was lost; only the new ones are charged.
    new = [
        (pk, charge)
        for pk, charges in due.items()
        for charge in charges
        if (charge.item_key, charge.period_index) not in already
    ]
    by_id = {company.pk: company for company in companies}
    to_post: dict[int, list[DueCharge]] = {}
    for pk, charge in new:
        if charge.amount.amount > 0:
            to_post.setdefault(pk, []).append(charge)
    results = (
        ledger.companies_charge_many(
            now=now,
            charges=[
                (by_id[pk], [_charge_request(charge) for charge in charges])
                for pk, charges in to_post.items()
            ],
        )
        if to_post
        else []
    )
    posted = {
        id(charge): result.transaction
        for charges, company_results in zip(to_post.values(), results, strict=True)
        for charge, result in zip(charges, company_results, strict=True)
    }
    if records is None:
        insert_rows(
            RecurringCharge,
            CHARGE_COLUMNS,
            (
                (
                    pk,
                    charge.item,
                    charge.item_key,
                    charge.period_index,
                    charge.period_start,
                    charge.period_end,
                    *(
                        charge.source.pk if SOURCE_FIELD[charge.item] == field else None
                        for field in SOURCE_FIELDS
                    ),
                    charge.quantity,
                    str(charge.amount.currency),
                    charge.amount.amount,
                    charge.description[:300],
                    _pk(posted.get(id(charge))),
                    now,
                )
                for pk, charge in new
            ),
        )
    else:
        created = RecurringCharge.objects.bulk_create(
            [
                RecurringCharge(
                    company=by_id[pk],
                    item=charge.item,
                    item_key=charge.item_key,
                    period_index=charge.period_index,
                    period_start=charge.period_start,
                    period_end=charge.period_end,
                    quantity=charge.quantity,
                    amount=charge.amount,
                    description=charge.description[:300],
                    transaction=posted.get(id(charge)),
                    created_at=now,
                    **{SOURCE_FIELD[charge.item]: charge.source},
                )
                for pk, charge in new
            ],
            batch_size=500,
        )
        if records is not None:
            records.extend(created)
    _advance_pointers([charge for charges in due.values() for charge in charges])
    return len(new)


def _pk(row) -> int | None:
    return None if row is None else row.pk


def _charge_request(charge: DueCharge) -> ledger.ChargeRequest:
    return ledger.ChargeRequest(
        amount=charge.amount,
        revenue=REVENUE[charge.item],
        idempotency_key=f"recurring:{charge.item_key}:{charge.period_index}",
        description=charge.description,
        kind=Kind.ONE_TIME_FEE if charge.item == Item.ACTIVATION else Kind.RECURRING_FEE,
        effective_at=charge.period_start,
        cause=charge.source,
    )


def _advance_pointers(due: list[DueCharge]) -> None:
    """Each item's next charge is the end of its last charged period (None past its end):
    one UPDATE per kind of item."""
    last: dict[str, DueCharge] = {}
    for charge in due:
        if charge.item != Item.ACTIVATION:
            last[charge.item_key] = charge
    moved: dict[type, list] = {}
    for charge in last.values():
        source = charge.source
        ends = getattr(source, "ended_at", None) or getattr(source, "released_at", None)
        source.next_charge_at = None if ends and charge.period_end >= ends else charge.period_end
        moved.setdefault(type(source), []).append(source)
    for model, sources in moved.items():
        _set_next_charge(model, sources)


def _set_next_charge(model, items: list) -> None:
    """Write ``next_charge_at`` of ``items`` (all of ``model``) in one statement (Django's
    ``bulk_update`` builds a CASE per row, which costs more client time than the rest of a
    company's charges)."""
    update_column(
        model,
        "next_charge_at",
        {item.pk: item.next_charge_at for item in items},
        sql_type="timestamptz",
    )


def companies_with_charges_due(as_of: datetime) -> list[int]:
    """Companies with at least one item due: four indexed queries, whatever the size."""
    ids: set[int] = set()
    for model in (Subscription, PhoneNumber, SeatFee, ServiceFee):
        ids.update(
            model.objects.filter(next_charge_at__lte=as_of)
            .order_by()
            .values_list("company_id", flat=True)
        )
    return sorted(ids)


def in_batches(company_ids: list[int], size: int | None = None) -> list[list[int]]:
    """``company_ids`` cut into runs of ``size`` (default ``TOLLGATE_RECURRING_BATCH``), in
    order."""
    size = size or settings.TOLLGATE_RECURRING_BATCH
    return [company_ids[start : start + size] for start in range(0, len(company_ids), size)]


def recurring_charge_all(
    *,
    as_of: datetime | None = None,
    day: date | None = None,
    now: datetime | None = None,
    batch_size: int | None = None,
) -> int:
    """Charge every company with something due, ``batch_size`` companies per database
    transaction (``recurring_charge_companies``).

    ``day``: as of the end of that calendar day in each company's own billing time zone
    (what ``run_recurring --date`` means); otherwise as of the instant ``as_of`` (now).
    """
    now = now or timezone.now()
    if day is not None:
        # A bound past the end of ``day`` in every time zone, to find the candidates.
        bound = datetime.combine(day + timedelta(days=2), time(0), tzinfo=UTC)
    else:
        bound = as_of = as_of or now
    charged, failed = 0, []
    for batch in in_batches(companies_with_charges_due(bound), batch_size):
        # A company whose charge is refused holds up no other company: each is tried, and
        # the refusals are reported together at the end.
        recorded, errors = _charge_batch(batch, as_of, day, now)
        charged += recorded
        failed += errors
    if failed:
        raise RecurringChargesFailed(charged, failed)
    return charged


def calendar_day_end(day: date, tz) -> datetime:
    """The last instant of ``day`` in ``tz`` (periods starting that day are due)."""
    next_start, _ = calendar_day(day + timedelta(days=1), tz)
    return next_start - timedelta(microseconds=1)


# --- Ordering and releasing items -----------------------------------------------------------


@transaction.atomic
def subscription_order(*, company: Company, plan, at: datetime | None = None) -> Subscription:
    """Order ``plan`` for ``company`` at ``at``. Its monthly fee (and activation fee) are due at
    once, unless the plan's fee starts at first use (then at the first usage)."""
    at = at or timezone.now()
    if plan.currency != company.currency:
        raise InvalidAmount(
            f"The plan is in {plan.currency}; {company.name} is billed in {company.currency}."
        )
    from_first_use = plan.is_paygo and plan.fee_starts == plan.FeeStart.FIRST_USE
    return Subscription.objects.create(
        company=company,
        plan=plan,
        started_at=at,
        fee_anchor_at=None if from_first_use else at,
        next_charge_at=None if from_first_use else at,
    )


def subscription_first_use(*, subscription: Subscription, at: datetime) -> None:
    """Start a first-use PAYGO plan's monthly fee at its first usage (once)."""
    Subscription.objects.filter(pk=subscription.pk, fee_anchor_at=None).update(
        fee_anchor_at=at, next_charge_at=at
    )


@transaction.atomic
def subscription_end(*, subscription: Subscription, at: datetime | None = None) -> Subscription:
    """End a subscription: no period starting at or after ``at`` is charged.

    Locks the company, then re-reads the subscription, so a charge run in between is
    neither undone nor repeated.
    """
    at = at or timezone.now()
    lock_company(subscription.company_id)
    fresh = Subscription.objects.get(pk=subscription.pk)
    fresh.ended_at = at
    if fresh.next_charge_at and fresh.next_charge_at >= at:
        fresh.next_charge_at = None
    fresh.save(update_fields=["ended_at", "next_charge_at"])
    return fresh


@transaction.atomic
def phone_number_assign(
    *, company: Company, number: str, monthly_price: Money, at: datetime | None = None
) -> PhoneNumber:
    """Assign a DID: its monthly price is due at once, then on each monthly anniversary.
    Raises ``NumberInUse`` if another company holds the number."""
    at = at or timezone.now()
    if str(monthly_price.currency) != company.currency:
        raise InvalidAmount(f"The price must be in {company.currency}.")
    try:
        with transaction.atomic():
            return PhoneNumber.objects.create(
                company=company,
                number=number,
                monthly_price=monthly_price,
                assigned_at=at,
                next_charge_at=at,
            )
    except IntegrityError as error:
        raise NumberInUse(
            f"{number} is assigned to a company already; release it first."
        ) from error


@transaction.atomic
def phone_number_release(*, phone_number: PhoneNumber, at: datetime | None = None) -> PhoneNumber:
    """Release a DID: no period starting at or after ``at`` is charged. Locks the company and
    re-reads the number (see ``subscription_end``)."""
    at = at or timezone.now()
    lock_company(phone_number.company_id)
    fresh = PhoneNumber.objects.get(pk=phone_number.pk)
    fresh.released_at = at
    if fresh.next_charge_at and fresh.next_charge_at >= at:
        fresh.next_charge_at = None
    fresh.save(update_fields=["released_at", "next_charge_at"])
    return fresh


# --- Seat and service fees ------------------------------------------------------------------


def _check_fee_amount(company: Company, amount: Money, what: str) -> None:
    """A fee is more than zero, in the company's currency, and whole minor units of it."""
    if str(amount.currency) != company.currency:
        raise InvalidAmount(
            f"The {what} is in {amount.currency}; {company.name} is billed in {company.currency}."
        )
    if amount.amount <= 0:
        raise InvalidAmount(f"The {what} must be more than zero.")
    if quantize_amount(amount.amount, company.currency) != amount.amount:
        raise InvalidAmount(f"The {what} has more decimals than {company.currency} allows.")


def _end_fee(fee: SeatFee | ServiceFee, at: datetime) -> SeatFee | ServiceFee:
    """End ``fee`` at ``at`` under the company lock, from its row as committed (a run may
    have moved its pointer since the caller read it)."""
    lock_company(fee.company_id)
    fee.refresh_from_db(fields=["started_at", "ended_at", "next_charge_at"])
    if at <= fee.started_at:
        raise BillingError(
            f"A fee must end after it starts ({fee.started_at.isoformat()}); choose a later end."
        )
    if fee.ended_at is not None and fee.ended_at <= at:
        return fee  # it ends by then already
    fee.ended_at = at
    if fee.next_charge_at and fee.next_charge_at >= at:
        fee.next_charge_at = None
    fee.save(update_fields=["ended_at", "next_charge_at"])
    return fee


@transaction.atomic
def seat_fee_set(*, company: Company, price_per_seat: Money, at: datetime | None = None) -> SeatFee:
    """Charge ``price_per_seat`` per active subaccount monthly from ``at``: the first period
    is due at ``at``, then on each monthly anniversary.

    One seat price at a time: a seat fee of the company still running at ``at`` ends at
    ``at`` (``seat_fee_end``). Periods are not prorated, so a price change set mid-period
    charges both fees for the overlap; set it at the running fee's next charge to avoid it.
    Locks the company row. Raises ``InvalidAmount`` (not more than zero, another currency,
    more decimals than the currency has) and ``BillingError`` (a seat fee of the company
    starts at or after ``at``: end that one first).
    """
    at = at or timezone.now()
    _check_fee_amount(company, price_per_seat, "price per seat")
    lock_company(company.pk)
    running = SeatFee.objects.filter(company=company).filter(
        Q(ended_at__isnull=True) | Q(ended_at__gt=at)
    )
    for fee in running.order_by("started_at", "pk"):
        if fee.started_at >= at:
            raise BillingError(
                f"A seat fee of {company.name} starts {fee.started_at.isoformat()}, not before "
                "the new one; end it first."
            )
        _end_fee(fee, at)
    return SeatFee.objects.create(
        company=company, price_per_seat=price_per_seat, started_at=at, next_charge_at=at
    )


@transaction.atomic
def seat_fee_end(*, seat_fee: SeatFee, at: datetime | None = None) -> SeatFee:
    """End a seat fee: no period starting at or after ``at`` is charged; periods already
    charged stay charged (no proration). Ending again later than its end changes nothing;
    earlier moves the end. Locks the company row. Raises ``BillingError`` if ``at`` is not
    after the fee's start."""
    return _end_fee(seat_fee, at or timezone.now())


@transaction.atomic
def service_fee_add(
    *, company: Company, name: str, amount: Money, period: str, at: datetime | None = None
) -> ServiceFee:
    """Charge ``amount`` for ``name`` every ``period`` (monthly or weekly) from ``at``: the
    first period is due at ``at``. Raises ``InvalidAmount`` (not more than zero, another
    currency, more decimals than the currency has); an unknown period is a ``ValueError``."""
    at = at or timezone.now()
    _check_fee_amount(company, amount, "amount")
    return ServiceFee.objects.create(
        company=company,
        name=name,
        amount=amount,
        period=ServiceFee.Period(period),
        started_at=at,
        next_charge_at=at,
    )


@transaction.atomic
def service_fee_end(*, service_fee: ServiceFee, at: datetime | None = None) -> ServiceFee:
    """End a service fee, as ``seat_fee_end`` ends a seat fee (same guarantees and errors)."""
    return _end_fee(service_fee, at or timezone.now())
