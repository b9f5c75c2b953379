"""Domain errors of invoicing, each with a message a person can read."""


class InvoicingError(Exception):
    """A statement or credit note cannot be issued as asked."""


class PeriodNotClosed(InvoicingError):
    """The month has not ended yet in the company's billing time zone."""


class PaymentRefused(InvoicingError):
    """A payment cannot be recorded or allocated as asked (amount, currency, invoice)."""
