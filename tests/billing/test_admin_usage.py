"""The back-office of tariffs, plans, API keys and usage records: the tariff CSV through the
admin, rate edits seen by rating, a key's secret shown once, revocation, and usage lists
whose cost does not grow with the table."""

import html
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from djmoney.money import Money

from accounts.models import Company
from accounts.services import staff_groups_sync
from billing.admin import CappedCountPaginator
from billing.models import (
    ApiKey,
    Bundle,
    LedgerTransaction,
    Plan,
    Rate,
    Tariff,
    UsageRecord,
    api_key_hash,
)
from billing.services.rating import tariff_index
from billing.services.tariffs import HEADER, tariff_export
from billing.services.usage import UsageEvent, usage_ingest
from tests.factories import CompanyFactory, SubaccountFactory, UserFactory
from tests.factories.billing import grant
from tests.factories.rating import (
    BundleFactory,
    RateFactory,
    SubscriptionFactory,
    TariffFactory,
    api_key,
)

pytestmark = pytest.mark.django_db

HEAD = ",".join(HEADER)
NOW = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)


@pytest.fixture
def staff_client(client):
    def login(group_name):
        staff_groups_sync()
        user = UserFactory(is_staff=True)
        user.groups.add(Group.objects.get(name=group_name))
        client.force_login(user)
        return client

    return login


@pytest.fixture
def tariff():
    tariff = TariffFactory(name="Retail")
    RateFactory(tariff=tariff, service="voice", destination="", price=Decimal("99"))
    RateFactory(tariff=tariff, service="voice", destination="81", price=Decimal("50"))
    return tariff


