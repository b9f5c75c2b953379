"""Tariff rates in and out as CSV, and the edits that must be seen by rating.

The CSV format (the same for ``manage.py import_tariff`` / ``export_tariff`` and the
admin's import and export), UTF-8 (a byte-order mark is ignored), comma-separated, one
rate a line after this exact header::

    service,destination,price,connection_fee,minimum_seconds,first_increment,next_increment,effective_from,effective_until
    voice,8190,30,5,0,30,6,2026-01-01T00:00:00+00:00,
    voice,,20,0,0,60,60,2026-01-01T00:00:00+00:00,2027-01-01T00:00:00+00:00
    data,JP,0.5,0,0,1,1,2026-01-01T00:00:00+09:00,

=================  =============================================================================
service            one of ``voice sms fax api data disk``
destination        voice, sms, fax: the number prefix, 1 to 15 digits (a leading ``+`` is
                   dropped); data: an ISO 3166 alpha-2 country in upper case (``JP``); api and
                   disk: empty. Empty is the service's default rate.
price              per unit of the service (``billing.rating``: per minute, message, page,
                   call, MB, GB) in the tariff's currency; a plain decimal >= 0 with at most 6
                   decimals and 13 digits before the point
connection_fee     voice: added once per call priced at the tariff; same form as the price;
                   empty means 0
minimum_seconds    whole seconds >= 0 a call is billed at least; empty means 0
first_increment    whole seconds >= 1 (voice: 60/60 bills per started minute, 1/1 per
next_increment     second); empty means 1
effective_from     ISO 8601 instant with a UTC offset (``2026-04-01T00:00:00+09:00``, ``Z``
                   allowed): the rate is in force from this instant ...
effective_until    ... until this one (excluded), later than ``effective_from``; empty: open
=================  =============================================================================

Blank lines are skipped; spaces around a field are ignored. A (service, destination,
effective_from) appears at most once. The export writes UTC instants and prices without
trailing zeros, sorted by service, destination and start, so that an exported file
imports to the same rates and exports to the same bytes.
"""

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import IO

from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone
from django.utils.translation import gettext

from ..exceptions import TariffImportError
from ..models import Rate, Tariff
from ..models.tariffs import RATE_DECIMAL_PLACES
from ..periods import utc_within_years
from ..rating import COUNTRY_SERVICES, NUMBER_SERVICES, SERVICES
from .rating import COUNTRIES

HEADER = (
    "service",
    "destination",
    "price",
    "connection_fee",
    "minimum_seconds",
    "first_increment",
    "next_increment",
    "effective_from",
    "effective_until",
)
# Rate.price and connection_fee are DECIMAL(19, 6): 13 digits before the point.
PRICE_INTEGER_DIGITS = 19 - RATE_DECIMAL_PLACES
# PositiveIntegerField is a 32-bit integer on PostgreSQL; a larger value would fail the
# insert after validation said yes.
INTEGER_MAX = 2_147_483_647
MAX_NUMBER_DIGITS = 15  # E.164
# Rows per INSERT: 2,000 × 10 columns stays far below PostgreSQL's 65,535 parameters, and
# Django splits further where SQLite needs it.
BULK_BATCH_SIZE = 2000

# ASCII digits only (``\d`` takes any script's, which ``Decimal`` would read too).
_DECIMAL = re.compile(r"(?P<sign>[+-]?)(?P<integer>[0-9]+)(?:\.(?P<fraction>[0-9]*))?")


@dataclass(frozen=True)
class TariffImportResult:
    imported: int  # rates the tariff has now
    replaced: int  # rates it had before
    in_force: int  # of the imported, those in force at ``now``
    version: int  # the tariff's version after the import


# --- Field rules (shared with the rate form of the admin) -----------------------------------


