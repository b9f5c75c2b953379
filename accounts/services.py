"""Everything that writes companies, subaccounts, memberships and staff groups."""

from django.contrib.auth.models import Group, Permission
from django.db import IntegrityError, transaction
from django.utils import timezone

from .exceptions import MembershipExists, SubaccountCodeTaken
from .models import Company, Membership, Subaccount
from .roles import STAFF_GROUPS


@transaction.atomic
def company_create(*, account_code: str, name: str, **fields) -> Company:
    """Create a company after full validation; raises ``ValidationError`` on bad fields.

    Money and status fields are set through their own services later (blocking, mode
    switching, the ledger); here only the description of the account.
    """
    company = Company(account_code=account_code, name=name, **fields)
    company.full_clean()
    company.save()
    return company


@transaction.atomic
def subaccount_create(*, company: Company, code: str, name: str) -> Subaccount:
    """Add a seat to ``company``. Raises ``SubaccountCodeTaken`` if the code is in use there."""
    subaccount = Subaccount(company=company, code=code, name=name)
    subaccount.full_clean(exclude=["company"], validate_unique=False, validate_constraints=False)
    try:
        with transaction.atomic():
            subaccount.save()
    except IntegrityError as error:
        raise SubaccountCodeTaken(
            f"The subaccount code “{code}” is already used in this company."
        ) from error
    return subaccount


@transaction.atomic
def subaccount_update(*, subaccount: Subaccount, name: str) -> Subaccount:
    subaccount.name = name
    subaccount.full_clean(exclude=["company"], validate_unique=False, validate_constraints=False)
    subaccount.save(update_fields=["name"])
    return subaccount


@transaction.atomic
def subaccount_set_active(*, subaccount: Subaccount, active: bool, now=None) -> Subaccount:
    """Activate or deactivate a seat. Idempotent: setting the current state changes nothing.

    The deactivation instant is kept so that per-seat fees can count seats at a given time.
    """
    if subaccount.is_active == active:
        return subaccount
    subaccount.is_active = active
    subaccount.deactivated_at = None if active else (now or timezone.now())
    subaccount.save(update_fields=["is_active", "deactivated_at"])
    return subaccount


@transaction.atomic
def membership_grant(*, user, company: Company, role: str) -> Membership:
    """Give ``user`` access to ``company`` with ``role``. Raises ``MembershipExists``."""
    if Membership.objects.filter(user=user, company=company).exists():
        raise MembershipExists(f"{user} is already a member of {company.name}.")
    return Membership.objects.create(user=user, company=company, role=role)


@transaction.atomic
def staff_groups_sync() -> dict[str, int]:
    """Create or update the operator staff groups to exactly the permissions in ``roles``.

    Idempotent; returns the number of permissions each group ended up with.
    """
    result = {}
    for group_name, spec in STAFF_GROUPS.items():
        group, _ = Group.objects.get_or_create(name=group_name)
        wanted = Permission.objects.none()
        for app_label, actions in spec.items():
            for action in actions:
                wanted |= Permission.objects.filter(
                    content_type__app_label=app_label, codename__startswith=f"{action}_"
                )
        group.permissions.set(wanted)
        result[group_name] = group.permissions.count()
    return result
