"""Credit notes: a postpaid company's credit note settles open invoices as a payment does (the
invoice it corrects first, then the oldest), carries its own tax, lifts an overdue block once
nothing overdue is open, and lowers the next invoice only by what no open invoice took; the
open amounts of the company's invoices keep adding up to what it owes."""

import io
import uuid
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from djmoney.money import Money

from accounts.models import Company, CompanyBlock
from billing.exceptions import ReversalRefused
from billing.models import LedgerTransaction
from billing.reconcile import reconcile
from billing.selectors import company_balance
from billing.services import ledger
from invoicing.credit_notes import credit_note_issue
from invoicing.dunning import dunning_run
from invoicing.exceptions import InvoicingError
from invoicing.models import CreditNote, KeptPdf, PaymentAllocation, Statement
from invoicing.selectors import invoice_open_amount
from tests.factories import CompanyFactory, MembershipFactory, UserFactory

from .helpers import fee
from .test_invoice_amounts import close, open_total, owed, postpaid_company

pytestmark = pytest.mark.django_db

TOKYO = ZoneInfo("Asia/Tokyo")
Paid = Statement.PaymentStatus


def yen(amount) -> Money:
    return Money(Decimal(amount), "JPY")


def issue(company, amount, at: datetime, statement=None, key=None) -> CreditNote:
    return credit_note_issue(
        company=company,
        amount=yen(amount),
        reason="Doubled DID charge",
        actor=UserFactory(),
        statement=statement,
        idempotency_key=key,
        now=at,
    )


def invoiced_months(*fees: tuple[int, str]):
    """A postpaid company (tax 10%) with a fee in each (month, amount) of 2026 and each
    month's invoice, issued on the 1st of the next month."""
    company = postpaid_company()
    invoices = []
    for month, amount in fees:
        fee(company, amount, at=datetime(2026, month, 2, tzinfo=TOKYO))
        invoices.append(close(company, month, datetime(2026, month + 1, 1, 1, tzinfo=TOKYO)))
    return company, invoices


def credited(transaction) -> Money:
    """What a transaction gave the company's own (customer) account."""
    total = sum(
        posting.amount.amount for posting in transaction.postings.filter(account__kind="customer")
    )
    return yen(total)


def allocations(note: CreditNote) -> list[tuple[str, Money]]:
    return [
        (allocation.statement.number, allocation.amount)
        for allocation in note.allocations.select_related("statement").order_by("id")
    ]


def test_a_credit_note_for_an_invoice_settles_it_tax_included():
    company, [april] = invoiced_months((4, "1000"))
    assert april.invoice_amount == yen(1100)

    note = issue(company, 1100, datetime(2026, 5, 10, tzinfo=TOKYO), statement=april)

    april.refresh_from_db()
    assert april.payment_status == Paid.PAID
    assert invoice_open_amount(april) == yen(0)
    assert allocations(note) == [(april.number, yen(1100))]
    # 1,000 of credit and the 100 of tax in it, both posted now.
    assert credited(note.transaction) == yen(1000)
    assert credited(note.tax_transaction) == yen(100)
    assert owed(company) == open_total(company) == 0
    assert reconcile().ok


def test_a_partial_credit_note_leaves_the_rest_open():
    company, [april] = invoiced_months((4, "1000"))
    issue(company, 330, datetime(2026, 5, 10, tzinfo=TOKYO), statement=april)
    april.refresh_from_db()
    assert april.payment_status == Paid.PARTIALLY_PAID
    assert invoice_open_amount(april) == yen(770)
    assert owed(company) == open_total(company) == 770


