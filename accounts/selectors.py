"""Reads of companies, memberships and subaccounts shared by the portal and the admin."""

from django.db.models import QuerySet

from .models import Company, Membership, Subaccount


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
