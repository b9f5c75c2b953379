"""The portal's statements: list, web view, PDF (checked with pypdf) and the streamed CSV;
another company's statement is a 404."""

import io
import re
import threading
from datetime import UTC, datetime
from decimal import Decimal
from unittest import mock
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.http import StreamingHttpResponse
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from djmoney.money import Money
from pypdf import PdfReader

from accounts.models import Company, Membership
from billing.models import ApiKey, UsageRecord
from invoicing import documents
from invoicing.documents import (
    font_configuration,
    kept_pdf,
    pdf_stylesheet,
    statement_pdf,
    statement_pdf_render,
)
from invoicing.fonts import font_paths, japanese_characters, pdf_fonts_build
from invoicing.models import ImmutableError, KeptPdf, Statement
from invoicing.services import statement_issue
from tests.factories import CompanyFactory, MembershipFactory

from .helpers import fee, usage

pytestmark = pytest.mark.django_db

TOKYO = ZoneInfo("Asia/Tokyo")
AFTER_ALL = datetime(2027, 1, 1, tzinfo=UTC)


@pytest.fixture
def statement(client):
    company = CompanyFactory(
        mode=Company.Mode.POSTPAID,
        created_at=datetime(2025, 1, 1, tzinfo=UTC),
        name="Kumo Voice GK",
    )
    fee(company, "3000", at=datetime(2026, 4, 1, tzinfo=TOKYO), description="Plan Business, April")
    usage(company, "450", at=datetime(2026, 4, 3, tzinfo=TOKYO), quantity=300, records=5)
    membership = MembershipFactory(company=company, role=Membership.Role.ADMIN)
    client.force_login(membership.user)
    return statement_issue(company=company, year=2026, month=4, now=AFTER_ALL)


def test_statements_page_lists_newest_first_with_web_pdf_and_csv_links(client, statement):
    page = client.get(reverse("portal:statements")).text
    assert statement.number in page
    for name in ("portal:statement", "portal:statement_pdf", "portal:statement_csv"):
        assert reverse(name, args=[statement.pk]) in page
    assert reverse("portal:statements") in client.get(reverse("portal:dashboard")).text


def test_statements_page_shows_each_invoice_pending_then_overdue(client, statement):
    # Due 2026-05-31 in Tokyo: pending that day, overdue from the next.
    with time_machine.travel(datetime(2026, 5, 31, 23, 0, tzinfo=TOKYO)):
        page = client.get(reverse("portal:statements")).text
    assert "Pending" in page and "Overdue" not in page
    with time_machine.travel(datetime(2026, 6, 1, 0, 30, tzinfo=TOKYO)):
        page = client.get(reverse("portal:statements")).text
    assert "Overdue" in page


def test_web_view_shows_lines_and_totals(client, statement):
    page = client.get(reverse("portal:statement", args=[statement.pk])).text
    assert "Plan Business, April" in page
    assert "¥3,795" in page  # 3,450 + tax 345


def test_pdf_has_the_number_totals_and_page_numbers(client, statement):
    response = client.get(reverse("portal:statement_pdf", args=[statement.pk]))
    assert response["Content-Type"] == "application/pdf"
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(response.content)).pages)
    assert statement.number in text
    assert "3,795" in text and "345" in text
    assert "Page 1 / 1" in text
    assert "Plan Business, April" in text


def test_pdf_labels_follow_the_company_language(client):
    company = CompanyFactory(
        mode=Company.Mode.POSTPAID, language="ja", created_at=datetime(2025, 1, 1, tzinfo=UTC)
    )
    fee(company, "1000", at=datetime(2026, 4, 1, tzinfo=TOKYO))
    statement = statement_issue(company=company, year=2026, month=4, now=AFTER_ALL)
    client.force_login(MembershipFactory(company=company).user)
    response = client.get(reverse("portal:statement_pdf", args=[statement.pk]))
    text = PdfReader(io.BytesIO(response.content)).pages[0].extract_text()
    assert "請求書" in text
    # The tax line in Japanese too, with the rate and the base it was computed on.
    assert "消費税 10%（課税対象額 ￥1,000）" in text


def test_the_tax_line_names_its_rate_and_base(client, statement):
    page = client.get(reverse("portal:statement", args=[statement.pk])).text
    assert "Tax 10% on ¥3,450" in page


