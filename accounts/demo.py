"""Demo data: an operator, staff in each group, three companies with seats and portal users.

Every row is found or created by its natural key, so running the seed again changes nothing.
"""

from dataclasses import dataclass
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from djmoney.money import Money

from .models import BillingContact, Company, Membership, Subaccount
from .services import staff_groups_sync

DEMO_PASSWORD = "tollgate-demo"


@dataclass(frozen=True)
class DemoLogin:
    where: str
    username: str
    password: str
    note: str


COMPANIES = [
    {
        "account_code": "acme-prepaid",
        "name": "Acme Messaging KK",
        "mode": Company.Mode.PREPAID,
        "currency": "JPY",
        "billing_timezone": "Asia/Tokyo",
        "language": "ja",
        "tax_rate": Decimal("0.1000"),
        "credit_limit": None,
        "contacts": [("Keiko Sato", "billing@acme.example", "ja")],
        "subaccounts": [
            ("sales", "Sales team"),
            ("support", "Support desk"),
            ("alerts", "Alert bot"),
        ],
    },
    {
        "account_code": "kumo-postpaid",
        "name": "Kumo Voice GK",
        "mode": Company.Mode.POSTPAID,
        "currency": "JPY",
        "billing_timezone": "Asia/Tokyo",
        "language": "ja",
        "tax_rate": Decimal("0.1000"),
        "credit_limit": Money(Decimal("500000"), "JPY"),
        "contacts": [("Taro Yamada", "accounts@kumo.example", "ja")],
        "subaccounts": [("callcenter", "Call centre"), ("ivr", "IVR"), ("dev", "Development")],
    },
    {
        "account_code": "globex-usd",
        "name": "Globex Telecom Inc.",
        "mode": Company.Mode.PREPAID,
        "currency": "USD",
        "billing_timezone": "America/New_York",
        "language": "en",
        "tax_rate": Decimal("0.0000"),
        "credit_limit": None,
        "contacts": [("Hank Scorpio", "ap@globex.example", "en")],
        "subaccounts": [("web", "Web app"), ("mobile", "Mobile app")],
    },
]

# username, email, staff group (None = portal user), memberships (account code, role)
USERS = [
    ("alice", "alice@acme.example", None, [("acme-prepaid", Membership.Role.ADMIN)]),
    ("bob", "bob@acme.example", None, [("acme-prepaid", Membership.Role.MEMBER)]),
    (
        "carol",
        "carol@kumo.example",
        None,
        [("kumo-postpaid", Membership.Role.ADMIN), ("globex-usd", Membership.Role.BILLING)],
    ),
    ("support", "support@tollgate.example", "Support", []),
    ("finance", "finance@tollgate.example", "Finance", []),
]


def seed_accounts() -> list[DemoLogin]:
    staff_groups_sync()
    User = get_user_model()

    operator, created = User.objects.get_or_create(
        username="operator",
        defaults={"email": "operator@tollgate.example", "is_staff": True, "is_superuser": True},
    )
    if created:
        operator.set_password(DEMO_PASSWORD)
        operator.save()
    logins = [DemoLogin("/admin/", "operator", DEMO_PASSWORD, "superuser")]

    companies = {}
    for spec in COMPANIES:
        spec = dict(spec)
        contacts = spec.pop("contacts")
        subaccounts = spec.pop("subaccounts")
        company, _ = Company.objects.get_or_create(
            account_code=spec.pop("account_code"), defaults=spec
        )
        companies[company.account_code] = company
        for name, email, language in contacts:
            BillingContact.objects.get_or_create(
                company=company, email=email, defaults={"name": name, "language": language}
            )
        for code, name in subaccounts:
            Subaccount.objects.get_or_create(company=company, code=code, defaults={"name": name})

    for username, email, group_name, memberships in USERS:
        user, created = User.objects.get_or_create(
            username=username, defaults={"email": email, "is_staff": group_name is not None}
        )
        if created:
            user.set_password(DEMO_PASSWORD)
            user.save()
        if group_name:
            user.groups.add(Group.objects.get(name=group_name))
            logins.append(DemoLogin("/admin/", username, DEMO_PASSWORD, f"staff: {group_name}"))
        for account_code, role in memberships:
            Membership.objects.get_or_create(
                user=user, company=companies[account_code], defaults={"role": role}
            )
        if memberships:
            where = ", ".join(f"{code} ({role})" for code, role in memberships)
            logins.append(DemoLogin("/portal/", username, DEMO_PASSWORD, where))
    return logins
