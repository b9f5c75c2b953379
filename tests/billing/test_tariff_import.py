"""Tariff CSV import and export (``billing.services.tariffs``) and the operator commands
``import_tariff``, ``export_tariff`` and ``create_api_key``.

A file is checked whole before anything is written: one bad line refuses it, every bad
line is listed with its reason, and the tariff is left exactly as it was.
"""

import io
import threading
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError

from billing.exceptions import TariffImportError
from billing.models import ApiKey, Rate, Tariff, api_key_hash
from billing.services.rating import tariff_index
from billing.services.tariffs import HEADER, tariff_export, tariff_import
from tests.factories.rating import RateFactory, TariffFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
HEAD = ",".join(HEADER)
GOOD_ROWS = [
    "voice,,20,0,0,60,60,2026-01-01T00:00:00+00:00,",
    "voice,+8190,30.5,5,10,30,6,2026-01-01T09:00:00+09:00,2027-01-01T00:00:00Z",
    "sms,1,3,,,,,2026-01-01T00:00:00+00:00,",
    "data,JP,0.000001,0,0,1,1,2026-01-01T00:00:00+00:00,",
    "api,,0.1,0,0,1,1,2026-01-01T00:00:00+00:00,",
]


@pytest.fixture(autouse=True)
def clock():
    # The commands read the clock (rates "in force now"); tests pass ``now`` to the service.
    with time_machine.travel(NOW, tick=False):
        yield


def csv_text(*rows, header=HEAD) -> str:
    return "\n".join([header, *rows]) + "\n"


def rate_rows(tariff) -> list[tuple]:
    return list(
        Rate.objects.filter(tariff=tariff)
        .order_by("service", "destination", "effective_from")
        .values_list(*HEADER)
    )


def refused(tariff, text) -> list[tuple[int, str]]:
    with pytest.raises(TariffImportError) as caught:
        tariff_import(tariff=tariff, text=text, now=NOW)
    return caught.value.errors


@pytest.fixture
def tariff():
    tariff = TariffFactory(name="Retail")
    RateFactory(tariff=tariff, service="voice", destination="", price=Decimal("99"))
    RateFactory(tariff=tariff, service="sms", destination="", price=Decimal("9"))
    return tariff


# --- A good file ----------------------------------------------------------------------------


def test_a_good_file_replaces_every_rate_and_bumps_the_version_once(tariff):
    before = tariff.version
    result = tariff_import(tariff=tariff, text=csv_text(*GOOD_ROWS), now=NOW)

    assert (result.imported, result.replaced, result.in_force) == (5, 2, 5)
    assert result.version == tariff.version == before + 1
    assert Tariff.objects.get(pk=tariff.pk).version == before + 1
    assert rate_rows(tariff) == [
        ("api", "", Decimal("0.1"), 0, 0, 1, 1, datetime(2026, 1, 1, tzinfo=UTC), None),
        ("data", "JP", Decimal("0.000001"), 0, 0, 1, 1, datetime(2026, 1, 1, tzinfo=UTC), None),
        ("sms", "1", Decimal("3"), 0, 0, 1, 1, datetime(2026, 1, 1, tzinfo=UTC), None),
        ("voice", "", Decimal("20"), 0, 0, 60, 60, datetime(2026, 1, 1, tzinfo=UTC), None),
        (
            "voice",
            "8190",  # the leading + dropped
            Decimal("30.5"),
            Decimal("5"),
            10,
            30,
            6,
            datetime(2026, 1, 1, tzinfo=UTC),  # 09:00+09:00
            datetime(2027, 1, 1, tzinfo=UTC),
        ),
    ]


def test_rating_uses_the_imported_rates_at_its_next_lookup(tariff):
    assert tariff_index(tariff).find("voice", "8190123", NOW)[0].price == Decimal("99")
    tariff_import(tariff=tariff, text=csv_text(*GOOD_ROWS), now=NOW)
    reloaded = Tariff.objects.get(pk=tariff.pk)
    rate, matched = tariff_index(reloaded).find("voice", "8190123", NOW)
    assert (matched, rate.price, rate.increments) == ("8190", Decimal("30.5"), "30/6")


