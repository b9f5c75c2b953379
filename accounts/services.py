"""Everything that writes companies, subaccounts, memberships and staff groups."""

from datetime import datetime

from django.conf import settings
from django.contrib.auth.models import Group, Permission
from django.db import IntegrityError, transaction
from django.db.models import F, Value
from django.db.models.functions import Concat
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from . import signals
from .exceptions import (
    BillingContactError,
    BlockingError,
    MembershipExists,
    SubaccountCodeTaken,
)
from .models import (
    BillingContact,
    Company,
    CompanyBlock,
    Membership,
    Subaccount,
    SubaccountInactivity,
)
from .roles import EVERY_PERMISSION, STAFF_GROUPS
from .selectors import block_reason_lines


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


# Who receives a company's statements and billing notices; a few people, not a list.
MAX_BILLING_CONTACTS = 10


def billing_contact_save(
    *,
    company: Company,
    email: str,
    name: str = "",
    language: str,
    gets_statements: bool = True,
    gets_notices: bool = True,
    contact: BillingContact | None = None,
) -> BillingContact:
    """Add a billing contact to ``company`` (``contact`` None) or change ``contact``, one of
    its own. Raises ``BillingContactError`` and changes nothing for an address the company
    has already (in any case), a contact who would get nothing, or an eleventh contact.
    Under the company's row lock, so two people adding at once cannot pass either check
    together."""
    email = email.strip()
    if not (gets_statements or gets_notices):
        raise BillingContactError(
            _("Choose what this person receives: statements, notices or both.")
        )
    with transaction.atomic():
        lock_company(company.pk)
        others = BillingContact.objects.filter(company_id=company.pk)
        if contact is not None:
            others = others.exclude(pk=contact.pk)
        if others.filter(email__iexact=email).exists():
            raise BillingContactError(
                _("%(email)s is a billing contact already.") % {"email": email}, field="email"
            )
        if contact is None and others.count() >= MAX_BILLING_CONTACTS:
            raise BillingContactError(
                _("A company has at most %(count)d billing contacts: remove one first.")
                % {"count": MAX_BILLING_CONTACTS}
            )
        contact = contact or BillingContact(company_id=company.pk)
        contact.email, contact.name, contact.language = email, name.strip(), language
        contact.gets_statements, contact.gets_notices = gets_statements, gets_notices
        contact.full_clean(exclude=["company"], validate_unique=False, validate_constraints=False)
        contact.save()
    return contact


