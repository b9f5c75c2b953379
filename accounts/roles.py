"""What each portal role may do, and the operator staff groups.

Portal roles belong to a membership (one user may be admin at one company and member at
another). Staff groups are Django permission groups for the back-office.
"""

from .models import Membership

Role = Membership.Role

# Portal capabilities by role. A view names the capability it needs, never a role, so that
# changing who may do what is a change here only.
PORTAL_CAPABILITIES: dict[str, frozenset[str]] = {
    "view_account": frozenset({Role.ADMIN, Role.BILLING, Role.MEMBER}),
    "view_billing": frozenset({Role.ADMIN, Role.BILLING}),
    "manage_billing": frozenset({Role.ADMIN, Role.BILLING}),
    "manage_subaccounts": frozenset({Role.ADMIN}),
    # Register credit codes (vouchers) for the company: it adds money, like billing does.
    "redeem_vouchers": frozenset({Role.ADMIN, Role.BILLING}),
}


def role_can(role: str, capability: str) -> bool:
    return role in PORTAL_CAPABILITIES[capability]


# Staff groups. Permissions are given by app label, either as actions (``view``, ``add``...,
# matched against the standard ``<action>_<model>`` codenames) or as ``EVERY_PERMISSION``:
# all the app's permissions, custom ones included (``billing.adjust_balance``...). Models
# and permissions added later are covered by re-running ``manage.py setup_staff_groups``.
PROJECT_APPS = ("accounts", "billing", "vouchers", "invoicing", "django_celery_beat")
ALL_ACTIONS = ("view", "add", "change", "delete")
EVERY_PERMISSION = "*"
STAFF_GROUPS: dict[str, dict[str, tuple[str, ...] | str]] = {
    # Everything in the project's apps (also adjusting balances, granting credits, reversing,
    # blocking, switching mode), and managing users.
    "Billing admin": {**dict.fromkeys(PROJECT_APPS, EVERY_PERMISSION), "auth": ALL_ACTIONS},
    # Read-only everywhere.
    "Support": dict.fromkeys(PROJECT_APPS, ("view",)),
    # Payments and statements (invoicing) in full; the rest read-only. No money actions.
    "Finance": {
        **dict.fromkeys(PROJECT_APPS, ("view",)),
        "invoicing": ("view", "add", "change"),
    },
}
