"""The recurring back-office: numbers, subscriptions, seat and service fees added and ended
through their services from the admin's real forms, the company's upcoming charges, "Run
recurring charges now", who may do what, and pages whose cost does not grow with rows."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from djmoney.money import Money

from accounts.admin import CompanyAdmin
from accounts.models import Company
from accounts.services import staff_groups_sync
from billing.models import (
    LedgerTransaction,
    PhoneNumber,
    Plan,
    RecurringCharge,
    SeatFee,
    ServiceFee,
    Subscription,
)
from billing.reconcile import reconcile
from billing.selectors import company_balance
from billing.services import recurring
from tests.factories import CompanyFactory, SubaccountFactory, UserFactory
from tests.factories.rating import PlanFactory

pytestmark = pytest.mark.django_db

TOKYO = ZoneInfo("Asia/Tokyo")
NEW_YORK = ZoneInfo("America/New_York")
NOW = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo


@pytest.fixture(autouse=True)
def clock():
    # The admin reads the clock; stop it at NOW so that "now" is an exact instant.
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture(autouse=True)
def books_always_reconcile():
    yield
    report = reconcile(now=NOW + timedelta(days=400))
    assert report.ok, report.problems


@pytest.fixture
def company():
    return CompanyFactory(mode=Company.Mode.POSTPAID, billing_timezone="Asia/Tokyo")


@pytest.fixture
def staff_client(client):
    def login(group_name):
        staff_groups_sync()
        user = UserFactory(is_staff=True)
        user.groups.add(Group.objects.get(name=group_name))
        client.force_login(user)
        return client

    return login


def jpy(value) -> Money:
    return Money(Decimal(value), "JPY")


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def form_errors(response) -> dict:
    return response.context["adminform"].form.errors


def add_url(model_name: str) -> str:
    return reverse(f"admin:billing_{model_name}_add")


def end_url(obj) -> str:
    return reverse(f"admin:billing_{obj._meta.model_name}_end", args=[obj.pk])


def list_url(model_name: str) -> str:
    return reverse(f"admin:billing_{model_name}_changelist")


def run_url(company) -> str:
    return reverse("admin:accounts_company_run_recurring", args=[company.pk])


def company_url(company) -> str:
    return reverse("admin:accounts_company_change", args=[company.pk])


def assign(company, number="+81 50 1111 2222", at=NOW - timedelta(days=40), price=300):
    return recurring.phone_number_assign(
        company=company, number=number, monthly_price=jpy(price), at=at
    )


def end_data(**values) -> dict:
    return {"end_date": "", "end_time": "", "reason": "Customer asked", **values}


# --- Phone numbers --------------------------------------------------------------------------


def test_assigning_a_number_in_the_admin_starts_its_monthly_charge_now(admin_client, company):
    response = admin_client.post(
        add_url("phonenumber"),
        {
            "company": company.pk,
            "number": "+81 50 1111 2222",
            "monthly_price_0": "300",
            "monthly_price_1": "JPY",
            "start_date": "",
            "start_time": "",
        },
    )

    assert response.status_code == 302
    number = PhoneNumber.objects.get(company=company)
    assert number.assigned_at == number.next_charge_at == NOW
    assert number.monthly_price == jpy(300)
    assert LogEntry.objects.get(object_id=str(number.pk)).action_flag == ADDITION
    recurring.recurring_charge_company(company=company, as_of=NOW, now=NOW)
    assert company_balance(company) == jpy(-300)


def test_a_start_day_is_read_on_the_company_billing_clock(admin_client):
    company = CompanyFactory(billing_timezone="America/New_York")
    admin_client.post(
        add_url("phonenumber"),
        {
            "company": company.pk,
            "number": "+1 212 555 0100",
            "monthly_price_0": "300",
            "monthly_price_1": "JPY",
            "start_date": "2026-12-01",
            "start_time": "",
        },
    )
    number = PhoneNumber.objects.get(company=company)
    # Midnight in New York, not in UTC (which would be 30 November there).
    assert number.assigned_at == datetime(2026, 12, 1, tzinfo=NEW_YORK)
    assert number.next_charge_at == number.assigned_at


def test_a_number_held_by_another_company_is_an_error_on_the_form(admin_client, company):
    assign(CompanyFactory(), number="+81 50 9999 0000")
    response = admin_client.post(
        add_url("phonenumber"),
        {
            "company": company.pk,
            "number": "+81 50 9999 0000",
            "monthly_price_0": "300",
            "monthly_price_1": "JPY",
        },
    )

    assert response.status_code == 200
    assert "assigned to a company already" in " ".join(form_errors(response)["number"])
    assert not PhoneNumber.objects.filter(company=company).exists()
    assert not LogEntry.objects.exists()


@pytest.mark.parametrize(
    ("amount", "currency", "message"),
    [("3", "USD", "must be in JPY"), ("0.5", "JPY", "no decimals")],
)
def test_a_price_the_company_cannot_pay_in_is_an_error_on_its_field(
    admin_client, company, amount, currency, message
):
    response = admin_client.post(
        add_url("phonenumber"),
        {
            "company": company.pk,
            "number": "+81 50 1111 2222",
            "monthly_price_0": amount,
            "monthly_price_1": currency,
        },
    )
    assert response.status_code == 200
    assert message in " ".join(form_errors(response)["monthly_price"])
    assert not PhoneNumber.objects.exists()


def test_releasing_numbers_from_the_list_asks_first_then_releases_each_and_logs_it(
    admin_client, admin_user, company
):
    number = assign(company)
    recurring.recurring_charge_company(company=company, as_of=NOW, now=NOW)
    number.refresh_from_db()
    assert number.next_charge_at > NOW
    selected = {"action": "release_selected", "_selected_action": [number.pk]}

    page = admin_client.post(list_url("phonenumber"), selected)
    assert page.status_code == 200
    assert "+81 50 1111 2222" in page.text and 'name="reason"' in page.text
    number.refresh_from_db()
    assert number.released_at is None

    response = admin_client.post(
        list_url("phonenumber"), {**selected, "post": "yes", **end_data()}, follow=True
    )

    number.refresh_from_db()
    assert number.released_at == NOW
    assert number.next_charge_at is None
    assert "1 number released." in messages_of(response)
    log = LogEntry.objects.get(object_id=str(number.pk), action_flag=CHANGE)
    assert log.user == admin_user
    assert "Released at" in log.get_change_message()
    assert "Customer asked" in log.get_change_message()


def test_a_number_page_releases_it_at_a_chosen_day_and_time_in_its_billing_zone(
    admin_client, company
):
    number = assign(company)
    page = admin_client.get(reverse("admin:billing_phonenumber_change", args=[number.pk]))
    assert end_url(number) in page.text  # the "Release" button
    assert 'name="_save"' not in page.text  # nothing is edited in place

    response = admin_client.post(end_url(number), end_data(end_date="2026-12-05", end_time="09:30"))

    assert response.status_code == 302
    number.refresh_from_db()
    assert number.released_at == datetime(2026, 12, 5, 9, 30, tzinfo=TOKYO)
    # The period that started on 11 November is not charged yet: it still is, at a run.
    assert number.next_charge_at == number.assigned_at


def test_a_release_refused_for_one_number_leaves_the_others_released(admin_client, company):
    later = assign(company, number="+81 50 0000 0001", at=NOW + timedelta(days=3))
    now_number = assign(company, number="+81 50 0000 0002")
    released = assign(company, number="+81 50 0000 0003")
    recurring.phone_number_release(phone_number=released, at=NOW - timedelta(days=1))
    selected = {
        "action": "release_selected",
        "_selected_action": [later.pk, now_number.pk, released.pk],
        "post": "yes",
    }

    response = admin_client.post(list_url("phonenumber"), {**selected, **end_data()}, follow=True)

    (message,) = messages_of(response)
    assert message.startswith("1 number released, 1 failed: +81 50 0000 0001: it starts")
    assert "1 had an end already" in message
    later.refresh_from_db()
    now_number.refresh_from_db()
    assert later.released_at is None and now_number.released_at == NOW
    assert LogEntry.objects.filter(action_flag=CHANGE).count() == 1


def test_an_end_time_without_a_day_or_without_a_reason_is_refused(admin_client, company):
    number = assign(company)
    response = admin_client.post(end_url(number), end_data(end_time="10:00", reason=""))
    assert response.status_code == 200
    assert set(response.context["form"].errors) == {"end_date", "reason"}
    number.refresh_from_db()
    assert number.released_at is None


# --- Subscriptions --------------------------------------------------------------------------


def test_ordering_a_plan_in_the_admin_starts_its_fee_and_the_run_charges_it(admin_client, company):
    plan = PlanFactory(monthly_fee=jpy(1000), activation_fee=jpy(3000))
    response = admin_client.post(add_url("subscription"), {"company": company.pk, "plan": plan.pk})

    assert response.status_code == 302
    subscription = Subscription.objects.get(company=company)
    assert subscription.started_at == subscription.fee_anchor_at == NOW
    assert subscription.next_charge_at == NOW
    records = recurring.recurring_charge_company(company=company, as_of=NOW, now=NOW)
    assert sorted(record.item for record in records) == ["activation", "plan_fee"]
    assert company_balance(company) == jpy(-4000)
    subscription.refresh_from_db()
    assert subscription.next_charge_at == datetime(2026, 12, 20, 12, 0, tzinfo=TOKYO)

    page = admin_client.get(reverse("admin:billing_subscription_change", args=[subscription.pk]))
    assert "2026-11-20 12:00 JST" in page.text  # the fee's anchor, on the billing clock
    assert "2026-12-20 12:00 JST" in page.text  # the next charge
    assert 'name="_save"' not in page.text
    changed = admin_client.post(
        reverse("admin:billing_subscription_change", args=[subscription.pk]),
        {"company": company.pk, "plan": PlanFactory().pk},
    )
    assert changed.status_code == 403
    subscription.refresh_from_db()
    assert subscription.plan == plan


def test_a_plan_charged_from_first_use_has_no_next_charge_until_used(admin_client, company):
    plan = PlanFactory(is_paygo=True, fee_starts="first_use")
    admin_client.post(add_url("subscription"), {"company": company.pk, "plan": plan.pk})
    subscription = Subscription.objects.get(company=company)
    assert subscription.fee_anchor_at is None and subscription.next_charge_at is None
    page = admin_client.get(reverse("admin:billing_subscription_change", args=[subscription.pk]))
    assert "its first use" in page.text


def test_a_plan_in_another_currency_or_not_for_sale_cannot_be_ordered(admin_client, company):
    dollars = PlanFactory(currency="USD", monthly_fee=Money(10, "USD"))
    response = admin_client.post(
        add_url("subscription"), {"company": company.pk, "plan": dollars.pk}
    )
    assert "billed in JPY" in " ".join(form_errors(response)["plan"])
    retired = PlanFactory(is_active=False)
    response = admin_client.post(
        add_url("subscription"), {"company": company.pk, "plan": retired.pk}
    )
    assert "plan" in form_errors(response)
    assert not Subscription.objects.exists()


def test_ending_a_subscription_stops_the_fee_from_the_end_on(admin_client, company):
    plan = PlanFactory(monthly_fee=jpy(1000))
    subscription = recurring.subscription_order(company=company, plan=plan, at=NOW)
    recurring.recurring_charge_company(company=company, as_of=NOW, now=NOW)
    page = admin_client.get(end_url(subscription))
    assert page.status_code == 200
    assert "2026-12-20 12:00 JST" in page.text  # its next charge, before confirming

    response = admin_client.post(end_url(subscription), end_data(end_date="2026-12-20"))

    assert response.status_code == 302
    subscription.refresh_from_db()
    assert subscription.ended_at == datetime(2026, 12, 20, tzinfo=TOKYO)
    assert subscription.next_charge_at is None  # its next period starts after the end
    later = datetime(2027, 3, 1, tzinfo=TOKYO)
    assert recurring.recurring_charge_company(company=company, as_of=later, now=later) == []
    assert RecurringCharge.objects.filter(subscription=subscription).count() == 1


def test_a_subscription_ended_after_its_next_charge_is_charged_that_period_then_stops(
    admin_client, company
):
    subscription = recurring.subscription_order(company=company, plan=PlanFactory(), at=NOW)
    recurring.recurring_charge_company(company=company, as_of=NOW, now=NOW)
    admin_client.post(
        list_url("subscription"),
        {
            "action": "end_selected",
            "_selected_action": [subscription.pk],
            "post": "yes",
            **end_data(end_date="2026-12-25"),
        },
    )
    subscription.refresh_from_db()
    assert subscription.next_charge_at == datetime(2026, 12, 20, 12, 0, tzinfo=TOKYO)
    later = datetime(2027, 3, 1, tzinfo=TOKYO)
    recurring.recurring_charge_company(company=company, as_of=later, now=later)
    assert RecurringCharge.objects.filter(subscription=subscription).count() == 2
    subscription.refresh_from_db()
    assert subscription.next_charge_at is None


# --- Seat and service fees ------------------------------------------------------------------


def test_seat_fee_added_and_ended_through_the_admin(admin_client, company):
    SubaccountFactory.create_batch(2, company=company, created_at=NOW - timedelta(days=1))
    response = admin_client.post(
        add_url("seatfee"),
        {"company": company.pk, "price_per_seat_0": "500", "price_per_seat_1": "JPY"},
    )
    assert response.status_code == 302
    fee = SeatFee.objects.get(company=company)
    assert fee.started_at == fee.next_charge_at == NOW
    recurring.recurring_charge_company(company=company, as_of=NOW, now=NOW)
    assert company_balance(company) == jpy(-1000)

    admin_client.post(end_url(fee), end_data(end_date="2026-12-01"))

    fee.refresh_from_db()
    assert fee.ended_at == datetime(2026, 12, 1, tzinfo=TOKYO)
    assert fee.next_charge_at is None  # 20 December is after the end
    assert LogEntry.objects.filter(object_id=str(fee.pk)).count() == 2  # added, ended


def test_a_zero_seat_price_is_an_error_on_its_field(admin_client, company):
    response = admin_client.post(
        add_url("seatfee"),
        {"company": company.pk, "price_per_seat_0": "0", "price_per_seat_1": "JPY"},
    )
    assert "more than zero" in " ".join(form_errors(response)["price_per_seat"])
    assert not SeatFee.objects.exists()


def test_service_fee_added_and_ended_through_the_admin(admin_client, company):
    response = admin_client.post(
        add_url("servicefee"),
        {
            "company": company.pk,
            "name": "Priority support",
            "amount_0": "2000",
            "amount_1": "JPY",
            "period": "weekly",
            "start_date": "2026-11-23",
            "start_time": "09:00",
        },
    )
    assert response.status_code == 302
    fee = ServiceFee.objects.get(company=company)
    start = datetime(2026, 11, 23, 9, 0, tzinfo=TOKYO)
    assert fee.started_at == fee.next_charge_at == start
    assert recurring.recurring_due(company, NOW) == []  # not started yet

    response = admin_client.post(
        list_url("servicefee"),
        {
            "action": "end_selected",
            "_selected_action": [fee.pk],
            "post": "yes",
            **end_data(end_date="2026-12-07", end_time="09:00"),
        },
        follow=True,
    )

    assert "1 service fee ended." in messages_of(response)
    fee.refresh_from_db()
    assert fee.ended_at == datetime(2026, 12, 7, 9, 0, tzinfo=TOKYO)
    later = datetime(2027, 1, 1, tzinfo=TOKYO)
    recurring.recurring_charge_company(company=company, as_of=later, now=later)
    assert RecurringCharge.objects.filter(service_fee=fee).count() == 2  # 23 and 30 November


# --- The company page -----------------------------------------------------------------------


def _schedule(company, number="+81 50 1111 2222"):
    """A plan with an activation fee, a number, a seat fee with two seats, a service fee."""
    plan = Plan.objects.filter(name="Office 500").first() or PlanFactory(
        name="Office 500", monthly_fee=jpy(1000), activation_fee=jpy(3000)
    )
    recurring.subscription_order(company=company, plan=plan, at=NOW - timedelta(days=40))
    assign(company, number=number)
    SubaccountFactory.create_batch(2, company=company, created_at=NOW - timedelta(days=50))
    recurring.seat_fee_set(company=company, price_per_seat=jpy(500), at=NOW + timedelta(days=2))
    recurring.service_fee_add(
        company=company,
        name="Priority support",
        amount=jpy(2000),
        period="weekly",
        at=NOW + timedelta(days=3),
    )


def test_company_page_shows_each_item_next_charge_on_its_billing_clock(admin_client, company):
    _schedule(company)
    _schedule(CompanyFactory(), number="+81 50 0000 9999")  # another company's items
    text = admin_client.get(company_url(company)).text

    assert "next charge (Asia/Tokyo)" in text
    assert "Plan Office 500" in text
    assert "2026-10-11 12:00 JST: due now" in text  # ordered 40 days ago, not charged yet
    assert "¥4,000" in text and "¥1,000 monthly fee + ¥3,000 activation fee" in text
    assert "2026-11-22 12:00 JST" in text  # the seat fee starts in two days
    assert "2 seats active now × ¥500" in text and "¥1,000" in text
    assert "Priority support (weekly)" in text and "¥2,000" in text
    number = PhoneNumber.objects.get(company=company)
    assert reverse("admin:billing_phonenumber_change", args=[number.pk]) in text
    assert f"{add_url('servicefee')}?company={company.pk}" in text
    assert run_url(company) in text

    # Once charged, the subscription's next charge is its next anniversary, without the
    # activation fee.
    recurring.recurring_charge_company(company=company, as_of=NOW, now=NOW)
    text = admin_client.get(company_url(company)).text
    assert "2026-12-11 12:00 JST" in text and "activation fee" not in text

    # Each list link shows this company's items only.
    for model_name in ["subscription", "phonenumber", "seatfee", "servicefee", "recurringcharge"]:
        url = f"{list_url(model_name)}?company__id__exact={company.pk}"
        assert url in text
        listed = admin_client.get(url).context["cl"].result_list
        assert listed and {item.company_id for item in listed} == {company.pk}


def test_company_page_lists_at_most_the_soonest_items(admin_client, company, monkeypatch):
    monkeypatch.setattr(CompanyAdmin, "upcoming_shown", 2)
    for index in range(3):
        assign(company, number=f"+81 50 0000 000{index}", at=NOW + timedelta(days=index))
    text = admin_client.get(company_url(company)).text
    assert "+81 50 0000 0000" in text and "+81 50 0000 0001" in text
    assert "The 2 soonest are shown" in text


def _queries(client, url) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return [query["sql"] for query in captured.captured_queries]


def test_company_page_costs_the_same_queries_however_many_recurring_items(admin_client):
    empty, busy = CompanyFactory(), CompanyFactory()
    _schedule(busy)
    for index in range(20):
        assign(busy, number=f"+81 3 0000 {index:04d}")
    assert len(_queries(admin_client, company_url(busy))) == len(
        _queries(admin_client, company_url(empty))
    )


# --- Run recurring charges now --------------------------------------------------------------


def test_run_now_lists_what_is_due_then_posts_it_once_and_logs_it(
    admin_client, admin_user, company
):
    _schedule(company)
    page = admin_client.get(run_url(company))
    assert page.status_code == 200
    # Two months of the plan and of the number, and the activation fee; fees start later.
    assert "Plan Office 500, 2026-10-11 – 2026-11-10" in page.text
    assert "DID +81 50 1111 2222, 2026-11-11 – 2026-12-10" in page.text
    assert "¥5,600" in page.text  # 3000 + 2 × 1000 + 2 × 300

    data = {"reason": "Invoice the customer today"}
    response = admin_client.post(run_url(company), data, follow=True)

    assert response.redirect_chain[-1][0] == company_url(company)
    assert "5 charges posted (¥5,600)." in messages_of(response)
    assert RecurringCharge.objects.filter(company=company).count() == 5
    assert company_balance(company) == jpy(-5600)
    log = LogEntry.objects.get(object_id=str(company.pk))
    assert log.user == admin_user
    assert "Ran recurring charges: 5 posted" in log.get_change_message()
    assert "Invoice the customer today" in log.get_change_message()

    # The same page submitted again finds nothing due.
    response = admin_client.post(run_url(company), data, follow=True)
    assert any("Nothing was due" in message for message in messages_of(response))
    assert RecurringCharge.objects.filter(company=company).count() == 5
    assert LedgerTransaction.objects.filter(company=company).count() == 5
    assert LogEntry.objects.filter(object_id=str(company.pk)).count() == 1


def test_run_now_with_nothing_due_offers_nothing_to_post(admin_client, company):
    page = admin_client.get(run_url(company))
    assert "Nothing is due now." in page.text
    assert "Post these charges" not in page.text


def test_run_now_needs_a_reason(admin_client, company):
    _schedule(company)
    response = admin_client.post(run_url(company), {"reason": "  "})
    assert response.status_code == 200
    assert "reason" in response.context["form"].errors
    assert not RecurringCharge.objects.exists()


# --- Who may act ----------------------------------------------------------------------------


@pytest.mark.parametrize("group", ["Support", "Finance"])
def test_read_only_staff_get_403_on_every_recurring_action(staff_client, group, company):
    client = staff_client(group)
    _schedule(company)
    items = [
        Subscription.objects.get(company=company),
        PhoneNumber.objects.get(company=company),
        SeatFee.objects.get(company=company),
        ServiceFee.objects.get(company=company),
    ]
    for url in [run_url(company), *(end_url(item) for item in items)]:
        assert client.get(url).status_code == 403, url
        assert client.post(url, end_data()).status_code == 403, url
    for model_name in ["subscription", "phonenumber", "seatfee", "servicefee"]:
        assert client.get(add_url(model_name)).status_code == 403
    # The list action is not offered to them either: the list is drawn again.
    response = client.post(
        list_url("phonenumber"),
        {"action": "release_selected", "_selected_action": [items[1].pk], "post": "yes"}
        | end_data(),
    )
    assert response.status_code == 200
    items[1].refresh_from_db()
    assert items[1].released_at is None
    assert not RecurringCharge.objects.exists()
    assert not LogEntry.objects.exists()
    # They read the company page and the lists, without the actions.
    page = client.get(company_url(company))
    assert page.status_code == 200
    assert "Plan Office 500" in page.text
    assert run_url(company) not in page.text
    assert f"{add_url('servicefee')}?company=" not in page.text
    item_page = client.get(reverse("admin:billing_phonenumber_change", args=[items[1].pk]))
    assert item_page.status_code == 200 and end_url(items[1]) not in item_page.text


def test_billing_admin_staff_run_recurring_charges_and_add_items(staff_client, company):
    client = staff_client("Billing admin")
    _schedule(company)
    assert run_url(company) in client.get(company_url(company)).text
    assert client.post(run_url(company), {"reason": "Month end"}).status_code == 302
    assert RecurringCharge.objects.filter(company=company).count() == 5
    response = client.post(
        add_url("phonenumber"),
        {
            "company": company.pk,
            "number": "+81 50 7777 0000",
            "monthly_price_0": "300",
            "monthly_price_1": "JPY",
        },
    )
    assert response.status_code == 302


# --- Lists and the read-only record ---------------------------------------------------------


LISTS = ["subscription", "phonenumber", "seatfee", "servicefee", "recurringcharge"]


@pytest.mark.parametrize("model_name", LISTS)
def test_recurring_lists_cost_a_fixed_number_of_queries(
    admin_client, django_assert_max_num_queries, model_name
):
    first = CompanyFactory()
    _schedule(first)
    recurring.recurring_charge_company(company=first, as_of=NOW, now=NOW)
    few = len(_queries(admin_client, list_url(model_name)))
    for _ in range(8):
        company = CompanyFactory()
        _schedule(company, number=f"+81 50 {company.pk:04d} 0000")
        for index in range(3):
            assign(company, number=f"+81 6 {company.pk:04d} {index:04d}")
        recurring.recurring_charge_company(company=company, as_of=NOW, now=NOW)
    many = _queries(admin_client, list_url(model_name))
    assert len(many) == few
    with django_assert_max_num_queries(8):
        admin_client.get(list_url(model_name))
    if model_name == "recurringcharge":
        counts = [sql for sql in many if "COUNT(" in sql.upper()]
        assert counts and all("LIMIT" in sql.upper() for sql in counts), counts


def test_recurring_charges_are_read_only_and_never_deleted(admin_client, company):
    _schedule(company)
    (charge, *_) = recurring.recurring_charge_company(company=company, as_of=NOW, now=NOW)
    change_url = reverse("admin:billing_recurringcharge_change", args=[charge.pk])
    page = admin_client.get(change_url)
    assert page.status_code == 200 and 'name="_save"' not in page.text
    assert admin_client.post(change_url, {}).status_code == 403
    assert admin_client.get(reverse("admin:billing_recurringcharge_add")).status_code == 403
    delete_url = reverse("admin:billing_recurringcharge_delete", args=[charge.pk])
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 403
    assert RecurringCharge.objects.filter(pk=charge.pk).exists()
    # Recurring items are ended, never deleted (their charges point at them).
    number = PhoneNumber.objects.get(company=company)
    delete_number = reverse("admin:billing_phonenumber_delete", args=[number.pk])
    assert admin_client.post(delete_number, {"post": "yes"}).status_code == 403


def test_recurring_charge_list_filters_by_item_and_period_and_searches(admin_client, company):
    other = CompanyFactory(account_code="other-co")
    _schedule(company)
    assign(other, number="+81 50 3333 4444", at=NOW - timedelta(days=2))
    for each in (company, other):
        recurring.recurring_charge_company(company=each, as_of=NOW, now=NOW)

    def shown(**params):
        result = admin_client.get(list_url("recurringcharge"), params).context["cl"].result_list
        return sorted(charge.description for charge in result)

    assert shown(item__exact="did") == [
        "DID +81 50 1111 2222, 2026-10-11 – 2026-11-10",
        "DID +81 50 1111 2222, 2026-11-11 – 2026-12-10",
        "DID +81 50 3333 4444, 2026-11-18 – 2026-12-17",
    ]
    assert shown(q="other-co") == ["DID +81 50 3333 4444, 2026-11-18 – 2026-12-17"]
    assert shown(q="Office 500") == [
        "Activation fee, plan Office 500",
        "Plan Office 500, 2026-10-11 – 2026-11-10",
        "Plan Office 500, 2026-11-11 – 2026-12-10",
    ]
    november = {
        "period_start__gte": "2026-11-01 00:00:00+00:00",
        "period_start__lt": "2026-12-01 00:00:00+00:00",
    }
    assert len(shown(**november)) == 3


def test_number_list_searches_numbers_and_companies(admin_client, company):
    assign(company, number="+81 50 1111 2222")
    assign(CompanyFactory(account_code="hay-co"), number="+81 50 5555 6666")

    def shown(q):
        result = admin_client.get(list_url("phonenumber"), {"q": q}).context["cl"].result_list
        return [number.number for number in result]

    assert shown("1111") == ["+81 50 1111 2222"]
    assert shown("hay-co") == ["+81 50 5555 6666"]
    assert shown(company.name) == ["+81 50 1111 2222"]
