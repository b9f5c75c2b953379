"""The portal's Credits page: what a customer sees of their credit, lots and history."""

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest
import time_machine
from django.urls import reverse
from django.utils import translation
from djmoney.money import Money

from accounts.models import Company, CompanyBlock, Membership
from accounts.selectors import OVERDUE_NOTE
from accounts.services import company_block
from billing.services import ledger
from invoicing.dunning import _block_note
from tests.factories import CompanyFactory, MembershipFactory, UserFactory
from tests.factories.billing import charge, grant, next_key

pytestmark = pytest.mark.django_db

# 20:00 UTC is 05:00 the next day in Tokyo: dates on the page must be Tokyo's.
NOW = datetime(2026, 3, 10, 20, 0, tzinfo=UTC)
URL = "/portal/credits/"


@pytest.fixture
def at_now():
    with time_machine.travel(NOW, tick=False):
        yield


def signed_in(client, role=Membership.Role.ADMIN, **company):
    membership = MembershipFactory(role=role, company=CompanyFactory(**company))
    client.force_login(membership.user)
    return membership.company


def plain(html: str) -> str:
    """Text with tags dropped and whitespace collapsed, as a reader sees it."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


def text_of(response) -> str:
    return plain(response.text)


def spend_100_a_day(company) -> None:
    """¥3,000 of charges over the last 30 days, from a lot that they use up completely."""
    grant(company, 3000, now=NOW - timedelta(days=40), days=365, source="purchase")
    for day in range(1, 11):
        charge(company, 300, now=NOW - timedelta(days=day))


def many_charges(company, count: int, *, now=NOW - timedelta(days=1)) -> None:
    ledger.company_charge_many(
        company=company,
        now=now,
        charges=[
            ledger.ChargeRequest(
                amount=Money(Decimal(1), company.currency),
                revenue="sms",
                idempotency_key=next_key("sms"),
                description=f"SMS batch {n:03d}",
            )
            for n in range(count)
        ],
    )


def history_rows(response) -> list[str]:
    tbody = re.search(r'<table class="history">.*?<tbody>(.*?)</tbody>', response.text, re.S)
    return re.findall(r"<tr>(.*?)</tr>", tbody.group(1), re.S)


# --- Navigation and who may see it --------------------------------------------------------


def test_url_and_navigation(client, at_now):
    signed_in(client)
    assert reverse("portal:credits") == URL
    dashboard = client.get(reverse("portal:dashboard")).text
    assert f'href="{URL}"' in dashboard
    assert dashboard.index(">Dashboard<") < dashboard.index(">Credits<")


def test_anonymous_visitor_is_sent_to_sign_in(client):
    response = client.get(URL)
    assert response.status_code == 302
    assert response.url.startswith(reverse("portal:login"))


@pytest.mark.parametrize("role", [Membership.Role.ADMIN, Membership.Role.BILLING])
def test_admins_and_billing_members_see_the_page(client, at_now, role):
    signed_in(client, role=role)
    assert client.get(URL).status_code == 200


def test_member_without_billing_role_gets_the_forbidden_page_and_no_link(client, at_now):
    company = signed_in(client, role=Membership.Role.MEMBER)
    grant(company, 1000, now=NOW)
    response = client.get(URL)
    assert response.status_code == 403
    assert "does not allow this" in response.text
    assert "¥1,000" not in response.text
    assert f'href="{URL}"' not in client.get(reverse("portal:dashboard")).text


# --- The summary: available credit and the estimate ---------------------------------------


def test_prepaid_page_shows_available_credit_and_the_runway_sentence(client, at_now):
    company = signed_in(client, mode=Company.Mode.PREPAID)
    spend_100_a_day(company)
    grant(company, 700, now=NOW, days=90)
    grant(company, 1000, now=NOW, days=5)
    text = text_of(client.get(URL))
    assert "Available credit ¥1,700" in text
    # ¥500 of the 5-day lot is spent, ¥500 expires with it at day 5; the ¥700 lot then lasts
    # 7 days: NOW + 12 days is 22 March 20:00 UTC, 23 March in Tokyo.
    assert (
        "At your average spend of ¥100 a day over the last 30 days, your credit runs out "
        "around March 23, 2026; ¥500 of credits expire before then."
    ) in text
    assert "¥1,000 expires first, on March 16, 2026." in text


def test_runway_sentence_without_credit_expiring_first(client, at_now):
    company = signed_in(client)
    spend_100_a_day(company)
    grant(company, 700, now=NOW, days=90)
    text = text_of(client.get(URL))
    assert (
        "At your average spend of ¥100 a day over the last 30 days, your credit runs out "
        "around March 18, 2026."
    ) in text
    assert "expire before then" not in text


def test_no_spending_means_no_estimate(client, at_now):
    company = signed_in(client)
    grant(company, 5000, now=NOW - timedelta(days=1))
    text = text_of(client.get(URL))
    assert "Available credit ¥5,000" in text
    assert "Nothing was spent in the last 30 days, so there is no estimate" in text
    assert "runs out around" not in text


def test_prepaid_without_credit_says_so(client, at_now):
    company = signed_in(client)
    spend_100_a_day(company)
    text = text_of(client.get(URL))
    assert "Available credit ¥0" in text
    assert "You have no credit left." in text


def test_usd_amounts_have_cents_and_new_york_dates(client):
    company = signed_in(client, currency="USD", billing_timezone="America/New_York")
    grant(company, Decimal("25.50"), now=NOW - timedelta(days=2), days=30)
    charge(company, Decimal("3.25"), now=NOW - timedelta(days=1))
    with time_machine.travel(NOW, tick=False):
        response = client.get(URL)
    text = text_of(response)
    assert "Available credit $22.25" in text
    assert "-$3.25" in text and "+$25.50" in text
    # Posted at 20:00 UTC on 9 March: 16:00 in New York (EDT from 8 March).
    assert "2026-03-09 16:00" in text
    assert "America/New_York" in text


def test_postpaid_page_shows_what_is_owed_and_the_headroom(client, at_now):
    company = signed_in(client, mode=Company.Mode.POSTPAID, credit_limit=Money(1000, "JPY"))
    charge(company, 300, now=NOW - timedelta(days=3))
    text = text_of(client.get(URL))
    assert "Balance owed ¥300" in text
    assert "Credit headroom ¥700 Left of your credit limit of ¥1,000" in text
    assert "You spent an average of ¥10 a day over the last 30 days." in text
    assert "there is no date when your credit runs out" in text
    assert "runs out around" not in text


def test_postpaid_without_a_limit_shows_no_limit(client, at_now):
    signed_in(client, mode=Company.Mode.POSTPAID, credit_limit=None)
    text = text_of(client.get(URL))
    assert "Credit balance ¥0" in text
    assert "Credit headroom No limit" in text
    assert "Nothing was spent in the last 30 days. Your charges go on your monthly invoice" in text


def test_blocked_company_sees_the_block(client, at_now):
    company = signed_in(client)
    grant(company, 100, now=NOW - timedelta(days=2))
    charge(company, 300, now=NOW - timedelta(days=1))
    text = text_of(client.get(URL))
    assert "This account is blocked" in text
    assert "¥200 not covered: your credit ran out." in text


def test_block_reasons_are_in_the_readers_language_a_staff_note_as_typed(client, at_now):
    """The block's reason is kept in the site's language for the API and the admin; the
    portal says it in the reader's, the dunning run's note on an overdue block included."""
    company = signed_in(client, mode=Company.Mode.POSTPAID, credit_limit=None)
    with translation.override("ja"):  # set during a Japanese reader's request
        company_block(
            company=company,
            reason=CompanyBlock.Reason.OVERDUE,
            note="Invoice INV-2026-000042 due 2026-02-28 is unpaid",
        )
    company_block(
        company=company,
        reason=CompanyBlock.Reason.MANUAL,
        note="Fraud check: call support",
        actor=UserFactory(is_staff=True),
    )
    company.refresh_from_db()
    assert company.blocked_reason == (
        "Overdue invoice: Invoice INV-2026-000042 due 2026-02-28 is unpaid; "
        "Blocked by staff: Fraud check: call support"
    )
    client.cookies["django_language"] = "ja"
    text = text_of(client.get(URL))
    assert (
        "このアカウントは停止中です：請求書の支払遅延：請求書 INV-2026-000042"
        "（支払期日 2026-02-28）が未払いです; スタッフによる利用停止：Fraud check: call support。"
    ) in text
    client.cookies["django_language"] = "en"
    text = text_of(client.get(URL))
    assert (
        "This account is blocked: Overdue invoice: Invoice INV-2026-000042 due 2026-02-28 is "
        "unpaid; Blocked by staff: Fraud check: call support."
    ) in text


def test_the_dunning_runs_note_is_the_one_the_portal_reads_back():
    invoice = SimpleNamespace(number="INV-2026-000042", due_date=date(2026, 2, 28))
    assert OVERDUE_NOTE.match(_block_note(invoice)).groupdict() == {
        "number": "INV-2026-000042",
        "date": "2026-02-28",
    }


# --- Lots --------------------------------------------------------------------------------


def test_lots_show_amounts_dates_in_tokyo_and_active_ones_first(client, at_now):
    company = signed_in(client)
    grant(company, 800, now=NOW - timedelta(days=30), days=10, source="trial")
    charge(company, 300, now=NOW - timedelta(days=25))
    grant(company, 2000, now=NOW - timedelta(days=1), days=90, source="purchase")
    response = client.get(URL)
    lots = re.search(r'<table class="lots">.*?</table>', response.text, re.S).group(0)
    rows = [plain(row) for row in re.findall(r"<tr[^>]*>(.*?)</tr>", lots, re.S)[1:]]
    assert rows == [
        "Purchase Test credit 2000 ¥2,000 ¥0 — ¥2,000 2026-03-10 05:00 2026-06-08 05:00 Active",
        "Trial Test credit 800 ¥800 ¥300 ¥500 ¥0 2026-02-09 05:00 2026-02-19 05:00 Expired",
    ]
    assert '<tr class="finished">' in lots


def test_no_lots_yet(client, at_now):
    signed_in(client)
    assert "No credits yet." in client.get(URL).text


# --- History ------------------------------------------------------------------------------


def test_history_shows_kind_description_signed_amount_balance_and_tokyo_date(client, at_now):
    company = signed_in(client)
    grant(company, 1000, now=NOW - timedelta(days=2), source="purchase")
    charge(company, 300, now=NOW - timedelta(days=1))
    rows = history_rows(client.get(URL))
    assert len(rows) == 2
    usage, purchase = (plain(row) for row in rows)
    assert usage == "2026-03-10 05:00 Usage Test charge 300 -¥300 ¥700"
    assert purchase == "2026-03-09 05:00 Credit purchase Test credit 1000 +¥1,000 ¥1,000"
    assert 'class="num amount debit"' in rows[0]
    assert 'class="num amount credit"' in rows[1]


def test_history_is_paginated_by_50_newest_first(client, at_now):
    company = signed_in(client)
    grant(company, 1000, now=NOW - timedelta(days=2))
    many_charges(company, 119)
    first = client.get(URL)
    rows = history_rows(first)
    assert len(rows) == 50
    assert "SMS batch 118" in rows[0]
    assert "Page 1 of 3 (120 transactions)" in text_of(first)
    assert 'href="?page=2#history"' in first.text
    last = client.get(URL, {"page": 3})
    rows = history_rows(last)
    assert len(rows) == 20
    assert "Test credit 1000" in rows[-1]


@pytest.mark.parametrize(("page", "shown"), [("abc", 1), ("0", 3), ("-1", 3), ("999", 3)])
def test_a_bad_page_number_shows_a_real_page(client, at_now, page, shown):
    company = signed_in(client)
    grant(company, 1000, now=NOW - timedelta(days=2))
    many_charges(company, 119)
    response = client.get(URL, {"page": page})
    assert response.status_code == 200
    assert f"Page {shown} of 3" in text_of(response)


def test_filter_by_kind_group_keeps_the_filter_across_pages(client, at_now):
    company = signed_in(client)
    grant(company, 200, now=NOW - timedelta(days=20), days=5, source="purchase")
    grant(company, 1000, now=NOW - timedelta(days=3))
    ledger.credits_expire(company=company, now=NOW - timedelta(days=2))
    many_charges(company, 60)

    charges = client.get(URL, {"kind": "charges"})
    assert all("SMS batch" in row for row in history_rows(charges))
    assert "Page 1 of 2 (60 transactions)" in text_of(charges)
    assert 'href="?kind=charges&amp;page=2#history"' in charges.text
    assert '<a href="?kind=charges#history" aria-current="true">' in charges.text

    added = [plain(row) for row in history_rows(client.get(URL, {"kind": "added"}))]
    assert len(added) == 2 and all("Test credit" in row for row in added)

    expired = history_rows(client.get(URL, {"kind": "expired"}))
    assert len(expired) == 1 and "Credit expiry" in expired[0] and "-¥200" in expired[0]


def test_an_unknown_filter_shows_everything(client, at_now):
    company = signed_in(client)
    grant(company, 1000, now=NOW - timedelta(days=2))
    charge(company, 300, now=NOW - timedelta(days=1))
    response = client.get(URL, {"kind": "<script>", "page": "x"})
    assert response.status_code == 200
    assert len(history_rows(response)) == 2
    assert '<a href="?#history" aria-current="true">All</a>' in response.text


def test_empty_filter_says_so(client, at_now):
    company = signed_in(client)
    grant(company, 1000, now=NOW - timedelta(days=2))
    assert "No transactions of this kind." in client.get(URL, {"kind": "expired"}).text


# --- Cost and isolation -------------------------------------------------------------------

# Session, user, membership, the switcher; history count and page; lots; available, spend and
# balance or runway lots; credit pending for the next invoice (vouchers); the top-up
# reminder. Measured, and the same with 1 row or 100.
QUERIES = 13


@pytest.mark.parametrize("mode", [Company.Mode.PREPAID, Company.Mode.POSTPAID])
def test_the_page_costs_a_fixed_number_of_queries(
    client, at_now, django_assert_max_num_queries, mode
):
    company = signed_in(client, mode=mode, credit_limit=Money(100000, "JPY"))
    grant(company, 5, now=NOW - timedelta(days=3))
    with django_assert_max_num_queries(QUERIES):
        assert client.get(URL).status_code == 200
    for days in range(1, 16):
        grant(
            company, 1000, now=NOW - timedelta(days=days), days=days * 3 if days % 2 else days // 2
        )
    many_charges(company, 80)
    ledger.credits_expire(company=company, now=NOW)
    with django_assert_max_num_queries(QUERIES):
        response = client.get(URL, {"page": 2, "kind": "charges"})
    assert len(history_rows(response)) == 30


def test_another_companys_credits_and_history_are_never_shown(client, at_now):
    company = signed_in(client)
    grant(company, 1000, now=NOW - timedelta(days=2))
    other = CompanyFactory()
    MembershipFactory(company=other)
    ledger.credits_grant(
        company=other,
        amount=Money(77777, "JPY"),
        source="voucher",
        idempotency_key="other-voucher",
        description="Their voucher",
        now=NOW - timedelta(days=1),
    )
    charge(other, 4321, now=NOW - timedelta(hours=2))
    for params in ({}, {"kind": "added"}, {"kind": "charges"}):
        text = client.get(URL, params).text
        assert "77,777" not in text and "Their voucher" not in text and "4,321" not in text
        assert "Voucher" not in text


def test_history_describes_an_expiry_and_a_plan_fee_in_the_readers_language(client, at_now):
    from billing.services.recurring import recurring_charge_company, subscription_order
    from tests.factories.rating import PlanFactory

    company = signed_in(client)
    grant(company, 1000, now=NOW - timedelta(days=12), days=10, source="purchase")
    ledger.credits_expire(company=company, now=NOW - timedelta(days=1))
    grant(company, 500, now=NOW - timedelta(days=12), days=365, source="purchase")
    plan = PlanFactory(name="Business", monthly_fee=Money(100, "JPY"))
    subscription_order(company=company, plan=plan, at=datetime(2026, 3, 1, tzinfo=UTC))
    recurring_charge_company(company=company, as_of=NOW)
    english = text_of(client.get(URL))
    japanese = text_of(client.get(URL, headers={"accept-language": "ja"}))

    assert "Expired unused: Purchase credit granted 2026-02-27, expired 2026-03-09" in english
    assert "Plan Business, 2026-03-01 – 2026-03-31" in english
    assert "未使用のまま失効" in japanese and "Expired" not in japanese
    assert "プラン Business" in japanese
