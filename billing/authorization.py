"""Real-time spend authorisation: may the company start this usage now, and how much of it
can it afford? A read: nothing is locked or written.

The platform asks before every call or message, so an answer must cost little: everything
it needs (the API key, the company with its tariff, the subaccount, the credit in lots, the
balance, the live bundles of the service with their counters) is read in one SQL statement,
parameterised and portable between PostgreSQL and SQLite, and the values are converted as
the ORM converts them, so that the answer is the one the ORM reads would give. Being one
statement, it also reads one snapshot of the company. The rate comes from the tariff's
in-process index (``billing.services.rating``), as in rating.

On PostgreSQL most of the statement's time is planning (about 0.3 ms of 0.45): a prepared
statement would save it, at the price of per-connection state that transaction-pooling
proxies do not keep. Not done while the answer is well within its 10 ms.
"""

import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.db import connection
from django.db.models import DecimalField, Value
from django.db.models.expressions import Col

from accounts.models import Company

from .models import Bundle, BundleCounter, LedgerAccount, Tariff
from .models.plans import destinations_cover
from .periods import monthly_period
from .rating import affordable_quantity
from .services.rating import RatingError, normalise_destination, tariff_index

ZERO = Decimal(0)
# A monthly period is at most 31 days long (and a DST hour): counters that started earlier
# than this before ``now`` cannot be the current period's.
COUNTER_WINDOW = timedelta(days=40)


@dataclass(frozen=True)
class Authorization:
    allowed: bool
    max_quantity: Decimal | None  # None: unlimited
    reason: str | None = None


class ApiKeyRefused(Exception):
    """The API key presented with the request is unknown or revoked."""


def _refused(reason: str) -> Authorization:
    return Authorization(allowed=False, max_quantity=ZERO, reason=reason)


# --- The one read -----------------------------------------------------------------------------

# One row per live subscription's bundle of the service and counter of it started in the
# window (at least one row, with NULLs where there is nothing): the company's own columns
# repeat on each. The key, subaccount, lot sums and balance are scalar subqueries; the
# joins start from a one-row table so that an unknown account still answers for the key.
_READ = """
SELECT
    (SELECT k.id FROM billing_apikey k
      WHERE k.key_hash = %(key_hash)s AND k.revoked_at IS NULL),
    c.id, c.mode, c.status, c.blocked_reason, c.credit_limit, c.billing_timezone, c.currency,
    t.id, t.version, t.created_at, t.currency,
    (SELECT s.is_active FROM accounts_subaccount s
      WHERE s.company_id = c.id AND s.code = %(subaccount)s),
    (SELECT SUM(l.remaining) FROM billing_creditlot l
      WHERE l.company_id = c.id AND l.remaining > 0 AND l.expires_at > %(now)s),
    (SELECT SUM(l.remaining) FROM billing_creditlot l
      WHERE l.company_id = c.id AND l.remaining > 0 AND l.expires_at <= %(now)s),
    (SELECT a.balance FROM billing_ledgeraccount a
      WHERE a.company_id = c.id AND a.kind = %(customer)s),
    sub.id, sub.started_at, b.id, b.destinations, b.included_quantity, bc.period_start, bc.used
FROM (SELECT 1 AS one) AS one
LEFT JOIN accounts_company c ON c.account_code = %(account)s
LEFT JOIN billing_tariff t ON t.id = c.tariff_id
LEFT JOIN billing_subscription sub
    ON sub.company_id = c.id AND sub.started_at <= %(now)s
    AND (sub.ended_at IS NULL OR sub.ended_at > %(now)s)
LEFT JOIN billing_bundle b ON b.plan_id = sub.plan_id AND b.service = %(service)s
LEFT JOIN billing_bundlecounter bc
    ON bc.subscription_id = sub.id AND bc.bundle_id = b.id
    AND bc.period_start > %(since)s AND bc.period_start <= %(now)s
"""


