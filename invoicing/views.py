"""Portal pages of invoicing: the statements list, a statement's web view, its PDF and the
CSV of its detail records. Every statement is looked up through ``request.company``, so
another company's statement is a 404."""

from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render

from accounts.portal import portal_view

from .documents import statement_context, statement_csv_rows, statement_pdf
from .models import Statement
from .selectors import company_statements


@portal_view("view_billing")
def statements(request):
    return render(
        request,
        "portal/statements.html",
        {"statements": company_statements(request.company)[:120]},
    )


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
    response = HttpResponse(statement_pdf(statement), content_type="application/pdf")
    response["Content-Disposition"] = f'inline; filename="{statement.number}.pdf"'
    response["Cache-Control"] = "private, no-store"
    return response