def upload(text: str, name: str = "rates.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, text.encode(), content_type="text/csv")


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def version_of(tariff) -> int:
    return Tariff.objects.values_list("version", flat=True).get(pk=tariff.pk)


def import_url(tariff):
    return reverse("admin:billing_tariff_import", args=[tariff.pk])


def export_url(tariff):
    return reverse("admin:billing_tariff_export", args=[tariff.pk])


GOOD = f"""{HEAD}
voice,,20,0,0,60,60,2026-01-01T00:00:00+00:00,
voice,+8190,30,5,0,30,6,2026-01-01T00:00:00+00:00,
data,JP,0.5,0,0,1,1,2026-01-01T00:00:00+00:00,
"""


# --- Tariffs: import and export -------------------------------------------------------------


def test_tariff_page_offers_import_export_and_links_its_rates(admin_client, tariff):
    response = admin_client.get(reverse("admin:billing_tariff_change", args=[tariff.pk]))
    text = response.text
    assert import_url(tariff) in text and export_url(tariff) in text
    assert f"?tariff__id__exact={tariff.pk}" in text and "2 rates" in text


def test_the_import_page_shows_the_tariff_and_an_upload_form(admin_client, tariff):
    response = admin_client.get(import_url(tariff))
    assert response.status_code == 200
    text = response.text
    assert 'enctype="multipart/form-data"' in text and 'type="file"' in text
    assert "Replaces all 2 rates of this tariff" in text
    assert HEAD in text  # the format, in the help text


def test_importing_a_good_file_replaces_the_rates_logs_it_and_says_how_many(
    admin_client, admin_user, tariff
):
    before = version_of(tariff)
    response = admin_client.post(import_url(tariff), {"file": upload(GOOD)}, follow=True)

    assert response.redirect_chain[-1][0] == reverse(
        "admin:billing_tariff_change", args=[tariff.pk]
    )
    assert any(
        "Imported 3 rates into Retail (JPY), replacing 2" in message
        for message in messages_of(response)
    )
    assert version_of(tariff) == before + 1
    assert sorted(Rate.objects.filter(tariff=tariff).values_list("destination", flat=True)) == [
        "",
        "8190",
        "JP",
    ]
    log = LogEntry.objects.get(object_id=str(tariff.pk), action_flag=CHANGE)
    assert log.user == admin_user
    assert "Imported 3 rates from rates.csv (replacing 2); version" in log.get_change_message()


def test_a_bad_file_is_refused_listing_every_bad_line_and_nothing_changes(admin_client, tariff):
    before_rates = list(Rate.objects.filter(tariff=tariff).values_list("id", "price"))
    before_version = version_of(tariff)
    bad = GOOD + (
        "vox,81,1,0,0,1,1,2026-01-01T00:00:00+00:00,\n"  # line 5
        "data,jp,1,0,0,1,1,2026-01-01T00:00:00+00:00,\n"  # line 6
        "voice,82,-1,0,0,0,1,2026-01-01T00:00:00+00:00,\n"  # line 7, two reasons
    )

    response = admin_client.post(import_url(tariff), {"file": upload(bad)})

    assert response.status_code == 200
    text = response.text
    assert "Nothing was changed." in text
    assert "The file has 3 bad lines; nothing was imported." in text
    assert "line 5: unknown service “vox”" in text
    assert "line 6: country “jp” must be in upper case: JP." in text
    assert "line 7: price “-1” is negative. first_increment “0” must be a whole number" in text
    assert list(Rate.objects.filter(tariff=tariff).values_list("id", "price")) == before_rates
    assert version_of(tariff) == before_version
    assert not LogEntry.objects.filter(object_id=str(tariff.pk)).exists()


def test_an_import_without_a_file_asks_for_one(admin_client, tariff):
    response = admin_client.post(import_url(tariff), {})
    assert response.status_code == 200
    assert response.context["form"].errors == {"file": ["This field is required."]}


def test_export_downloads_the_tariff_as_csv(admin_client, tariff):
    response = admin_client.get(export_url(tariff))
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="tariff-retail-v1.csv"'
    assert response.content.decode() == tariff_export(tariff=tariff)


def test_an_exported_file_imports_back_through_the_admin_unchanged(admin_client, tariff):
    exported = admin_client.get(export_url(tariff)).content.decode()
    admin_client.post(import_url(tariff), {"file": upload(exported)})
    assert tariff_export(tariff=tariff) == exported
    assert version_of(tariff) == 2


def test_support_staff_may_export_but_not_import(staff_client, tariff):
    client = staff_client("Support")
    assert client.get(export_url(tariff)).status_code == 200
    assert client.get(import_url(tariff)).status_code == 403
    assert client.post(import_url(tariff), {"file": upload(GOOD)}).status_code == 403
    page = client.get(reverse("admin:billing_tariff_change", args=[tariff.pk])).text
    assert export_url(tariff) in page and import_url(tariff) not in page
    assert Rate.objects.filter(tariff=tariff).count() == 2


def test_billing_admin_staff_may_import(staff_client, tariff):
    client = staff_client("Billing admin")
    response = client.post(import_url(tariff), {"file": upload(GOOD)})
    assert response.status_code == 302
    assert Rate.objects.filter(tariff=tariff).count() == 3


def test_tariff_list_shows_rate_and_company_counts_in_a_fixed_number_of_queries(
    admin_client, django_assert_max_num_queries
):
    url = reverse("admin:billing_tariff_changelist")
    small = TariffFactory()
    RateFactory(tariff=small)
    with CaptureQueriesContext(connection) as few:
        admin_client.get(url)
    for _ in range(5):
        big = TariffFactory()
        for prefix in range(20):
            RateFactory(tariff=big, destination=f"{prefix}")
        CompanyFactory.create_batch(2, tariff=big)
    with django_assert_max_num_queries(len(few.captured_queries)):
        response = admin_client.get(url)
    rows = {
        tariff.name: (tariff._rates, tariff._companies)
        for tariff in response.context["cl"].result_list
    }
    assert rows[small.name] == (1, 0)
    assert rows[big.name] == (20, 2)


def test_the_currency_of_an_existing_tariff_is_not_editable(admin_client, tariff):
    response = admin_client.get(reverse("admin:billing_tariff_change", args=[tariff.pk]))
    assert "currency" not in response.context["adminform"].form.fields


# --- Rates ----------------------------------------------------------------------------------


def rate_data(rate, **changes) -> dict:
    data = {
        "service": rate.service,
        "destination": rate.destination,
        "price": str(rate.price),
        "connection_fee": str(rate.connection_fee),
        "minimum_seconds": rate.minimum_seconds,
        "first_increment": rate.first_increment,
        "next_increment": rate.next_increment,
        "effective_from_0": "2020-01-01",
        "effective_from_1": "00:00:00",
        "effective_until_0": "",
        "effective_until_1": "",
    }
    data.update(changes)
    return data


def test_editing_a_rate_bumps_the_tariff_version_and_rating_sees_it(admin_client, tariff):
    rate = Rate.objects.get(tariff=tariff, destination="81")
    at = datetime(2026, 1, 1, tzinfo=UTC)
    assert tariff_index(tariff).find("voice", "8190", at)[0].price == Decimal("50")
    before = version_of(tariff)

    response = admin_client.post(
        reverse("admin:billing_rate_change", args=[rate.pk]), rate_data(rate, price="45.5")
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    assert Rate.objects.get(pk=rate.pk).price == Decimal("45.5")
    assert version_of(tariff) == before + 1
    reloaded = Tariff.objects.get(pk=tariff.pk)
    assert tariff_index(reloaded).find("voice", "8190", at)[0].price == Decimal("45.5")


def test_adding_and_deleting_rates_bump_the_version_too(admin_client, tariff):
    before = version_of(tariff)
    data = rate_data(Rate(service="voice", destination="+44"), price="12")
    data["tariff"] = tariff.pk
    response = admin_client.post(reverse("admin:billing_rate_add"), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    added = Rate.objects.get(tariff=tariff, destination="44")  # stored without the +
    assert version_of(tariff) == before + 1

    admin_client.post(reverse("admin:billing_rate_delete", args=[added.pk]), {"post": "yes"})
    assert not Rate.objects.filter(pk=added.pk).exists()
    assert version_of(tariff) == before + 2

    other = TariffFactory()
    RateFactory(tariff=other, destination="1")
    ids = list(Rate.objects.values_list("pk", flat=True))
    admin_client.post(
        reverse("admin:billing_rate_changelist"),
        {"action": "delete_selected", "_selected_action": ids, "post": "yes"},
    )
    assert not Rate.objects.exists()
    assert version_of(tariff) == before + 3
    assert version_of(other) == other.version + 1


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"service": "data", "destination": "jp"}, "must be in upper case: JP"),
        ({"destination": "81-90"}, "number prefix of 1 to 15 digits"),
        ({"service": "api", "destination": "81"}, "api rates have no destination"),
        ({"destination": "+8"}, "Rate with this Tariff, Service, Destination and Effective from"),
        ({"first_increment": "0"}, "greater than or equal to 1"),
        ({"price": "-1"}, "greater than or equal to 0"),
        (
            {"effective_until_0": "2019-12-31", "effective_until_1": "00:00:00"},
            "Must be later than",
        ),
    ],
)
def test_a_bad_rate_edit_is_a_form_error_and_changes_nothing(admin_client, tariff, changes, error):
    RateFactory(tariff=tariff, service="voice", destination="8")
    rate = Rate.objects.get(tariff=tariff, destination="81")
    before = version_of(tariff)
    response = admin_client.post(
        reverse("admin:billing_rate_change", args=[rate.pk]), rate_data(rate, **changes)
    )
    assert response.status_code == 200
    assert error in str(response.context["adminform"].form.errors) or error in response.text
    assert Rate.objects.get(pk=rate.pk).destination == "81"
    assert version_of(tariff) == before