class _Converters:
    """The ORM's conversions of the read's raw values, for one database: none on PostgreSQL,
    whose driver returns Decimals and aware datetimes; on SQLite, Decimals of 15 digits
    quantised to the column's places, and aware UTC datetimes parsed from text."""

    def __init__(self, db):
        def converter(expression):
            steps = db.ops.get_db_converters(expression)
            if not steps:
                return None

            def convert(value):
                for step in steps:
                    value = step(value, expression, db)
                return value

            return convert

        def column(model, name):
            return converter(Col(model._meta.db_table, model._meta.get_field(name)))

        self.credit_limit = column(Company, "credit_limit")
        self.balance = column(LedgerAccount, "balance")
        self.included = column(Bundle, "included_quantity")
        self.used = column(BundleCounter, "used")
        self.instant = column(Tariff, "created_at")  # the same for every datetime column
        # What an aggregate (SUM) of a decimal column gets.
        self.total = converter(Value(None, output_field=DecimalField()))


# By vendor: the conversions depend only on the database's kind and settings (SQLite's
# connection time zone is UTC with USE_TZ), not on the connection they were built with.
_converters: dict[str, _Converters] = {}
_converters_lock = threading.Lock()


def _converters_for(db) -> _Converters:
    found = _converters.get(db.vendor)
    if found is None:
        with _converters_lock:
            found = _converters.setdefault(db.vendor, _Converters(db))
    return found


def _as(convert, value):
    return value if convert is None or value is None else convert(value)


@dataclass(frozen=True, slots=True)
class _BundleRow:
    subscription_id: int
    started_at: datetime
    bundle_id: int
    destinations: str
    included: Decimal


@dataclass(frozen=True, slots=True)
class _Read:
    key_active: bool
    company_id: int | None
    mode: str = ""
    status: str = ""
    blocked_reason: str = ""
    credit_limit: Decimal | None = None
    timezone: str = ""
    currency: str = ""
    tariff: Tariff | None = None
    tariff_currency: str = ""
    seat_active: bool | None = None  # None: no such subaccount (or none asked for)
    unexpired_credit: Decimal = ZERO  # in lots unexpired at ``now``
    expired_credit: Decimal = ZERO  # in lots expired by ``now`` but not yet swept
    balance: Decimal | None = None  # the customer account's; None: no account yet
    bundles: tuple[_BundleRow, ...] = ()
    used: dict = field(default_factory=dict)  # (subscription, bundle, period start) -> units


def _read(
    *, api_key_hash: str | None, account: str, subaccount: str | None, service: str, now: datetime
) -> _Read:
    """Everything ``usage_authorize`` needs, in one statement."""
    ops = connection.ops
    with connection.cursor() as cursor:
        cursor.execute(
            _READ,
            {
                "key_hash": api_key_hash,
                "account": account,
                "subaccount": subaccount,
                "service": service,
                "customer": LedgerAccount.Kind.CUSTOMER.value,
                "now": ops.adapt_datetimefield_value(now),
                "since": ops.adapt_datetimefield_value(now - COUNTER_WINDOW),
            },
        )
        rows = cursor.fetchall()
    first = rows[0]
    key_active = first[0] is not None
    if first[1] is None:
        return _Read(key_active=key_active, company_id=None)
    convert = _converters_for(connection)
    (_, company_id, mode, status, blocked_reason, credit_limit, timezone, currency) = first[:8]
    tariff_id, tariff_version, tariff_created_at, tariff_currency = first[8:12]
    seat, unexpired, expired, balance = first[12:16]
    tariff = None
    if tariff_id is not None:
        # Only what the index cache keys on; the index loads the rates itself on a miss.
        tariff = Tariff.from_db(
            connection.alias,
            ["id", "version", "created_at"],
            (tariff_id, tariff_version, _as(convert.instant, tariff_created_at)),
        )
    bundles: dict[tuple[int, int], _BundleRow] = {}
    used = {}
    for *_, sub_id, started_at, bundle_id, destinations, included, period_start, units in rows:
        if bundle_id is None:  # no live subscription, or none with a bundle of the service
            continue
        if (sub_id, bundle_id) not in bundles:
            bundles[sub_id, bundle_id] = _BundleRow(
                sub_id,
                _as(convert.instant, started_at),
                bundle_id,
                destinations,
                _as(convert.included, included),
            )
        if period_start is not None:
            used[sub_id, bundle_id, _as(convert.instant, period_start)] = _as(convert.used, units)
    return _Read(
        key_active=key_active,
        company_id=company_id,
        mode=mode,
        status=status,
        blocked_reason=blocked_reason,
        credit_limit=_as(convert.credit_limit, credit_limit),
        timezone=timezone,
        currency=currency,
        tariff=tariff,
        tariff_currency=tariff_currency or "",
        seat_active=None if seat is None else bool(seat),
        unexpired_credit=_as(convert.total, unexpired) or ZERO,
        expired_credit=_as(convert.total, expired) or ZERO,
        balance=_as(convert.balance, balance),
        bundles=tuple(bundles.values()),
        used=used,
    )


