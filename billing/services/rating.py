"""Rating: which rate and which bundle price a usage event, and the explanation.

Tariff lookups use an in-memory index per tariff, cached by ``(tariff id, version)``: a
dict from (service, destination) to that destination's rates, so the longest matching
prefix of a number is found with at most 15 dict lookups whatever the size of the tariff.
"""

import threading
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from babel import Locale

from ..models import Rate, Tariff
from ..rating import COUNTRY_SERVICES, NUMBER_SERVICES, SERVICES

# CLDR's two-letter territories, less its groupings and unknown/private-use codes.
NOT_COUNTRIES = frozenset({"EU", "EZ", "UN", "QO", "XA", "XB", "ZZ"})
COUNTRIES = frozenset(
    code
    for code in Locale("en").territories
    if len(code) == 2 and code.isalpha() and code not in NOT_COUNTRIES
)


class RatingError(Exception):
    """An event that cannot be rated: ``code`` for machines, the message for people."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class RateRow:
    id: int
    price: Decimal
    connection_fee: Decimal
    minimum_seconds: int
    first_increment: int
    next_increment: int
    effective_from: datetime
    effective_until: datetime | None

    @property
    def increments(self) -> str:
        return f"{self.first_increment}/{self.next_increment}"


def normalise_destination(service: str, destination: str | None) -> str:
    """The destination as rates name it: digits for numbers, an upper-case country for data,
    empty for services priced without one. Raises ``RatingError``."""
    if service not in SERVICES:
        raise RatingError(
            "unknown_service", f"“{service}” is not a service: use one of {', '.join(SERVICES)}."
        )
    if service in NUMBER_SERVICES:
        digits = (destination or "").strip().replace(" ", "").replace("-", "")
        digits = digits[1:] if digits.startswith("+") else digits
        if not (digits.isascii() and digits.isdigit() and 4 <= len(digits) <= 15):
            raise RatingError(
                "invalid_destination", f"{service} needs an E.164 number such as +81312345678."
            )
        return digits
    if service in COUNTRY_SERVICES:
        country = (destination or "").strip().upper()
        if country not in COUNTRIES:
            raise RatingError(
                "invalid_destination", "data needs an ISO 3166 alpha-2 country such as JP."
            )
        return country
    return ""


class TariffIndex:
    def __init__(self, rates):
        self._rates: dict[tuple[str, str], list[RateRow]] = {}
        for rate in rates:
            self._rates.setdefault((rate.service, rate.destination), []).append(
                RateRow(
                    rate.id,
                    rate.price,
                    rate.connection_fee,
                    rate.minimum_seconds,
                    rate.first_increment,
                    rate.next_increment,
                    rate.effective_from,
                    rate.effective_until,
                )
            )
        for rows in self._rates.values():
            rows.sort(key=lambda row: row.effective_from, reverse=True)
        self.size = sum(len(rows) for rows in self._rates.values())
        # The longest prefix each service prices: a number's digits past it match nothing.
        self._longest: dict[str, int] = {}
        for service, destination in self._rates:
            self._longest[service] = max(self._longest.get(service, 0), len(destination))

    @staticmethod
    def _in_force(rows: list[RateRow], at: datetime) -> RateRow | None:
        for row in rows:  # newest first
            if row.effective_from <= at and (
                row.effective_until is None or at < row.effective_until
            ):
                return row
        return None

    def find(self, service: str, destination: str, at: datetime) -> tuple[RateRow, str]:
        """The rate in force at ``at``: the longest matching prefix (or the country) with a
        rate in force, else the service's default. Returns (rate, matched destination;
        empty for the default). Raises ``RatingError`` when none applies."""
        if service in NUMBER_SERVICES:
            for length in range(min(len(destination), self._longest.get(service, 0)), 0, -1):
                rows = self._rates.get((service, destination[:length]))
                if rows and (row := self._in_force(rows, at)):
                    return row, destination[:length]
        elif destination:
            rows = self._rates.get((service, destination))
            if rows and (row := self._in_force(rows, at)):
                return row, destination
        rows = self._rates.get((service, ""))
        if rows and (row := self._in_force(rows, at)):
            return row, ""
        raise RatingError(
            "no_rate",
            f"The tariff has no {service} rate for {destination or 'this usage'} "
            f"at {at:%Y-%m-%d %H:%M} UTC.",
        )


_cache: dict[int, tuple[tuple, TariffIndex]] = {}
_cache_lock = threading.Lock()


def tariff_index(tariff: Tariff) -> TariffIndex:
    """The tariff's index, rebuilt when its version changed since it was cached.

    The creation instant is part of the identity: SQLite can give a deleted tariff's id to
    a new one, which starts at version 1 again.
    """
    identity = (tariff.version, tariff.created_at)
    cached = _cache.get(tariff.id)  # .id: .pk is a property, and this runs per event
    if cached and cached[0] == identity:
        return cached[1]
    index = TariffIndex(Rate.objects.filter(tariff=tariff).iterator(chunk_size=5000))
    with _cache_lock:
        _cache[tariff.id] = (identity, index)
    return index
