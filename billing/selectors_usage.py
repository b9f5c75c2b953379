"""Reads of usage records for the portal's Usage page: a month's totals and its detail records.

Every read is bounded by one calendar month in the company's billing time zone and by the
company itself (the ``usage_company_time`` index on ``(company, occurred_at)``), and costs a
fixed number of queries whatever the number of records: the totals are one
``values().annotate()`` grouped by subaccount and service (the per-service totals are summed
from it in Python), refused events one more, and the detail records a count and a page.

Only charged records carry usage and cost; rejected ones are counted apart, by reason, so a
customer can see that usage was refused and why.

The ``format_*`` and ``mask_*`` helpers turn stored quantities (seconds, messages, bytes...)
and destinations into what a person reads; they are pure and do no queries.
"""

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.db.models import Count, QuerySet, Sum
from django.utils.formats import number_format
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext
from djmoney.money import Money, get_current_locale
from moneyed.l10n import format_money

from accounts.models import Company, Subaccount

from .models import UsageRecord
from .periods import add_months, calendar_month
from .rating import NUMBER_SERVICES, SERVICES

ZERO = Decimal(0)

SERVICE_LABELS = {
    "voice": gettext_lazy("Voice"),
    "sms": gettext_lazy("SMS"),
    "fax": gettext_lazy("Fax"),
    "api": gettext_lazy("API calls"),
    "data": gettext_lazy("Mobile data"),
    "disk": gettext_lazy("Disk storage"),
}
# Why an event was refused, for people; an unknown code is shown as it is.
REJECTION_LABELS = {
    "account_blocked": gettext_lazy("account blocked"),
    "no_rate": gettext_lazy("no rate for the destination"),
    "invalid_destination": gettext_lazy("invalid destination"),
    "unknown_service": gettext_lazy("unknown service"),
    "unknown_subaccount": gettext_lazy("unknown subaccount"),
    "subaccount_inactive": gettext_lazy("subaccount deactivated"),
    "no_tariff": gettext_lazy("no tariff"),
    "negative_quantity": gettext_lazy("negative quantity"),
    "fractional_quantity": gettext_lazy("part of a whole unit"),
    "occurred_in_future": gettext_lazy("time in the future"),
}
# Years a month parameter may name: calendar_month needs the month after it to exist.
MIN_YEAR, MAX_YEAR = 2000, 9998
MONTH_PARAM = re.compile(r"([0-9]{4})-([0-9]{2})")  # ASCII digits: ``\d`` takes any script's


# --- The month ------------------------------------------------------------------------------