def destination_clean(service: str, value: str) -> str:
    """``value`` as rates store it for ``service``; raises ``ValueError`` saying why not."""
    value = value.strip()
    if service in NUMBER_SERVICES:
        digits = value.removeprefix("+")
        if value == "":
            return ""
        if not (digits.isascii() and digits.isdigit() and len(digits) <= MAX_NUMBER_DIGITS):
            raise ValueError(
                gettext(
                    "%(service)s destination “%(value)s” must be a number prefix of 1 to "
                    "%(max)d digits (a leading + is allowed), or empty for the default rate."
                )
                % {"service": service, "value": value, "max": MAX_NUMBER_DIGITS}
            )
        return digits
    if service in COUNTRY_SERVICES:
        if value == "" or value in COUNTRIES:
            return value
        if value.upper() in COUNTRIES:
            raise ValueError(
                gettext("country “%(value)s” must be in upper case: %(upper)s.")
                % {"value": value, "upper": value.upper()}
            )
        raise ValueError(
            gettext(
                "%(service)s destination “%(value)s” is not an ISO 3166 alpha-2 country "
                "(such as JP), nor empty for the default rate."
            )
            % {"service": service, "value": value}
        )
    if value:
        # Rating ignores destinations of these services: such a rate would never be used.
        raise ValueError(
            gettext("%(service)s rates have no destination; leave it empty.") % {"service": service}
        )
    return ""


def _decimal(name: str, value: str, *, required: bool) -> Decimal:
    if value == "":
        if required:
            raise ValueError(gettext("%(name)s is missing.") % {"name": name})
        return Decimal(0)
    match = _DECIMAL.fullmatch(value)
    if match is None or (match["fraction"] == "" and "." in value):
        raise ValueError(
            gettext("%(name)s “%(value)s” is not a decimal number such as 12.5.")
            % {"name": name, "value": value}
        )
    if match["sign"] == "-" and Decimal(value) != 0:
        raise ValueError(
            gettext("%(name)s “%(value)s” is negative.") % {"name": name, "value": value}
        )
    if len(match["fraction"] or "") > RATE_DECIMAL_PLACES:
        raise ValueError(
            gettext("%(name)s “%(value)s” has more than %(places)d decimals.")
            % {"name": name, "value": value, "places": RATE_DECIMAL_PLACES}
        )
    if len(match["integer"].lstrip("0")) > PRICE_INTEGER_DIGITS:
        raise ValueError(
            gettext("%(name)s “%(value)s” is too large.") % {"name": name, "value": value}
        )
    return abs(Decimal(value))  # -0 is 0


def _integer(name: str, value: str, *, minimum: int, default: int) -> int:
    if value == "":
        return default
    if not (value.isascii() and value.isdigit()) or not minimum <= int(value) <= INTEGER_MAX:
        raise ValueError(
            gettext("%(name)s “%(value)s” must be a whole number from %(min)d to %(max)d.")
            % {"name": name, "value": value, "min": minimum, "max": INTEGER_MAX}
        )
    return int(value)


def _instant(name: str, value: str, *, required: bool) -> datetime | None:
    if value == "":
        if required:
            raise ValueError(gettext("%(name)s is missing.") % {"name": name})
        return None
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        instant = None
    # As the API: only instants from 1970 to 2999 (the calendar's ends, 0001 and 9999, may
    # not even convert to UTC).
    utc = utc_within_years(instant) if instant and instant.tzinfo else None
    if utc is None:
        raise ValueError(
            gettext(
                "%(name)s “%(value)s” is not an ISO 8601 instant with a UTC offset between "
                "1970 and 2999, such as 2026-04-01T00:00:00+09:00."
            )
            % {"name": name, "value": value}
        )
    return utc


# --- Reading a file -------------------------------------------------------------------------