def _fonts(content: bytes) -> set[str]:
    """The base font names a PDF embeds, without their subset tags (``ABCDEF+``)."""
    return {
        font["/BaseFont"].split("+", 1)[-1]
        for page in PdfReader(io.BytesIO(content)).pages
        for font in page["/Resources"]["/Font"].values()
    }


def _month_of_twenty_lines(company) -> Statement:
    """A plan fee, 14 DID fees, 3 services' usage and tax: the statement of a usual month."""
    fee(company, "3000", at=datetime(2026, 4, 1, tzinfo=TOKYO), description="Plan Business")
    for n in range(14):
        fee(company, "300", at=datetime(2026, 4, 1, tzinfo=TOKYO), description=f"DID {n:04d}")
    for service in ("voice", "sms", "data"):
        usage(company, "100", at=datetime(2026, 4, 3, tzinfo=TOKYO), service=service)
    return statement_issue(company=company, year=2026, month=4, now=AFTER_ALL)


@pytest.mark.parametrize(
    ("language", "total_due", "page"), [("en", "Total due", "Page"), ("ja", "ご請求金額", "ページ")]
)
def test_a_statement_of_twenty_lines_fits_one_page_in_its_language_font(language, total_due, page):
    company = CompanyFactory(
        mode=Company.Mode.POSTPAID, language=language, created_at=datetime(2025, 1, 1, tzinfo=UTC)
    )
    statement = _month_of_twenty_lines(company)
    assert statement.lines.count() >= 19
    content = statement_pdf(statement)
    [only] = PdfReader(io.BytesIO(content)).pages
    text = only.extract_text()
    assert total_due in text and "DID 0013" in text and f"{page} 1 / 1" in text
    # Japanese needs Noto Sans CJK, whose subsets are large and slow to make; the footer
    # has the document's font, not a serif default.
    ja = "Tollgate-Noto-Sans-JP" if _subset_built() else "Noto-Sans-CJK-JP"  # build_pdf_fonts
    expected = {"en": {"Liberation-Sans", "Liberation-Sans-Bold"},
                "ja": {ja, f"{ja}-Bold"}}  # fmt: skip
    assert _fonts(content) == expected[language]


def test_cjk_characters_in_an_english_statement_fall_back_to_the_japanese_font():
    company = CompanyFactory(
        mode=Company.Mode.POSTPAID, name="株式会社クモ", created_at=datetime(2025, 1, 1, tzinfo=UTC)
    )
    fee(company, "1000", at=datetime(2026, 4, 1, tzinfo=TOKYO))
    content = statement_pdf(statement_issue(company=company, year=2026, month=4, now=AFTER_ALL))
    assert "株式会社クモ" in PdfReader(io.BytesIO(content)).pages[0].extract_text()
    ja = "Tollgate-Noto-Sans-JP" if _subset_built() else "Noto-Sans-CJK-JP"  # build_pdf_fonts
    assert f"{ja}-Bold" in _fonts(content)  # the name is bold


def test_pdfs_share_the_parsed_stylesheet_and_the_threads_font_configuration(
    statement, monkeypatch
):
    import weasyprint

    calls = []
    write_pdf = weasyprint.HTML.write_pdf

    def spy(self, *args, **kwargs):
        calls.append(kwargs)
        return write_pdf(self, *args, **kwargs)

    monkeypatch.setattr(weasyprint.HTML, "write_pdf", spy)
    statement_pdf_render(statement)
    statement_pdf_render(statement)
    first, second = calls
    # With the subset Japanese font built, its @font-face stylesheet comes first.
    assert first["stylesheets"] == second["stylesheets"]
    assert first["stylesheets"][-1] is pdf_stylesheet()
    assert first["font_config"] is second["font_config"] is font_configuration()
    other_thread = []
    thread = threading.Thread(target=lambda: other_thread.append(font_configuration()))
    thread.start()
    thread.join()
    assert other_thread[0] is not first["font_config"]


# --- The PDF of an issued statement is kept -------------------------------------------------


