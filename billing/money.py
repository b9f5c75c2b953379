"""Money rules shared by every app.

Amounts are ``Decimal`` (django-money ``Money``) everywhere, never ``float``. Columns keep
four decimal places so that rates such as ¥0.0125 per API call can be stored, but every
amount that reaches the ledger is quantised once, to the currency's own exponent
(JPY 0, USD 2, KWD 3), with ``ROUND_HALF_UP``.
"""

from decimal import ROUND_HALF_UP, Context, Decimal
from functools import cache

from babel.numbers import get_currency_precision
from moneyed import Money

MONEY_MAX_DIGITS = 19
MONEY_DECIMAL_PLACES = 4
ROUNDING = ROUND_HALF_UP


def currency_exponent(currency: str) -> int:
    """Digits after the decimal point in the currency's smallest unit (JPY 0, USD 2)."""
    return _exponent(str(currency))


# Babel's tables do not change while the process runs; the usage service asks once per event.
@cache
def _exponent(code: str) -> int:
    return get_currency_precision(code)


@cache
def _minor_unit(code: str) -> Decimal:
    return Decimal(1).scaleb(-_exponent(code))


# Wide enough for any amount the inputs allow (10^15 seconds at 10^13 a minute is 29
# digits with cents): the default context's 28 digits would raise InvalidOperation, and
# the callers refuse an amount too large to be real after rounding, not before.
_WIDE = Context(prec=60)


def quantize_amount(amount: Decimal, currency: str) -> Decimal:
    """Round ``amount`` to the currency's minor unit: the one rounding step."""
    return Decimal(amount).quantize(_minor_unit(str(currency)), ROUNDING, _WIDE)


def quantize_money(money: Money) -> Money:
    return Money(quantize_amount(money.amount, money.currency.code), money.currency)


def zero(currency: str) -> Money:
    return Money(Decimal(0), currency)


# --- A MoneyField's amount without a Money ---------------------------------------------------
# django-money keeps a MoneyField's value in the instance's ``__dict__`` (the amount as read
# from the database, or the Money last set) and its currency in the ``<name>_currency``
# field, and builds a ``Money`` the first time the field is read. The ledger's books read
# and write the amounts of hundreds of accounts, lots and transactions per usage batch,
# where building those ``Money`` objects cost more than the arithmetic.


def money_amount(instance, name: str) -> Decimal | None:
    """The amount of ``instance``'s MoneyField ``name`` (None if it is NULL). The field must
    have been loaded: django-money cannot read a deferred one either."""
    value = instance.__dict__[name]
    return value.amount if isinstance(value, Money) else value


def set_money_amount(instance, name: str, amount: Decimal | None, currency: str) -> None:
    """Set ``instance``'s MoneyField ``name`` to ``amount`` in ``currency`` (None: NULL), as
    assigning a ``Money`` would, without building one."""
    instance.__dict__[name] = amount
    instance.__dict__[f"{name}_currency"] = None if amount is None else currency