def test_the_invoice_it_corrects_first_then_the_oldest_and_the_rest_stays_a_credit():
    company, [april, may, june] = invoiced_months((4, "1000"), (5, "2000"), (6, "500"))
    note = issue(company, 4000, datetime(2026, 7, 10, tzinfo=TOKYO), statement=may)
    assert allocations(note) == [
        (may.number, yen(2200)),
        (april.number, yen(1100)),
        (june.number, yen(550)),
    ]
    statuses = set(Statement.objects.values_list("payment_status", flat=True))
    assert statuses == {Paid.PAID}
    # 4,000 less the 3,850 open: 150 of credit waits for the next invoice.
    assert owed(company) == open_total(company) == 0
    assert company.ledger_accounts.get(kind="customer").balance == yen(150)


def test_without_an_invoice_named_the_oldest_open_invoice_goes_first():
    company, [april, may] = invoiced_months((4, "1000"), (5, "2000"))
    note = issue(company, 1500, datetime(2026, 6, 10, tzinfo=TOKYO))
    assert allocations(note) == [(april.number, yen(1100)), (may.number, yen(400))]
    assert owed(company) == open_total(company) == 1800


def test_the_next_invoice_is_its_own_charges_when_the_note_settled_the_older_one():
    company, [april] = invoiced_months((4, "1000"))
    issue(company, 1100, datetime(2026, 5, 10, tzinfo=TOKYO), statement=april)
    fee(company, "3000", at=datetime(2026, 5, 12, tzinfo=TOKYO))
    may = close(company, 5, datetime(2026, 6, 1, 1, tzinfo=TOKYO))

    # The note shows on May's statement, and May is not taxed on it again.
    adjustments = list(
        may.lines.filter(group="adjustment").order_by("amount").values_list("amount", flat=True)
    )
    assert adjustments == [Decimal(-1000), Decimal(-100)]
    assert may.tax == yen(300)
    # May's own charges are owed on May's invoice: the note paid April, not May.
    assert may.invoice_amount == may.amount_due == yen(3300)
    assert owed(company) == open_total(company) == 3300
    assert reconcile().ok


def test_what_no_invoice_takes_lowers_the_next_invoice():
    company, [april] = invoiced_months((4, "1000"))
    issue(company, 2200, datetime(2026, 5, 10, tzinfo=TOKYO), statement=april)
    fee(company, "3000", at=datetime(2026, 5, 12, tzinfo=TOKYO))
    may = close(company, 5, datetime(2026, 6, 1, 1, tzinfo=TOKYO))
    # 3,300 for May less the 1,100 the note had left over.
    assert may.invoice_amount == may.amount_due == yen(2200)
    assert owed(company) == open_total(company) == 2200


def test_a_note_issued_after_the_period_end_before_the_close_is_counted_once():
    company, [april] = invoiced_months((4, "1000"))
    fee(company, "3000", at=datetime(2026, 5, 12, tzinfo=TOKYO))
    # After May ended, before May's statement is issued: it settles April.
    issue(company, 1100, datetime(2026, 6, 1, 0, 30, tzinfo=TOKYO), statement=april)
    may = close(company, 5, datetime(2026, 6, 1, 1, tzinfo=TOKYO))
    assert may.amount_due == yen(4400)  # the period end's balance: the note came after
    assert may.invoice_amount == yen(3300)
    assert owed(company) == open_total(company) == 3300


def test_a_note_that_clears_the_overdue_invoices_lifts_the_overdue_block(settings):
    settings.TOLLGATE_OVERDUE_REMINDER_DAYS = []
    settings.TOLLGATE_OVERDUE_BLOCK_AFTER_DAYS = 21
    company, [april, may] = invoiced_months((4, "1000"), (5, "2000"))
    # April was due 31 May; 21 days later the company is blocked.
    result = dunning_run(company_ids=[company.pk], now=datetime(2026, 6, 22, 9, tzinfo=TOKYO))
    assert result.blocked == [company.pk]

    # A note for part of April: April stays overdue, so the block stays.
    issue(company, 500, datetime(2026, 6, 23, tzinfo=TOKYO), statement=april)
    company.refresh_from_db()
    assert company.status == Company.Status.BLOCKED

    # The rest of April: nothing overdue is open (May is not due yet), so the block lifts.
    note = issue(company, 600, datetime(2026, 6, 24, tzinfo=TOKYO), statement=april)
    company.refresh_from_db()
    assert company.status == Company.Status.ACTIVE
    block = CompanyBlock.objects.get(company=company)
    assert block.lifted_at is not None and note.number in block.lift_note
    may.refresh_from_db()
    assert may.payment_status == Paid.PENDING


