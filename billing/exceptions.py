"""Domain errors of the billing app; ``str(error)`` is a sentence a person can act on."""

from django.utils.translation import gettext, ngettext


class BillingError(Exception):
    """Base class of every billing error shown to staff or customers."""


class InvalidAmount(BillingError):
    """An amount that is negative, zero where it must not be, or in the wrong currency."""


class IdempotencyConflict(BillingError):
    """The idempotency key was used before for a different request."""


class InsufficientCredit(BillingError):
    """A prepaid debit that is not a charge (e.g. an adjustment) exceeds the available credit."""


class ReversalRefused(BillingError):
    """The transaction cannot be reversed (already reversed, an expiry, credit already used)."""


class ModeSwitchRefused(BillingError):
    """The company cannot switch mode in its present state."""


class TariffImportError(BillingError):
    """A tariff file with at least one bad line; nothing of it was imported.

    ``errors`` lists every bad line as (line number, reason), in file order; ``str()`` is
    the one-line summary.
    """

    def __init__(self, errors: list[tuple[int, str]]):
        self.errors = errors
        super().__init__(
            ngettext(
                "The file has %(count)d bad line; nothing was imported.",
                "The file has %(count)d bad lines; nothing was imported.",
                len(errors),
            )
            % {"count": len(errors)}
        )

    def lines(self) -> list[str]:
        """Each bad line as “line 12: reason”."""
        return [
            gettext("line %(line)d: %(reason)s") % {"line": line, "reason": reason}
            for line, reason in self.errors
        ]


class NumberInUse(BillingError):
    """The phone number is assigned to a company already."""


class RecurringChargesFailed(BillingError):
    """Some companies' recurring charges were refused; the others' were recorded.
    ``errors`` holds each refusal, its note naming the company."""

    def __init__(self, charged: int, errors: list[Exception]):
        self.charged, self.errors = charged, errors
        reasons = "; ".join(
            f"{' '.join(getattr(error, '__notes__', None) or ['a company'])}: {error}"
            for error in errors
        )
        super().__init__(
            f"{len(errors)} company(ies) refused ({charged} charge(s) recorded): {reasons}"
        )
