"""Domain errors of vouchers; ``str(error)`` is a sentence the customer or staff can act on.

Messages are translated when the error is raised, so raise them in the language of the
person who will read them (a portal request's language).

``counts_as_failure`` says whether a refused redemption counts towards the brute-force
limit (``vouchers.ratelimit``): only refusals that looked a code up do. A typo caught by
the check character never reached the database and tells nothing about which codes exist;
"your company already registered this code" is a double submit, not a guess.
"""

from datetime import datetime

from django.utils import formats, timezone
from django.utils.translation import gettext

from billing.exceptions import BillingError


def _local(instant: datetime, tzinfo, fmt: str) -> str:
    return formats.date_format(timezone.localtime(instant, tzinfo), fmt)


class VoucherError(BillingError):
    """Base class. A ``BillingError`` so that the shared staff-action pages show it."""

    counts_as_failure = False
    # Set when this refusal (or an earlier one) locked further attempts.
    locked_until: datetime | None = None


class VoucherCodeMalformed(VoucherError):
    """Not a credit code at all: wrong length, a character codes never use, or a typo that
    the check character caught. Decided without a database lookup."""


class VoucherNotFound(VoucherError):
    """No such code, *or* a code another company registered: the customer sees the same
    words for both, so trying codes tells nothing about other companies' codes."""

    counts_as_failure = True

    def __init__(self):
        super().__init__(
            gettext("This credit code is not valid. Check that you typed it as printed.")
        )


class VoucherAlreadyRedeemed(VoucherError):
    """This company registered the code before (only ever said to that company)."""

    def __init__(self, redeemed_at: datetime, tzinfo):
        self.redeemed_at = redeemed_at
        super().__init__(
            gettext("You already registered this code on %(date)s.")
            % {"date": _local(redeemed_at, tzinfo, "DATETIME_FORMAT")}
        )


class VoucherVoided(VoucherError):
    counts_as_failure = True

    def __init__(self):
        super().__init__(
            gettext(
                "This credit code has been cancelled and can no longer be registered. "
                "Please contact the seller of the code."
            )
        )


class VoucherExpired(VoucherError):
    counts_as_failure = True

    def __init__(self, redeem_by: datetime, tzinfo):
        super().__init__(
            gettext("This credit code could be registered until %(date)s; it has expired.")
            % {"date": _local(redeem_by, tzinfo, "DATETIME_FORMAT")}
        )


class VoucherCurrencyMismatch(VoucherError):
    counts_as_failure = True

    def __init__(self, code_currency: str, company_currency: str):
        super().__init__(
            gettext(
                "This credit code is for credit in %(code)s, but your account is billed in "
                "%(company)s, so it cannot be registered here."
            )
            % {"code": code_currency, "company": company_currency}
        )


class RedemptionLocked(VoucherError):
    """Too many refused attempts: no code is looked up until ``locked_until``."""

    def __init__(self, locked_until: datetime, tzinfo):
        self.locked_until = locked_until
        super().__init__(
            gettext(
                "Too many codes that did not work were tried. For your security, registering "
                "credit codes is locked until %(time)s."
            )
            % {"time": _local(locked_until, tzinfo, "DATETIME_FORMAT")}
        )


class BatchInvalid(VoucherError):
    """A batch that cannot be created as asked (count, amount, lifetime, redeem-by)."""


class VoidRefused(VoucherError):
    """A code or batch that cannot be voided (a redeemed code: its credit was given)."""