def test_a_prepaid_company_gets_the_credit_whole_and_nothing_is_allocated():
    company = CompanyFactory(mode=Company.Mode.PREPAID, tax_rate=Decimal("0.10"))
    note = issue(company, 1100, datetime(2026, 5, 10, tzinfo=TOKYO))
    assert credited(note.transaction) == yen(1100)
    assert note.tax_transaction is None
    assert not PaymentAllocation.objects.exists()


def test_the_same_request_twice_issues_and_settles_once():
    company, [april] = invoiced_months((4, "1000"))
    first = issue(company, 500, datetime(2026, 5, 10, tzinfo=TOKYO), statement=april, key="k1")
    again = issue(company, 500, datetime(2026, 5, 10, tzinfo=TOKYO), statement=april, key="k1")
    assert again == first
    assert CreditNote.objects.count() == 1
    assert PaymentAllocation.objects.get().amount == yen(500)
    assert invoice_open_amount(april) == yen(600)


def test_refusals_change_nothing():
    company, [april] = invoiced_months((4, "1000"))
    other, [other_april] = invoiced_months((4, "1000"))
    for amount, statement in ((0, None), (-5, None), (100, other_april)):
        with pytest.raises(InvoicingError):
            issue(company, amount, datetime(2026, 5, 10, tzinfo=TOKYO), statement=statement)
    assert not CreditNote.objects.exists()
    assert not PaymentAllocation.objects.exists()
    assert owed(company) == 1100


def test_a_credit_note_is_not_reversed_in_the_ledger():
    company, [april] = invoiced_months((4, "1000"))
    note = issue(company, 1100, datetime(2026, 5, 10, tzinfo=TOKYO), statement=april)
    for posted in (note.transaction, note.tax_transaction):
        with pytest.raises(ReversalRefused, match="issued document"):
            ledger.ledger_reverse(transaction=posted, reason="oops", actor=None)
    assert not LedgerTransaction.objects.filter(kind=LedgerTransaction.Kind.REVERSAL).exists()


def test_admin_issues_a_note_for_an_invoice_by_its_number(admin_client):
    company, [april] = invoiced_months((4, "1000"))
    url = reverse("admin:invoicing_creditnote_add")
    response = admin_client.post(
        url,
        {
            "company": company.pk,
            "amount": "1100",
            "reason": "Billed twice",
            "statement_number": april.number,
            "idempotency_key": str(uuid.uuid4()),
        },
    )
    assert response.status_code == 302
    note = CreditNote.objects.get()
    assert note.statement == april
    april.refresh_from_db()
    assert april.payment_status == Paid.PAID
    page = admin_client.get(reverse("admin:invoicing_creditnote_change", args=[note.pk]))
    assert page.status_code == 200 and april.number in page.text
    # The ledger page of its transaction offers no reversal.
    ledger_page = admin_client.get(
        reverse("admin:billing_ledgertransaction_change", args=[note.transaction_id])
    )
    assert "/reverse/" not in ledger_page.text


def test_the_admin_form_submitted_twice_issues_one_note(admin_client):
    company, [april] = invoiced_months((4, "1000"))
    form = {
        "company": company.pk,
        "amount": "300",
        "reason": "Doubled DID charge",
        "idempotency_key": str(uuid.uuid4()),
    }
    first = admin_client.post(reverse("admin:invoicing_creditnote_add"), form)
    second = admin_client.post(reverse("admin:invoicing_creditnote_add"), form)

    assert (first.status_code, second.status_code) == (302, 302)
    note = CreditNote.objects.get()
    assert company_balance(company) == Money(-1100 + 300, "JPY")
    assert note.allocations.get().amount == Money(300, "JPY")
    assert reconcile().ok