def test_counts_only_the_rates_in_force_at_now():
    tariff = TariffFactory()
    result = tariff_import(
        tariff=tariff,
        text=csv_text(
            "voice,,1,0,0,1,1,2025-01-01T00:00:00+00:00,2026-01-01T00:00:00+00:00",
            "voice,,2,0,0,1,1,2026-01-01T00:00:00+00:00,2027-01-01T00:00:00+00:00",
            "voice,,3,0,0,1,1,2027-01-01T00:00:00+00:00,",
        ),
        now=NOW,
    )
    assert (result.imported, result.in_force) == (3, 1)


def test_a_byte_order_mark_blank_lines_and_spaces_around_fields_are_accepted():
    tariff = TariffFactory()
    text = "\ufeff" + HEAD + "\r\n\r\n voice , 81 , 10 ,,,,, 2026-01-01T00:00:00+00:00 , \r\n\n"
    tariff_import(tariff=tariff, file=io.BytesIO(text.encode()), now=NOW)
    assert rate_rows(tariff) == [
        ("voice", "81", Decimal("10"), 0, 0, 1, 1, datetime(2026, 1, 1, tzinfo=UTC), None)
    ]


def test_an_upload_in_text_mode_is_read_too():
    tariff = TariffFactory()
    tariff_import(tariff=tariff, file=io.StringIO(csv_text(GOOD_ROWS[0])), now=NOW)
    assert Rate.objects.filter(tariff=tariff).count() == 1


def test_other_tariffs_are_untouched(tariff):
    other = TariffFactory()
    RateFactory(tariff=other, destination="44")
    tariff_import(tariff=tariff, text=csv_text(*GOOD_ROWS), now=NOW)
    assert Rate.objects.filter(tariff=other).count() == 1
    assert Tariff.objects.get(pk=other.pk).version == other.version


# --- Every rule -----------------------------------------------------------------------------


def row(**fields) -> str:
    values = {
        "service": "voice",
        "destination": "81",
        "price": "10",
        "connection_fee": "0",
        "minimum_seconds": "0",
        "first_increment": "1",
        "next_increment": "1",
        "effective_from": "2026-01-01T00:00:00+00:00",
        "effective_until": "",
    }
    values.update(fields)
    return ",".join(values[name] for name in HEADER)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"service": "vox"}, "unknown service “vox”: use one of voice, sms, fax, api, data, disk"),
        ({"service": "Voice"}, "unknown service “Voice”"),
        ({"service": ""}, "unknown service “”"),
        ({"destination": "81-90"}, "number prefix of 1 to 15 digits"),
        ({"destination": "8" * 16}, "number prefix of 1 to 15 digits"),
        ({"destination": "+"}, "number prefix of 1 to 15 digits"),
        ({"destination": "++81"}, "number prefix of 1 to 15 digits"),
        ({"destination": "٨١"}, "number prefix of 1 to 15 digits"),  # non-ASCII digits
        ({"service": "sms", "destination": "JP"}, "number prefix"),
        ({"service": "data", "destination": "jp"}, "country “jp” must be in upper case: JP"),
        ({"service": "data", "destination": "XX"}, "not an ISO 3166 alpha-2 country"),
        ({"service": "data", "destination": "JPN"}, "not an ISO 3166 alpha-2 country"),
        ({"service": "data", "destination": "81"}, "not an ISO 3166 alpha-2 country"),
        ({"service": "api", "destination": "81"}, "api rates have no destination"),
        ({"service": "disk", "destination": "JP"}, "disk rates have no destination"),
        ({"price": ""}, "price is missing"),
        ({"price": "-1"}, "price “-1” is negative"),
        ({"price": "1.2345678"}, "price “1.2345678” has more than 6 decimals"),
        ({"price": "abc"}, "price “abc” is not a decimal number"),
        ({"price": "1e3"}, "price “1e3” is not a decimal number"),
        ({"price": "1,5"}, "expected 9 fields, found 10"),
        ({"price": "NaN"}, "price “NaN” is not a decimal number"),
        ({"price": "5."}, "price “5.” is not a decimal number"),
        ({"price": "１２"}, "price “１２” is not a decimal number"),  # full-width digits
        ({"price": "12345678901234"}, "price “12345678901234” is too large"),
        ({"connection_fee": "-0.5"}, "connection_fee “-0.5” is negative"),
        ({"connection_fee": "0.0000001"}, "connection_fee “0.0000001” has more than 6"),
        ({"minimum_seconds": "-5"}, "minimum_seconds “-5” must be a whole number from 0"),
        ({"minimum_seconds": "1.5"}, "minimum_seconds “1.5” must be a whole number"),
        ({"first_increment": "0"}, "first_increment “0” must be a whole number from 1"),
        ({"next_increment": "0"}, "next_increment “0” must be a whole number from 1"),
        ({"next_increment": "2147483648"}, "to 2147483647"),
        ({"effective_from": ""}, "effective_from is missing"),
        ({"effective_from": "2026-01-01T00:00:00"}, "not an ISO 8601 instant with a UTC offset"),
        ({"effective_from": "2026-01-01"}, "not an ISO 8601 instant with a UTC offset"),
        ({"effective_from": "01/01/2026"}, "not an ISO 8601 instant with a UTC offset"),
        # The calendar's ends: 0001 (+01:00) and 9999 (-05:00) cannot even be put in UTC.
        ({"effective_from": "0001-01-01T00:00:00+01:00"}, "between 1970 and 2999"),
        ({"effective_until": "9999-12-31T23:30:00-05:00"}, "between 1970 and 2999"),
        ({"effective_from": "1969-12-31T00:00:00Z"}, "between 1970 and 2999"),
        ({"effective_until": "2026-13-01T00:00:00Z"}, "effective_until “2026-13-01T00:00:00Z”"),
        ({"effective_until": "2026-01-01T00:00:00+00:00"}, "must be later than effective_from"),
        ({"effective_until": "2026-01-01T08:00:00+09:00"}, "must be later than effective_from"),
    ],
)
def test_each_rule_refuses_the_line_with_its_reason(tariff, fields, reason):
    before = rate_rows(tariff)
    errors = refused(tariff, csv_text(row(service="fax", destination="999"), row(**fields)))
    assert len(errors) == 1
    line, message = errors[0]
    assert line == 3
    assert reason in message
    assert rate_rows(tariff) == before