def test_every_download_hands_out_the_bytes_first_rendered(client, statement, monkeypatch):
    url = reverse("portal:statement_pdf", args=[statement.pk])
    first = client.get(url).content
    renders = []
    monkeypatch.setattr(documents, "html_pdf", lambda html: renders.append(html) or b"%PDF new")
    with CaptureQueriesContext(connection) as queries:
        again = client.get(url)
    # Rendered again, WeasyPrint's output would differ: it stamps each PDF with its time.
    assert again.content == first and renders == []
    assert "invoicing_keptpdf" in queries[-1]["sql"]
    # The session, the user, the membership, the statement, then only the kept PDF.
    assert len(queries) == 5
    assert KeptPdf.objects.get().statement == statement


def test_the_statement_email_carries_the_kept_pdf(client, statement):
    downloaded = client.get(reverse("portal:statement_pdf", args=[statement.pk])).content
    assert statement_pdf(statement) == downloaded
    assert KeptPdf.objects.count() == 1


def test_two_first_renderings_at_once_hand_out_the_one_kept(statement):
    """Another request kept its rendering while this one rendered: this one's is dropped,
    and both hand out the same document."""

    def render_while_another_keeps(document):
        KeptPdf.objects.create(
            statement=document, content=b"%PDF theirs", rendered_at=timezone.now()
        )
        return b"%PDF ours"

    assert kept_pdf(statement, render_while_another_keeps) == b"%PDF theirs"
    assert statement_pdf(statement) == b"%PDF theirs"
    assert KeptPdf.objects.count() == 1


def test_a_kept_pdf_is_final(statement):
    statement_pdf(statement)
    kept = KeptPdf.objects.get()
    kept.content = b"%PDF altered"
    with pytest.raises(ImmutableError):
        kept.save()
    with pytest.raises(ImmutableError):
        kept.delete()
    with pytest.raises(IntegrityError), transaction.atomic():
        KeptPdf.objects.create(content=b"%PDF", rendered_at=AFTER_ALL)  # of no document


@pytest.mark.parametrize(
    "name", ["portal:statement", "portal:statement_pdf", "portal:statement_csv"]
)
def test_another_companys_statement_is_a_404(client, statement, name):
    other = MembershipFactory(company=CompanyFactory())
    client.force_login(other.user)
    assert client.get(reverse(name, args=[statement.pk])).status_code == 404


def test_member_role_without_billing_access_cannot_open_statements(client, statement):
    member = MembershipFactory(company=statement.company, role=Membership.Role.MEMBER)
    client.force_login(member.user)
    assert client.get(reverse("portal:statement_pdf", args=[statement.pk])).status_code == 403


def test_csv_of_a_hundred_thousand_records_streams(client, statement):
    company = statement.company
    api_key = ApiKey.objects.first()
    at = datetime(2026, 4, 20, tzinfo=TOKYO)
    fields = {
        "api_key": api_key,
        "account_code": company.account_code,
        "company": company,
        "service": "api",
        "quantity": Decimal(1),
        "occurred_at": at,
        "received_at": at,
        "status": UsageRecord.Status.CHARGED,
        "amount": Money(Decimal("0.0125"), "JPY"),
    }
    UsageRecord.objects.bulk_create(
        (UsageRecord(event_id=f"bulk-{n}", **fields) for n in range(100_000)), batch_size=5000
    )
    response = client.get(reverse("portal:statement_csv", args=[statement.pk]))
    assert isinstance(response, StreamingHttpResponse)
    assert not isinstance(response.streaming_content, list | tuple)
    lines = 0
    for chunk in response.streaming_content:
        lines += chunk.count(b"\n")
    assert lines == 1 + 5 + 100_000  # header, the fixture's records, the bulk ones
    assert connection.vendor in ("sqlite", "postgresql")


def _subset_built() -> bool:
    return all(path.exists() for path in font_paths().values())


# The Japanese labels of a statement, in a tiny font: the full character set takes ~70 s.
TINY_JAPANESE = " 請求書ご金額ページ0123456789"  # with a space, as Pango keeps the font for spaces


@pytest.fixture(scope="module")
def tiny_subset_dir(tmp_path_factory):
    """Built once for the module: a var dir whose fonts/ has the tiny font."""
    var_dir = tmp_path_factory.mktemp("var")
    built = pdf_fonts_build(directory=var_dir / "fonts", characters=TINY_JAPANESE)
    assert all(built.values())
    return var_dir / "fonts"


@pytest.fixture
def with_tiny_subset(tiny_subset_dir, settings):
    """PDFs of this thread use the tiny font, in a font configuration of their own,
    dropped afterwards so that other tests see the project's VAR_DIR fonts again."""
    settings.VAR_DIR = tiny_subset_dir.parent
    documents._fonts.__dict__.clear()
    yield
    documents._fonts.__dict__.clear()