def test_the_admin_form_not_drawn_by_the_admin_issues_nothing(admin_client):
    company, _ = invoiced_months((4, "1000"))
    response = admin_client.post(
        reverse("admin:invoicing_creditnote_add"),
        {"company": company.pk, "amount": "300", "reason": "Doubled DID charge"},
    )
    assert response.status_code == 200
    assert "This page was not drawn by the admin" in response.text
    assert not CreditNote.objects.exists()


def test_admin_refuses_a_number_of_another_company_and_writes_nothing(admin_client):
    company, _ = invoiced_months((4, "1000"))
    _other, [other_april] = invoiced_months((4, "1000"))
    for number in (other_april.number, "INV-1999-000001"):
        response = admin_client.post(
            reverse("admin:invoicing_creditnote_add"),
            {
                "company": company.pk,
                "amount": "100",
                "reason": "Billed twice",
                "statement_number": number,
            },
        )
        assert response.status_code == 200
        assert f"has no statement numbered {number}" in response.text
    assert not CreditNote.objects.exists()


def test_the_portal_lists_the_companys_credit_notes_and_what_each_settled(
    client, django_assert_num_queries
):
    company, [april, may] = invoiced_months((4, "1000"), (5, "2000"))
    other, [other_april] = invoiced_months((4, "1000"))
    issue(other, 100, datetime(2026, 6, 9, tzinfo=TOKYO), statement=other_april)
    note = issue(company, 1500, datetime(2026, 6, 10, tzinfo=TOKYO))
    client.force_login(MembershipFactory(company=company).user)
    url = reverse("portal:payments")

    response = client.get(url)
    assert list(response.context["notes"]) == [note]
    text = response.text
    assert note.number in text and "Doubled DID charge" in text
    assert april.number in text and may.number in text  # both settled, oldest first
    assert text.index(april.number) < text.index(may.number)
    assert other_april.number not in text

    for day in range(11, 21):
        issue(company, 1, datetime(2026, 6, day, tzinfo=TOKYO))
    with CaptureQueriesContext(connection) as first:
        client.get(url)
    for day in range(21, 29):
        issue(company, 1, datetime(2026, 6, day, tzinfo=TOKYO))
    with django_assert_num_queries(len(first.captured_queries)):
        client.get(url)
    # Junk page numbers land on a page, never an error.
    assert client.get(url + "?notes=-3&page=x").status_code == 200


def _pdf_text(content: bytes) -> str:
    from pypdf import PdfReader

    return "".join(page.extract_text() for page in PdfReader(io.BytesIO(content)).pages)


@pytest.mark.parametrize(
    ("language", "title", "tax_line"),
    [("en", "Credit note", "Tax (10%)"), ("ja", "クレジットノート", "消費税（10%）")],
)
def test_the_credit_note_pdf_shows_its_number_tax_and_the_invoices_it_settled(
    client, language, title, tax_line
):
    company, [april] = invoiced_months((4, "1000"))
    company.language = language
    company.save(update_fields=["language"])
    note = issue(company, 1650, datetime(2026, 5, 10, tzinfo=TOKYO), statement=april)
    client.force_login(MembershipFactory(company=company).user)

    response = client.get(reverse("portal:credit_note_pdf", args=[note.pk]))
    assert response["Content-Type"] == "application/pdf"
    text = _pdf_text(response.content)
    assert note.number in text and april.number in text and title in text
    # 1,650 is 1,500 of credit and 150 of tax; 1,100 went to April, 550 stays as credit.
    for amount in ("1,500", "150", "1,650", "1,100", "550"):
        assert amount in text
    assert tax_line in text