def _text_of(file: IO | None, text: str | None) -> str:
    if (file is None) == (text is None):
        raise TypeError("Give the file or the text of the tariff, not both.")
    if text is None:
        data = file.read()
        if isinstance(data, bytes):
            try:
                text = data.decode("utf-8-sig")
            except UnicodeDecodeError as error:
                line = data.count(b"\n", 0, error.start) + 1
                raise TariffImportError(
                    [(line, gettext("the file is not UTF-8 text (save it as CSV UTF-8)."))]
                ) from None
        else:
            text = data
    return text.removeprefix("\ufeff")


def _parse(text: str) -> list[dict]:
    """The rates of a tariff file, as keyword arguments of ``Rate``; raises
    ``TariffImportError`` listing every bad line (nothing of a bad file is returned)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    errors: list[tuple[int, str]] = []
    rates: list[dict] = []
    first_seen: dict[tuple[str, str, datetime], int] = {}
    try:
        header = next(reader, None)
        if header is None or [cell.strip() for cell in header] != list(HEADER):
            wanted = gettext("the first line must be exactly: %(header)s")
            raise TariffImportError([(1, wanted % {"header": ",".join(HEADER)})])
        for fields in reader:
            line = reader.line_num
            if not fields or all(not field.strip() for field in fields):
                continue
            rate, reasons = _parse_row([field.strip() for field in fields])
            key = tuple(rate.get(name) for name in ("service", "destination", "effective_from"))
            if None not in key:
                if key in first_seen:
                    reasons.append(
                        gettext(
                            "the same service, destination and effective_from as line %(line)d."
                        )
                        % {"line": first_seen[key]}
                    )
                else:
                    first_seen[key] = line
            if reasons:
                errors.append((line, " ".join(reasons)))
            else:
                rates.append(rate)
    except csv.Error as error:
        # A broken quote makes the rest of the file unreadable: report it where it is.
        errors.append((reader.line_num, gettext("not valid CSV: %(error)s") % {"error": error}))
    if errors:
        raise TariffImportError(errors)
    if not rates:
        raise TariffImportError(
            [(1, gettext("the file has no rates; a tariff is not emptied by import."))]
        )
    return rates


def _parse_row(fields: list[str]) -> tuple[dict, list[str]]:
    """The values of one line (those that could be read) and the reasons it is bad."""
    if len(fields) != len(HEADER):
        return {}, [
            gettext("expected %(expected)d fields, found %(found)d.")
            % {"expected": len(HEADER), "found": len(fields)}
        ]
    row = dict(zip(HEADER, fields, strict=True))
    reasons: list[str] = []
    values: dict = {}

    def take(name, parse, *args, **kwargs):
        try:
            values[name] = parse(*args, **kwargs)
        except ValueError as error:
            reasons.append(str(error))

    service = row["service"]
    if service in SERVICES:
        values["service"] = service
        take("destination", destination_clean, service, row["destination"])
    else:
        reasons.append(
            gettext("unknown service “%(service)s”: use one of %(services)s.")
            % {"service": service, "services": ", ".join(SERVICES)}
        )
    take("price", _decimal, "price", row["price"], required=True)
    take("connection_fee", _decimal, "connection_fee", row["connection_fee"], required=False)
    take(
        "minimum_seconds",
        _integer,
        "minimum_seconds",
        row["minimum_seconds"],
        minimum=0,
        default=0,
    )
    for name in ("first_increment", "next_increment"):
        take(name, _integer, name, row[name], minimum=1, default=1)
    take("effective_from", _instant, "effective_from", row["effective_from"], required=True)
    take("effective_until", _instant, "effective_until", row["effective_until"], required=False)
    start, end = values.get("effective_from"), values.get("effective_until")
    if start is not None and end is not None and end <= start:
        reasons.append(gettext("effective_until must be later than effective_from."))
    return values, reasons


# --- Services -------------------------------------------------------------------------------


def _version_bump(tariff_ids: Iterable[int]) -> None:
    # F(): two edits at once both count, and rating rebuilds its index after either.
    Tariff.objects.filter(pk__in=set(tariff_ids)).update(version=F("version") + 1)


def tariff_create(*, name: str, currency: str, description: str = "") -> Tariff:
    """A new, empty tariff (version 1); its rates come by ``tariff_import``. Raises
    ``IntegrityError`` if the name is taken."""
    return Tariff.objects.create(name=name, currency=currency, description=description)


def tariff_import(
    *,
    tariff: Tariff,
    file: IO | None = None,
    text: str | None = None,
    now: datetime | None = None,
) -> TariffImportResult:
    """Replace every rate of ``tariff`` with the rates of a CSV file (the format above).

    Every line is checked before anything is written: if any is bad, ``TariffImportError``
    lists each bad line with its reason and the tariff is unchanged. A good file replaces
    the rates in one transaction (delete, then inserts in batches) under the tariff's row
    lock, so two imports of one tariff run one after the other, and bumps the tariff's
    version so that rating rebuilds its index at its next event. Pass ``file`` (bytes or
    text, e.g. an upload) or ``text``.
    """
    now = now or timezone.now()
    # Checked outside the transaction: reading a big file holds no connection or lock.
    rates = _parse(_text_of(file, text))
    with transaction.atomic():
        locked = Tariff.objects.select_for_update().get(pk=tariff.pk)
        replaced = Rate.objects.filter(tariff=locked).delete()[0]
        Rate.objects.bulk_create(
            (Rate(tariff_id=locked.pk, **values) for values in rates), batch_size=BULK_BATCH_SIZE
        )
        _version_bump([locked.pk])
        tariff.refresh_from_db(fields=["version"])
    in_force = sum(
        1
        for rate in rates
        if rate["effective_from"] <= now
        and (rate["effective_until"] is None or now < rate["effective_until"])
    )
    return TariffImportResult(
        imported=len(rates), replaced=replaced, in_force=in_force, version=tariff.version
    )


def _decimal_text(value: Decimal) -> str:
    # normalize() drops the column's trailing zeros; "f" keeps 1E+2 as 100.
    return format(value.normalize(), "f")


def _instant_text(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).isoformat()


def tariff_export(*, tariff: Tariff) -> str:
    """The rates of ``tariff`` in the CSV format above (which ``tariff_import`` reads back
    to the same rates). Reads only; the rates are streamed from the database in chunks."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    rates = (
        Rate.objects.filter(tariff=tariff)
        .order_by("service", "destination", "effective_from", "id")
        .values_list(*HEADER)
    )
    for (
        service,
        destination,
        price,
        connection_fee,
        minimum_seconds,
        first_increment,
        next_increment,
        effective_from,
        effective_until,
    ) in rates.iterator(chunk_size=5000):
        writer.writerow(
            [
                service,
                destination,
                _decimal_text(price),
                _decimal_text(connection_fee),
                minimum_seconds,
                first_increment,
                next_increment,
                _instant_text(effective_from),
                _instant_text(effective_until),
            ]
        )
    return out.getvalue()


@transaction.atomic
def rate_save(*, rate: Rate) -> Rate:
    """Save one rate (new or edited) and bump its tariff's version, and the version of the
    tariff it was moved from if it was, so rating sees the change at its next event. The
    database constraints (one start per service and destination, increments >= 1,
    until > from) still apply; the admin form checks them first."""
    previous = None
    if rate.pk is not None:
        previous = Rate.objects.filter(pk=rate.pk).values_list("tariff_id", flat=True).first()
    rate.save()
    _version_bump({rate.tariff_id, previous} - {None})
    return rate


@transaction.atomic
def rates_delete(*, rates: QuerySet[Rate]) -> int:
    """Delete ``rates`` and bump the versions of their tariffs; returns how many went."""
    tariff_ids = set(rates.values_list("tariff_id", flat=True).distinct())
    deleted = rates.delete()[0]
    _version_bump(tariff_ids)
    return deleted
