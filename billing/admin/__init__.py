"""The billing back-office, by sub-domain: ``ledger`` (the books, read-only, and the
reversal), ``catalog`` (tariffs and rates, plans and bundles, subscriptions) and ``usage``
(API keys and usage records). ``base`` holds the machinery they share with
``accounts.admin``: the capped list count, read-only lists and staff-action pages.

Nothing here holds a business rule: pages and actions call the services.
"""

from . import catalog, ledger, usage
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

__all__ = [
    "ActionDone",
    "CappedCountPaginator",
    "CompanyMoneyMixin",
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
    "replayed",
    "usage",
    "when",
]
