"""Statement documents: the PDF (WeasyPrint) and the CSV of detail records.

The PDF is rendered from the same template context as the web page, in the statement's
language, and returned as bytes to a view that has checked access: documents are never
written to a public media URL.
"""

import csv
from collections.abc import Iterator

from django.conf import settings
from django.template.loader import render_to_string
from django.utils import translation

from .models import Payment, Statement
from .selectors import (
    payment_receipt_lines,
    statement_sections,
    statement_totals,
    statement_usage_records,
)

CSV_HEADER = [
    "occurred_at",
    "event_id",
    "subaccount",
    "service",
    "destination",
    "quantity",
    "billed_quantity",
    "from_bundle",
    "unit_price",
    "amount",
    "currency",
]


def operator_details() -> dict:
    return {
        "name": settings.OPERATOR_NAME,
        "address": settings.TOLLGATE_OPERATOR_ADDRESS,
        "registration": settings.TOLLGATE_OPERATOR_REGISTRATION,
        "email": settings.DEFAULT_FROM_EMAIL,
    }


def statement_context(statement: Statement) -> dict:
    return {
        "statement": statement,
        "company": statement.company,
        "contact": statement.company.billing_contacts.order_by("id").first(),
        "sections": statement_sections(statement),
        "totals": statement_totals(statement),
        "operator": operator_details(),
    }


def statement_pdf(statement: Statement) -> bytes:
    """The statement as an A4 PDF in the company's language (at issue)."""
    from weasyprint import HTML  # heavy: loaded only when a PDF is asked for

    with translation.override(statement.language or "en"):
        html = render_to_string("invoicing/statement_pdf.html", statement_context(statement))
    return HTML(string=html, base_url=str(settings.BASE_DIR)).write_pdf()


def receipt_context(payment: Payment) -> dict:
    allocations, unallocated = payment_receipt_lines(payment)
    return {
        "payment": payment,
        "company": payment.company,
        "contact": payment.company.billing_contacts.order_by("id").first(),
        "allocations": allocations,
        "unallocated": unallocated,
        "operator": operator_details(),
    }


def receipt_pdf(payment: Payment) -> bytes:
    """The payment's receipt as an A4 PDF in the company's language."""
    from weasyprint import HTML

    with translation.override(payment.company.language or "en"):
        html = render_to_string("invoicing/receipt_pdf.html", receipt_context(payment))
    return HTML(string=html, base_url=str(settings.BASE_DIR)).write_pdf()


class _Echo:
    def write(self, value):
        return value


def statement_csv_rows(statement: Statement) -> Iterator[str]:
    """The CSV, one line at a time, from a chunked cursor."""
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_HEADER)
    currency = statement.currency
    for row in statement_usage_records(statement):
        occurred_at, *rest, amount = row
        yield writer.writerow(
            [occurred_at.isoformat(), *("" if v is None else v for v in rest), amount, currency]
        )