@pytest.mark.parametrize(
    ("fields", "stored"),
    [
        ({"destination": "+81"}, "81"),
        ({"destination": "1"}, "1"),
        ({"destination": "8" * 15}, "8" * 15),
        ({"destination": ""}, ""),
        ({"service": "data", "destination": "JP"}, "JP"),
        ({"service": "data", "destination": ""}, ""),
        ({"service": "fax", "destination": "+4420"}, "4420"),
        ({"service": "disk", "destination": ""}, ""),
    ],
)
def test_destinations_are_stored_as_rating_reads_them(fields, stored):
    tariff = TariffFactory()
    tariff_import(tariff=tariff, text=csv_text(row(**fields)), now=NOW)
    assert Rate.objects.get(tariff=tariff).destination == stored


def test_limits_that_are_allowed():
    tariff = TariffFactory()
    tariff_import(
        tariff=tariff,
        text=csv_text(
            # SQLite keeps decimals as doubles: 15 significant digits survive there, all 19
            # the column holds on PostgreSQL.
            row(price="0", connection_fee="123456789.123456", next_increment="2147483647"),
            row(destination="82", price="-0", effective_from="2026-01-01T00:00:00Z"),
        ),
        now=NOW,
    )
    rates = {rate.destination: rate for rate in Rate.objects.filter(tariff=tariff)}
    assert rates["81"].connection_fee == Decimal("123456789.123456")
    assert rates["81"].next_increment == 2147483647
    assert rates["82"].price == 0


def test_the_same_service_destination_and_start_twice_is_refused_naming_the_first_line(tariff):
    errors = refused(
        tariff,
        csv_text(
            row(destination="81"),
            row(destination="82"),
            row(destination="+81", price="12"),  # the same prefix once the + is dropped
            row(destination="82", effective_from="2026-01-01T09:00:00+09:00"),  # same instant
            row(destination="81", effective_from="2026-02-01T00:00:00+00:00"),  # a later start
            row(service="sms", destination="81"),  # another service
        ),
    )
    assert errors == [
        (4, "the same service, destination and effective_from as line 2."),
        (5, "the same service, destination and effective_from as line 3."),
    ]


