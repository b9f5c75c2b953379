"""Bank-transfer payments: receipts, ledger posting, allocation to open invoices."""

import itertools
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from djmoney.money import Money

from accounts.models import Company, CompanyBlock
from accounts.services import company_block
from billing.models import LedgerTransaction
from billing.reconcile import reconcile
from billing.selectors import company_balance
from invoicing.documents import receipt_pdf
from invoicing.exceptions import PaymentRefused
from invoicing.models import Payment, PaymentAllocation, Statement
from invoicing.payments import payment_record
from invoicing.services import statement_issue
from tests.factories import CompanyFactory

from .helpers import fee

pytestmark = pytest.mark.django_db

TOKYO = ZoneInfo("Asia/Tokyo")
NOW = datetime(2026, 8, 10, tzinfo=UTC)
Paid = Statement.PaymentStatus


def invoiced_company(*months: int) -> tuple[Company, list[Statement]]:
    """A postpaid company with a 1000 JPY fee in each month, each month closed."""
    company = CompanyFactory(
        mode=Company.Mode.POSTPAID, created_at=datetime(2025, 1, 1, tzinfo=UTC), tax_rate=0
    )
    statements = []
    for month in months:
        fee(company, "1000", at=datetime(2026, month, 2, tzinfo=TOKYO))
        statements.append(
            statement_issue(
                company=company, year=2026, month=month, now=datetime(2026, 7, 1, tzinfo=UTC)
            )
        )
    return company, statements


_references = itertools.count(1)


def pay(company, amount, **kwargs):
    return payment_record(
        company=company,
        amount=Money(amount, company.currency),
        received_on=kwargs.pop("received_on", date(2026, 8, 9)),
        reference=kwargs.pop("reference", f"BANK-REF-{next(_references)}"),
        now=kwargs.pop("now", NOW),
        **kwargs,
    )


def test_partial_then_full_payment_moves_the_invoice_to_paid():
    company, [april] = invoiced_company(4)
    due = april.amount_due.amount
    first = pay(company, due - 400)
    april.refresh_from_db()
    assert april.payment_status == Paid.PARTIALLY_PAID
    pay(company, 400)
    april.refresh_from_db()
    assert april.payment_status == Paid.PAID
    assert sum(a.amount.amount for a in april.allocations.all()) == due
    assert first.transaction.kind == LedgerTransaction.Kind.PAYMENT
    assert first.transaction.idempotency_key == f"payment:{first.pk}"
    assert company_balance(company) == Money(0, "JPY")
    assert reconcile().ok


def test_overpayment_leaves_the_remainder_unallocated_and_credits_the_balance():
    company, [april] = invoiced_company(4)
    payment = pay(company, april.amount_due.amount + 500)
    allocated = PaymentAllocation.objects.get(payment=payment)
    assert allocated.amount == april.amount_due
    assert company_balance(company) == Money(500, "JPY")


def test_oldest_open_invoice_is_paid_first_unless_invoices_are_chosen():
    company, [april, may] = invoiced_company(4, 5)
    pay(company, 100)
    assert [a.statement for a in PaymentAllocation.objects.all()] == [april]
    pay(company, 50, allocations=[(may, Money(50, "JPY"))])
    may.refresh_from_db()
    assert may.payment_status == Paid.PARTIALLY_PAID


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        (Money(0, "JPY"), "more than zero"),
        (Money(-5, "JPY"), "more than zero"),
        (Money(10, "USD"), "currency"),
        (Money("10.5", "JPY"), "decimals"),
    ],
)
def test_bad_amounts_are_refused_with_a_reason(amount, message):
    company, _ = invoiced_company(4)
    with pytest.raises(PaymentRefused, match=message):
        payment_record(
            company=company, amount=amount, received_on=date(2026, 8, 1), reference="x", now=NOW
        )
    assert not Payment.objects.exists()


def test_allocation_above_the_open_amount_or_to_another_company_is_refused():
    company, [april] = invoiced_company(4)
    other, [theirs] = invoiced_company(4)
    too_much = Money(april.amount_due.amount + 1, "JPY")
    with pytest.raises(PaymentRefused, match="still open"):
        pay(company, 5000, allocations=[(april, too_much)])
    with pytest.raises(PaymentRefused, match="another company"):
        pay(company, 100, allocations=[(theirs, None)])
    pay(company, april.amount_due.amount)
    with pytest.raises(PaymentRefused, match="not open"):
        pay(company, 100, allocations=[(april, None)])


def test_receipt_numbers_are_gapless_even_after_a_refused_payment():
    company, _ = invoiced_company(4)
    pay(company, 100)
    with pytest.raises(PaymentRefused):
        pay(company, 100, received_on=date(2027, 1, 1))
    pay(company, 100, reference="BANK-REF-2")
    assert sorted(Payment.objects.values_list("receipt_number", flat=True)) == [
        "RCP-2026-000001",
        "RCP-2026-000002",
    ]


