"""Portal pages of the accounts app: dashboard, company switcher, subaccounts, billing
contacts."""

from urllib.parse import urlsplit

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from . import services
from .exceptions import AccountsError
from .forms import BillingContactForm, CompanySwitchForm, SubaccountForm, SubaccountRenameForm
from .models import BillingContact, Subaccount
from .portal import SESSION_COMPANY_KEY, portal_view
from .roles import role_can
from .selectors import company_billing_contacts, company_subaccounts, memberships_for_user


@portal_view()
def dashboard(request):
    subaccounts = list(company_subaccounts(request.company))
    return render(
        request,
        "portal/dashboard.html",
        {
            "subaccounts": subaccounts,
            "active_seats": sum(1 for s in subaccounts if s.is_active),
        },
    )


@require_POST
@portal_view()
def company_switch(request):
    """Act for another of the user's companies; a company they are not a member of is a 404."""
    form = CompanySwitchForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("Choose a company to switch to."))
        return redirect("portal:dashboard")
    membership = get_object_or_404(
        memberships_for_user(request.user), company_id=form.cleaned_data["company"]
    )
    request.session[SESSION_COMPANY_KEY] = membership.company_id
    messages.success(
        request, _("You are now working in %(name)s.") % {"name": membership.company.name}
    )
    next_url = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
        # Checked again once cut: "http://this-host//elsewhere/12/" is allowed whole, but its
        # path alone, "//elsewhere/", is another site.
        page = _without_object(next_url)
        if url_has_allowed_host_and_scheme(page, allowed_hosts={request.get_host()}):
            return redirect(page)
    return redirect("portal:dashboard")


def _without_object(url: str) -> str:
    """The page to show after switching: the one the user was on, cut before the first
    object id in its path (``/portal/statements/12/`` → ``/portal/statements/``): an object
    of the company just left is a 404 in the other."""
    segments = urlsplit(url).path.split("/")
    for index, segment in enumerate(segments):
        if segment.isdigit():
            return "/".join(segments[:index]) + "/"
    return url


@portal_view()
def subaccount_list(request):
    return render(
        request,
        "portal/subaccounts/list.html",
        {"subaccounts": company_subaccounts(request.company), "form": SubaccountForm()},
    )


@require_POST
@portal_view("manage_subaccounts")
def subaccount_create(request):
    form = SubaccountForm(request.POST)
    if form.is_valid():
        try:
            subaccount = services.subaccount_create(
                company=request.company,
                code=form.cleaned_data["code"],
                name=form.cleaned_data["name"],
            )
        except AccountsError as error:
            form.add_error("code", str(error))
        else:
            messages.success(request, _("Subaccount %(code)s added.") % {"code": subaccount.code})
            return redirect("portal:subaccounts")
    return render(
        request,
        "portal/subaccounts/list.html",
        {"subaccounts": company_subaccounts(request.company), "form": form},
        status=400,
    )


@portal_view()
def subaccount_detail(request, pk: int):
    subaccount = get_object_or_404(Subaccount, pk=pk, company=request.company)
    form = SubaccountRenameForm(instance=subaccount)
    if request.method == "POST":
        if not role_can(request.membership.role, "manage_subaccounts"):
            return render(request, "portal/forbidden.html", status=403)
        form = SubaccountRenameForm(request.POST, instance=subaccount)
        if form.is_valid():
            services.subaccount_update(subaccount=subaccount, name=form.cleaned_data["name"])
            messages.success(request, _("Subaccount %(code)s saved.") % {"code": subaccount.code})
            return redirect("portal:subaccount", pk=subaccount.pk)
    return render(
        request, "portal/subaccounts/detail.html", {"subaccount": subaccount, "form": form}
    )


@require_POST
@portal_view("manage_subaccounts")
def subaccount_toggle(request, pk: int):
    subaccount = get_object_or_404(Subaccount, pk=pk, company=request.company)
    services.subaccount_set_active(subaccount=subaccount, active=not subaccount.is_active)
    if subaccount.is_active:
        messages.success(request, _("Subaccount %(code)s reactivated.") % {"code": subaccount.code})
    else:
        messages.success(request, _("Subaccount %(code)s deactivated.") % {"code": subaccount.code})
    return redirect("portal:subaccount", pk=subaccount.pk)


@portal_view("view_billing")
def billing_contacts(request):
    """The people who receive the company's statements and billing notices. POST (billing
    rights): add one; a refused one shows the page again with the reason (400)."""
    form = BillingContactForm(request.POST if request.method == "POST" else None)
    status = 200
    if form.is_bound:
        if not role_can(request.membership.role, "manage_billing"):
            return render(request, "portal/forbidden.html", status=403)
        status = 400
        if form.is_valid():
            try:
                contact = services.billing_contact_save(
                    company=request.company, **form.cleaned_data
                )
            except AccountsError as error:
                form.add_error(getattr(error, "field", None), str(error))
            else:
                messages.success(
                    request,
                    _("%(email)s now receives statements and notices.") % {"email": contact.email},
                )
                return redirect("portal:billing_contacts")
    return render(
        request,
        "portal/billing_contacts/list.html",
        {"contacts": company_billing_contacts(request.company), "form": form},
        status=status,
    )


@portal_view("manage_billing")
def billing_contact_detail(request, pk: int):
    contact = get_object_or_404(BillingContact, pk=pk, company=request.company)
    saved_email = contact.email  # the form writes what was typed on the instance
    form = BillingContactForm(request.POST if request.method == "POST" else None, instance=contact)
    status = 200
    if form.is_bound:
        status = 400
        if form.is_valid():
            try:
                services.billing_contact_save(
                    company=request.company, contact=contact, **form.cleaned_data
                )
            except AccountsError as error:
                form.add_error(getattr(error, "field", None), str(error))
            else:
                messages.success(request, _("%(email)s saved.") % {"email": contact.email})
                return redirect("portal:billing_contacts")
    return render(
        request,
        "portal/billing_contacts/detail.html",
        {"contact": contact, "saved_email": saved_email, "form": form},
        status=status,
    )


@require_POST
@portal_view("manage_billing")
def billing_contact_delete(request, pk: int):
    contact = get_object_or_404(BillingContact, pk=pk, company=request.company)
    services.billing_contact_remove(contact=contact)
    messages.success(
        request,
        _("%(email)s no longer receives statements and notices.") % {"email": contact.email},
    )
    return redirect("portal:billing_contacts")
