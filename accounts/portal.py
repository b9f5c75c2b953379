"""How a portal request finds its company.

Every portal view is wrapped in ``portal_view``: it requires a signed-in user, resolves the
company from the user's own memberships (the one chosen with the switcher, else the first),
and sets ``request.company`` and ``request.membership``. Views look objects up *through*
``request.company``, so another company's id is simply not found: a 404, never a 403.
"""

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.shortcuts import render
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .roles import role_can
from .selectors import portal_membership

SESSION_COMPANY_KEY = "portal_company_id"

# The portal's navigation: (url name, label, capability). A page added by a later capability
# adds one line here.
PORTAL_NAV: list[tuple[str, str, str]] = [
    ("portal:dashboard", _("Dashboard"), "view_account"),
    ("portal:credits", _("Credits"), "view_billing"),
    ("portal:usage", _("Usage"), "view_account"),
    ("portal:statements", _("Statements"), "view_billing"),
    ("portal:payments", _("Payment history"), "view_billing"),
    ("portal:billing_contacts", _("Billing contacts"), "view_billing"),
    ("portal:subscriptions", _("Subscriptions & numbers"), "view_account"),
    ("portal:subaccounts", _("Subaccounts"), "view_account"),
]


def portal_view(capability: str = "view_account") -> Callable:
    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            membership = portal_membership(request.user, request.session.get(SESSION_COMPANY_KEY))
            if membership is None:
                return render(request, "portal/no_company.html", status=403)
            request.membership = membership
            request.company = membership.company
            if not role_can(membership.role, capability):
                return render(request, "portal/forbidden.html", status=403)
            # Times on every portal page are the company's billing time zone, as its periods
            # are (pages that set it themselves with {% timezone %} agree).
            with timezone.override(membership.company.tzinfo):
                return view(request, *args, **kwargs)

        wrapper.portal_capability = capability
        return wrapper

    return decorator