def test_paying_the_last_overdue_invoice_lifts_the_overdue_block():
    company, [april, may] = invoiced_company(4, 5)
    company_block(company=company, reason=CompanyBlock.Reason.OVERDUE, now=NOW)
    pay(company, april.amount_due.amount)  # May is due 30 June: still overdue on 10 August
    company.refresh_from_db()
    assert company.status == Company.Status.BLOCKED
    pay(company, may.invoice_amount.amount)
    company.refresh_from_db()
    assert company.status == Company.Status.ACTIVE


# --- Reversing a payment recorded by mistake ------------------------------------------------


def test_reversing_a_payment_reopens_the_invoices_it_paid_and_the_company_owes_again():
    from billing.exceptions import ReversalRefused
    from invoicing.payments import payment_reverse
    from tests.factories import UserFactory

    company, [april, may] = invoiced_company(4, 5)
    owed = company_balance(company)
    first = pay(company, april.invoice_amount.amount + 400)  # April, and 400 of May
    second = pay(company, 200)  # 200 more of May
    may.refresh_from_db()
    assert may.payment_status == Paid.PARTIALLY_PAID

    reversed_ = payment_reverse(
        payment=first, reason="Entered for the wrong company", actor=UserFactory(), now=NOW
    )

    assert reversed_.status == Payment.Status.REVERSED
    assert not PaymentAllocation.objects.filter(payment=first).exists()
    april.refresh_from_db()
    may.refresh_from_db()
    assert april.payment_status == Paid.PENDING
    assert may.payment_status == Paid.PARTIALLY_PAID  # the second payment still pays 200
    assert company_balance(company) == owed + second.amount
    reversal = LedgerTransaction.objects.get(reverses=first.transaction)
    assert "Entered for the wrong company" in reversal.description
    assert reconcile(now=NOW).ok
    # A second submit finds it reversed: refused, nothing more changes.
    with pytest.raises(ReversalRefused, match="only a successful payment"):
        payment_reverse(payment=first, reason="Again", actor=UserFactory(), now=NOW)
    assert LedgerTransaction.objects.filter(reverses=first.transaction).count() == 1


def test_a_payments_transaction_is_not_reversed_alone():
    from billing.exceptions import ReversalRefused
    from billing.services import ledger

    company, [april] = invoiced_company(4)
    payment = pay(company, april.invoice_amount.amount)
    with pytest.raises(ReversalRefused, match="reversed from its page under Payments"):
        ledger.ledger_reverse(transaction=payment.transaction, reason="Mistake", now=NOW)
    april.refresh_from_db()
    assert april.payment_status == Paid.PAID


def test_staff_reverse_a_payment_from_its_page(admin_client):
    from django.urls import reverse

    company, [april] = invoiced_company(4)
    payment = pay(company, april.invoice_amount.amount)
    page = admin_client.get(reverse("admin:invoicing_payment_change", args=[payment.pk]))
    url = reverse("admin:invoicing_payment_reverse", args=[payment.pk])
    assert url in page.text
    confirm = admin_client.get(url)
    assert confirm.status_code == 200 and april.number in confirm.text
    assert admin_client.post(url, {"reason": " "}).status_code == 200  # a reason is needed
    response = admin_client.post(url, {"reason": "Bank returned the transfer"})
    assert response.status_code == 302
    payment.refresh_from_db()
    april.refresh_from_db()
    assert payment.status == Payment.Status.REVERSED
    assert april.payment_status == Paid.PENDING
    page = admin_client.get(reverse("admin:invoicing_payment_change", args=[payment.pk]))
    assert url not in page.text  # nothing left to reverse


# --- Admin, receipt, portal ------------------------------------------------------------------


def test_staff_record_a_payment_in_the_admin_against_chosen_invoices(admin_client):
    from django.contrib.admin.models import LogEntry
    from django.urls import reverse

    company, [april, may] = invoiced_company(4, 5)
    form = admin_client.get(reverse("admin:invoicing_payment_add") + f"?company={company.pk}")
    assert april.number in form.text and may.number in form.text
    response = admin_client.post(
        reverse("admin:invoicing_payment_add"),
        {
            "company": company.pk,
            "amount": "300",
            "received_on": "2026-08-01",
            "reference": "MIZUHO 123",
            "invoices": [may.pk],
        },
    )
    assert response.status_code == 302
    payment = Payment.objects.get()
    assert [a.statement for a in payment.allocations.all()] == [may]
    assert LogEntry.objects.filter(object_id=str(payment.pk)).exists()
    refused = admin_client.post(
        reverse("admin:invoicing_payment_add"),
        {"company": company.pk, "amount": "0", "received_on": "2026-08-01"},
    )
    assert refused.status_code == 200 and "more than zero" in refused.text
    # The same bank line again (a second click, or entered twice): refused with the receipt
    # of the first, recorded only when staff confirm it is another payment.
    again = {
        "company": company.pk,
        "amount": "300",
        "received_on": "2026-08-01",
        "reference": "MIZUHO 123",
    }
    twice = admin_client.post(reverse("admin:invoicing_payment_add"), again)
    assert twice.status_code == 200 and payment.receipt_number in twice.text
    assert Payment.objects.count() == 1
    confirmed = admin_client.post(
        reverse("admin:invoicing_payment_add"), {**again, "same_details_confirmed": "on"}
    )
    assert confirmed.status_code == 302 and Payment.objects.count() == 2