def test_a_rate_stays_in_its_tariff(admin_client, tariff):
    rate = Rate.objects.get(tariff=tariff, destination="81")
    other = TariffFactory()
    data = rate_data(rate, price="1")
    data["tariff"] = other.pk  # a disabled field: the posted value is ignored
    admin_client.post(reverse("admin:billing_rate_change", args=[rate.pk]), data)
    assert Rate.objects.get(pk=rate.pk).tariff == tariff


def test_rate_list_filters_by_tariff_and_service_searches_destinations_and_never_counts_all(
    admin_client, tariff
):
    RateFactory(tariff=tariff, service="sms", destination="81")
    other = TariffFactory()
    RateFactory(tariff=other, service="voice", destination="8190")
    url = reverse("admin:billing_rate_changelist")

    def shown(**params):
        response = admin_client.get(url, params)
        return sorted(
            (rate.tariff.name, rate.service, rate.destination)
            for rate in response.context["cl"].result_list
        )

    assert shown(tariff__id__exact=tariff.pk, service__exact="sms") == [("Retail", "sms", "81")]
    assert shown(q="819") == [(other.name, "voice", "8190")]
    assert len(shown(q="81")) == 3  # a prefix search
    assert shown(q="+819") == shown(q="819")
    with CaptureQueriesContext(connection) as captured:
        admin_client.get(url)
    counts = [q["sql"] for q in captured.captured_queries if "COUNT(" in q["sql"].upper()]
    assert counts and all("LIMIT" in sql.upper() for sql in counts), counts