@pytest.mark.parametrize(
    "header",
    [
        HEAD.replace("price", "Price"),
        HEAD.replace(",effective_until", ""),
        HEAD + ",note",
        ",".join(reversed(HEADER)),
        row(),  # no header at all: the first rate is taken for one and refused
    ],
)
def test_the_header_must_be_exact(tariff, header):
    errors = refused(tariff, csv_text(row(), header=header))
    assert errors == [(1, f"the first line must be exactly: {HEAD}")]


def test_an_empty_file_or_one_without_rates_is_refused_not_an_emptied_tariff(tariff):
    assert refused(tariff, "")[0][0] == 1
    assert refused(tariff, csv_text()) == [
        (1, "the file has no rates; a tariff is not emptied by import.")
    ]
    assert Rate.objects.filter(tariff=tariff).count() == 2


def test_a_file_that_is_not_utf8_is_refused_at_the_line_of_the_bad_byte(tariff):
    data = csv_text(row(), row(destination="82")).encode() + "voice,83,1\n".encode("utf-16")
    with pytest.raises(TariffImportError) as caught:
        tariff_import(tariff=tariff, file=io.BytesIO(data), now=NOW)
    assert caught.value.errors == [(4, "the file is not UTF-8 text (save it as CSV UTF-8).")]


def test_broken_quoting_is_reported_where_it_is(tariff):
    errors = refused(tariff, csv_text(row(), 'voice,"81"x,10,0,0,1,1,2026-01-01T00:00:00Z,'))
    assert errors[-1][0] == 3
    assert "not valid CSV" in errors[-1][1]


def test_a_file_with_bad_lines_is_refused_whole_listing_every_bad_line(tariff):
    before_rates, before_version = rate_rows(tariff), tariff.version
    text = csv_text(
        row(destination="81"),
        row(service="vox", price="-1"),  # line 3: two reasons, one entry
        row(destination="82"),
        row(service="data", destination="jp"),  # line 5
        "",  # blank: skipped, but still counted as a line
        row(destination="83", first_increment="0"),  # line 7
        row(destination="84"),
    )
    with pytest.raises(TariffImportError) as caught:
        tariff_import(tariff=tariff, text=text, now=NOW)
    error = caught.value
    assert [line for line, _ in error.errors] == [3, 5, 7]
    assert "unknown service “vox”" in error.errors[0][1]
    assert "price “-1” is negative" in error.errors[0][1]
    assert str(error) == "The file has 3 bad lines; nothing was imported."
    assert error.lines()[1] == "line 5: country “jp” must be in upper case: JP."
    assert rate_rows(tariff) == before_rates
    assert Tariff.objects.get(pk=tariff.pk).version == before_version


# --- Export and the round trip --------------------------------------------------------------


def test_export_writes_the_documented_format_sorted_in_utc_without_trailing_zeros():
    tariff = TariffFactory()
    RateFactory(
        tariff=tariff,
        service="voice",
        destination="8190",
        price=Decimal("30.500000"),
        connection_fee=Decimal("5"),
        minimum_seconds=10,
        first_increment=30,
        next_increment=6,
        effective_from=datetime(2026, 1, 1, tzinfo=UTC),
        effective_until=datetime(2027, 1, 1, 12, 30, tzinfo=UTC),
    )
    RateFactory(tariff=tariff, service="data", destination="JP", price=Decimal("0.000001"))
    RateFactory(tariff=tariff, service="voice", destination="", price=Decimal("100"))
    assert tariff_export(tariff=tariff) == (
        f"{HEAD}\n"
        "data,JP,0.000001,0,0,1,1,2020-01-01T00:00:00+00:00,\n"
        "voice,,100,0,0,1,1,2020-01-01T00:00:00+00:00,\n"
        "voice,8190,30.5,5,10,30,6,2026-01-01T00:00:00+00:00,2027-01-01T12:30:00+00:00\n"
    )


def test_export_then_import_round_trips_exactly(tariff):
    tariff_import(tariff=tariff, text=csv_text(*GOOD_ROWS), now=NOW)
    exported = tariff_export(tariff=tariff)

    copy = TariffFactory()
    tariff_import(tariff=copy, text=exported, now=NOW)
    assert rate_rows(copy) == rate_rows(tariff)
    assert tariff_export(tariff=copy) == exported

    # Importing its own export changes no rate (only the version).
    tariff_import(tariff=tariff, text=exported, now=NOW)
    assert tariff_export(tariff=tariff) == exported