def test_the_credit_note_pdf_keeps_its_parties_and_another_companys_is_a_404(client):
    company, [april] = invoiced_months((4, "1000"))
    note = issue(company, 1100, datetime(2026, 5, 10, tzinfo=TOKYO), statement=april)
    old_name = company.name
    company.name = "Renamed KK"
    company.save(update_fields=["name"])
    client.force_login(MembershipFactory(company=company).user)
    text = _pdf_text(client.get(reverse("portal:credit_note_pdf", args=[note.pk])).content)
    assert old_name in text and "Renamed KK" not in text

    other, [other_april] = invoiced_months((4, "1000"))
    client.force_login(MembershipFactory(company=other).user)
    assert client.get(reverse("portal:credit_note_pdf", args=[note.pk])).status_code == 404


def test_the_credit_note_pdf_is_kept_as_first_rendered_in_the_language_of_then(client):
    company, [april] = invoiced_months((4, "1000"))
    note = issue(company, 1100, datetime(2026, 5, 10, tzinfo=TOKYO), statement=april)
    client.force_login(MembershipFactory(company=company).user)
    url = reverse("portal:credit_note_pdf", args=[note.pk])
    first = client.get(url).content
    company.language = "ja"
    company.save(update_fields=["language"])
    again = client.get(url).content
    assert again == first and "Credit note" in _pdf_text(again)
    assert KeptPdf.objects.get().credit_note == note


def test_staff_open_a_credit_notes_pdf_from_the_admin(admin_client):
    company = CompanyFactory(mode=Company.Mode.PREPAID, tax_rate=Decimal("0.10"))
    note = issue(company, 1100, datetime(2026, 5, 10, tzinfo=TOKYO))
    page = admin_client.get(reverse("admin:invoicing_creditnote_change", args=[note.pk]))
    assert page.status_code == 200 and company.name in page.text
    response = admin_client.get(reverse("admin:invoicing_creditnote_pdf", args=[note.pk]))
    text = _pdf_text(response.content)
    # Prepaid: the credit is whole, no tax line, all of it credit on the account.
    assert note.number in text and "Tax (" not in text and "credit on your account" in text


def test_the_credit_history_names_a_credit_note_by_its_number_in_the_readers_language(client):
    company, [april] = invoiced_months((4, "1000"))
    note = credit_note_issue(
        company=company, amount=Money(330, "JPY"), reason="Doubled DID charge", actor=None,
        now=datetime(2026, 5, 20, tzinfo=ZoneInfo("Asia/Tokyo")),
    )  # fmt: skip
    client.force_login(MembershipFactory(company=company).user)
    english = client.get(reverse("portal:credits")).text
    japanese = client.get(reverse("portal:credits"), headers={"accept-language": "ja"}).text
    assert f"Credit note {note.number}: Doubled DID charge" in english
    assert f"Tax in credit note {note.number}" in english
    assert f"クレジットノート {note.number}：Doubled DID charge" in japanese


def test_the_credit_history_costs_the_same_queries_with_one_or_many_described_rows(
    client, django_assert_num_queries
):
    company, [april] = invoiced_months((4, "1000"))
    client.force_login(MembershipFactory(company=company).user)
    tokyo = ZoneInfo("Asia/Tokyo")

    def add_rows(count, day):
        for n in range(count):
            at = datetime(2026, 5, day, n, tzinfo=tokyo)
            fee(company, "10", at=at)
            credit_note_issue(
                company=company, amount=Money(5, "JPY"), reason="Sorry", actor=None, now=at
            )

    add_rows(1, 10)
    with CaptureQueriesContext(connection) as first:
        client.get(reverse("portal:credits"))
    add_rows(8, 11)
    with django_assert_num_queries(len(first.captured_queries)):
        page = client.get(reverse("portal:credits"))
    assert page.text.count("Credit note CN-") == 9