def billing_contact_remove(*, contact: BillingContact) -> None:
    """Remove a billing contact. The emails sent to it stay in the log (they keep the
    address, not the contact)."""
    contact.delete()


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
            _("The subaccount code “%(code)s” is already used in this company.") % {"code": code}
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

    The deactivation instant is kept, and on activating again the stretch it was inactive
    is recorded (``SubaccountInactivity``), so that per-seat fees can count the seats of any
    past instant. Locks the subaccount row: two toggles at once record one stretch.
    """
    now = now or timezone.now()
    locked = Subaccount.objects.select_for_update().get(pk=subaccount.pk)
    if locked.is_active == active:
        subaccount.is_active, subaccount.deactivated_at = locked.is_active, locked.deactivated_at
        return subaccount
    if active:
        SubaccountInactivity.objects.create(
            subaccount=locked,
            started_at=locked.deactivated_at,
            ended_at=max(now, locked.deactivated_at),
        )
    subaccount.is_active = active
    subaccount.deactivated_at = None if active else now
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
    """Create or update the operator staff groups to exactly the permissions in ``roles``
    (an app given as ``EVERY_PERMISSION`` gets all of its permissions, custom ones too).

    Idempotent; returns the number of permissions each group ended up with.
    """
    result = {}
    for group_name, spec in STAFF_GROUPS.items():
        group, _ = Group.objects.get_or_create(name=group_name)
        wanted = Permission.objects.none()
        for app_label, actions in spec.items():
            of_app = Permission.objects.filter(content_type__app_label=app_label)
            if actions == EVERY_PERMISSION:
                wanted |= of_app
                continue
            for action in actions:
                # Exactly the standard ``<action>_<model>`` codename: a custom permission
                # that merely starts with "view_" (``vouchers.view_voucher_codes``, seeing
                # the codes themselves) is not read-only access and is not given here.
                wanted |= of_app.filter(
                    codename=Concat(Value(f"{action}_"), F("content_type__model"))
                )
        group.permissions.set(wanted)
        result[group_name] = group.permissions.count()
    return result


# --- Blocking -------------------------------------------------------------------------------
# A company is blocked while it has at least one active CompanyBlock. Both services lock the
# company row first (the documented lock order), so they may be called inside a ledger
# transaction that already holds it.


def lock_company(company_id: int) -> Company:
    """Lock and return the company row: the first lock of every money-moving transaction."""
    return Company.objects.select_for_update().get(pk=company_id)


def lock_companies(company_ids) -> list[Company]:
    """Lock and return several company rows (those that exist), in id order: the one order
    every transaction that locks more than one company uses, so two cannot deadlock."""
    return list(
        Company.objects.select_for_update().filter(pk__any=list(company_ids)).order_by("pk")
    )


@transaction.atomic
def company_block(
    *, company: Company, reason: str, note: str = "", actor=None, now: datetime | None = None
) -> CompanyBlock:
    """Block ``company`` for ``reason``. Idempotent: an active block for it is returned as is.

    Locks the company row. Notifies ``signals.company_blocked`` after commit.
    """
    if reason == CompanyBlock.Reason.MANUAL and actor is None:
        raise BlockingError("A manual block needs the staff user who sets it.")
    locked = lock_company(company.pk)
    block = CompanyBlock.objects.filter(company=locked, reason=reason, lifted_at=None).first()
    if block is not None:
        return block
    block = CompanyBlock.objects.create(
        company=locked,
        reason=reason,
        note=note[:500],
        blocked_by=actor,
        blocked_at=now or timezone.now(),
    )
    _status_sync(locked, company)
    transaction.on_commit(
        lambda: signals.company_blocked.send(sender=Company, company=locked, block=block)
    )
    return block


@transaction.atomic
def company_unblock(
    *, company: Company, reason: str, note: str = "", actor=None, now: datetime | None = None
) -> CompanyBlock | None:
    """Lift the active block for ``reason``; returns it, or None if there was none.

    A manual block is lifted only by staff (``actor`` required). Automatic reasons lift by
    themselves when their cause clears (the ledger calls this), or by staff.
    """
    if reason == CompanyBlock.Reason.MANUAL and actor is None:
        raise BlockingError("Only staff can lift a manual block.")
    locked = lock_company(company.pk)
    block = CompanyBlock.objects.filter(company=locked, reason=reason, lifted_at=None).first()
    if block is None:
        return None
    block.lifted_at = max(now or timezone.now(), block.blocked_at)
    block.lifted_by = actor
    block.lift_note = note[:500]
    block.save(update_fields=["lifted_at", "lifted_by", "lift_note"])
    _status_sync(locked, company)
    transaction.on_commit(
        lambda: signals.company_unblocked.send(sender=Company, company=locked, block=block)
    )
    return block


def _status_sync(locked: Company, caller_copy: Company) -> None:
    """Derive status and the readable reason from the active blocks; update both copies."""
    active = list(
        CompanyBlock.objects.filter(company=locked, lifted_at=None).order_by("blocked_at", "id")
    )
    status = Company.Status.BLOCKED if active else Company.Status.ACTIVE
    # In the site's language, whoever's request set the block: the API and the admin read
    # it; the portal says it in the reader's (``selectors.company_block_reasons``).
    with translation.override(settings.LANGUAGE_CODE):
        reason = "; ".join(block_reason_lines(active))[:500]
    Company.objects.filter(pk=locked.pk).update(status=status, blocked_reason=reason)
    for copy in (locked, caller_copy):
        copy.status, copy.blocked_reason = status, reason