def test_an_empty_tariff_exports_the_header_only():
    assert tariff_export(tariff=TariffFactory()) == HEAD + "\n"


# --- Size -----------------------------------------------------------------------------------


def big_file(rows: int) -> str:
    lines = [HEAD]
    for n in range(rows):
        lines.append(f"voice,81{n:07d},{n % 97}.{n % 1000:03d},0,0,30,6,2026-01-01T00:00:00+00:00,")
    return "\n".join(lines) + "\n"


def test_fifty_thousand_rates_import_and_export():
    tariff = TariffFactory()
    for prefix in ("44", "45", "46"):
        RateFactory(tariff=tariff, destination=prefix)
    text = big_file(50_000)

    result = tariff_import(tariff=tariff, text=text, now=NOW)

    assert (result.imported, result.replaced) == (50_000, 3)
    assert Rate.objects.filter(tariff=tariff).count() == 50_000
    rate = Rate.objects.get(tariff=tariff, destination="810049999")
    assert rate.price == Decimal("44.999")  # 49999 % 97, 49999 % 1000
    assert tariff_export(tariff=tariff).count("\n") == 50_001


def test_fifty_thousand_lines_with_one_bad_one_change_nothing():
    tariff = TariffFactory()
    lines = big_file(50_000).splitlines()
    lines[40_000] = lines[40_000].replace(",30,6,", ",0,6,")
    errors = refused(tariff, "\n".join(lines))
    assert errors == [(40_001, "first_increment “0” must be a whole number from 1 to 2147483647.")]
    assert not Rate.objects.filter(tariff=tariff).exists()


# --- Two imports at once (PostgreSQL) -------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_imports_of_one_tariff_at_once_leave_exactly_one_file_and_count_both():
    from django.db import connections

    tariff = TariffFactory()
    files = [big_file(3000), csv_text(*GOOD_ROWS)]
    barrier = threading.Barrier(2)
    failures = []

    def run(text):
        try:
            barrier.wait()
            tariff_import(tariff=Tariff.objects.get(pk=tariff.pk), text=text, now=NOW)
        except Exception as error:  # reported by the assertion below
            failures.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(text,)) for text in files]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert Tariff.objects.get(pk=tariff.pk).version == tariff.version + 2
    exported = tariff_export(tariff=tariff)
    expected = {tariff_export_of(text) for text in files}
    assert exported in expected


def tariff_export_of(text: str) -> str:
    other = TariffFactory()
    tariff_import(tariff=other, text=text, now=NOW)
    return tariff_export(tariff=other)


# --- Commands -------------------------------------------------------------------------------


@pytest.fixture
def csv_file(tmp_path):
    def write(text: str, name: str = "rates.csv"):
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return str(path)

    return write


