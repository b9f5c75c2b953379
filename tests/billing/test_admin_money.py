"""The ledger's back-office: staff actions through the admin's real forms, read-only books,
and pages whose cost does not grow with the history."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from djmoney.money import Money

from accounts.models import Company, CompanyBlock
from accounts.services import company_block, staff_groups_sync
from billing.admin import CappedCountPaginator, LedgerTransactionAdmin
from billing.models import CreditLot, LedgerAccount, LedgerTransaction
from billing.reconcile import reconcile
from billing.selectors import company_balance
from billing.services import ledger
from tests.factories import CompanyFactory, UserFactory
from tests.factories.billing import charge, grant

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)

COMPANY_ACTIONS = ["adjust_balance", "grant_credits", "block", "unblock", "switch_mode"]


@pytest.fixture(autouse=True)
def clock():
    # The admin reads the real clock; start it at NOW so lots granted "now" in a test are
    # unexpired when the admin acts a moment later.
    with time_machine.travel(NOW, tick=True):
        yield


@pytest.fixture(autouse=True)
def books_always_reconcile():
    yield
    report = reconcile(now=NOW + timedelta(days=400))
    assert report.ok, report.problems


@pytest.fixture
def prepaid():
    company = CompanyFactory(mode=Company.Mode.PREPAID)
    grant(company, 1000, now=NOW)
    return company


@pytest.fixture
def staff_client(client):
    def login(group_name):
        staff_groups_sync()
        user = UserFactory(is_staff=True)
        user.groups.add(Group.objects.get(name=group_name))
        client.force_login(user)
        return client

    return login


def action_url(company, action):
    return reverse(f"admin:accounts_company_{action}", args=[company.pk])


def reverse_url(transaction_):
    return reverse("admin:billing_ledgertransaction_reverse", args=[transaction_.pk])


def drawn_key(client, url) -> str:
    """The idempotency key the confirmation page drew into its hidden field."""
    response = client.get(url)
    assert response.status_code == 200
    return str(response.context["form"]["idempotency_key"].value())


def jpy(amount) -> Money:
    return Money(Decimal(amount), "JPY")


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


# --- Adjust balance -------------------------------------------------------------------------


def test_adjust_page_shows_the_company_balance_and_available_credit_before_confirming(
    admin_client, prepaid
):
    charge(prepaid, 250, now=NOW)
    response = admin_client.get(action_url(prepaid, "adjust_balance"))
    assert response.status_code == 200
    text = response.text
    assert "Adjust the balance of" in text
    assert prepaid.account_code in text
    assert "¥750" in text  # balance and available after the charge
    assert 'name="reason"' in text and 'name="idempotency_key"' in text


def test_adjusting_a_balance_through_the_admin_posts_once_and_logs_it(
    admin_client, admin_user, prepaid
):
    url = action_url(prepaid, "adjust_balance")
    data = {"amount": "500", "reason": "Goodwill for the outage", "idempotency_key": ""}
    data["idempotency_key"] = drawn_key(admin_client, url)

    response = admin_client.post(url, data, follow=True)

    assert response.redirect_chain[-1][0] == reverse(
        "admin:accounts_company_change", args=[prepaid.pk]
    )
    assert company_balance(prepaid) == jpy(1500)
    adjustment = LedgerTransaction.objects.get(kind=LedgerTransaction.Kind.ADJUSTMENT)
    assert adjustment.description == "Goodwill for the outage"
    assert adjustment.actor == admin_user
    assert any("adjusted by ¥500" in message for message in messages_of(response))
    log = LogEntry.objects.get(object_id=str(prepaid.pk))
    assert "Goodwill for the outage" in log.get_change_message()
    assert log.user == admin_user

    # The same page submitted again (a double click) finds the first result.
    response = admin_client.post(url, data, follow=True)
    assert LedgerTransaction.objects.filter(kind=LedgerTransaction.Kind.ADJUSTMENT).count() == 1
    assert company_balance(prepaid) == jpy(1500)
    assert LogEntry.objects.filter(object_id=str(prepaid.pk)).count() == 1
    assert any("already posted" in message for message in messages_of(response))


@pytest.mark.parametrize("action", ["adjust_balance", "grant_credits"])
def test_an_expiry_beyond_ten_years_is_a_form_error_not_a_crash(admin_client, prepaid, action):
    url = action_url(prepaid, action)
    for day in ("9999-12-31", "2040-01-01"):
        data = {"amount": "500", "source": "grant", "expires_on": day, "reason": "Far away"}
        data["idempotency_key"] = drawn_key(admin_client, url)
        response = admin_client.post(url, data)
        assert response.status_code == 200
        assert "Credit expires within ten years at most." in response.text
    assert company_balance(prepaid) == jpy(1000)


def test_a_prepaid_adjustment_credit_is_usable_through_the_chosen_day(admin_client, prepaid):
    url = action_url(prepaid, "adjust_balance")
    admin_client.post(
        url,
        {
            "amount": "200",
            "expires_on": "2027-01-15",
            "reason": "Promised credit",
            "idempotency_key": drawn_key(admin_client, url),
        },
    )
    lot = CreditLot.objects.get(source=CreditLot.Source.ADJUSTMENT)
    assert lot.amount == jpy(200)
    # Midnight after the 15th in the company's zone (Asia/Tokyo, UTC+9).
    assert lot.expires_at == datetime(2027, 1, 15, 15, 0, tzinfo=UTC)


def test_a_debit_beyond_the_available_credit_is_a_form_error_and_changes_nothing(
    admin_client, prepaid
):
    url = action_url(prepaid, "adjust_balance")
    response = admin_client.post(
        url,
        {"amount": "-5000", "reason": "Clawback", "idempotency_key": drawn_key(admin_client, url)},
    )
    assert response.status_code == 200
    assert "Only ¥1,000 of credit is available" in response.text
    assert "Nothing was changed" in response.text
    assert company_balance(prepaid) == jpy(1000)
    assert not LogEntry.objects.exists()


@pytest.mark.parametrize(
    ("amount", "reason", "error"),
    [
        ("500", "", "This field is required"),
        ("500", "   ", "This field is required"),
        ("", "Why not", "This field is required"),
        ("ten", "Why not", "Enter a number"),
        ("10.5", "Why not", "JPY amounts have no decimals"),
        ("0", "Why not", "An adjustment of zero changes nothing"),
        ("1e30", "Why not", "no more than"),
    ],
)
def test_bad_adjustment_input_is_a_form_error_and_changes_nothing(
    admin_client, prepaid, amount, reason, error
):
    url = action_url(prepaid, "adjust_balance")
    before = LedgerTransaction.objects.count()
    response = admin_client.post(
        url, {"amount": amount, "reason": reason, "idempotency_key": drawn_key(admin_client, url)}
    )
    assert response.status_code == 200
    assert error in response.text
    assert LedgerTransaction.objects.count() == before
    assert company_balance(prepaid) == jpy(1000)
    assert not LogEntry.objects.exists()


def test_a_missing_idempotency_key_is_a_form_error_and_the_page_draws_a_new_one(
    admin_client, prepaid
):
    url = action_url(prepaid, "adjust_balance")
    response = admin_client.post(url, {"amount": "5", "reason": "No key"})
    assert response.status_code == 200
    assert "not drawn by the admin" in response.text
    assert company_balance(prepaid) == jpy(1000)
    fresh = response.context["form"]["idempotency_key"].value()
    assert fresh
    response = admin_client.post(url, {"amount": "5", "reason": "No key", "idempotency_key": fresh})
    assert response.status_code == 302
    assert company_balance(prepaid) == jpy(1005)


def test_amounts_follow_the_decimals_of_the_company_currency(admin_client):
    company = CompanyFactory(currency="USD", mode=Company.Mode.POSTPAID)
    url = action_url(company, "adjust_balance")
    response = admin_client.post(
        url, {"amount": "1.234", "reason": "Cents", "idempotency_key": drawn_key(admin_client, url)}
    )
    assert "USD amounts have at most 2 decimals" in response.text
    assert company_balance(company) == Money(0, "USD")

    admin_client.post(
        url, {"amount": "1.23", "reason": "Cents", "idempotency_key": drawn_key(admin_client, url)}
    )
    assert company_balance(company) == Money(Decimal("1.23"), "USD")


# --- Grant credits --------------------------------------------------------------------------


def test_granting_credits_creates_a_lot_described_by_the_reason(admin_client, admin_user):
    company = CompanyFactory()
    url = action_url(company, "grant_credits")
    response = admin_client.post(
        url,
        {
            "amount": "3000",
            "source": "trial",
            "lifetime_days": "10",
            "reason": "Welcome credit",
            "idempotency_key": drawn_key(admin_client, url),
        },
        follow=True,
    )
    lot = CreditLot.objects.get(company=company)
    assert (lot.source, lot.amount, lot.remaining) == ("trial", jpy(3000), jpy(3000))
    assert timedelta(days=10) <= lot.expires_at - NOW < timedelta(days=10, minutes=5)
    assert lot.grant_transaction.description == "Welcome credit"
    assert lot.grant_transaction.actor == admin_user
    assert company_balance(company) == jpy(3000)
    assert any("Granted ¥3,000 of trial credit" in m for m in messages_of(response))
    assert "Welcome credit" in LogEntry.objects.get(object_id=str(company.pk)).change_message


def test_granting_credits_lifts_the_block_for_used_up_credit(admin_client):
    company = CompanyFactory()
    charge(company, 100, now=NOW)  # nothing to spend: shortfall and a block
    company.refresh_from_db()
    assert company.is_blocked
    url = action_url(company, "grant_credits")
    admin_client.post(
        url,
        {
            "amount": "500",
            "source": "grant",
            "reason": "Make good",
            "idempotency_key": drawn_key(admin_client, url),
        },
    )
    company.refresh_from_db()
    assert not company.is_blocked


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ({"lifetime_days": "10", "expires_on": "2027-01-01"}, "not both"),
        ({"expires_on": "2020-01-01"}, "Credits must expire after"),
        ({"amount": "-5"}, "Ensure this value is greater than or equal to 0"),
        ({"source": "voucher"}, "Select a valid choice"),
    ],
)
def test_bad_grant_input_is_a_form_error_and_changes_nothing(admin_client, extra, error):
    company = CompanyFactory()
    url = action_url(company, "grant_credits")
    data = {
        "amount": "500",
        "source": "grant",
        "reason": "Test",
        "idempotency_key": drawn_key(admin_client, url),
        **extra,
    }
    response = admin_client.post(url, data)
    assert response.status_code == 200
    assert error in response.text
    assert not CreditLot.objects.exists()
    assert not LogEntry.objects.exists()


# --- Reverse --------------------------------------------------------------------------------


def test_reversing_a_charge_from_its_page_restores_the_balance_once(admin_client, prepaid):
    charged = charge(prepaid, 300, now=NOW).transaction
    page = admin_client.get(reverse("admin:billing_ledgertransaction_change", args=[charged.pk]))
    assert reverse_url(charged) in page.text

    confirm = admin_client.get(reverse_url(charged))
    assert "¥700" in confirm.text  # the balance now, before confirming
    response = admin_client.post(reverse_url(charged), {"reason": "Billed twice"}, follow=True)

    reversal = LedgerTransaction.objects.get(reverses=charged)
    assert "Billed twice" in reversal.description
    assert company_balance(prepaid) == jpy(1000)
    assert any("reversed by" in message for message in messages_of(response))
    assert "Billed twice" in LogEntry.objects.get(object_id=str(charged.pk)).change_message

    page = admin_client.get(reverse("admin:billing_ledgertransaction_change", args=[charged.pk]))
    assert reverse_url(charged) not in page.text  # no second reversal offered
    assert f">#{reversal.pk}<" in page.text  # reversed by

    response = admin_client.post(reverse_url(charged), {"reason": "Billed twice"}, follow=True)
    assert LedgerTransaction.objects.filter(reverses=charged).count() == 1
    assert LogEntry.objects.filter(object_id=str(charged.pk)).count() == 1
    assert any("already reversed" in message for message in messages_of(response))


def test_a_refused_reversal_shows_why_and_changes_nothing(admin_client):
    company = CompanyFactory()
    grant(company, 100, now=NOW, days=1)
    (expiry,) = ledger.credits_expire(company=company, now=NOW + timedelta(days=2))
    page = admin_client.get(reverse("admin:billing_ledgertransaction_change", args=[expiry.pk]))
    assert reverse_url(expiry) not in page.text
    before = LedgerTransaction.objects.count()
    response = admin_client.post(reverse_url(expiry), {"reason": "Bring it back"})
    assert response.status_code == 200
    assert "cannot be revived" in response.text
    assert LedgerTransaction.objects.count() == before
    assert not LogEntry.objects.exists()


def test_a_reversal_needs_a_reason(admin_client, prepaid):
    charged = charge(prepaid, 300, now=NOW).transaction
    response = admin_client.post(reverse_url(charged), {"reason": ""})
    assert response.status_code == 200
    assert "This field is required" in response.text
    assert not LedgerTransaction.objects.filter(reverses=charged).exists()


# --- Block and unblock ----------------------------------------------------------------------


def test_blocking_and_unblocking_by_hand(admin_client, admin_user, prepaid):
    response = admin_client.post(
        action_url(prepaid, "block"), {"reason": "Fraud review"}, follow=True
    )
    prepaid.refresh_from_db()
    assert prepaid.is_blocked
    block = CompanyBlock.objects.get(company=prepaid, lifted_at=None)
    assert (block.reason, block.note, block.blocked_by) == ("manual", "Fraud review", admin_user)
    assert any("is blocked" in message for message in messages_of(response))

    page = admin_client.get(action_url(prepaid, "unblock"))
    assert "Blocked by staff: Fraud review" in page.text
    admin_client.post(
        action_url(prepaid, "unblock"), {"block": "manual", "reason": "Review cleared"}
    )
    prepaid.refresh_from_db()
    block.refresh_from_db()
    assert not prepaid.is_blocked
    assert (block.lifted_by, block.lift_note) == (admin_user, "Review cleared")
    logs = LogEntry.objects.filter(object_id=str(prepaid.pk)).order_by("id")
    assert [entry.change_message for entry in logs] == [
        "Blocked: Fraud review",
        "Unblocked “Blocked by staff”: Review cleared",
    ]


def test_unblocking_one_reason_leaves_the_others(admin_client, admin_user):
    company = CompanyFactory()
    charge(company, 10, now=NOW)  # blocked: credit used up
    company_block(company=company, reason="manual", note="Hold", actor=admin_user)
    admin_client.post(action_url(company, "unblock"), {"block": "manual", "reason": "Released"})
    company.refresh_from_db()
    assert company.is_blocked
    assert company.blocked_reason == "Prepaid credit used up"


def test_a_block_needs_a_note(admin_client, prepaid):
    response = admin_client.post(action_url(prepaid, "block"), {"reason": ""})
    assert response.status_code == 200
    assert "This field is required" in response.text
    prepaid.refresh_from_db()
    assert not prepaid.is_blocked
    assert not CompanyBlock.objects.exists()


def test_an_active_company_has_nothing_to_unblock(admin_client, prepaid):
    page = admin_client.get(action_url(prepaid, "unblock"))
    assert "is not blocked" in page.text
    assert 'value="Unblock"' not in page.text
    response = admin_client.post(action_url(prepaid, "unblock"), {"block": "manual", "reason": "x"})
    assert response.status_code == 200
    assert not LogEntry.objects.exists()


# --- Switch mode ----------------------------------------------------------------------------


def test_switching_a_prepaid_company_to_postpaid_and_back(admin_client, prepaid):
    page = admin_client.get(action_url(prepaid, "switch_mode"))
    assert "Switch to postpaid" in page.text
    admin_client.post(
        action_url(prepaid, "switch_mode"), {"mode": "postpaid", "reason": "Contract signed"}
    )
    prepaid.refresh_from_db()
    assert prepaid.mode == Company.Mode.POSTPAID
    # Everything it holds is still in lots, so it may go back.
    admin_client.post(
        action_url(prepaid, "switch_mode"), {"mode": "prepaid", "reason": "Contract ended"}
    )
    prepaid.refresh_from_db()
    assert prepaid.mode == Company.Mode.PREPAID
    assert [entry.change_message for entry in LogEntry.objects.order_by("id")] == [
        "Switched from prepaid to postpaid: Contract signed",
        "Switched from postpaid to prepaid: Contract ended",
    ]


def test_a_postpaid_company_that_owes_cannot_switch_to_prepaid(admin_client):
    company = CompanyFactory(mode=Company.Mode.POSTPAID)
    charge(company, 500, now=NOW)
    response = admin_client.post(
        action_url(company, "switch_mode"), {"mode": "prepaid", "reason": "Asked to"}
    )
    assert response.status_code == 200
    assert "owes ¥550, with ¥50 of tax on its charges not yet invoiced" in response.text
    company.refresh_from_db()
    assert company.mode == Company.Mode.POSTPAID
    assert not LogEntry.objects.exists()


def test_a_stale_switch_page_does_not_switch_back(admin_client, prepaid):
    ledger.company_mode_switch(
        company=prepaid, mode="postpaid", actor=None, reason="Meanwhile", now=NOW
    )
    response = admin_client.post(
        action_url(prepaid, "switch_mode"), {"mode": "postpaid", "reason": "Old page"}
    )
    assert "already postpaid" in response.text
    prepaid.refresh_from_db()
    assert prepaid.mode == Company.Mode.POSTPAID


# --- Who may act ----------------------------------------------------------------------------


@pytest.mark.parametrize("group", ["Support", "Finance"])
def test_staff_without_the_money_permissions_get_403_on_every_action(staff_client, group, prepaid):
    client = staff_client(group)
    charged = charge(prepaid, 100, now=NOW).transaction
    urls = [action_url(prepaid, action) for action in COMPANY_ACTIONS] + [reverse_url(charged)]
    for url in urls:
        assert client.get(url).status_code == 403, url
        response = client.post(url, {"amount": "5", "reason": "x", "mode": "postpaid"})
        assert response.status_code == 403, url
    assert company_balance(prepaid) == jpy(900)
    assert not LogEntry.objects.exists()
    # They still read the company page, without the action buttons.
    page = client.get(reverse("admin:accounts_company_change", args=[prepaid.pk]))
    assert page.status_code == 200
    assert action_url(prepaid, "adjust_balance") not in page.text


def test_billing_admin_staff_see_and_run_the_money_actions(staff_client, prepaid):
    client = staff_client("Billing admin")
    page = client.get(reverse("admin:accounts_company_change", args=[prepaid.pk]))
    for action in ["adjust_balance", "grant_credits", "block", "switch_mode"]:
        assert action_url(prepaid, action) in page.text
    assert action_url(prepaid, "unblock") not in page.text  # not blocked
    url = action_url(prepaid, "adjust_balance")
    response = client.post(
        url, {"amount": "-100", "reason": "Fee", "idempotency_key": drawn_key(client, url)}
    )
    assert response.status_code == 302
    assert company_balance(prepaid) == jpy(900)


def test_actions_on_a_missing_company_are_404(admin_client):
    assert admin_client.get("/admin/accounts/company/999999/adjust-balance/").status_code == 404


# --- The books are read-only ----------------------------------------------------------------


def test_ledger_admin_pages_are_read_only_and_nothing_can_be_deleted(admin_client, prepaid):
    charged = charge(prepaid, 100, now=NOW).transaction
    lot = CreditLot.objects.get(company=prepaid)
    account = LedgerAccount.objects.get(company=prepaid)
    company_block(company=prepaid, reason="manual", note="Hold", actor=UserFactory())
    block = CompanyBlock.objects.get(company=prepaid)
    for model, obj in [
        ("billing_ledgertransaction", charged),
        ("billing_creditlot", lot),
        ("billing_ledgeraccount", account),
        ("accounts_companyblock", block),
    ]:
        change_url = reverse(f"admin:{model}_change", args=[obj.pk])
        page = admin_client.get(change_url)
        assert page.status_code == 200
        assert 'name="_save"' not in page.text
        assert admin_client.post(change_url, {}).status_code == 403
        assert admin_client.get(reverse(f"admin:{model}_add")).status_code == 403
        delete_url = reverse(f"admin:{model}_delete", args=[obj.pk])
        assert admin_client.post(delete_url, {"post": "yes"}).status_code == 403
    assert LedgerTransaction.objects.filter(pk=charged.pk).exists()
    assert CreditLot.objects.filter(pk=lot.pk).exists()


def test_transaction_page_shows_its_postings_and_shortfall(admin_client):
    company = CompanyFactory()
    grant(company, 100, now=NOW)
    short = charge(company, 250, now=NOW).transaction
    page = admin_client.get(reverse("admin:billing_ledgertransaction_change", args=[short.pk]))
    text = page.text
    assert "revenue:voice" in text and f"customer {company.account_code}" in text
    assert "¥150" in text  # the shortfall
    listing = admin_client.get(reverse("admin:billing_ledgertransaction_changelist"))
    assert "¥150" in listing.text and "-¥100" in listing.text


def test_transaction_list_searches_keys_and_account_codes_and_filters_kinds(admin_client):
    needle = CompanyFactory(account_code="needle-co")
    hay = CompanyFactory(account_code="hay-co")
    grant(needle, 100, now=NOW, key="grant:needle")
    grant(hay, 100, now=NOW, key="grant:hay")
    charge(hay, 10, now=NOW, key="charge:hay")
    url = reverse("admin:billing_ledgertransaction_changelist")

    def shown(**params):
        return [t.idempotency_key for t in admin_client.get(url, params).context["cl"].result_list]

    assert shown(q="needle-co") == ["grant:needle"]
    assert shown(q="grant:h") == ["grant:hay"]
    assert shown(kind__exact="usage") == ["charge:hay"]
    assert sorted(shown(**{"company__id__exact": hay.pk})) == ["charge:hay", "grant:hay"]
    number = LedgerTransaction.objects.get(idempotency_key="charge:hay").pk
    assert shown(q=str(number)) == ["charge:hay"]
    # Words of the description: within one company's list, not across the whole ledger.
    assert shown(q="test charge") == []
    assert shown(q="test charge", **{"company__id__exact": hay.pk}) == ["charge:hay"]
    assert shown(q="test charge", **{"company__id__exact": needle.pk}) == []


@pytest.mark.postgres
@pytest.mark.parametrize(
    "term", ["needle-co", "grant:h", "1", "Test"], ids=["company", "key", "number", "word"]
)
def test_transaction_search_is_served_by_indexes_never_a_walk_through_the_ledger(term):
    """With sequential scans priced out, each kind of term is found through an index (a
    BitmapOr of the key's pattern index, the primary key and (company, posted at)), never
    by walking the ledger in id order and filtering every row."""
    from django.contrib.admin.sites import site

    needle = CompanyFactory(account_code="needle-co")
    grant(needle, 100, now=NOW, key="grant:needle")
    grant(CompanyFactory(account_code="hay-co"), 100, now=NOW, key="grant:hay")
    model_admin = LedgerTransactionAdmin(LedgerTransaction, site)
    found, _ = model_admin.get_search_results(None, LedgerTransaction.objects.all(), term)
    sql, params = found.order_by("-id")[:100].query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Seq Scan" not in plan and "Index Scan Backward" not in plan, plan


# --- Cost of the pages ----------------------------------------------------------------------


def _queries(client, url) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return [query["sql"] for query in captured.captured_queries]


def _long_history(company, days=40):
    for day in range(days):
        grant(company, 100, now=NOW + timedelta(days=day), days=60)
        charge(company, 30, now=NOW + timedelta(days=day))
        charge(company, 20, now=NOW + timedelta(days=day), kind="recurring_fee")


def test_company_page_shows_money_lots_recent_history_and_blocks(admin_client, prepaid):
    _long_history(prepaid, days=15)
    company_block(company=prepaid, reason="manual", note="Chargeback dispute", actor=UserFactory())
    page = admin_client.get(reverse("admin:accounts_company_change", args=[prepaid.pk]))
    text = page.text
    balance = company_balance(prepaid)
    assert str(balance) in text
    assert "Chargeback dispute" in text
    assert "Operator grant" in text  # a lot with credit left
    newest = LedgerTransaction.objects.filter(company=prepaid).order_by("-id")
    for transaction_ in newest[:20]:
        assert reverse("admin:billing_ledgertransaction_change", args=[transaction_.pk]) in text
    oldest_shown_after = newest[20]
    url = reverse("admin:billing_ledgertransaction_change", args=[oldest_shown_after.pk])
    assert f'href="{url}"' not in text
    for action in COMPANY_ACTIONS:  # blocked now, so unblock is offered too
        assert action_url(prepaid, action) in text


def test_company_page_costs_the_same_queries_however_long_the_history(
    admin_client, django_assert_max_num_queries
):
    short, long = CompanyFactory(), CompanyFactory()
    grant(short, 100, now=NOW)
    _long_history(long)
    for company in (short, long):
        company_block(company=company, reason="manual", note="Hold", actor=UserFactory())
    change = "admin:accounts_company_change"
    few = _queries(admin_client, reverse(change, args=[short.pk]))
    many = _queries(admin_client, reverse(change, args=[long.pk]))
    assert len(many) == len(few)
    with django_assert_max_num_queries(14):
        admin_client.get(reverse(change, args=[long.pk]))


@pytest.mark.parametrize(
    "name",
    [
        "admin:billing_ledgertransaction_changelist",
        "admin:billing_creditlot_changelist",
        "admin:billing_ledgeraccount_changelist",
        "admin:accounts_companyblock_changelist",
    ],
)
def test_ledger_lists_cost_a_fixed_number_of_queries_and_never_count_a_whole_table(
    admin_client, django_assert_max_num_queries, name
):
    few_company = CompanyFactory()
    grant(few_company, 100, now=NOW)
    few = _queries(admin_client, reverse(name))
    for _ in range(4):
        company = CompanyFactory()
        _long_history(company, days=10)
        company_block(company=company, reason="manual", note="Hold", actor=UserFactory())
    many = _queries(admin_client, reverse(name))
    assert len(many) == len(few)
    with django_assert_max_num_queries(8):
        admin_client.get(reverse(name))
    if name.startswith("admin:billing"):
        counts = [sql for sql in many if "COUNT(" in sql.upper()]
        assert counts and all("LIMIT" in sql.upper() for sql in counts), counts


def test_past_the_count_cap_the_list_says_more_than(admin_client, monkeypatch):
    monkeypatch.setattr(CappedCountPaginator, "cap", 4)
    monkeypatch.setattr(LedgerTransactionAdmin, "list_per_page", 2)
    company = CompanyFactory()
    for _ in range(7):
        grant(company, 10, now=NOW)
    response = admin_client.get(reverse("admin:billing_ledgertransaction_changelist"))
    assert "More than 4 ledger transactions" in response.text
    assert len(response.context["cl"].result_list) == 2
    assert response.context["cl"].paginator.num_pages == 2


def test_company_page_shows_what_a_charge_could_not_take(admin_client):
    company = CompanyFactory()
    grant(company, 100, now=NOW)
    charge(company, 250, now=NOW)
    page = admin_client.get(reverse("admin:accounts_company_change", args=[company.pk]))
    assert "-¥100 (¥150 short)" in page.text


# --- Races (PostgreSQL) ---------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_double_submitted_adjustment_posts_once_even_when_both_arrive_together(admin_user):
    import threading

    from django.db import connections
    from django.test import Client

    company = CompanyFactory()
    url = action_url(company, "adjust_balance")
    clients = [Client(), Client()]
    for client in clients:
        client.force_login(admin_user)
    data = {
        "amount": "700",
        "reason": "Double click",
        "idempotency_key": drawn_key(clients[0], url),
    }
    barrier = threading.Barrier(2)
    statuses = []

    def submit(client):
        try:
            barrier.wait()
            statuses.append(client.post(url, data).status_code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=submit, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses == [302, 302]
    assert company_balance(company) == jpy(700)
    assert LedgerTransaction.objects.filter(kind=LedgerTransaction.Kind.ADJUSTMENT).count() == 1
    assert LogEntry.objects.filter(object_id=str(company.pk)).count() == 1
