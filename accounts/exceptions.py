"""Domain errors of the accounts app; each message is a sentence a person can act on."""


class AccountsError(Exception):
    """Base class: ``str(error)`` is shown to the user as it is."""


class SubaccountCodeTaken(AccountsError):
    pass


class MembershipExists(AccountsError):
    pass


class BlockingError(AccountsError):
    pass


class BillingContactError(AccountsError):
    """A billing contact that cannot be saved as asked; ``field`` is the form field at fault."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field
