"""The vouchers back-office: creating a batch through the admin's add form, counts by state
at a fixed query cost, the CSV export and who may see codes, voiding with a confirmation
page and a history entry, and each code's history."""

import csv
import io
import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.models import Company
from accounts.services import staff_groups_sync
from tests.factories import CompanyFactory, UserFactory
from tests.factories.vouchers import codes_of, voucher_batch
from vouchers import codes
from vouchers.models import Voucher, VoucherBatch
from vouchers.services import batch_void, voucher_redeem

pytestmark = pytest.mark.django_db

NOW = datetime(2027, 7, 1, 3, 0, tzinfo=UTC)
BATCHES = reverse("admin:vouchers_voucherbatch_changelist")
CODES = reverse("admin:vouchers_voucher_changelist")


@pytest.fixture(autouse=True)
def at_now():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def staff_client(client):
    def login(group_name):
        staff_groups_sync()
        user = UserFactory(is_staff=True)
        user.groups.add(Group.objects.get(name=group_name))
        client.force_login(user)
        return client

    return login


def plain(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


def batch_url(batch, suffix="change"):
    return reverse(f"admin:vouchers_voucherbatch_{suffix}", args=[batch.pk])


def add_form(**changes):
    data = {
        "label": "Summer campaign",
        "reseller": "Denki Shop KK",
        "amount_0": "3000",
        "amount_1": "JPY",
        "count": "40",
        "lifetime_days": "60",
        "redeem_by_0": "2027-12-31",
        "redeem_by_1": "23:59:59",
        "notes": "Scratch cards, 2 print runs",
    }
    data.update(changes)
    return data


# --- Creating a batch -----------------------------------------------------------------------


def test_staff_create_a_batch_through_the_admin_add_form(admin_client, admin_user):
    page = admin_client.get(reverse("admin:vouchers_voucherbatch_add"))
    assert page.status_code == 200
    for field in [
        "label",
        "reseller",
        "amount_0",
        "amount_1",
        "count",
        "lifetime_days",
        "redeem_by_0",
        "notes",
    ]:
        assert f'name="{field}"' in page.text

    response = admin_client.post(reverse("admin:vouchers_voucherbatch_add"), add_form())

    batch = VoucherBatch.objects.get()
    assert response.status_code == 302 and response.url == batch_url(batch)
    assert (batch.label, batch.reseller, str(batch.amount), batch.count) == (
        "Summer campaign",
        "Denki Shop KK",
        "¥3,000",
        40,
    )
    assert batch.lifetime_days == 60
    assert batch.redeem_by == datetime(2027, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert (batch.created_by, batch.created_at) == (admin_user, NOW)
    assert Voucher.objects.filter(batch=batch, status="new").count() == 40
    log = LogEntry.objects.get(object_id=str(batch.pk))
    assert (log.action_flag, log.user) == (ADDITION, admin_user)
    page = admin_client.get(response.url)
    assert "created with 40 codes of ¥3,000" in plain(page.text)


@pytest.mark.parametrize("count", ["0", "100001", "-5", "many"])
def test_a_count_outside_the_bounds_is_shown_as_an_error_and_nothing_is_created(
    admin_client, count
):
    response = admin_client.post(reverse("admin:vouchers_voucherbatch_add"), add_form(count=count))
    assert response.status_code == 200
    errors = plain(" ".join(re.findall(r'<ul class="errorlist.*?</ul>', response.text, re.S)))
    expected = "from 1 to 100,000 codes" if count.lstrip("-").isdigit() else "whole number"
    assert expected in errors
    assert not VoucherBatch.objects.exists()


@pytest.mark.parametrize("amount", ["-100", "0"])
def test_an_amount_of_zero_or_less_is_a_plain_error_and_nothing_is_created(admin_client, amount):
    response = admin_client.post(
        reverse("admin:vouchers_voucherbatch_add"), add_form(amount_0=amount)
    )
    assert response.status_code == 200
    errors = plain(" ".join(re.findall(r'<ul class="errorlist.*?</ul>', response.text, re.S)))
    assert "more than zero" in errors and "voucher_batch_amount_positive" not in errors
    assert not VoucherBatch.objects.exists()


def test_the_add_form_offers_the_house_currency_first(admin_client):
    page = admin_client.get(reverse("admin:vouchers_voucherbatch_add"))
    assert re.search(r'<option value="JPY" selected>', page.text)


def test_a_redeem_by_in_the_past_is_refused_by_the_service_and_nothing_is_created(admin_client):
    response = admin_client.post(
        reverse("admin:vouchers_voucherbatch_add"), add_form(redeem_by_0="2027-01-01")
    )
    assert response.status_code == 200
    assert "must be in the future" in plain(response.text)
    assert not VoucherBatch.objects.exists()


# --- Lists and counts -----------------------------------------------------------------------


def make_batches(n: int, *, prefix="Batch"):
    company = CompanyFactory()
    made = []
    for index in range(n):
        batch = voucher_batch(
            now=NOW - timedelta(days=10),
            count=5,
            label=f"{prefix} {index}",
            redeem_by=NOW - timedelta(days=1) + timedelta(days=2 * (index % 2)),
        )
        made.append(batch)
    return company, made


def test_the_batch_list_counts_new_redeemed_voided_and_expired(admin_client):
    company = CompanyFactory()
    open_batch = voucher_batch(
        now=NOW - timedelta(days=3), count=6, label="Open", redeem_by=NOW + timedelta(days=9)
    )
    first, second, third, *_ = Voucher.objects.filter(batch=open_batch).order_by("id")
    with time_machine.travel(NOW - timedelta(days=1), tick=False):
        voucher_redeem(company=company, code=first.code)
        voucher_redeem(company=CompanyFactory(), code=second.code)
    from vouchers.services import voucher_void

    voucher_void(voucher=third, actor=None, reason="Misprint", now=NOW)
    past = voucher_batch(
        now=NOW - timedelta(days=3), count=4, label="Past", redeem_by=NOW - timedelta(hours=1)
    )
    batch_void(
        batch=voucher_batch(now=NOW, count=2, label="Gone"), actor=None, reason="Lost", now=NOW
    )

    page = plain(admin_client.get(BATCHES).text)
    # new, redeemed, voided, expired after the lifetime column and the total.
    assert re.search(r"Open .* 6 3 2 1 0", page)
    assert re.search(r"Past .* 4 0 0 0 4", page)
    assert re.search(r"Gone .* 2 0 0 2 0", page)
    detail = plain(admin_client.get(batch_url(open_batch)).text)
    assert "New 3 Redeemed 2 Voided 1 Expired 0 All 6" in detail
    assert re.search(r"2027-06-30 2 ¥10,000", detail)  # registrations per day
    assert past.pk


def test_the_batch_list_costs_the_same_number_of_queries_for_1_or_30_batches(
    admin_client, django_assert_max_num_queries
):
    make_batches(1)
    with CaptureQueriesContext(connection) as few:
        admin_client.get(BATCHES)
    count = len(few.captured_queries)
    make_batches(29, prefix="More")
    with django_assert_max_num_queries(count):
        page = admin_client.get(BATCHES)
    assert page.text.count("More ") >= 29


def test_the_code_list_costs_the_same_number_of_queries_for_few_or_many_codes(
    admin_client, django_assert_max_num_queries
):
    batch = voucher_batch(now=NOW - timedelta(days=1), count=2)
    voucher_redeem(company=CompanyFactory(), code=codes_of(batch)[0])
    with CaptureQueriesContext(connection) as few:
        admin_client.get(CODES)
    count = len(few.captured_queries)
    many = voucher_batch(now=NOW - timedelta(days=1), count=60, label="Many")
    for code in codes_of(many)[:30]:
        voucher_redeem(company=CompanyFactory(), code=code)
    with django_assert_max_num_queries(count):
        assert admin_client.get(CODES).status_code == 200


# --- Who may see codes ----------------------------------------------------------------------


def test_only_billing_admins_get_the_code_permission():
    staff_groups_sync()
    holders = {
        group.name for group in Group.objects.filter(permissions__codename="view_voucher_codes")
    }
    assert holders == {"Billing admin"}
    support = set(Group.objects.get(name="Support").permissions.values_list("codename", flat=True))
    assert {"view_voucherbatch", "view_voucher", "view_voucherredemption"} <= support


def test_the_export_needs_the_code_permission(staff_client):
    batch = voucher_batch(now=NOW, count=3)
    for group in ["Support", "Finance"]:
        client = staff_client(group)
        assert client.get(batch_url(batch)).status_code == 200
        assert client.get(batch_url(batch, "export")).status_code == 403
        assert "Export codes" not in client.get(batch_url(batch)).text
    assert not LogEntry.objects.exists()


def test_billing_admins_export_a_batch_as_csv_and_the_export_is_logged(staff_client):
    batch = voucher_batch(
        now=NOW,
        count=25,
        amount="1000",
        lifetime_days=45,
        label="Reseller: Q3",
        redeem_by=NOW + timedelta(days=30),
    )
    client = staff_client("Billing admin")
    assert "Export codes (CSV)" in client.get(batch_url(batch)).text

    response = client.get(batch_url(batch, "export"))
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert f'filename="vouchers-{batch.pk}-reseller-q3.csv"' in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == ["code", "amount", "currency", "credit_lifetime_days", "redeem_by", "status"]
    assert len(rows) == 26
    assert rows[1][1:] == ["1000", "JPY", "45", "2027-07-31T03:00:00+00:00", "new"]
    exported = [row[0] for row in rows[1:]]
    assert exported == codes_of(batch)
    assert all(codes.is_valid(codes.normalise(code)) for code in exported)
    log = LogEntry.objects.get(object_id=str(batch.pk))
    assert log.action_flag == CHANGE and "Exported" in log.get_change_message()


def test_without_the_code_permission_codes_are_masked_and_found_only_by_the_whole_code(
    staff_client,
):
    batch = voucher_batch(now=NOW, count=3)
    code = codes_of(batch)[0]
    client = staff_client("Support")
    page = client.get(CODES).text
    assert code not in page
    assert codes.mask_code(code.replace("-", "")) in page
    # Searching with the whole code (any spelling) finds it; a part finds nothing.
    found = client.get(CODES, {"q": code.lower().replace("-", " ")}).text
    assert codes.mask_code(code.replace("-", "")) in found and "1 result" in found
    assert "0 results" in client.get(CODES, {"q": code[:9]}).text

    admin = staff_client("Billing admin")
    assert code in admin.get(CODES).text


# --- Voiding --------------------------------------------------------------------------------


def test_voiding_a_batch_asks_for_confirmation_and_a_reason_then_logs_it(staff_client):
    batch = voucher_batch(now=NOW - timedelta(days=1), count=4)
    voucher_redeem(company=CompanyFactory(), code=codes_of(batch)[0])
    client = staff_client("Billing admin")
    url = batch_url(batch, "void")
    assert f'href="{url}"' in client.get(batch_url(batch)).text

    page = client.get(url)
    assert page.status_code == 200
    assert "Every unused code of the batch" in plain(page.text)
    assert not Voucher.objects.filter(status="voided").exists()  # a GET changes nothing

    refused = client.post(url, {"reason": ""})
    assert refused.status_code == 200 and "Nothing was changed" in refused.text
    assert not Voucher.objects.filter(status="voided").exists()

    response = client.post(url, {"reason": "Cards stolen from the shop"})
    assert response.status_code == 302
    assert Voucher.objects.filter(batch=batch, status="voided").count() == 3
    assert Voucher.objects.filter(batch=batch, status="redeemed").count() == 1
    log = LogEntry.objects.get(object_id=str(batch.pk), action_flag=CHANGE)
    assert "Cards stolen from the shop" in log.get_change_message()
    assert "3 unused codes can no longer be registered" in plain(client.get(response.url).text)


def test_support_cannot_void(staff_client):
    batch = voucher_batch(now=NOW, count=2)
    client = staff_client("Support")
    assert client.post(batch_url(batch, "void"), {"reason": "x"}).status_code == 403
    voucher = batch.vouchers.first()
    url = reverse("admin:vouchers_voucher_void", args=[voucher.pk])
    assert client.post(url, {"reason": "x"}).status_code == 403
    assert not Voucher.objects.filter(status="voided").exists()


def test_voiding_selected_codes_from_the_list_confirms_first_and_skips_redeemed_ones(staff_client):
    batch = voucher_batch(now=NOW - timedelta(days=1), count=3)
    used, unused, untouched = Voucher.objects.filter(batch=batch).order_by("id")
    voucher_redeem(company=CompanyFactory(name="Acme"), code=used.code)
    client = staff_client("Billing admin")
    selection = {"action": "void_selected_codes", "_selected_action": [used.pk, unused.pk]}

    confirm = client.post(CODES, selection)
    assert confirm.status_code == 200
    assert "This cannot be undone" in confirm.text
    assert not Voucher.objects.filter(status="voided").exists()

    done = client.post(CODES, {**selection, "post": "yes", "reason": "Misprint"}, follow=True)
    text = plain(done.text)
    assert "1 voided" in text and "was registered by Acme" in text
    statuses = dict(Voucher.objects.filter(batch=batch).values_list("pk", "status"))
    assert statuses == {used.pk: "redeemed", unused.pk: "voided", untouched.pk: "new"}
    assert LogEntry.objects.filter(object_id=str(unused.pk), action_flag=CHANGE).count() == 1
    assert not LogEntry.objects.filter(object_id=str(used.pk)).exists()


def test_voiding_one_code_from_its_page(staff_client):
    voucher = voucher_batch(now=NOW, count=1).vouchers.get()
    client = staff_client("Billing admin")
    url = reverse("admin:vouchers_voucher_void", args=[voucher.pk])
    assert client.get(url).status_code == 200
    client.post(url, {"reason": "Handed to the wrong customer"})
    voucher.refresh_from_db()
    assert voucher.status == "voided" and voucher.void_reason == "Handed to the wrong customer"
    assert LogEntry.objects.filter(object_id=str(voucher.pk), action_flag=CHANGE).exists()


def test_voiding_selected_batches_from_the_list(staff_client):
    _, (first, second) = make_batches(2)
    client = staff_client("Billing admin")
    selection = {"action": "void_selected_batches", "_selected_action": [first.pk]}
    assert "This cannot be undone" in client.post(BATCHES, selection).text
    client.post(BATCHES, {**selection, "post": "yes", "reason": "Campaign cancelled"})
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.voided_at is not None and second.voided_at is None
    assert Voucher.objects.filter(batch=first, status="voided").count() == 5


# --- A code's history -----------------------------------------------------------------------


def test_a_codes_page_shows_its_history(staff_client):
    staff = UserFactory(username="maker", is_staff=True, is_superuser=True)
    with time_machine.travel(NOW - timedelta(days=3), tick=False):
        batch = voucher_batch(now=NOW - timedelta(days=3), count=2, actor=staff)
    prepaid, postpaid = Voucher.objects.filter(batch=batch).order_by("id")
    customer = UserFactory(username="keiko")
    company = CompanyFactory(name="Acme", mode=Company.Mode.PREPAID)
    redemption = voucher_redeem(
        company=company,
        code=prepaid.code,
        actor=customer,
        ip="198.51.100.30",
        now=NOW - timedelta(days=1),
    )
    voucher_redeem(
        company=CompanyFactory(name="Kumo", mode=Company.Mode.POSTPAID), code=postpaid.code, now=NOW
    )
    client = staff_client("Support")

    text = plain(client.get(reverse("admin:vouchers_voucher_change", args=[prepaid.pk])).text)
    assert "Created maker" in text
    assert "Registered keiko Acme" in text and "198.51.100.30" in text
    assert f"ledger transaction #{redemption.transaction_id}" in text
    text = plain(client.get(reverse("admin:vouchers_voucher_change", args=[postpaid.pk])).text)
    assert "credit for the next invoice (pending)" in text

    spare = voucher_batch(now=NOW, count=1).vouchers.get()
    from vouchers.services import voucher_void

    voucher_void(voucher=spare, actor=staff, reason="Lost in the post", now=NOW)
    text = plain(client.get(reverse("admin:vouchers_voucher_change", args=[spare.pk])).text)
    assert "Voided maker Lost in the post" in text