@dataclass(frozen=True)
class UsageMonth:
    """A calendar month in a billing time zone: ``[start, end)``, and its neighbours as
    ``YYYY-MM`` (``next`` is None from the current month on: the future has no usage)."""

    year: int
    month: int
    start: datetime
    end: datetime
    is_current: bool
    previous: str | None
    next: str | None

    @property
    def param(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


def _month_param(year: int, month: int) -> str | None:
    return f"{year:04d}-{month:02d}" if MIN_YEAR <= year <= MAX_YEAR else None


def usage_month(param: str | None, tz: ZoneInfo, now: datetime) -> UsageMonth:
    """The month named by ``param`` (``YYYY-MM``) in ``tz``; the month of ``now`` in ``tz``
    when ``param`` is missing or is not a month (a bad link shows this month, not an error)."""
    local_now = now.astimezone(tz)
    current = (local_now.year, local_now.month)
    year, month = current
    match = MONTH_PARAM.fullmatch((param or "").strip())
    if match:
        asked = int(match[1]), int(match[2])
        if MIN_YEAR <= asked[0] <= MAX_YEAR and 1 <= asked[1] <= 12:
            year, month = asked
    start, end = calendar_month(year, month, tz)
    return UsageMonth(
        year=year,
        month=month,
        start=start,
        end=end,
        is_current=(year, month) == current,
        previous=_month_param(*add_months(year, month, -1)),
        next=_month_param(*add_months(year, month, 1)) if (year, month) < current else None,
    )


# --- Totals -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceUsage:
    """A month's charged usage of one service (of the company or of one subaccount)."""

    service: str
    events: int
    quantity: Decimal  # as reported: seconds, messages, pages, calls or bytes
    billed_quantity: Decimal  # after billing increments (voice); else the quantity
    bundle_quantity: Decimal  # of the billed quantity, what bundles covered
    amount: Money
    shortfall: Money  # charged but not covered: prepaid credit ran out

    @property
    def label(self) -> str:
        return service_label(self.service)

    @property
    def billed_display(self) -> str:
        return format_quantity(self.service, self.billed_quantity)

    @property
    def quantity_display(self) -> str:
        return format_quantity(self.service, self.quantity)

    @property
    def bundle_display(self) -> str:
        return format_quantity(self.service, self.bundle_quantity)

    @property
    def rounded_up(self) -> bool:
        """Billing increments added time to the calls: worth showing the talk time too."""
        return self.billed_quantity != self.quantity


@dataclass(frozen=True)
class SubaccountUsage:
    subaccount_id: int | None  # None: usage reported without a subaccount
    code: str
    name: str
    services: list[ServiceUsage]

    @property
    def events(self) -> int:
        return sum(line.events for line in self.services)

    @property
    def amount(self) -> Money:
        currency = self.services[0].amount.currency
        return Money(sum((line.amount.amount for line in self.services), ZERO), currency)


@dataclass(frozen=True)
class RejectedUsage:
    code: str
    events: int

    @property
    def label(self) -> str:
        return str(REJECTION_LABELS.get(self.code, self.code))


@dataclass(frozen=True)
class UsageSummary:
    services: list[ServiceUsage]  # in the order of ``billing.rating.SERVICES``
    subaccounts: list[SubaccountUsage]  # by code, usage without a subaccount last
    rejected: list[RejectedUsage]  # most events first
    currency: str

    @property
    def events(self) -> int:
        return sum(line.events for line in self.services)

    @property
    def amount(self) -> Money:
        return Money(sum((line.amount.amount for line in self.services), ZERO), self.currency)

    @property
    def shortfall(self) -> Money:
        return Money(sum((line.shortfall.amount for line in self.services), ZERO), self.currency)

    @property
    def rejected_events(self) -> int:
        return sum(line.events for line in self.rejected)


def _month_records(company: Company, start: datetime, end: datetime) -> QuerySet[UsageRecord]:
    # company first, then the time range: the shape of the (company, occurred_at) index.
    return UsageRecord.objects.filter(company=company, occurred_at__gte=start, occurred_at__lt=end)


def _service_order(service: str) -> tuple[int, str]:
    return (SERVICES.index(service) if service in SERVICES else len(SERVICES), service)


def usage_summary(company: Company, start: datetime, end: datetime) -> UsageSummary:
    """Charged usage and cost in ``[start, end)`` by service and by subaccount × service, and
    refused events by reason. Two queries."""
    currency = company.currency
    rows = (
        _month_records(company, start, end)
        .filter(status=UsageRecord.Status.CHARGED)
        .values("subaccount_id", "subaccount__code", "subaccount__name", "service")
        .annotate(
            events=Count("id"),
            quantity=Sum("quantity"),
            billed=Sum("billed_quantity"),
            bundle=Sum("bundle_quantity"),
            charged=Sum("amount"),
            uncovered=Sum("shortfall"),
        )
        .order_by()
    )

    def line(service: str, rows: list[dict]) -> ServiceUsage:
        def total(key: str) -> Decimal:
            return sum((row[key] or ZERO for row in rows), ZERO)

        return ServiceUsage(
            service=service,
            events=sum(row["events"] for row in rows),
            quantity=total("quantity"),
            billed_quantity=total("billed"),
            bundle_quantity=total("bundle"),
            amount=Money(total("charged"), currency),
            shortfall=Money(total("uncovered"), currency),
        )

    by_service: dict[str, list[dict]] = {}
    by_subaccount: dict[int | None, list[dict]] = {}
    for row in rows:
        by_service.setdefault(row["service"], []).append(row)
        by_subaccount.setdefault(row["subaccount_id"], []).append(row)

    subaccounts = []
    for subaccount_id, sub_rows in by_subaccount.items():
        first = sub_rows[0]
        subaccounts.append(
            SubaccountUsage(
                subaccount_id=subaccount_id,
                code=first["subaccount__code"] or "",
                name=first["subaccount__name"] or "",
                services=[
                    line(row["service"], [row])
                    for row in sorted(sub_rows, key=lambda row: _service_order(row["service"]))
                ],
            )
        )
    subaccounts.sort(key=lambda usage: (usage.subaccount_id is None, usage.code))

    rejected = [
        RejectedUsage(code=row["error_code"], events=row["events"])
        for row in _month_records(company, start, end)
        .filter(status=UsageRecord.Status.REJECTED)
        .values("error_code")
        .annotate(events=Count("id"))
        .order_by("-events", "error_code")
    ]
    return UsageSummary(
        services=[
            line(service, by_service[service]) for service in sorted(by_service, key=_service_order)
        ],
        subaccounts=subaccounts,
        rejected=rejected,
        currency=currency,
    )


# --- Detail records ---------------------------------------------------------------------------

NO_SUBACCOUNT = "none"  # the subaccount filter's value for usage reported without one


@dataclass(frozen=True)
class UsageFilters:
    """The detail list's filters, checked: a value that names nothing is dropped."""

    service: str = ""
    subaccount: str = ""  # a subaccount id, NO_SUBACCOUNT, or "" for all

    @property
    def active(self) -> bool:
        return bool(self.service or self.subaccount)


def usage_filters(
    service: str | None, subaccount: str | None, subaccounts: list[Subaccount]
) -> UsageFilters:
    """``service`` must be a service and ``subaccount`` one of ``subaccounts`` (the company's)
    or ``NO_SUBACCOUNT``; anything else means "all"."""
    service = (service or "").strip()
    subaccount = (subaccount or "").strip()
    if subaccount != NO_SUBACCOUNT and subaccount not in {str(s.pk) for s in subaccounts}:
        subaccount = ""
    return UsageFilters(service=service if service in SERVICES else "", subaccount=subaccount)


def usage_records(
    company: Company, start: datetime, end: datetime, filters: UsageFilters = UsageFilters()
) -> QuerySet[UsageRecord]:
    """The company's charged records in ``[start, end)``, newest first, with their subaccount
    (one query a page, plus the paginator's count)."""
    records = (
        _month_records(company, start, end)
        .filter(status=UsageRecord.Status.CHARGED)
        .select_related("subaccount")
        .order_by("-occurred_at", "-id")
    )
    if filters.service:
        records = records.filter(service=filters.service)
    if filters.subaccount == NO_SUBACCOUNT:
        records = records.filter(subaccount__isnull=True)
    elif filters.subaccount:
        records = records.filter(subaccount_id=int(filters.subaccount))
    return records


@dataclass(frozen=True)
class UsageLine:
    """One detail record as the customer reads it: what was reported, what was billed after
    increments, what a bundle covered, and the rate that priced the rest."""

    record: UsageRecord
    service_label: str
    destination: str
    quantity: str
    billed: str
    bundle: str  # "" when no bundle covered any of it
    rate: str  # "¥16/min"
    increments: str  # voice: "30/6", else ""
    increments_help: str  # "First 30 s, then every 6 s"
    connection_fee: str  # "+¥10 per call", or "" without one


def usage_lines(records, currency: str) -> list[UsageLine]:
    """``records`` (a page of ``usage_records``) made readable; no queries."""
    lines = []
    for record in records:
        service = record.service
        first, _sep, following = record.increments.partition("/")
        lines.append(
            UsageLine(
                record=record,
                service_label=service_label(service),
                destination=mask_destination(service, record.destination),
                quantity=format_quantity(service, record.quantity),
                billed=format_quantity(service, record.billed_quantity),
                bundle=format_quantity(service, record.bundle_quantity)
                if record.bundle_quantity
                else "",
                rate=format_unit_price(service, record.unit_price, currency)
                if record.unit_price is not None
                else "",
                increments=record.increments,
                increments_help=_("Billed for the first %(first)s s, then every %(next)s s")
                % {"first": first, "next": following}
                if following
                else "",
                connection_fee=_("+%(fee)s per call")
                % {"fee": format_price(record.connection_fee, currency)}
                if record.connection_fee
                else "",
            )
        )
    return lines


# --- Display helpers --------------------------------------------------------------------------


def service_label(service: str) -> str:
    return str(SERVICE_LABELS.get(service, service))


def _number(value: Decimal, decimals: int | None = None) -> str:
    """``value`` with the language's grouping and decimal mark; without ``decimals``, as many
    as it has (none for a whole number)."""
    if decimals is None:
        value = value.normalize()
        decimals = max(0, -value.as_tuple().exponent)
    return number_format(value, decimal_pos=decimals, use_l10n=True, force_grouping=True)


def format_duration(seconds: Decimal) -> str:
    """``"12 h 03 min"``, ``"1 min 05 s"``, ``"45 s"``: hours and minutes, seconds when any."""
    seconds = Decimal(seconds)
    whole_minutes = int(seconds // 60)
    hours, minutes = divmod(whole_minutes, 60)
    rest = seconds - whole_minutes * 60
    secs = _number(rest)
    if rest < 10:
        secs = "0" + secs  # "1 min 05 s", as a clock reads
    values = {"hours": _number(Decimal(hours), 0), "minutes": f"{minutes:02d}", "seconds": secs}
    if hours:
        if rest:
            return _("%(hours)s h %(minutes)s min %(seconds)s s") % values
        return _("%(hours)s h %(minutes)s min") % values
    values["minutes"] = str(minutes)
    if minutes:
        if rest:
            return _("%(minutes)s min %(seconds)s s") % values
        return _("%(minutes)s min") % values
    return _("%(seconds)s s") % {"seconds": _number(rest)}


BYTE_UNITS = [
    (Decimal(10) ** 12, gettext_lazy("%(value)s TB")),
    (Decimal(10) ** 9, gettext_lazy("%(value)s GB")),
    (Decimal(10) ** 6, gettext_lazy("%(value)s MB")),
    (Decimal(10) ** 3, gettext_lazy("%(value)s kB")),
]


def format_bytes(quantity: Decimal) -> str:
    """Decimal units, as data is priced (1 MB = 10^6 bytes): ``"1.25 GB"``, ``"340.00 MB"``."""
    for size, pattern in BYTE_UNITS:
        if quantity >= size:
            return str(pattern) % {"value": _number(quantity / size, 2)}
    return _("%(value)s B") % {"value": _number(Decimal(quantity))}


def format_gigabytes(quantity: Decimal) -> str:
    """Disk is priced per GB: always in GB, and never a misleading "0.00 GB" for some bytes."""
    gigabytes = Decimal(quantity) / Decimal(10) ** 9
    if 0 < gigabytes < Decimal("0.01"):
        return _("< %(value)s GB") % {"value": _number(Decimal("0.01"), 2)}
    return _("%(value)s GB") % {"value": _number(gigabytes, 2)}


def _form(quantity: Decimal) -> int:
    # ngettext picks the form by an integer; a fractional count takes the plural.
    return int(quantity) if quantity == quantity.to_integral_value() else 2


def format_quantity(service: str, quantity: Decimal | None) -> str:
    """A quantity of ``service`` in the units a person reads (see ``billing.rating``)."""
    if quantity is None:
        return ""
    quantity = Decimal(quantity)
    if service == "voice":
        return format_duration(quantity)
    # Each ngettext is called with its literal strings, so that makemessages finds them.
    count = {"count": _number(quantity)}
    if service == "sms":
        return ngettext("%(count)s message", "%(count)s messages", _form(quantity)) % count
    if service == "fax":
        return ngettext("%(count)s page", "%(count)s pages", _form(quantity)) % count
    if service == "api":
        return ngettext("%(count)s call", "%(count)s calls", _form(quantity)) % count
    if service == "data":
        return format_bytes(quantity)
    if service == "disk":
        return format_gigabytes(quantity)
    return _number(quantity)


def format_price(price: Decimal, currency: str) -> str:
    """A rate keeps its own decimals (¥0.5, $0.0125); an amount would round them away."""
    return format_money(
        Money(Decimal(price).normalize(), currency),
        locale=get_current_locale(),
        decimal_quantization=False,
    )


UNIT_PRICES = {
    "voice": gettext_lazy("%(price)s/min"),
    "sms": gettext_lazy("%(price)s/message"),
    "fax": gettext_lazy("%(price)s/page"),
    "api": gettext_lazy("%(price)s/call"),
    "data": gettext_lazy("%(price)s/MB"),
    "disk": gettext_lazy("%(price)s/GB"),
}


def format_unit_price(service: str, price: Decimal, currency: str) -> str:
    pattern = UNIT_PRICES.get(service, "%(price)s")
    return str(pattern) % {"price": format_price(price, currency)}


# E.164 country calling codes are prefix-free: 1 and 7 have one digit, these have two, every
# other code has three. Enough to keep the country visible and mask the subscriber's digits.
# fmt: off
TWO_DIGIT_CALLING_CODES = frozenset({
    "20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45", "46",
    "47", "48", "49", "51", "52", "53", "54", "55", "56", "57", "58", "60", "61", "62", "63",
    "64", "65", "66", "81", "82", "84", "86", "90", "91", "92", "93", "94", "95", "98",
})
# fmt: on
SHORT_NUMBER = 7  # up to this many digits: a short code, not a person's number


def mask_number(number: str) -> str:
    """``+81 90 xxxx 5678`` for ``+819012345678``: the country, the first digits of the
    national number (the area or mobile prefix, which the rate depends on) and the last four
    stay; the digits in between are masked so a list of calls names nobody."""
    digits = re.sub(r"[^\d]", "", number)
    if len(digits) <= SHORT_NUMBER:
        return number.strip()
    if digits[0] in "17":
        code_length = 1
    elif digits[:2] in TWO_DIGIT_CALLING_CODES:
        code_length = 2
    else:
        code_length = 3
    code, national = digits[:code_length], digits[code_length:]
    lead = 3 if code == "1" else 2  # a North American area code has three digits
    lead = max(0, min(lead, len(national) - 6))  # always mask at least two digits
    hidden = len(national) - lead - 4
    parts = ["+" + code, national[:lead], "x" * hidden, national[-4:]]
    return " ".join(part for part in parts if part)


def mask_destination(service: str, destination: str) -> str:
    if service in NUMBER_SERVICES and destination:
        return mask_number(destination)
    return destination