def test_building_the_pdf_fonts_makes_both_weights_then_skips_them(tiny_subset_dir):
    paths = font_paths(tiny_subset_dir)
    assert all(path.stat().st_size > 0 for path in paths.values())
    again = pdf_fonts_build(directory=tiny_subset_dir, characters=TINY_JAPANESE)
    assert again == {paths["Regular"]: False, paths["Bold"]: False}


def test_the_full_character_set_has_jis_levels_one_and_two_but_not_rare_kanji():
    characters = set(japanese_characters())
    assert 6_800 < len(characters) < 8_000
    assert {"亜", "熙", "あ", "ヴ", "ｱ", "￥", "¥", "〒", "※"} <= characters
    assert not {"𠮷", "髙"} & characters


def test_a_japanese_statement_uses_the_built_subset_font(with_tiny_subset):
    company = CompanyFactory(
        mode=Company.Mode.POSTPAID, language="ja", created_at=datetime(2025, 1, 1, tzinfo=UTC)
    )
    content = statement_pdf(_month_of_twenty_lines(company))
    text = PdfReader(io.BytesIO(content)).pages[0].extract_text()
    assert "請求書" in text and "ご請求金額" in text and "ページ 1 / 1" in text
    assert {"Tollgate-Noto-Sans-JP", "Tollgate-Noto-Sans-JP-Bold"} <= _fonts(content)


def test_a_kanji_outside_the_subset_falls_back_to_the_full_font(with_tiny_subset):
    company = CompanyFactory(
        mode=Company.Mode.POSTPAID,
        language="ja",
        name="𠮷野髙商事",
        created_at=datetime(2025, 1, 1, tzinfo=UTC),
    )
    fee(company, "1000", at=datetime(2026, 4, 1, tzinfo=TOKYO))
    content = statement_pdf(statement_issue(company=company, year=2026, month=4, now=AFTER_ALL))
    assert "𠮷野髙商事" in PdfReader(io.BytesIO(content)).pages[0].extract_text()
    assert {"Tollgate-Noto-Sans-JP", "Noto-Sans-CJK-JP-Bold"} <= _fonts(content)


