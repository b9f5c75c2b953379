"""The billing back-office, by sub-domain: ``ledger`` (the books, read-only, and the
reversal), ``catalog`` (tariffs and rates, plans and bundles, subscriptions), ``recurring``
(phone numbers, seat and service fees, recurring charges, and the company page's upcoming
charges and "Run recurring charges now") and ``usage`` (API keys and usage records).
``base`` holds the machinery they share with ``accounts.admin``: the capped list count,
read-only lists and staff-action pages.

Nothing here holds a business rule: pages and actions call the services.
"""

from . import catalog, ledger, recurring, usage
from .base import (
    ActionDone,
    CappedCountPaginator,
    ReadOnlyAdmin,
    StaffActionMixin,
    company_summary,
    html_table,
    money_or_unlimited,
    replayed,
    when,
)
from .ledger import CompanyMoneyMixin, CreditLotAdmin, LedgerAccountAdmin, LedgerTransactionAdmin
from .recurring import CompanyRecurringMixin

__all__ = [
    "ActionDone",
    "CappedCountPaginator",
    "CompanyMoneyMixin",
    "CompanyRecurringMixin",
    "CreditLotAdmin",
    "LedgerAccountAdmin",
    "LedgerTransactionAdmin",
    "ReadOnlyAdmin",
    "StaffActionMixin",
    "catalog",
    "company_summary",
    "html_table",
    "ledger",
    "money_or_unlimited",
    "recurring",
    "replayed",
    "usage",
    "when",
]
