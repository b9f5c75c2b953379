"""Portal pages of invoicing: the statements list, a statement's web view, its PDF and the
CSV of its detail records; the payment history with its receipts and credit notes; the
top-up reminder. Every document is looked up through ``request.company``, so another
company's is a 404."""

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from djmoney.money import Money

from accounts.portal import portal_view
from billing.money import quantize_amount
from billing.selectors import company_available

from .documents import (
    credit_note_pdf,
    receipt_pdf,
    statement_context,
    statement_csv_rows,
    statement_pdf,
)
from .forms import TopUpReminderForm
from .models import CreditNote, Payment, Statement
from .selectors import (
    company_credit_notes,
    company_payments,
    company_statements,
    company_topup_reminder,
    payment_history_rows,
)
from .topup import TopUpReminderError, topup_reminder_remove, topup_reminder_set

PAYMENTS_PER_PAGE = 25


@portal_view("view_billing")
def statements(request):
    today = timezone.now().astimezone(request.company.tzinfo).date()
    statements = list(company_statements(request.company)[:120])
    for statement in statements:
        statement.overdue = statement.is_overdue_on(today)
    return render(request, "portal/statements.html", {"statements": statements})


@portal_view("view_billing")
def statement_detail(request, pk: int):
    statement = get_object_or_404(company_statements(request.company), pk=pk)
    return render(request, "portal/statement.html", statement_context(statement))


@portal_view("view_billing")
def statement_pdf_download(request, pk: int):
    return pdf_response(get_object_or_404(company_statements(request.company), pk=pk))


@portal_view("view_billing")
def statement_csv_download(request, pk: int):
    statement = get_object_or_404(company_statements(request.company), pk=pk)
    response = StreamingHttpResponse(statement_csv_rows(statement), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="{statement.number}-usage.csv"'
    return response


def pdf_response(statement: Statement) -> HttpResponse:
    return _pdf_inline(statement_pdf(statement), statement.number)


def _pdf_inline(content: bytes, number: str) -> HttpResponse:
    """A document's PDF, shown in the browser, named by its number, never cached."""
    response = HttpResponse(content, content_type="application/pdf")
    response["Content-Disposition"] = f'inline; filename="{number}.pdf"'
    response["Cache-Control"] = "private, no-store"
    return response


@portal_view("view_billing")
def payment_history(request):
    """Payments newest first, paginated by payment (a fixed number of queries per page);
    each payment shows one row per invoice it paid. Below them the credit notes, which
    settle invoices too, paginated apart (``?notes=``)."""
    page = Paginator(
        company_payments(request.company).prefetch_related("allocations__statement"),
        PAYMENTS_PER_PAGE,
    ).get_page(request.GET.get("page"))
    notes = Paginator(company_credit_notes(request.company), PAYMENTS_PER_PAGE).get_page(
        request.GET.get("notes")
    )
    return render(
        request,
        "portal/payments.html",
        {"page": page, "rows": payment_history_rows(page.object_list), "notes": notes},
    )


@portal_view("view_billing")
def payment_receipt_download(request, pk: int):
    return receipt_response(get_object_or_404(company_payments(request.company), pk=pk))


def receipt_response(payment: Payment) -> HttpResponse:
    return _pdf_inline(receipt_pdf(payment), payment.receipt_number)


@portal_view("view_billing")
def credit_note_pdf_download(request, pk: int):
    return credit_note_response(get_object_or_404(company_credit_notes(request.company), pk=pk))


def credit_note_response(note: CreditNote) -> HttpResponse:
    return _pdf_inline(credit_note_pdf(note), note.number)


@portal_view("manage_billing")
def topup_reminder(request):
    """GET: the reminder's form, filled in with the reminder as it is (or the user's own
    address). POST: set it (a refused amount or address shows the form again, 400), or stop
    it (``action=stop``); then back to Credits."""
    company = request.company
    reminder = company_topup_reminder(company)
    if request.method == "POST" and request.POST.get("action") == "stop":
        if topup_reminder_remove(company=company):
            messages.success(request, _("The top-up reminder is stopped."))
        return redirect(reverse("portal:credits") + "#topup")
    if reminder is not None:
        initial = {
            # As the currency writes it ("10000" yen, "12.50" dollars), not as the column keeps it.
            "threshold": quantize_amount(reminder.threshold.amount, company.currency),
            "recipients": "\n".join(reminder.recipients),
        }
    else:
        initial = {"recipients": request.user.email}
    form = TopUpReminderForm(
        request.POST if request.method == "POST" else None,
        initial=initial,
        currency=company.currency,
    )
    status = 200
    if form.is_bound:
        status = 400
        if form.is_valid():
            try:
                saved = topup_reminder_set(
                    company=company,
                    threshold=Money(form.cleaned_data["threshold"], company.currency),
                    recipients=form.addresses(),
                    actor=request.user,
                )
            except TopUpReminderError as error:
                form.add_error(error.field, str(error))
            else:
                messages.success(
                    request,
                    _(
                        "We will email %(addresses)s when your available credit falls below "
                        "%(threshold)s."
                    )
                    % {"addresses": ", ".join(saved.recipients), "threshold": saved.threshold},
                )
                return redirect(reverse("portal:credits") + "#topup")
    return render(
        request,
        "portal/topup_reminder.html",
        {"form": form, "reminder": reminder, "available": company_available(company)},
        status=status,
    )