# --- Plans, subscriptions, bundle counters, companies ---------------------------------------


def test_a_plan_is_added_with_its_bundles(admin_client):
    data = {
        "name": "Business",
        "currency": "JPY",
        "monthly_fee_0": "3000",
        "monthly_fee_1": "JPY",
        "activation_fee_0": "",
        "activation_fee_1": "JPY",
        "fee_starts": "order",
        "is_active": "on",
        "description": "",
        "bundles-TOTAL_FORMS": "1",
        "bundles-INITIAL_FORMS": "0",
        "bundles-0-name": "Included minutes",
        "bundles-0-service": "voice",
        "bundles-0-destinations": "81",
        "bundles-0-included_quantity": "6000",
    }
    response = admin_client.post(reverse("admin:billing_plan_add"), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    plan = Plan.objects.get(name="Business")
    assert plan.monthly_fee == Money(3000, "JPY")
    assert Bundle.objects.get(plan=plan).included_quantity == Decimal("6000")


def plan_with_one_bundle(service: str, destinations: str) -> dict:
    return {
        "name": "Business",
        "currency": "JPY",
        "monthly_fee_0": "3000",
        "monthly_fee_1": "JPY",
        "activation_fee_0": "",
        "activation_fee_1": "JPY",
        "fee_starts": "order",
        "bundles-TOTAL_FORMS": "1",
        "bundles-INITIAL_FORMS": "0",
        "bundles-0-name": "Included",
        "bundles-0-service": service,
        "bundles-0-destinations": destinations,
        "bundles-0-included_quantity": "100",
    }


@pytest.mark.parametrize(
    ("service", "destinations", "stored"),
    [
        ("voice", "+8190, +8180 81", "8190 8180 81"),
        ("data", "jp us", "JP US"),
        ("sms", "", ""),
    ],
)
def test_bundle_destinations_are_kept_as_usage_is_matched(
    admin_client, service, destinations, stored
):
    response = admin_client.post(
        reverse("admin:billing_plan_add"), plan_with_one_bundle(service, destinations)
    )
    assert response.status_code == 302
    assert Bundle.objects.get().destinations == stored


@pytest.mark.parametrize(
    ("service", "destinations", "refused"),
    [
        ("voice", "+81-90 8180", "+81-90"),
        ("sms", "JP", "JP"),
        ("data", "Japan", "JAPAN"),
        ("api", "81", "81"),
    ],
)
def test_bundle_destinations_that_would_never_match_are_a_form_error(
    admin_client, service, destinations, refused
):
    response = admin_client.post(
        reverse("admin:billing_plan_add"), plan_with_one_bundle(service, destinations)
    )
    assert response.status_code == 200
    assert f"Not a destination of {service}: {refused}." in response.text
    assert not Plan.objects.exists()


@pytest.mark.parametrize(
    ("fee", "message"),
    [("1000.5", "JPY amounts have no decimals."), ("-100", "A fee is zero or more.")],
)
def test_plan_fees_the_ledger_could_not_charge_are_a_form_error(admin_client, fee, message):
    data = {**plan_with_one_bundle("sms", ""), "monthly_fee_0": fee}
    response = admin_client.post(reverse("admin:billing_plan_add"), data)
    assert response.status_code == 200
    assert message in response.text
    assert not Plan.objects.exists()


def test_plan_fees_in_another_currency_are_a_form_error(admin_client):
    data = {
        "name": "Dollar fee",
        "currency": "JPY",
        "monthly_fee_0": "30",
        "monthly_fee_1": "USD",
        "activation_fee_0": "",
        "activation_fee_1": "JPY",
        "fee_starts": "order",
        "bundles-TOTAL_FORMS": "0",
        "bundles-INITIAL_FORMS": "0",
    }
    response = admin_client.post(reverse("admin:billing_plan_add"), data)
    assert response.status_code == 200
    assert "in the plan&#x27;s currency, JPY" in response.text
    assert not Plan.objects.exists()


def test_subscription_and_bundle_counter_lists_cost_a_fixed_number_of_queries(
    admin_client, django_assert_max_num_queries
):
    from billing.models import BundleCounter

    def subscribe():
        bundle = BundleFactory()
        subscription = SubscriptionFactory(plan=bundle.plan, company=CompanyFactory())
        BundleCounter.objects.create(
            subscription=subscription,
            bundle=bundle,
            period_start=NOW,
            period_end=NOW + timedelta(days=30),
            used=Decimal("60"),
        )

    subscribe()
    lists = ["admin:billing_subscription_changelist", "admin:billing_bundlecounter_changelist"]
    few = {name: len(_queries(admin_client, reverse(name))) for name in lists}
    for _ in range(10):
        subscribe()
    for name in lists:
        with django_assert_max_num_queries(few[name]):
            assert admin_client.get(reverse(name)).status_code == 200


def test_subscription_form_finds_companies_by_autocomplete(admin_client):
    response = admin_client.get(reverse("admin:billing_subscription_add"))
    assert "admin-autocomplete" in response.text
    assert set(response.context["adminform"].form.fields) == {
        "company",
        "plan",
        "start_date",
        "start_time",
    }


def test_bundle_counters_are_read_only(admin_client):
    url = reverse("admin:billing_bundlecounter_add")
    assert admin_client.get(url).status_code == 403


def test_staff_choose_a_company_tariff_on_its_page(admin_client, tariff):
    company = CompanyFactory()
    url = reverse("admin:accounts_company_change", args=[company.pk])
    page = admin_client.get(url)
    form = page.context["adminform"].form
    assert "tariff" in form.fields
    assert "admin-autocomplete" in str(form["tariff"])

    data = {
        "account_code": company.account_code,
        "name": company.name,
        "language": "en",
        "billing_timezone": company.billing_timezone,
        "tax_rate": "0.1000",
        "credit_limit_0": "",
        "credit_limit_1": "JPY",
        "tariff": tariff.pk,
    }
    for prefix in ("billing_contacts", "subaccounts", "memberships"):
        data[f"{prefix}-TOTAL_FORMS"] = "0"
        data[f"{prefix}-INITIAL_FORMS"] = "0"
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    company.refresh_from_db()
    assert company.tariff == tariff

    found = admin_client.get(
        "/admin/autocomplete/",
        {"term": "Ret", "app_label": "accounts", "model_name": "company", "field_name": "tariff"},
    ).json()
    assert [result["text"] for result in found["results"]] == [str(tariff)]


# --- API keys -------------------------------------------------------------------------------


def test_adding_a_key_shows_the_secret_once_and_stores_only_its_hash(admin_client, admin_user):
    add_url = reverse("admin:billing_apikey_add")
    page = admin_client.get(add_url)
    assert list(page.context["adminform"].form.fields) == ["name"]
    assert "_addanother" not in page.text and "_continue" not in page.text

    response = admin_client.post(add_url, {"name": "voice platform"})

    assert response.status_code == 200
    assert response["Cache-Control"].count("no-store") == 1
    raw = response.context["raw_key"]
    key = ApiKey.objects.get()
    assert raw in response.text and "shown only on this page" in response.text
    assert key.name == "voice platform" and key.created_by == admin_user
    assert key.key_hash == api_key_hash(raw)
    assert key.prefix == raw[:10]
    assert raw not in (key.name, key.prefix, key.key_hash)
    assert not messages_of(response)  # the secret is in no message (session or cookie)
    assert LogEntry.objects.get(object_id=str(key.pk)).action_flag == ADDITION

    # Never again: the key's page and the list show the prefix only.
    change = admin_client.get(reverse("admin:billing_apikey_change", args=[key.pk])).text
    listing = admin_client.get(reverse("admin:billing_apikey_changelist")).text
    for text in (change, listing):
        assert raw not in text and key.key_hash not in text and key.prefix in text


def test_a_created_key_authenticates_the_api(admin_client):
    company = CompanyFactory(account_code="acme")
    response = admin_client.post(reverse("admin:billing_apikey_add"), {"name": "platform"})
    raw = response.context["raw_key"]
    answer = admin_client.get(
        f"/api/v1/accounts/{company.account_code}", headers={"authorization": f"Bearer {raw}"}
    )
    assert answer.status_code == 200


def test_a_key_without_a_name_is_not_created(admin_client):
    response = admin_client.post(reverse("admin:billing_apikey_add"), {"name": ""})
    assert response.status_code == 200
    assert "This field is required." in response.text
    assert not ApiKey.objects.exists()


def test_a_key_can_be_renamed_but_its_hash_never_changes(admin_client):
    key, raw = api_key("old name")
    url = reverse("admin:billing_apikey_change", args=[key.pk])
    response = admin_client.post(
        url, {"name": "new name", "key_hash": "0" * 64, "prefix": "tg_hacked", "revoked_at": ""}
    )
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.name == "new name"
    assert key.key_hash == api_key_hash(raw) and key.prefix == raw[:10]


def test_keys_cannot_be_deleted(admin_client):
    key, _ = api_key()
    assert (
        admin_client.get(reverse("admin:billing_apikey_delete", args=[key.pk])).status_code == 403
    )


def test_revoking_asks_first_then_the_api_refuses_the_key(admin_client, admin_user):
    company = CompanyFactory(account_code="acme")
    key, raw = api_key("platform")
    kept, kept_raw = api_key("other")
    url = reverse("admin:billing_apikey_changelist")
    data = {"action": "revoke", "_selected_action": [key.pk]}

    confirm = admin_client.post(url, data)
    assert confirm.status_code == 200
    assert "platform (" in confirm.text and "Yes, revoke" in confirm.text
    assert ApiKey.objects.get(pk=key.pk).revoked_at is None

    response = admin_client.post(url, {**data, "post": "yes"}, follow=True)
    assert any("1 API key revoked" in message for message in messages_of(response))
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert ApiKey.objects.get(pk=kept.pk).revoked_at is None
    log = LogEntry.objects.get(object_id=str(key.pk))
    assert (log.action_flag, log.get_change_message(), log.user) == (CHANGE, "Revoked", admin_user)

    def status(secret):
        return admin_client.get(
            f"/api/v1/accounts/{company.account_code}",
            headers={"authorization": f"Bearer {secret}"},
        ).status_code

    assert status(raw) == 401
    assert status(kept_raw) == 200

    # Again: nothing changes, and the message says so.
    revoked_at = key.revoked_at
    again = admin_client.post(url, {**data, "post": "yes"}, follow=True)
    assert any("1 was already revoked" in message for message in messages_of(again))
    key.refresh_from_db()
    assert key.revoked_at == revoked_at


def test_support_staff_cannot_revoke(staff_client):
    key, _ = api_key()
    client = staff_client("Support")
    response = client.post(
        reverse("admin:billing_apikey_changelist"),
        {"action": "revoke", "_selected_action": [key.pk], "post": "yes"},
    )
    assert response.status_code in (200, 302)
    assert ApiKey.objects.get(pk=key.pk).revoked_at is None


# --- Usage records --------------------------------------------------------------------------


def usage_record(key, number, **fields) -> UsageRecord:
    values = {
        "api_key": key,
        "event_id": f"evt-{number}",
        "account_code": "acme",
        "service": "voice",
        "destination": "81901234567",
        "quantity": Decimal(60),
        "occurred_at": timezone.now() - timedelta(minutes=number),
        "received_at": timezone.now(),
        "status": UsageRecord.Status.CHARGED,
        "amount": Money(Decimal(30), "JPY"),
    }
    values.update(fields)
    return UsageRecord.objects.create(**values)


def _queries(client, url, params=None) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url, params or {}).status_code == 200
    return [query["sql"] for query in captured.captured_queries]