def test_payment_list_costs_a_fixed_number_of_queries_and_is_read_only(
    admin_client, django_assert_max_num_queries
):
    from django.urls import reverse

    company, _ = invoiced_company(4)
    for _ in range(5):
        pay(company, 100)
    with django_assert_max_num_queries(12):
        assert admin_client.get(reverse("admin:invoicing_payment_changelist")).status_code == 200
    payment = Payment.objects.first()
    page = admin_client.get(reverse("admin:invoicing_payment_change", args=[payment.pk]))
    assert page.status_code == 200 and 'name="_save"' not in page.text
    assert (
        admin_client.post(reverse("admin:invoicing_payment_delete", args=[payment.pk])).status_code
        == 403
    )
    pdf = admin_client.get(reverse("admin:invoicing_payment_receipt", args=[payment.pk]))
    assert pdf["Content-Type"] == "application/pdf"


def _pdf_text(content: bytes) -> str:
    import io

    from pypdf import PdfReader

    return "".join(page.extract_text() for page in PdfReader(io.BytesIO(content)).pages)


@pytest.mark.parametrize(("language", "title"), [("en", "Receipt"), ("ja", "領収書")])
def test_receipt_pdf_names_the_number_invoice_and_amount_in_the_company_language(
    client, language, title
):
    from django.urls import reverse

    from tests.factories import MembershipFactory

    company, [april] = invoiced_company(4)
    company.language = language
    company.save(update_fields=["language"])
    membership = MembershipFactory(company=company)
    client.force_login(membership.user)
    payment = pay(company, april.amount_due.amount + 7)
    response = client.get(reverse("portal:payment_receipt", args=[payment.pk]))
    text = _pdf_text(response.content)
    assert payment.receipt_number in text and april.number in text and title in text


def test_payment_history_shows_a_row_per_invoice_newest_first_in_fixed_queries(
    client, django_assert_num_queries
):
    from django.urls import reverse

    from tests.factories import MembershipFactory

    company, [april, may] = invoiced_company(4, 5)
    membership = MembershipFactory(company=company)
    client.force_login(membership.user)
    first = pay(company, april.amount_due.amount + 10)  # pays April, 10 to May
    second = pay(company, 20, now=NOW.replace(day=11))
    url = reverse("portal:payments")
    response = client.get(url)
    rows = response.context["rows"]
    assert [(row.payment, row.statement) for row in rows] == [
        (second, may),
        (first, april),
        (first, may),
    ]
    for _ in range(30):
        pay(company, 1)
    client.get(url)  # warm the session and membership caches alike
    with django_assert_num_queries(len(connection_queries_for(client, url))):
        client.get(url + "?page=2")


def connection_queries_for(client, url):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        client.get(url)
    return captured.captured_queries


def test_the_same_bank_line_entered_twice_is_refused_unless_confirmed():
    company, [april] = invoiced_company(4)
    first = pay(company, 300, reference="WIRE 0815")
    with pytest.raises(PaymentRefused, match=first.receipt_number):
        pay(company, 300, reference=" WIRE 0815 ")
    assert Payment.objects.filter(company=company).count() == 1
    # Another date, amount or reference is another payment; so is a confirmed twin.
    pay(company, 300, reference="WIRE 0816")
    pay(company, 300, reference="WIRE 0815", same_details_confirmed=True)
    assert Payment.objects.filter(company=company).count() == 3
    assert company_balance(company) == Money(900 - april.amount_due.amount, "JPY")


def test_a_reversed_payment_is_not_shown_as_credit_on_its_receipt_or_in_the_history(client):
    from django.urls import reverse

    from invoicing.documents import receipt_context
    from invoicing.payments import payment_reverse
    from tests.factories import MembershipFactory

    company, [april] = invoiced_company(4)
    payment = pay(company, april.amount_due.amount)
    payment_reverse(payment=payment, reason="Bounced", actor=None, now=NOW)
    payment.refresh_from_db()

    context = receipt_context(payment)
    assert context["allocations"] == []
    assert context["unallocated"] == Money(0, "JPY")
    text = _pdf_text(receipt_pdf(payment))
    assert "credit on your account" not in text
    assert "Reversed" in text and "the invoices it paid are open again" in text

    client.force_login(MembershipFactory(company=company).user)
    page = client.get(reverse("portal:payments"))
    [row] = page.context["rows"]
    assert row.statement is None and row.payment == payment
    assert "Not applied to an invoice" not in page.text
    # The credit history names both the payment and its reversal by receipt.
    history = client.get(reverse("portal:credits")).text
    assert f"Payment received (Bank transfer), receipt {payment.receipt_number}" in history
    assert f"Payment {payment.receipt_number} reversed (Bank transfer)" in history