def run(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_import_tariff_creates_a_missing_tariff_in_the_default_currency(csv_file):
    out, _ = run("import_tariff", "Wholesale", csv_file(csv_text(*GOOD_ROWS)))
    tariff = Tariff.objects.get(name="Wholesale")
    assert tariff.currency == "JPY"
    assert Rate.objects.filter(tariff=tariff).count() == 5
    assert out == (
        "Created tariff “Wholesale” (JPY): 5 rates imported, 0 replaced, 5 in force now; "
        "version 2.\n"
    )


def test_import_tariff_creates_a_new_tariff_in_the_currency_asked(csv_file):
    run("import_tariff", "Dollar", csv_file(csv_text(*GOOD_ROWS)), "--currency", "USD")
    assert Tariff.objects.get(name="Dollar").currency == "USD"


def test_import_tariff_replaces_the_rates_of_an_existing_tariff(tariff, csv_file):
    out, _ = run("import_tariff", "Retail", csv_file(csv_text(*GOOD_ROWS)))
    assert out.startswith("Updated tariff “Retail” (JPY): 5 rates imported, 2 replaced")
    assert Tariff.objects.count() == 1
    assert Tariff.objects.get(pk=tariff.pk).version == tariff.version + 1


def test_import_tariff_refuses_to_change_the_currency_of_an_existing_tariff(tariff, csv_file):
    with pytest.raises(CommandError, match="exists in JPY; --currency USD applies only"):
        run("import_tariff", "Retail", csv_file(csv_text(*GOOD_ROWS)), "--currency", "USD")


def test_import_tariff_refuses_an_unknown_currency(csv_file):
    with pytest.raises(CommandError, match="invalid choice: 'XYZ'"):
        run("import_tariff", "New", csv_file(csv_text(*GOOD_ROWS)), "--currency", "XYZ")
    assert not Tariff.objects.exists()


def test_import_tariff_refuses_a_name_longer_than_a_tariff_holds(csv_file):
    with pytest.raises(CommandError, match="at most 100 characters"):
        run("import_tariff", "N" * 101, csv_file(csv_text(*GOOD_ROWS)))
    assert not Tariff.objects.exists()


def test_import_tariff_with_a_missing_file_fails_with_one_line(tmp_path):
    missing = str(tmp_path / "nope.csv")
    with pytest.raises(CommandError) as caught:
        run("import_tariff", "Retail", missing)
    assert str(caught.value) == f"Cannot read {missing}: No such file or directory."
    assert caught.value.returncode == 1
    assert not Tariff.objects.exists()


def test_import_tariff_with_bad_lines_lists_each_and_creates_nothing(csv_file):
    path = csv_file(
        csv_text(row(), row(destination="83", price="x"), row(destination="82"), row(service="vox"))
    )
    err = io.StringIO()
    with pytest.raises(CommandError) as caught:
        call_command("import_tariff", "Wholesale", path, stdout=io.StringIO(), stderr=err)
    assert str(caught.value) == f"{path}: The file has 2 bad lines; nothing was imported."
    assert "\n" not in str(caught.value)
    assert caught.value.returncode == 1
    assert err.getvalue().splitlines() == [
        f"{path}: line 3: price “x” is not a decimal number such as 12.5.",
        f"{path}: line 5: unknown service “vox”: use one of voice, sms, fax, api, data, disk.",
    ]
    assert not Tariff.objects.exists()  # the new tariff went with its rates


def test_import_tariff_with_bad_lines_leaves_an_existing_tariff_as_it_was(tariff, csv_file):
    before = rate_rows(tariff)
    with pytest.raises(CommandError):
        run("import_tariff", "Retail", csv_file(csv_text(row(price="-3"))))
    assert rate_rows(tariff) == before
    assert Tariff.objects.get(pk=tariff.pk).version == tariff.version


def test_export_tariff_writes_the_csv_to_stdout(tariff):
    out, _ = run("export_tariff", "Retail")
    assert out == tariff_export(tariff=tariff)
    assert out.splitlines()[0] == HEAD


def test_export_tariff_of_an_unknown_tariff_fails_naming_the_known_ones(tariff):
    with pytest.raises(CommandError) as caught:
        run("export_tariff", "Retial")
    assert str(caught.value) == "No tariff named “Retial”. Tariffs: Retail."
    assert caught.value.returncode == 1


def test_commands_round_trip_through_a_file(tariff, csv_file):
    out, _ = run("export_tariff", "Retail")
    run("import_tariff", "Copy", csv_file(out, "copy.csv"))
    assert run("export_tariff", "Copy")[0] == out


def test_create_api_key_prints_the_key_once_and_stores_only_its_hash():
    out, err = run("create_api_key", "--name", "voice platform")
    raw = out.strip()
    assert out == raw + "\n"  # the key alone: a script can capture it
    key = ApiKey.objects.get()
    assert key.name == "voice platform"
    assert key.key_hash == api_key_hash(raw)
    assert raw.startswith(key.prefix) and len(key.prefix) < len(raw)
    assert raw not in {key.name, key.prefix, key.key_hash}
    assert raw not in err and "cannot be shown again" in err

    second, _ = run("create_api_key", "--name", "voice platform")
    assert second.strip() != raw
    assert ApiKey.objects.count() == 2


@pytest.mark.parametrize("name", ["", "   ", "x" * 101])
def test_create_api_key_refuses_a_bad_name(name):
    with pytest.raises(CommandError, match="--name must be 1 to 100 characters"):
        run("create_api_key", "--name", name)
    assert not ApiKey.objects.exists()
