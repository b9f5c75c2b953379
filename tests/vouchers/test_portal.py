"""The portal's "Register credit code": the real form on the Credits page, with CSRF checks
on, signed in through the real login form."""

import re
from datetime import UTC, datetime, timedelta
from html import unescape

import pytest
import time_machine
from django.test import Client
from django.urls import reverse
from djmoney.money import Money

from accounts.models import Company, Membership
from accounts.portal import SESSION_COMPANY_KEY
from billing.models import CreditLot
from billing.reconcile import reconcile
from tests.factories import CompanyFactory, MembershipFactory
from tests.factories.accounts import PASSWORD
from tests.factories.vouchers import codes_of, voucher_batch
from vouchers import codes
from vouchers.models import InvoiceCredit, VoucherRedemption

pytestmark = pytest.mark.django_db

NOW = datetime(2027, 6, 15, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo
CREDITS = "/portal/credits/"
REDEEM = "/portal/credits/redeem/"


@pytest.fixture(autouse=True)
def at_now():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def browser():
    """A client that checks CSRF tokens like a real deployment."""
    return Client(enforce_csrf_checks=True, REMOTE_ADDR="198.51.100.20")


def sign_in(browser, role=Membership.Role.ADMIN, **company) -> Company:
    membership = MembershipFactory(role=role, company=CompanyFactory(**company))
    response = browser.post(
        reverse("portal:login"),
        {
            "username": membership.user.username,
            "password": PASSWORD,
            "csrfmiddlewaretoken": token(browser, reverse("portal:login")),
        },
    )
    assert response.status_code == 302, response.text
    return membership.company


def token(browser, url) -> str:
    page = browser.get(url).text
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)


def redeem_form(page: str) -> tuple[str, str]:
    """The action and CSRF token of the "Register credit code" form on ``page``."""
    form = re.search(r'<section class="card redeem".*?</section>', page, re.S)
    assert form, "no Register credit code form on the page"
    action = re.search(r'<form method="post" action="([^"]+)"', form.group(0)).group(1)
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.group(0)).group(1)
    return action, csrf


def submit(browser, code: str, *, follow=True):
    """Fill in the form found on the Credits page and send it, as a browser would."""
    action, csrf = redeem_form(browser.get(CREDITS).text)
    return browser.post(action, {"code": code, "csrfmiddlewaretoken": csrf}, follow=follow)


def plain(html: str) -> str:
    return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))).strip()


def field_errors(response) -> str:
    found = re.findall(r'<ul class="errorlist"[^>]*>(.*?)</ul>', response.text, re.S)
    return plain(" ".join(found))


def batch_codes(count=2, **fields):
    return codes_of(voucher_batch(now=NOW - timedelta(days=1), count=count, **fields))


# --- Success --------------------------------------------------------------------------------


def test_a_prepaid_administrator_registers_a_code_through_the_credits_page(browser):
    company = sign_in(browser, mode=Company.Mode.PREPAID)
    code = batch_codes(amount="5000", lifetime_days=30)[0]

    response = submit(browser, code.lower().replace("-", " "), follow=False)
    assert response.status_code == 302 and response.url == CREDITS

    page = browser.get(CREDITS)
    text = plain(page.text)
    assert "Credit code registered: ¥5,000 added, usable until 2027-07-15 12:00." in text
    assert "Available credit ¥5,000" in text
    assert "Credit code ••••-••••-••••-•" in text  # the lot's description, masked
    lot = CreditLot.objects.get(company=company)
    assert (lot.source, lot.amount) == ("voucher", Money(5000, "JPY"))
    redemption = VoucherRedemption.objects.get()
    assert redemption.user.memberships.get().company == company
    assert redemption.ip == "198.51.100.20"
    assert reconcile(now=NOW).ok


def test_a_billing_member_may_register_codes(browser):
    company = sign_in(browser, role=Membership.Role.BILLING)
    submit(browser, batch_codes()[0])
    assert VoucherRedemption.objects.get().company == company


def test_a_postpaid_company_sees_the_credit_pending_for_its_next_invoice(browser):
    company = sign_in(browser, mode=Company.Mode.POSTPAID)
    first, second = batch_codes(amount="3000")

    response = submit(browser, first)
    text = plain(response.text)
    assert "¥3,000 will be credited on your next invoice, before tax" in text
    submit(browser, second)
    text = plain(browser.get(CREDITS).text)
    assert "Pending credit ¥6,000" in text
    assert "Credit for your next invoice" in text
    assert text.count("Credit code ••••-••••-••••-•") == 2
    assert InvoiceCredit.objects.filter(company=company, applied_at=None).count() == 2
    assert not CreditLot.objects.filter(company=company).exists()


# --- Refusals -------------------------------------------------------------------------------


def test_a_wrong_code_shows_the_form_again_with_the_reason_and_what_was_typed(browser):
    sign_in(browser)
    typed = codes.format_code(codes.generate_code())
    response = submit(browser, typed)
    assert response.status_code == 400
    assert "This credit code is not valid" in field_errors(response)
    assert f'value="{typed}"' in response.text
    assert not VoucherRedemption.objects.exists()


def test_a_code_another_company_registered_reads_exactly_like_a_wrong_one(browser):
    used = batch_codes()[0]
    other = Client()
    other.force_login(MembershipFactory().user)
    other.post(REDEEM, {"code": used})
    assert VoucherRedemption.objects.count() == 1

    sign_in(browser)
    used_elsewhere = field_errors(submit(browser, used))
    wrong = field_errors(submit(browser, codes.format_code(codes.generate_code())))
    assert used_elsewhere == wrong and wrong