def test_without_the_built_fonts_no_font_face_is_declared(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    documents._fonts.__dict__.clear()
    try:
        font_configuration()
        assert documents._fonts.faces is None
    finally:
        documents._fonts.__dict__.clear()


# --- The PDFs' own user-agent stylesheet (invoicing/pdf_ua.css) ------------------------------


@pytest.mark.parametrize(
    "template", ["statement_pdf.html", "statement_body.html", "receipt_pdf.html"]
)
def test_pdf_templates_use_only_elements_the_pdf_user_agent_stylesheet_styles(template):
    source = (settings.BASE_DIR / "templates" / "invoicing" / template).read_text()
    elements = {name.lower() for name in re.findall(r"<([a-zA-Z][a-zA-Z0-9]*)", source)}
    assert elements - {"!doctype"} <= documents.PDF_ELEMENTS


@pytest.mark.parametrize("language", ["en", "ja"])
def test_a_statement_pdf_is_laid_out_as_with_weasyprints_own_stylesheet(statement, language):
    from weasyprint import HTML

    # The hook our stylesheet goes through: were it renamed, ours would silently not apply.
    assert callable(HTML._ua_stylesheets)
    statement.language = language
    ours = statement_pdf_render(statement)
    with mock.patch.object(documents, "_document_class", lambda: HTML):
        weasyprints = statement_pdf_render(statement)

    def drawn(content: bytes) -> bytes:
        return PdfReader(io.BytesIO(content)).pages[0].get_contents().get_data()

    assert drawn(ours) == drawn(weasyprints)


def test_the_built_font_puts_the_glyphs_statements_use_first(tiny_subset_dir):
    from fontTools.ttLib import TTFont

    font = TTFont(font_paths(tiny_subset_dir)["Regular"])
    order, cmap = font.getGlyphOrder(), font.getBestCmap()
    position = {character: order.index(cmap[ord(character)]) for character in TINY_JAPANESE}
    latin = " 0123456789"
    labels = [character for character in TINY_JAPANESE if character not in latin]
    # .notdef, then Latin-1 in code point order, then the catalog's characters (in the
    # labels 請求書, ご請求金額, ページ) in code point order.
    assert order[0] == ".notdef"
    assert [position[c] for c in latin] == sorted(position[c] for c in latin)
    assert max(position[c] for c in latin) < min(position[c] for c in labels)
    assert sorted(labels, key=position.get) == sorted(labels)


def test_the_pdfs_are_styled_with_their_own_user_agent_stylesheet(statement):
    own = documents.pdf_user_agent_stylesheet
    with mock.patch.object(documents, "pdf_user_agent_stylesheet", wraps=own) as sheet:
        statement_pdf(statement)
    assert sheet.called  # WeasyPrint asked our HTML class for its user-agent stylesheet


# --- Which detail records a statement holds --------------------------------------------------


def csv_event_ids(client, statement) -> list[str]:
    response = client.get(reverse("portal:statement_csv", args=[statement.pk]))
    rows = b"".join(response.streaming_content).decode().splitlines()[1:]
    return [row.split(",")[1] for row in rows]


def usage_line(statement, service="voice"):
    return statement.lines.get(group="usage", service=service)


@pytest.fixture
def kumo(client):
    company = CompanyFactory(
        mode=Company.Mode.POSTPAID, created_at=datetime(2025, 1, 1, tzinfo=UTC), tax_rate=0
    )
    client.force_login(MembershipFactory(company=company, role=Membership.Role.ADMIN).user)
    return company


def test_an_event_of_the_last_minute_received_after_the_month_is_on_the_next_statement(
    client, kumo
):
    """It happened at 23:59 on 31 March in Tokyo and was received (and charged) at 00:01 on
    1 April: its charge is April's, and so are its quantity and its CSV row."""
    usage(kumo, "120", at=datetime(2026, 3, 10, tzinfo=TOKYO), quantity=60, records=2)
    usage(
        kumo,
        "5",
        at=datetime(2026, 3, 31, 23, 59, tzinfo=TOKYO),
        received=datetime(2026, 4, 1, 0, 1, tzinfo=TOKYO),
        quantity=300,
    )
    march = statement_issue(
        company=kumo, year=2026, month=3, now=datetime(2026, 4, 1, 0, 5, tzinfo=TOKYO)
    )
    april = statement_issue(company=kumo, year=2026, month=4, now=AFTER_ALL)
    assert (usage_line(march).amount.amount, usage_line(march).quantity) == (120, 120)
    assert usage_line(march).record_count == 2 and len(csv_event_ids(client, march)) == 2
    assert (usage_line(april).amount.amount, usage_line(april).quantity) == (5, 300)
    assert usage_line(april).record_count == 1 and len(csv_event_ids(client, april)) == 1


def test_an_issued_statements_records_stay_when_late_events_of_its_month_arrive(client, kumo):
    usage(kumo, "120", at=datetime(2026, 3, 10, tzinfo=TOKYO), quantity=60, records=2)
    march = statement_issue(company=kumo, year=2026, month=3, now=AFTER_ALL)
    before = csv_event_ids(client, march)
    # An event of 20 March, reported in May: charged then, on May's statement.
    usage(
        kumo,
        "7",
        at=datetime(2026, 3, 20, tzinfo=TOKYO),
        received=datetime(2026, 5, 2, tzinfo=TOKYO),
        service="sms",
        quantity=1,
    )
    assert csv_event_ids(client, march) == before
    statement_issue(company=kumo, year=2026, month=4, now=AFTER_ALL)
    may = statement_issue(company=kumo, year=2026, month=5, now=AFTER_ALL)
    line = usage_line(may, "sms")
    assert (line.amount.amount, line.quantity, line.record_count) == (7, 1, 1)
    assert len(csv_event_ids(client, may)) == 1


@pytest.mark.postgres
def test_a_statements_records_are_read_through_their_index(client, statement):
    """The CSV's read: one company's charged records received in the window, found by the
    index on (company, received_at), never by reading all of the company's records."""
    from invoicing.selectors import statement_records

    sql, params = statement_records(statement).query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "usage_company_received" in plan and "Filter:" not in plan, plan


def test_csv_times_are_in_the_billing_time_zone_and_numbers_read_plainly(client, statement):
    response = client.get(reverse("portal:statement_csv", args=[statement.pk]))
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert lines[1].split(",")[:1] == ["2026-04-03T00:00:00+09:00"]
    assert lines[1].endswith(",voice,,300,,0,,90,JPY")


def test_csv_amounts_keep_the_currencys_decimals_and_a_records_own():
    from invoicing.documents import statement_csv_rows

    company = CompanyFactory(
        mode=Company.Mode.POSTPAID,
        currency="USD",
        billing_timezone="America/New_York",
        created_at=datetime(2025, 1, 1, tzinfo=UTC),
    )
    usage(company, "1.2", at=datetime(2026, 4, 3, 12, tzinfo=UTC), quantity=2, records=1)
    # Records priced in fractions of a cent add up to a charge in whole cents.
    usage(company, "0.05", at=datetime(2026, 4, 4, 12, tzinfo=UTC), quantity=1, records=4)
    april = statement_issue(company=company, year=2026, month=4, now=AFTER_ALL)
    rows = list(statement_csv_rows(april))[1:]
    assert rows[0].startswith("2026-04-03T08:00:00-04:00,")
    assert rows[0].strip().endswith(",1.20,USD") and rows[1].strip().endswith(",0.0125,USD")
    assert len(rows) == 5


def test_each_row_of_the_statements_list_adds_up_to_its_closing_balance(client):
    from invoicing.services import statement_issue as issue

    from .helpers import grant

    company = CompanyFactory(currency="USD", created_at=datetime(2025, 1, 1, tzinfo=UTC))
    grant(company, "50", at=datetime(2026, 4, 1, 12, tzinfo=UTC))
    usage(company, "12.5", at=datetime(2026, 4, 3, tzinfo=UTC))
    april = issue(company=company, year=2026, month=4, now=AFTER_ALL)
    client.force_login(MembershipFactory(company=company, role=Membership.Role.ADMIN).user)
    page = client.get(reverse("portal:statements")).text

    row = re.search(r"<tr>\s*<td[^>]*>2026-04</td>.*?</tr>", page, re.S).group(0)
    cells = re.findall(r'<td class="num">([^<]*)</td>', row)
    assert cells == ["$0.00", "$12.50", "$0.00", "-$50.00", "-$37.50"]
    assert april.other_changes == Money(-50, "USD")


def test_payment_lines_are_described_in_the_statements_language():
    from django.utils import translation

    from invoicing.models import StatementLine
    from invoicing.payments import payment_record, payment_reverse
    from invoicing.selectors import section_title, statement_sections

    company = CompanyFactory(
        mode=Company.Mode.POSTPAID, created_at=datetime(2025, 1, 1, tzinfo=UTC), tax_rate=0
    )
    fee(company, "1000", at=datetime(2026, 3, 2, tzinfo=TOKYO))
    statement_issue(company=company, year=2026, month=3, now=datetime(2026, 4, 1, 1, tzinfo=TOKYO))
    kept = payment_record(
        company=company, amount=Money(1000, "JPY"), received_on=datetime(2026, 4, 3).date(),
        reference="A", now=datetime(2026, 4, 3, tzinfo=TOKYO),
    )  # fmt: skip
    bounced = payment_record(
        company=company, amount=Money(500, "JPY"), received_on=datetime(2026, 4, 4).date(),
        reference="B", now=datetime(2026, 4, 4, tzinfo=TOKYO),
    )  # fmt: skip
    payment_reverse(
        payment=bounced, reason="Bounced", actor=None, now=datetime(2026, 4, 5, tzinfo=TOKYO)
    )
    april = statement_issue(company=company, year=2026, month=4, now=AFTER_ALL)

    def payment_lines(language):
        with translation.override(language):
            title = section_title(StatementLine.Group.PAYMENT, april)
            [section] = [each for each in statement_sections(april) if each.title == title]
            return [line.description for line in section.lines]

    assert payment_lines("en") == [
        f"Payment received (Bank transfer), receipt {kept.receipt_number}",
        f"Payment received (Bank transfer), receipt {bounced.receipt_number}",
        f"Payment {bounced.receipt_number} reversed (Bank transfer)",
    ]
    japanese = payment_lines("ja")
    assert all("Payment" not in text and "Bank transfer" not in text for text in japanese)
    assert kept.receipt_number in japanese[0] and bounced.receipt_number in japanese[2]
