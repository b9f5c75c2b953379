"""Domain errors of the billing app; ``str(error)`` is a sentence a person can act on."""


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
