"""Reads of balances, lots and ledger history shared by the portal, the admin and the API."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import (
    Case,
    DecimalField,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce
from django.utils import timezone
from djmoney.money import Money

from accounts.models import Company

from .models import CreditLot, LedgerAccount, LedgerPosting, LedgerTransaction

ZERO = Decimal(0)
CHARGE_KINDS = (
    LedgerTransaction.Kind.USAGE,
    LedgerTransaction.Kind.RECURRING_FEE,
    LedgerTransaction.Kind.ONE_TIME_FEE,
)


def company_balance(company: Company) -> Money:
    """What the company holds (positive) or owes (negative), as the ledger last left it."""
    account = (
        LedgerAccount.objects.filter(kind=LedgerAccount.Kind.CUSTOMER, company=company)
        .only("balance", "balance_currency")
        .first()
    )
    return account.balance if account else Money(ZERO, company.currency)


def company_available(company: Company, now: datetime | None = None) -> Money | None:
    """What the company can still spend at ``now``; None means unlimited.

    Prepaid: the credit left in lots unexpired at ``now``. Postpaid: the balance (less credit
    in lots already expired) plus the credit limit; unlimited without a limit.
    """
    amount = companies_available([company], now or timezone.now())[company.pk]
    return None if amount is None else Money(amount, company.currency)


def companies_available(companies: Sequence[Company], now: datetime) -> dict[int, Decimal | None]:
    """``company_available`` of many companies, by id, in their currencies (None: unlimited):
    at most three queries, whatever their number."""
    prepaid = [c.pk for c in companies if c.mode == Company.Mode.PREPAID]
    limited = [
        c for c in companies if c.mode != Company.Mode.PREPAID and c.credit_limit is not None
    ]
    available: dict[int, Decimal | None] = {c.pk: None for c in companies}
    if prepaid:
        unexpired = _lot_sums(prepaid, expires_at__gt=now)
        for pk in prepaid:
            available[pk] = unexpired.get(pk, ZERO)
    if limited:
        limited_ids = [c.pk for c in limited]
        expired = _lot_sums(limited_ids, expires_at__lte=now)
        balances = dict(
            LedgerAccount.objects.filter(
                kind=LedgerAccount.Kind.CUSTOMER, company_id__in=limited_ids
            ).values_list("company_id", "balance")
        )
        for company in limited:
            effective = balances.get(company.pk, ZERO) - expired.get(company.pk, ZERO)
            available[company.pk] = effective + company.credit_limit.amount
    return available


def _lot_sums(company_ids: list[int], **filters) -> dict[int, Decimal]:
    return dict(
        CreditLot.objects.filter(company_id__in=company_ids, remaining__gt=0, **filters)
        .order_by()
        .values("company_id")
        .annotate(total=Sum("remaining"))
        .values_list("company_id", "total")
    )


def company_lots(company: Company) -> QuerySet[CreditLot]:
    return CreditLot.objects.filter(company=company).order_by("expires_at", "id")


def with_customer_amount(queryset: QuerySet[LedgerTransaction], name: str = "amount"):
    """Annotate ``name``: each transaction's net effect on its company's balance (one
    correlated subquery, no query per row)."""
    net = (
        LedgerPosting.objects.filter(
            transaction=OuterRef("pk"), account__kind=LedgerAccount.Kind.CUSTOMER
        )
        .values("transaction")
        .annotate(total=Sum("amount"))
        .values("total")
    )
    return queryset.annotate(
        **{
            name: Coalesce(
                Subquery(net, output_field=DecimalField(max_digits=19, decimal_places=4)),
                Value(ZERO),
            )
        }
    )


def company_transactions(company: Company) -> QuerySet[LedgerTransaction]:
    """The company's transactions, newest first, each with ``amount``: its net effect on the
    company's balance.

    Newest by id, not by posting time: a service reads its clock before it waits for the
    company's lock (a usage call, a recurring run stamps its whole run), so a transaction
    stamped earlier can change the balance after one stamped later. Ids are taken under the
    lock, in the order the balance changed, which keeps each line's "balance after" equal
    to the one below it plus its amount (index ``ledger_tx_company_id``)."""
    return with_customer_amount(LedgerTransaction.objects.filter(company=company)).order_by("-id")


def average_daily_spend(company: Company, now: datetime, days: int = 30) -> Money:
    """Charges (usage and fees) of the last ``days`` days, per day."""
    spent = (
        LedgerPosting.objects.filter(
            account__kind=LedgerAccount.Kind.CUSTOMER,
            account__company=company,
            transaction__kind__in=CHARGE_KINDS,
            transaction__posted_at__gte=now - timedelta(days=days),
            transaction__posted_at__lt=now,
        ).aggregate(total=Sum("amount"))["total"]
        or ZERO
    )
    return Money(-spent / days, company.currency)


@dataclass(frozen=True)
class CreditRunway:
    daily_spend: Money
    runs_out_at: datetime | None  # None: nothing is being spent
    expiring_unused: Money  # credit that will expire before it can be spent at this pace


def credit_runway(company: Company, now: datetime | None = None) -> CreditRunway:
    """How long the remaining credit lasts at the average daily spend of the last 30 days.

    Spending follows the ledger's rule, soonest-expiry lot first: walking the lots in that
    order, a lot lasts ``remaining / daily spend`` days unless it expires sooner, in which
    case what is left of it when it expires is lost and spending moves to the next lot.
    """
    now = now or timezone.now()
    daily = average_daily_spend(company, now).amount
    lots = list(company_lots(company).filter(remaining__gt=0, expires_at__gt=now))
    lost = ZERO
    if daily <= 0:
        return CreditRunway(Money(ZERO, company.currency), None, Money(ZERO, company.currency))
    clock = now
    for lot in lots:
        if lot.expires_at <= clock:
            lost += lot.remaining.amount
            continue
        # Compared in days before any date is made: at a tiny spend, long-lived credit would
        # last past the last date Python can hold.
        spendable_days = Decimal((lot.expires_at - clock).total_seconds()) / 86400
        lasts_days = lot.remaining.amount / daily
        if lasts_days > spendable_days:
            lost += lot.remaining.amount - spendable_days * daily
            clock = lot.expires_at
        else:
            clock += timedelta(seconds=int(lasts_days * 86400))
    return CreditRunway(
        daily_spend=Money(daily, company.currency),
        runs_out_at=clock,
        expiring_unused=Money(lost, company.currency),
    )


# --- The portal's credits page ----------------------------------------------------------------

GRANT_KINDS = (
    LedgerTransaction.Kind.PURCHASE,
    LedgerTransaction.Kind.VOUCHER,
    LedgerTransaction.Kind.GRANT,
    LedgerTransaction.Kind.TRIAL,
)
# The history filter's groups. An adjustment can go either way, so only one that added money
# counts as credit added; debits by staff, reversals and payments show under "all" only.
HISTORY_GROUPS: dict[str, Q] = {
    "added": Q(kind__in=GRANT_KINDS) | Q(kind=LedgerTransaction.Kind.ADJUSTMENT, amount__gt=0),
    "charges": Q(kind__in=CHARGE_KINDS),
    "expired": Q(kind=LedgerTransaction.Kind.EXPIRY),
}


def company_history(company: Company, group: str | None = None) -> QuerySet[LedgerTransaction]:
    """``company_transactions`` narrowed to one of ``HISTORY_GROUPS`` (None: all of them).

    Raises ``KeyError`` for an unknown group: which groups exist is the caller's to check.
    """
    transactions = company_transactions(company)
    return transactions if group is None else transactions.filter(HISTORY_GROUPS[group])


@dataclass(frozen=True)
class LotLine:
    """One credit lot as the customer sees it: where its amount went so far."""

    lot: CreditLot
    status: str  # "active", "used_up" or "expired"
    used: Money
    expired: Money  # lost to expiry, also a remainder the expiry job has not posted yet
    remaining: Money  # still spendable


def company_lot_lines(company: Company, now: datetime) -> list[LotLine]:
    """Every lot of the company: spendable ones first, in the order charges spend them, then
    used-up and expired ones, latest expiry first. One query.

    A lot past its expiry still holds its remainder until the expiry job posts it, but that
    remainder can no longer be spent, so it is shown as expired already.
    """
    expired_posted = (
        LedgerPosting.objects.filter(
            lot=OuterRef("pk"),
            account__kind=LedgerAccount.Kind.CUSTOMER,
            transaction__kind=LedgerTransaction.Kind.EXPIRY,
        )
        .values("lot")
        .annotate(total=Sum("amount"))
        .values("total")
    )
    spendable = Q(remaining__gt=0, expires_at__gt=now)
    lots = (
        CreditLot.objects.filter(company=company)
        .select_related("grant_transaction")
        .annotate(
            expired_posted=Coalesce(
                Subquery(
                    expired_posted, output_field=DecimalField(max_digits=19, decimal_places=4)
                ),
                Value(ZERO),
            ),
            spend_rank=Case(When(spendable, then=Value(0)), default=Value(1)),
            spend_order=Case(When(spendable, then=F("expires_at"))),
        )
        .order_by("spend_rank", F("spend_order").asc(nulls_last=True), "-expires_at", "-id")
    )
    lines = []
    for lot in lots:
        currency = lot.amount.currency
        expired = -lot.expired_posted
        remaining = lot.remaining.amount
        if lot.expires_at <= now:
            status, expired, remaining = "expired", expired + remaining, ZERO
        else:
            status = "active" if remaining > 0 else "used_up"
        lines.append(
            LotLine(
                lot=lot,
                status=status,
                used=Money(lot.amount.amount - remaining - expired, currency),
                expired=Money(expired, currency),
                remaining=Money(remaining, currency),
            )
        )
    return lines