def test_usage_list_costs_a_fixed_number_of_queries_and_never_counts_the_whole_table(
    admin_client, django_assert_max_num_queries
):
    key, _ = api_key()
    company = CompanyFactory(account_code="acme")
    subaccount = SubaccountFactory(company=company)
    url = reverse("admin:billing_usagerecord_changelist")
    usage_record(key, 0, company=company, subaccount=subaccount)
    few = _queries(admin_client, url)
    for number in range(1, 150):
        usage_record(key, number, company=company, subaccount=subaccount)

    many = _queries(admin_client, url)

    assert len(many) == len(few)
    with django_assert_max_num_queries(len(few)):
        admin_client.get(url)
    counts = [sql for sql in many if "COUNT(" in sql.upper()]
    assert counts and all("LIMIT" in sql.upper() for sql in counts), counts
    distinct = [sql for sql in many if "DISTINCT" in sql.upper()]
    assert not distinct, distinct  # no filter reads the table for its choices


def test_usage_list_past_the_cap_says_more_than(admin_client, monkeypatch):
    from billing.admin.usage import UsageRecordAdmin

    monkeypatch.setattr(CappedCountPaginator, "cap", 3)
    monkeypatch.setattr(UsageRecordAdmin, "list_per_page", 2)
    key, _ = api_key()
    for number in range(6):
        usage_record(key, number)
    response = admin_client.get(reverse("admin:billing_usagerecord_changelist"))
    assert "More than 3 usage records" in response.text


