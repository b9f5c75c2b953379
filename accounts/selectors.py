"""Reads of companies, memberships and subaccounts shared by the portal and the admin."""

import re
from collections.abc import Iterable

from django.db.models import QuerySet
from django.utils.translation import gettext as _

from .models import BillingContact, Company, CompanyBlock, Membership, Subaccount

# The dunning run's own English note on an overdue block (``invoicing.dunning``), read back
# so that the portal can say it in the reader's language.
OVERDUE_NOTE = re.compile(
    r"^Invoice (?P<number>\S+) due (?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2}) is unpaid$"
)


def memberships_for_user(user) -> QuerySet[Membership]:
    """The companies a portal user may act for, alphabetically."""
    return (
        Membership.objects.filter(user=user)
        .select_related("company")
        .order_by("company__name", "company_id")
    )


def portal_membership(user, company_id: int | None) -> Membership | None:
    """The membership the user is acting under: the chosen company, else their first one."""
    memberships = memberships_for_user(user)
    if company_id is not None:
        chosen = memberships.filter(company_id=company_id).first()
        if chosen is not None:
            return chosen
    return memberships.first()


def company_subaccounts(company: Company) -> QuerySet[Subaccount]:
    return Subaccount.objects.filter(company=company).order_by("-is_active", "code")


def company_block_reasons(company: Company) -> list[str]:
    """Why the company is blocked, one line per active block, oldest first, in the reader's
    language (one query). ``Company.blocked_reason`` keeps the same in the site's language
    for the API and the admin."""
    return block_reason_lines(
        CompanyBlock.objects.filter(company=company, lifted_at=None).order_by("blocked_at", "id")
    )


def block_reason_lines(blocks: Iterable[CompanyBlock]) -> list[str]:
    """Each block's reason and note in the language in force; a note staff typed is shown
    as it was written."""
    lines = []
    for block in blocks:
        note = block.note
        overdue = OVERDUE_NOTE.match(note) if block.reason == CompanyBlock.Reason.OVERDUE else None
        if overdue:
            note = _("Invoice %(number)s due %(date)s is unpaid") % overdue.groupdict()
        reason = str(block.get_reason_display())
        lines.append(
            _("%(reason)s: %(note)s") % {"reason": reason, "note": note} if note else reason
        )
    return lines


def company_billing_contacts(company: Company) -> QuerySet[BillingContact]:
    return BillingContact.objects.filter(company=company).order_by("email", "id")