def test_each_refusal_has_its_own_clear_message(browser):
    company = sign_in(browser, currency="JPY")
    mine, voided_code = batch_codes()
    submit(browser, mine)
    from vouchers.models import Voucher
    from vouchers.services import voucher_void

    voucher_void(
        voucher=Voucher.objects.get(code=voided_code.replace("-", "")), actor=None, reason="x"
    )
    expired = batch_codes(count=1, redeem_by=NOW - timedelta(minutes=1) + timedelta(days=1))[0]
    usd = batch_codes(count=1, amount="10", currency="USD")[0]

    assert "You already registered this code on" in field_errors(submit(browser, mine))
    assert "cancelled" in field_errors(submit(browser, voided_code))
    assert "credit in USD" in field_errors(submit(browser, usd))
    assert "mistyped or two are swapped" in field_errors(
        submit(browser, mine[:-1] + "Z" if mine[-1] != "Z" else mine[:-1] + "Y")
    )
    with time_machine.travel(NOW + timedelta(days=2), tick=False):
        assert "it has expired" in field_errors(submit(browser, expired))
    assert VoucherRedemption.objects.filter(company=company).count() == 1


@pytest.mark.parametrize(
    "typed",
    [
        "",
        " ",
        "\x00",
        "K7QM\x00-3XTD-9PWR-2HCVS",
        "x" * 10_000,
        "🎁🎁🎁",
        "コードを入力",
        "<script>alert(1)</script>",
        "' OR 1=1 --",
        "K7QM-3XTD-9PWR-2HCVS" * 5,
    ],
)
def test_bad_input_is_a_clear_400_never_a_server_error(browser, typed):
    sign_in(browser)
    response = submit(browser, typed)
    assert response.status_code == 400
    assert field_errors(response)
    assert "<script>alert" not in response.text
    assert not VoucherRedemption.objects.exists()


def test_the_form_without_a_csrf_token_is_refused(browser):
    sign_in(browser)
    response = browser.post(REDEEM, {"code": batch_codes()[0]})
    assert response.status_code == 403
    assert not VoucherRedemption.objects.exists()


# --- Who may, for which company -------------------------------------------------------------


def test_a_member_without_billing_role_cannot_register_codes(browser):
    sign_in(browser, role=Membership.Role.MEMBER)
    csrf = token(browser, reverse("portal:dashboard"))
    response = browser.post(REDEEM, {"code": batch_codes()[0], "csrfmiddlewaretoken": csrf})
    assert response.status_code == 403
    assert not VoucherRedemption.objects.exists()


def test_anonymous_visitors_are_sent_to_sign_in(client):
    response = client.post(REDEEM, {"code": batch_codes()[0]})
    assert response.status_code == 302 and response.url.startswith(reverse("portal:login"))
    assert not VoucherRedemption.objects.exists()


def test_a_code_is_registered_for_the_company_the_user_is_working_in_and_no_other(browser):
    membership = MembershipFactory(role=Membership.Role.ADMIN)
    second = MembershipFactory(user=membership.user, role=Membership.Role.BILLING).company
    stranger = CompanyFactory()
    browser.force_login(membership.user)
    session = browser.session
    session[SESSION_COMPANY_KEY] = second.pk
    session.save()
    action, csrf = redeem_form(browser.get(CREDITS).text)
    # A company id smuggled into the form is ignored: the company is the session's.
    browser.post(
        action, {"code": batch_codes()[0], "company": stranger.pk, "csrfmiddlewaretoken": csrf}
    )
    assert VoucherRedemption.objects.get().company == second


# --- Brute force, as the customer sees it ---------------------------------------------------


def test_after_ten_failures_the_page_says_registering_is_locked_and_until_when(browser):
    sign_in(browser)
    good = batch_codes()[0]
    for _ in range(10):
        response = submit(browser, codes.format_code(codes.generate_code()))
        assert response.status_code == 400
    assert "registering credit codes is locked until 2027-06-15 13:00" in plain(response.text)

    page = browser.get(CREDITS).text
    assert "registering credit codes is locked until 2027-06-15 13:00" in plain(page)
    assert re.search(r'<button type="submit" disabled>', page)
    response = submit(browser, good)
    assert response.status_code == 400
    assert not VoucherRedemption.objects.exists()

    with time_machine.travel(NOW + timedelta(hours=1), tick=False):
        text = plain(browser.get(CREDITS).text)
        assert "codes is locked until" not in text
        submit(browser, good)
    assert VoucherRedemption.objects.count() == 1


# --- The pages themselves -------------------------------------------------------------------


def test_the_register_page_shows_the_form_on_its_own(browser):
    sign_in(browser)
    response = browser.get(REDEEM)
    assert response.status_code == 200
    assert "Register credit code" in response.text
    assert 'name="code"' in response.text


def test_the_credits_page_with_the_form_still_costs_a_fixed_number_of_queries(
    client, django_assert_max_num_queries
):
    membership = MembershipFactory(company=CompanyFactory(mode=Company.Mode.POSTPAID))
    client.force_login(membership.user)
    with django_assert_max_num_queries(12) as few:
        client.get(CREDITS)
    queries = len(few)  # now: the log is emptied by the next request
    for code in batch_codes(count=8):
        client.post(REDEEM, {"code": code})
    with django_assert_max_num_queries(queries):
        page = client.get(CREDITS)
    assert plain(page.text).count("Credit code ••••") == 8


def test_the_form_and_its_messages_speak_japanese(browser):
    sign_in(browser)
    browser.cookies["django_language"] = "ja"
    page = browser.get(CREDITS).text
    assert "クレジットコードを登録" in page
    response = submit(browser, codes.format_code(codes.generate_code()))
    assert "このクレジットコードは無効です" in field_errors(response)
