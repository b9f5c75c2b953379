"""Portal pages of the billing app: credits, usage, subscriptions and numbers."""

from django.core.paginator import Paginator
from django.shortcuts import render
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from djmoney.money import Money

from accounts.models import Company
from accounts.portal import portal_view
from accounts.selectors import company_subaccounts
from vouchers.views import credits_page_context

from .money import quantize_amount
from .selectors import (
    HISTORY_GROUPS,
    average_daily_spend,
    company_available,
    company_balance,
    company_history,
    company_lot_lines,
    credit_runway,
)
from .selectors_history import history_descriptions
from .selectors_recurring import recent_recurring_charges, recurring_overview
from .selectors_usage import (
    NO_SUBACCOUNT,
    SERVICE_LABELS,
    usage_filters,
    usage_lines,
    usage_month,
    usage_records,
    usage_summary,
)

HISTORY_PAGE_SIZE = 50
USAGE_PAGE_SIZE = 50
CHARGES_PAGE_SIZE = 50
# The history filter: (value of ?kind=, label); "" is everything.
HISTORY_FILTERS = [
    ("", _("All")),
    ("added", _("Credits added")),
    ("charges", _("Charges")),
    ("expired", _("Expired")),
]


@portal_view("view_billing")
def credits(request):
    company = request.company
    now = timezone.now()
    kind = request.GET.get("kind", "")
    if kind not in HISTORY_GROUPS:
        kind = ""
    # get_page turns a missing, malformed or out-of-range page number into a real page.
    page = Paginator(company_history(company, kind or None), HISTORY_PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    descriptions = history_descriptions(page.object_list, company)
    for transaction in page:
        transaction.amount_money = Money(transaction.amount, company.currency)
        transaction.shown_description = descriptions.get(transaction.pk, transaction.description)

    context = {
        "available": company_available(company, now),
        "lot_lines": company_lot_lines(company, now),
        "page": page,
        "kind": kind,
        "history_filters": HISTORY_FILTERS,
    }
    if company.mode == Company.Mode.PREPAID:
        runway = credit_runway(company, now)
        context["daily_spend"] = runway.daily_spend
        context["runs_out_at"] = runway.runs_out_at
        # Rounded so that a fraction left over by the simulation never reads "¥0 expire".
        context["expiring_unused"] = Money(
            quantize_amount(runway.expiring_unused.amount, company.currency), company.currency
        )
    else:
        context["daily_spend"] = average_daily_spend(company, now)
        balance = company_balance(company)
        context["balance"] = balance
        context["owed"] = -balance
    context.update(credits_page_context(request))  # "Register credit code", pending credit
    from invoicing.selectors import company_topup_reminder  # invoicing builds on billing

    context["topup_reminder"] = company_topup_reminder(company)
    return render(request, "portal/credits.html", context)


@portal_view("view_account")
def usage(request):
    """A month's usage and cost by service and by subaccount, and its detail records.

    Every member may see it. Bad parameters (month, filters, page) fall back to the default
    rather than fail: they come from bookmarks and hand-edited links.
    """
    company = request.company
    month = usage_month(request.GET.get("month"), company.tzinfo, timezone.now())
    subaccounts = list(company_subaccounts(company))
    filters = usage_filters(request.GET.get("service"), request.GET.get("subaccount"), subaccounts)
    page = Paginator(
        usage_records(company, month.start, month.end, filters), USAGE_PAGE_SIZE
    ).get_page(request.GET.get("page"))
    return render(
        request,
        "portal/usage.html",
        {
            "month": month,
            "summary": usage_summary(company, month.start, month.end),
            "page": page,
            "lines": usage_lines(page, company.currency),
            "filters": filters,
            "service_choices": list(SERVICE_LABELS.items()),
            "subaccounts": subaccounts,
            "no_subaccount": NO_SUBACCOUNT,
        },
    )


@portal_view("view_account")
def subscriptions(request):
    """Plans and their bundles this period, phone numbers, seats and service fees, and the
    recurring charges of the last three months, line by line. Every member may see it."""
    company = request.company
    overview = recurring_overview(company, timezone.now())
    page = Paginator(recent_recurring_charges(company, overview.since), CHARGES_PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    return render(request, "portal/subscriptions.html", {"overview": overview, "page": page})
