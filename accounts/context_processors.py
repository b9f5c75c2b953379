"""Template context for the portal layout: navigation and the company switcher."""

from django.utils.functional import SimpleLazyObject

from .models import Company
from .portal import PORTAL_NAV
from .roles import PORTAL_CAPABILITIES, role_can
from .selectors import company_block_reasons, memberships_for_user


def portal(request) -> dict:
    membership = getattr(request, "membership", None)
    if membership is None:
        return {}
    return {
        "portal_nav": [
            (url_name, label)
            for url_name, label, capability in PORTAL_NAV
            if role_can(membership.role, capability)
        ],
        "portal_can": {
            capability: membership.role in roles
            for capability, roles in PORTAL_CAPABILITIES.items()
        },
        # Evaluated only when the layout draws the switcher: one query.
        "portal_memberships": SimpleLazyObject(lambda: list(memberships_for_user(request.user))),
        # Evaluated only where a page says why the company is blocked: one query.
        "company_block_reasons": SimpleLazyObject(
            lambda: (
                (company_block_reasons(request.company) or [request.company.blocked_reason])
                if request.company.status == Company.Status.BLOCKED
                else []
            )
        ),
    }