# --- The answer -------------------------------------------------------------------------------


def _available(read: _Read) -> Decimal | None:
    """What the company can still spend; None means unlimited. The rule of
    ``billing.selectors.company_available``, on the values of the read.

    Prepaid: the credit left in lots unexpired at ``now``. Postpaid: the balance (less credit
    in lots already expired) plus the credit limit; unlimited without a limit.
    """
    if read.mode == Company.Mode.PREPAID:
        return read.unexpired_credit
    if read.credit_limit is None:
        return None
    balance = read.balance if read.balance is not None else ZERO
    return balance - read.expired_credit + read.credit_limit


def bundle_left(read: _Read, destination: str, at: datetime) -> Decimal:
    """Units to ``destination`` left at ``at`` in the bundles (of the read's service) of the
    company's live subscriptions: each bundle's included quantity less what its counter for
    the subscription's period containing ``at`` has used."""
    tz = ZoneInfo(read.timezone)
    starts: dict[int, datetime] = {}
    left = ZERO
    for row in read.bundles:
        if not destinations_cover(row.destinations, destination):
            continue
        start = starts.get(row.subscription_id)
        if start is None:
            start = starts[row.subscription_id] = monthly_period(row.started_at, at, tz)[0]
        used = read.used.get((row.subscription_id, row.bundle_id, start), ZERO)
        left += max(row.included - used, ZERO)
    return left


def usage_authorize(
    *,
    account: str,
    subaccount: str | None,
    service: str,
    destination: str | None,
    now: datetime,
    api_key_hash: str | None = None,
) -> Authorization:
    """May ``account`` start usage of ``service`` to ``destination`` at ``now``, and how
    much of it can it afford (money at the tariff plus what its bundles still hold)?

    One SQL statement, nothing locked or written. With ``api_key_hash`` the key is checked
    in the same statement: raises ``ApiKeyRefused`` if it is unknown or revoked (a revoked
    key is refused from the next request on).
    """
    read = _read(
        api_key_hash=api_key_hash,
        account=account,
        subaccount=subaccount or None,
        service=service,
        now=now,
    )
    if api_key_hash is not None and not read.key_active:
        raise ApiKeyRefused
    if read.company_id is None:
        return _refused(f"No account “{account}”.")
    if subaccount:
        if read.seat_active is None:
            return _refused(f"No subaccount “{subaccount}” in {account}.")
        if not read.seat_active:
            return _refused(f"The subaccount “{subaccount}” is deactivated.")
    if read.status == Company.Status.BLOCKED:
        return _refused(f"Blocked: {read.blocked_reason}.")
    if read.tariff is None:
        return _refused(f"{account} has no tariff to rate usage with.")
    if read.tariff_currency != read.currency:  # as usage refuses it (``usage._precheck``)
        return _refused(f"The tariff of {account} is not in its currency.")
    try:
        digits = normalise_destination(service, destination)
        rate, _ = tariff_index(read.tariff).find(service, digits, now)
    except RatingError as error:
        return _refused(str(error))
    available = _available(read)
    if available is None:
        return Authorization(allowed=True, max_quantity=None)
    quantity = affordable_quantity(
        service=service,
        budget=available,
        unit_price=rate.price,
        bundle_left=bundle_left(read, digits, now),
        connection_fee=rate.connection_fee,
        minimum=rate.minimum_seconds,
        first=rate.first_increment,
        increment=rate.next_increment,
        currency=read.currency,
    )
    if quantity is None:
        return Authorization(allowed=True, max_quantity=None)
    if quantity <= 0:
        return _refused("Not enough credit for the smallest billable unit.")
    return Authorization(allowed=True, max_quantity=quantity)
