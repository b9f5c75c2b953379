from .accounts import (
    BillingContactFactory,
    CompanyFactory,
    MembershipFactory,
    SubaccountFactory,
    UserFactory,
)

__all__ = [
    "BillingContactFactory",
    "CompanyFactory",
    "MembershipFactory",
    "SubaccountFactory",
    "UserFactory",
]
