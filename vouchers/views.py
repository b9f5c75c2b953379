"""Portal: "Register credit code" (on the Credits page, and its own page when a code is
refused, so the customer can correct what they typed)."""

from django.contrib import messages
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext

from accounts.portal import portal_view
from accounts.roles import role_can

from .exceptions import RedemptionLocked, VoucherError
from .forms import VoucherRedeemForm
from .models import VoucherRedemption
from .ratelimit import AttemptLimiter, client_ip
from .selectors import company_pending_credits, pending_total
from .services import voucher_redeem_attempt

REDEEM_CAPABILITY = "redeem_vouchers"


def credits_page_context(request) -> dict:
    """The voucher part of the Credits page (``billing.views.credits``): the form, whether
    attempts are locked and until when, and the credit waiting for the next invoice."""
    company = request.company
    pending = company_pending_credits(company)
    context = {
        "pending_credits": pending,
        "pending_credit_total": pending_total(pending, company.currency),
    }
    if role_can(request.membership.role, REDEEM_CAPABILITY):
        context["voucher_form"] = VoucherRedeemForm()
        context["voucher_locked_until"] = _limiter(request).locked_until(timezone.now())
    return context


@portal_view(REDEEM_CAPABILITY)
def redeem(request):
    """GET: the form. POST: register the code for the user's current company (and no
    other: the company comes from the user's own membership), then back to Credits with
    what it gave; a refused code shows this page again with the reason and what was
    typed."""
    form = VoucherRedeemForm(request.POST if request.method == "POST" else None)
    status = 200
    locked_until = _limiter(request).locked_until(timezone.now())
    if form.is_bound:
        status = 400
        if form.is_valid():
            try:
                redemption = voucher_redeem_attempt(
                    company=request.company,
                    code=form.cleaned_data["code"],
                    user=request.user,
                    ip=client_ip(request),
                )
            except RedemptionLocked as error:
                locked_until = error.locked_until  # the page says so, above the form
            except VoucherError as error:
                form.add_error("code", str(error))
                locked_until = error.locked_until or locked_until
            else:
                messages.success(request, _success_message(redemption))
                return redirect("portal:credits")
    return render(
        request,
        "portal/credits/redeem.html",
        {"voucher_form": form, "voucher_locked_until": locked_until},
        status=status,
    )


def _limiter(request) -> AttemptLimiter:
    return AttemptLimiter(
        user_id=request.user.pk, company_id=request.company.pk, ip=client_ip(request)
    )


def _success_message(redemption: VoucherRedemption) -> str:
    if redemption.transaction_id is not None:
        lot = redemption.transaction.created_lot
        expires = timezone.localtime(lot.expires_at, redemption.company.tzinfo)
        return gettext("Credit code registered: %(amount)s added, usable until %(date)s.") % {
            "amount": redemption.amount,
            "date": f"{expires:%Y-%m-%d %H:%M}",
        }
    return gettext(
        "Credit code registered: %(amount)s will be credited on your next invoice, before tax."
    ) % {"amount": redemption.amount}
