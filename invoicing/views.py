"""Portal pages of invoicing: the statements list, a statement's web view, its PDF and the
CSV of its detail records; the payment history with its receipts and credit notes. Every
document is looked up through ``request.company``, so another company's is a 404."""

from django.core.paginator import Paginator
from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone

from accounts.portal import portal_view

from .documents import (
    credit_note_pdf,
    receipt_pdf,
    statement_context,
    statement_csv_rows,
    statement_pdf,
)
from .models import CreditNote, Payment, Statement
from .selectors import (
    company_credit_notes,
    company_payments,
    company_statements,
    payment_history_rows,
)

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
