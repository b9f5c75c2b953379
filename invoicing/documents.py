"""Statement documents: the PDF (WeasyPrint) and the CSV of detail records.

The PDF is rendered from the same template context as the web page, in the statement's
language, and returned as bytes to a view that has checked access: documents are never
written to a public media URL. An issued statement's or credit note's PDF is rendered once
and kept in the database (``KeptPdf``): every download and email hands out the same bytes.

A process keeps what every PDF needs: the stylesheet (``pdf.css``), parsed once, and a
WeasyPrint ``FontConfiguration`` per thread, whose Pango font map keeps the fonts loaded
between documents. A new configuration for each document (WeasyPrint's default) loads them
again: ~15 ms more per PDF, and with Noto Sans CJK twice the peak memory (~450 MB instead
of ~220 MB for a process rendering Japanese statements). Where the time goes, and why the
fonts are named explicitly, is in ``pdf.css``. Japanese text is set first in a subset of
Noto Sans CJK JP, when ``manage.py build_pdf_fonts`` has built it (``fonts.py``).
"""

import atexit
import csv
import functools
import threading
import zoneinfo
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.utils import timezone, translation

from billing.money import currency_exponent

from .fonts import FAMILY, font_paths
from .models import CreditNote, KeptPdf, Payment, Statement
from .selectors import (
    credit_note_lines,
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


def statement_context(statement: Statement) -> dict:
    """The web page's and the PDF's context. The parties are as the statement recorded them
    at issue (``Statement.parties``), not as they are now: an issued document never changes."""
    parties = statement.parties
    return {
        "statement": statement,
        "company": parties["company"],
        "contact": parties["contact"],
        "sections": statement_sections(statement),
        "totals": statement_totals(statement),
        "operator": parties["operator"],
    }


STYLESHEET = Path(__file__).with_name("pdf.css")
USER_AGENT_STYLESHEET = Path(__file__).with_name("pdf_ua.css")
# The elements that the PDF templates may use: those that ``pdf_ua.css`` styles as
# WeasyPrint's own user-agent stylesheet would (a test checks the templates against it).
PDF_ELEMENTS = frozenset(
    {"html", "head", "meta", "title", "style", "body", "div", "header", "section", "h1", "h2"}
    | {"p", "dl", "dt", "dd", "table", "thead", "tbody", "tfoot", "tr", "th", "td"}
    | {"b", "strong", "br"}
)
_fonts = threading.local()


def pdf_fonts_free() -> None:
    """Drop this thread's font configuration. One with @font-face fonts removes its
    temporary copy of them when collected; left to interpreter shutdown, that fails (its
    module is gone) and leaves ~3 MB in /tmp. Called at exit and when a worker stops."""
    _fonts.__dict__.clear()


atexit.register(pdf_fonts_free)

# Latin and Japanese text, regular and bold: every font the documents use.
WARM_UP_HTML = (
    '<p>Invoice 0123456789 <b>Total due ¥9,187</b></p><p lang="ja">請求書 <b>ご請求金額</b></p>'
)


@functools.cache
def pdf_stylesheet():
    """``pdf.css``, parsed once per process. It has no ``@font-face`` rule, so it is bound
    to no font configuration; rendering only reads it, as it does WeasyPrint's own
    user-agent stylesheet, which every document and thread shares too."""
    from weasyprint import CSS  # heavy: loaded only when a PDF is asked for

    return CSS(filename=str(STYLESHEET))


@functools.cache
def pdf_user_agent_stylesheet():
    """``pdf_ua.css``, parsed once per process: the user-agent rules for ``PDF_ELEMENTS``."""
    from weasyprint import CSS

    return CSS(filename=str(USER_AGENT_STYLESHEET))


@functools.cache
def _document_class():
    """WeasyPrint's ``HTML`` with ``pdf_ua.css`` as its user-agent stylesheet. WeasyPrint
    has no option for this; ``_ua_stylesheets`` is the method its own HTML class uses to
    name the stylesheet (WeasyPrint 70; tests check that it still exists and that the
    layout is the same as with WeasyPrint's own)."""
    from weasyprint import HTML

    class DocumentHTML(HTML):
        def _ua_stylesheets(self, *args, **kwargs):
            return [pdf_user_agent_stylesheet()]

    return DocumentHTML


def font_configuration():
    """This thread's WeasyPrint font configuration, created on first use. One per thread
    (runserver and threaded servers render in threads): WeasyPrint does not say that one
    may be used by two documents at once, and it keeps caches in it in plain dicts."""
    config = getattr(_fonts, "config", None)
    if config is None:
        from weasyprint.text.fonts import FontConfiguration

        config = _fonts.config = FontConfiguration()
        _fonts.faces = font_face_stylesheet(config)
    return config


def font_face_stylesheet(config):
    """The ``@font-face`` rules of the subset Japanese font (``fonts.py``) that ``pdf.css``
    names first for Japanese, or None when it is not built (then Noto Sans CJK JP sets it,
    as before). Unlike ``pdf.css`` this one registers the fonts in a font configuration,
    so each thread's configuration has its own, made with it; the files are looked for
    then, so a process started before ``build_pdf_fonts`` ran goes on without them."""
    from weasyprint import CSS

    paths = font_paths()
    if not all(path.exists() for path in paths.values()):
        return None
    rules = "".join(
        f'@font-face {{ font-family: "{FAMILY}"; src: url("{path.resolve().as_uri()}"); '
        f"font-weight: {weight}; }}\n"
        for weight, path in (("normal", paths["Regular"]), ("bold", paths["Bold"]))
    )
    return CSS(string=rules, font_config=config)


def html_pdf(html: str) -> bytes:
    """An HTML document (a rendered ``*_pdf.html`` template) as PDF, styled by ``pdf.css``."""
    config = font_configuration()
    faces = getattr(_fonts, "faces", None)
    return _document_class()(string=html, base_url=str(settings.BASE_DIR)).write_pdf(
        stylesheets=[pdf_stylesheet()] if faces is None else [faces, pdf_stylesheet()],
        font_config=config,
    )


def pdf_warm_up() -> None:
    """Load WeasyPrint, the stylesheet and the fonts in this process and thread, so that its
    first real PDF is not several times slower than the next ones (~0.6 s instead of
    ~0.08 s). Call it where a worker process starts; it takes ~0.5 s."""
    html_pdf(WARM_UP_HTML)


def statement_pdf(statement: Statement) -> bytes:
    """The statement's PDF: rendered on first use and kept (``kept_pdf``)."""
    return kept_pdf(statement, statement_pdf_render)


def statement_pdf_render(statement: Statement) -> bytes:
    """The statement as an A4 PDF in the company's language (at issue). A statement of
    about 20 lines fits one page."""
    with translation.override(statement.language or "en"):
        html = render_to_string("invoicing/statement_pdf.html", statement_context(statement))
    return html_pdf(html)


def kept_pdf(document: Statement | CreditNote, render: Callable) -> bytes:
    """The issued ``document``'s PDF as first rendered (``render(document)``), the same
    bytes on every download and email: WeasyPrint stamps each rendering with its time, and
    templates, fonts and WeasyPrint itself change between releases; an issued document does
    not. Two first requests at once may both render; the first stored is the one kept, and
    both hand it out (one query after the first use)."""
    owner = (
        {"statement": document} if isinstance(document, Statement) else {"credit_note": document}
    )
    kept = KeptPdf.objects.filter(**owner).values_list("content", flat=True)
    found = kept.first()
    if found is not None:
        return bytes(found)
    content = render(document)
    try:
        with transaction.atomic():  # a savepoint: the caller's transaction goes on
            KeptPdf.objects.create(**owner, content=content, rendered_at=timezone.now())
    except IntegrityError:  # another request kept its rendering first
        return bytes(kept.get())
    return content


def receipt_context(payment: Payment) -> dict:
    """As ``statement_context``: the parties as the payment recorded them."""
    allocations, unallocated = payment_receipt_lines(payment)
    return {
        "payment": payment,
        "language": payment.company.language,
        "company": payment.parties["company"],
        "contact": payment.parties["contact"],
        "allocations": allocations,
        "unallocated": unallocated,
        "operator": payment.parties["operator"],
    }


def receipt_pdf(payment: Payment) -> bytes:
    """The payment's receipt as an A4 PDF in the company's language."""
    with translation.override(payment.company.language or "en"):
        html = render_to_string("invoicing/receipt_pdf.html", receipt_context(payment))
    return html_pdf(html)


def credit_note_context(note: CreditNote) -> dict:
    """As ``statement_context``: the parties as the note recorded them at issue."""
    return {
        "note": note,
        "language": note.company.language,
        "company": note.parties["company"],
        "contact": note.parties["contact"],
        "operator": note.parties["operator"],
        "lines": credit_note_lines(note),
    }


def credit_note_pdf(note: CreditNote) -> bytes:
    """The credit note's PDF: rendered on first use and kept (``kept_pdf``)."""
    return kept_pdf(note, credit_note_pdf_render)


def credit_note_pdf_render(note: CreditNote) -> bytes:
    """The credit note as an A4 PDF in the company's language."""
    with translation.override(note.company.language or "en"):
        html = render_to_string("invoicing/credit_note_pdf.html", credit_note_context(note))
    return html_pdf(html)


class _Echo:
    def write(self, value):
        return value


def statement_csv_rows(statement: Statement) -> Iterator[str]:
    """The CSV, one line at a time, from a chunked cursor. Times are ISO 8601 in the
    statement's billing time zone, with its offset; numbers without the database's padding
    ("300", not "300.000000"), amounts with at least the currency's decimals ("90" yen,
    "1.20" dollars) and more only where a record has them (¥0.0125)."""
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_HEADER)
    currency = statement.currency
    zone = zoneinfo.ZoneInfo(statement.billing_timezone)
    places = Decimal(1).scaleb(-currency_exponent(currency))
    for row in statement_usage_records(statement):
        occurred_at, *rest, amount = row
        yield writer.writerow(
            [
                occurred_at.astimezone(zone).isoformat(),
                *(_plain(value) for value in rest),
                format(max(amount.normalize(), amount.quantize(places), key=_places), "f"),
                currency,
            ]
        )


def _places(value: Decimal) -> int:
    return -value.as_tuple().exponent


def _plain(value):
    """A CSV cell: nothing for None, a Decimal without padding or exponent."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value else "0"
    return value
