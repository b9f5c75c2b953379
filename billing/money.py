"""Money rules shared by every app.

Amounts are ``Decimal`` (django-money ``Money``) everywhere, never ``float``. Columns keep
four decimal places so that rates such as ¥0.0125 per API call can be stored, but every
amount that reaches the ledger is quantised once, to the currency's own exponent
(JPY 0, USD 2, KWD 3), with ``ROUND_HALF_UP``.
"""

from decimal import ROUND_HALF_UP, Context, Decimal

from babel.numbers import get_currency_precision
from moneyed import Money

MONEY_MAX_DIGITS = 19
MONEY_DECIMAL_PLACES = 4
ROUNDING = ROUND_HALF_UP


def currency_exponent(currency: str) -> int:
    """Digits after the decimal point in the currency's smallest unit (JPY 0, USD 2)."""
    return get_currency_precision(str(currency))


# Wide enough for any amount the inputs allow (10^15 seconds at 10^13 a minute is 29
# digits with cents): the default context's 28 digits would raise InvalidOperation, and
# the callers refuse an amount too large to be real after rounding, not before.
_WIDE = Context(prec=60)


def quantize_amount(amount: Decimal, currency: str) -> Decimal:
    """Round ``amount`` to the currency's minor unit: the one rounding step."""
    return Decimal(amount).quantize(
        Decimal(1).scaleb(-currency_exponent(currency)), ROUNDING, _WIDE
    )


def quantize_money(money: Money) -> Money:
    return Money(quantize_amount(money.amount, money.currency.code), money.currency)


def zero(currency: str) -> Money:
    return Money(Decimal(0), currency)
