"""Billing models, by sub-domain: the ledger, tariffs, plans and bundles, usage."""

from .ledger import CreditLot, LedgerAccount, LedgerPosting, LedgerTransaction, money_field
from .plans import Bundle, BundleCounter, Plan, Subscription
from .recurring import PhoneNumber, RecurringCharge, SeatFee, ServiceFee
from .tariffs import Rate, Tariff
from .usage import ApiKey, UsageRecord, api_key_generate, api_key_hash

__all__ = [
    "ApiKey",
    "Bundle",
    "BundleCounter",
    "CreditLot",
    "LedgerAccount",
    "LedgerPosting",
    "LedgerTransaction",
    "PhoneNumber",
    "Plan",
    "Rate",
    "RecurringCharge",
    "SeatFee",
    "ServiceFee",
    "Subscription",
    "Tariff",
    "UsageRecord",
    "api_key_generate",
    "api_key_hash",
    "money_field",
]