def test_usage_list_filters_and_exact_search(admin_client):
    key, _ = api_key()
    usage_record(key, 1, event_id="call-1", account_code="acme")
    usage_record(key, 2, event_id="sms-1", service="sms", account_code="acme")
    usage_record(
        key,
        3,
        event_id="bad-1",
        account_code="nobody",
        status=UsageRecord.Status.REJECTED,
        amount=None,
        error_code="unknown_account",
    )
    usage_record(key, 4, event_id="old-1", occurred_at=timezone.now() - timedelta(days=40))
    url = reverse("admin:billing_usagerecord_changelist")

    def shown(**params):
        response = admin_client.get(url, params)
        assert response.status_code == 200
        return sorted(record.event_id for record in response.context["cl"].result_list)

    assert shown(status__exact="rejected") == ["bad-1"]
    assert shown(service="sms") == ["sms-1"]
    # The date filter's own link, as staff would click it.
    changelist = admin_client.get(url).context["cl"]
    dates = next(spec for spec in changelist.filter_specs if spec.title == "occurred at")
    past_week = next(c for c in dates.choices(changelist) if c["display"] == "Past 7 days")
    response = admin_client.get(url + past_week["query_string"])
    assert sorted(r.event_id for r in response.context["cl"].result_list) == [
        "bad-1",
        "call-1",
        "sms-1",
    ]
    assert shown(q="call-1") == ["call-1"]
    assert shown(q="nobody") == ["bad-1"]
    assert shown(q="CALL-1") == []  # exact
    assert shown(q="call") == []  # not a fragment


@pytest.mark.postgres
@pytest.mark.parametrize("term", ["call-1", "acme", "nobody"], ids=["event", "company", "unknown"])
def test_usage_search_is_served_by_indexes_never_a_scan_of_the_table(admin_client, term):
    """With sequential scans priced out, PostgreSQL finds the records through index
    conditions alone: each kind of search term has an index (a table of millions is never
    read whole, nor any of its indexes)."""
    from django.contrib.admin.sites import site

    from billing.admin.usage import UsageRecordAdmin

    key, _ = api_key()
    company = CompanyFactory(account_code="acme")
    usage_record(key, 1, event_id="call-1", company=company)
    usage_record(key, 2, event_id="bad-1", account_code="nobody", amount=None)
    model_admin = UsageRecordAdmin(UsageRecord, site)
    records, _ = model_admin.get_search_results(None, UsageRecord.objects.all(), term)
    sql, params = records.order_by("-occurred_at", "-id").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    # Neither a scan of the table nor one of a whole index with the term as a filter.
    assert "Seq Scan" not in plan and "Filter:" not in plan, plan
    assert len(records) == 1


def test_usage_records_are_read_only_and_not_deletable(admin_client):
    key, _ = api_key()
    record = usage_record(key, 1)
    change = reverse("admin:billing_usagerecord_change", args=[record.pk])
    page = admin_client.get(change)
    assert page.status_code == 200
    assert 'name="_save"' not in page.text
    assert admin_client.get(reverse("admin:billing_usagerecord_add")).status_code == 403
    delete = reverse("admin:billing_usagerecord_delete", args=[record.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert admin_client.post(change, {"event_id": "changed"}).status_code == 403
    assert UsageRecord.objects.get(pk=record.pk).event_id == "evt-1"


def test_an_upload_is_read_whole_even_when_django_spools_it_to_disk(admin_client, tariff, settings):
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 10  # every upload goes to a temporary file
    rows = "".join(
        f"voice,{prefix},1,0,0,1,1,2026-01-01T00:00:00+00:00,\n" for prefix in range(100, 400)
    )
    response = admin_client.post(import_url(tariff), {"file": upload(HEAD + "\n" + rows)})
    assert response.status_code == 302
    assert Rate.objects.filter(tariff=tariff).count() == 300


def _ingest_sms(key, event_ids, at):
    events = [
        UsageEvent(
            id=event_id,
            account="acme",
            subaccount=None,
            service="sms",
            destination="+15551234567",
            quantity=Decimal(1),
            occurred_at=at + timedelta(minutes=number),
        )
        for number, event_id in enumerate(event_ids)
    ]
    return usage_ingest(api_key=key, events=events, now=NOW)


def _usage_link(admin_client, transaction) -> tuple[str, str]:
    page = admin_client.get(
        reverse("admin:billing_ledgertransaction_change", args=[transaction.pk])
    )
    assert page.status_code == 200
    found = re.search(r'href="(/admin/billing/usagerecord/\?[^"]+)">([^<]+)</a>', page.text)
    assert found, "no link to the transaction's usage records"
    return html.unescape(found.group(1)), found.group(2)


@pytest.fixture
def two_usage_batches():
    """Two batches of one company: the second's event lies within the first's span."""
    tariff = TariffFactory()
    RateFactory(tariff=tariff, service="sms", price=Decimal("3"))
    CompanyFactory(account_code="acme", tariff=tariff, mode=Company.Mode.POSTPAID)
    key, _ = api_key()
    _ingest_sms(key, ["a-1", "a-2", "a-3"], NOW - timedelta(hours=2))
    _ingest_sms(key, ["b-1"], NOW - timedelta(hours=2) + timedelta(seconds=90))
    first = LedgerTransaction.objects.get(usage_records__event_id="a-1")
    return first


def test_a_usage_transaction_links_to_exactly_the_records_it_charged(
    admin_client, two_usage_batches
):
    first = two_usage_batches
    assert first.metadata == {
        "events": 3,
        "occurred_from": (NOW - timedelta(hours=2)).isoformat(),
        "occurred_until": (NOW - timedelta(hours=2) + timedelta(minutes=2)).isoformat(),
    }
    url, text = _usage_link(admin_client, first)
    assert text == "3 events"

    response = admin_client.get(url)
    assert response.status_code == 200
    shown = sorted(record.event_id for record in response.context["cl"].result_list)
    assert shown == ["a-1", "a-2", "a-3"]  # not b-1, charged meanwhile by another batch
    assert f"Usage records charged by ledger transaction #{first.pk}" in response.text


def test_other_transactions_have_no_usage_link(admin_client):
    company = CompanyFactory(mode=Company.Mode.PREPAID)
    grant(company, 100, now=NOW)
    page = admin_client.get(
        reverse(
            "admin:billing_ledgertransaction_change",
            args=[LedgerTransaction.objects.get(company=company).pk],
        )
    )
    assert page.status_code == 200
    assert "/admin/billing/usagerecord/?" not in page.text


@pytest.mark.postgres
def test_the_usage_link_reads_the_records_within_the_span_through_an_index(
    admin_client, two_usage_batches
):
    url, _ = _usage_link(admin_client, two_usage_batches)
    with CaptureQueriesContext(connection) as captured:
        assert admin_client.get(url).status_code == 200
    listing = [
        query["sql"]
        for query in captured.captured_queries
        if 'FROM "billing_usagerecord"' in query["sql"] and "COUNT(" not in query["sql"].upper()
    ]
    assert listing
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        for sql in listing:
            cursor.execute(f"EXPLAIN {sql}")
            plan = "\n".join(row[0] for row in cursor.fetchall())
            # Read within the span through an index (by company and time, or by time).
            assert "Seq Scan on billing_usagerecord" not in plan, plan
            assert re.search(r"Index Cond: \([^\n]*occurred_at >=", plan), plan
