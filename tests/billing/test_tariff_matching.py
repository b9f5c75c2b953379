"""Which rate prices an event (``billing.services.rating``): the longest number prefix with a
rate in force at the event's instant, the country for data, else the service's default;
``effective_until`` is exclusive; the index is cached per (tariff, version).
"""

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from billing.models import Rate
from billing.services.rating import (
    RatingError,
    TariffIndex,
    normalise_destination,
    tariff_index,
)
from tests.factories.rating import EPOCH, RateFactory, TariffFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)


def find(tariff, service, destination, at=NOW):
    rate, matched = tariff_index(tariff).find(
        service, normalise_destination(service, destination), at
    )
    return Rate.objects.get(pk=rate.id), matched


@pytest.fixture
def tariff():
    tariff = TariffFactory()
    RateFactory(tariff=tariff, service="voice", destination="", price=Decimal("50"))
    RateFactory(tariff=tariff, service="voice", destination="81", price=Decimal("20"))
    RateFactory(tariff=tariff, service="voice", destination="8190", price=Decimal("30"))
    RateFactory(tariff=tariff, service="data", destination="JP", price=Decimal("0.5"))
    RateFactory(tariff=tariff, service="data", destination="", price=Decimal("5"))
    return tariff


def test_the_longest_matching_prefix_wins(tariff):
    rate, matched = find(tariff, "voice", "+81 90 1234 5678")
    assert (matched, rate.price) == ("8190", Decimal("30"))
    rate, matched = find(tariff, "voice", "+81312345678")
    assert (matched, rate.price) == ("81", Decimal("20"))


def test_each_service_matches_prefixes_as_long_as_its_own(tariff):
    # Voice prices prefixes of up to 4 digits; SMS one of 7, which a voice call ignores.
    RateFactory(tariff=tariff, service="sms", destination="", price=Decimal("3"))
    RateFactory(tariff=tariff, service="sms", destination="8190123", price=Decimal("1"))
    rate, matched = find(tariff, "sms", "+81 90 1234 5678")
    assert (matched, rate.price) == ("8190123", Decimal("1"))
    rate, matched = find(tariff, "voice", "+81 90 1234 5678")
    assert (matched, rate.price) == ("8190", Decimal("30"))


def test_a_number_no_prefix_matches_takes_the_service_default(tariff):
    rate, matched = find(tariff, "voice", "+4420 7946 0000")
    assert (matched, rate.price) == ("", Decimal("50"))


def test_a_longer_prefix_not_yet_in_force_falls_back_to_a_shorter_one(tariff):
    RateFactory(
        tariff=tariff,
        service="voice",
        destination="819012",
        price=Decimal("99"),
        effective_from=NOW + timedelta(days=1),
    )
    assert find(tariff, "voice", "+819012345678")[1] == "8190"
    rate, matched = find(tariff, "voice", "+819012345678", at=NOW + timedelta(days=1))
    assert (matched, rate.price) == ("819012", Decimal("99"))


def test_effective_until_is_exclusive(tariff):
    ends = NOW + timedelta(hours=1)
    RateFactory(
        tariff=tariff,
        service="voice",
        destination="4420",
        price=Decimal("7"),
        effective_until=ends,
    )
    assert find(tariff, "voice", "+442079460000", at=ends - timedelta(microseconds=1))[1] == "4420"
    assert find(tariff, "voice", "+442079460000", at=ends)[1] == ""


def test_a_new_price_for_the_same_prefix_takes_over_at_its_start(tariff):
    change = NOW + timedelta(days=10)
    Rate.objects.filter(tariff=tariff, destination="8190").update(effective_until=change)
    RateFactory(
        tariff=tariff,
        service="voice",
        destination="8190",
        price=Decimal("33"),
        effective_from=change,
    )
    assert find(tariff, "voice", "+819012345678", at=change - timedelta(seconds=1))[
        0
    ].price == Decimal("30")
    assert find(tariff, "voice", "+819012345678", at=change)[0].price == Decimal("33")


def test_an_open_ended_older_rate_still_applies_when_a_newer_one_has_ended(tariff):
    # Newest first is only the search order: a newer row that already ended does not hide
    # an older one still in force.
    RateFactory(
        tariff=tariff,
        service="voice",
        destination="81",
        price=Decimal("25"),
        effective_from=NOW - timedelta(days=2),
        effective_until=NOW - timedelta(days=1),
    )
    assert find(tariff, "voice", "+81312345678")[0].price == Decimal("20")


def test_before_any_rate_is_in_force_there_is_no_rate(tariff):
    with pytest.raises(RatingError) as error:
        find(tariff, "voice", "+819012345678", at=EPOCH - timedelta(seconds=1))
    assert error.value.code == "no_rate"


def test_data_is_rated_by_country_not_by_prefix(tariff):
    rate, matched = find(tariff, "data", "jp")
    assert (matched, rate.price) == ("JP", Decimal("0.5"))
    rate, matched = find(tariff, "data", "US")
    assert (matched, rate.price) == ("", Decimal("5"))
    # "J" is no prefix of a country: a data rate for "J" would not match "JP".
    RateFactory(tariff=tariff, service="data", destination="J", price=Decimal("1"))
    tariff.version += 1
    assert find(tariff, "data", "JP")[1] == "JP"


def test_a_service_without_any_rate_is_no_rate(tariff):
    with pytest.raises(RatingError) as error:
        find(tariff, "sms", "+819012345678")
    assert error.value.code == "no_rate"
    assert "sms" in str(error.value)


def test_data_to_a_country_without_rate_or_default_is_no_rate():
    tariff = TariffFactory()
    RateFactory(tariff=tariff, service="data", destination="JP", price=Decimal("1"))
    with pytest.raises(RatingError) as error:
        find(tariff, "data", "DE")
    assert error.value.code == "no_rate"


def test_services_without_destination_use_their_default_rate():
    tariff = TariffFactory()
    RateFactory(tariff=tariff, service="api", destination="", price=Decimal("0.05"))
    rate, matched = find(tariff, "api", None)
    assert (matched, rate.price) == ("", Decimal("0.05"))
    assert normalise_destination("disk", "ignored") == ""


@pytest.mark.parametrize(
    ("service", "destination", "normal"),
    [
        ("voice", "+81 90-1234-5678", "819012345678"),
        ("sms", "819012345678", "819012345678"),
        ("fax", " +1 555 123 4567 ", "15551234567"),
        ("data", " jp ", "JP"),
    ],
)
def test_destinations_are_normalised_as_rates_name_them(service, destination, normal):
    assert normalise_destination(service, destination) == normal


@pytest.mark.parametrize(
    ("service", "destination", "code"),
    [
        ("telepathy", "+81", "unknown_service"),
        ("voice", None, "invalid_destination"),
        ("voice", "+81a9012345", "invalid_destination"),
        ("voice", "+123", "invalid_destination"),  # fewer than 4 digits
        ("voice", "+1234567890123456", "invalid_destination"),  # more than 15
        ("data", "ZZ", "invalid_destination"),
        ("data", "EU", "invalid_destination"),  # a grouping, not a country
        ("data", "JPN", "invalid_destination"),
        ("data", None, "invalid_destination"),
    ],
)
def test_unusable_destinations_are_refused_with_a_code(service, destination, code):
    with pytest.raises(RatingError) as error:
        normalise_destination(service, destination)
    assert error.value.code == code


def test_the_cached_index_is_reused_until_the_version_changes(tariff):
    first = tariff_index(tariff)
    assert tariff_index(tariff) is first
    # A rate added without bumping the version is not seen: the version is the contract.
    RateFactory(tariff=tariff, service="voice", destination="819", price=Decimal("25"))
    assert find(tariff, "voice", "+819312345678")[1] == "81"
    tariff.version += 1
    tariff.save(update_fields=["version"])
    tariff.refresh_from_db()
    assert tariff_index(tariff) is not first
    assert find(tariff, "voice", "+819312345678")[1] == "819"
    # Another process reading the tariff afresh sees the new version too.
    assert tariff_index(type(tariff).objects.get(pk=tariff.pk)) is tariff_index(tariff)


def test_each_tariff_has_its_own_index(tariff):
    other = TariffFactory()
    RateFactory(tariff=other, service="voice", destination="8190", price=Decimal("1"))
    assert find(other, "voice", "+819012345678")[0].price == Decimal("1")
    assert find(tariff, "voice", "+819012345678")[0].price == Decimal("30")


def test_a_tariff_of_thirty_thousand_prefixes_builds_and_matches_the_longest():
    generator = random.Random(20261120)
    tariff = TariffFactory()
    prefixes: set[str] = set()
    while len(prefixes) < 30_000:
        length = generator.choice([2, 3, 4, 5, 6, 7])
        prefixes.add("".join(generator.choice("0123456789") for _ in range(length)))
    ordered = sorted(prefixes)
    price_of = {prefix: Decimal(index % 997 + 1) for index, prefix in enumerate(ordered)}
    Rate.objects.bulk_create(
        [
            Rate(
                tariff=tariff,
                service="voice",
                destination=prefix,
                price=price_of[prefix],
                effective_from=EPOCH,
            )
            for prefix in ordered
        ]
        + [Rate(tariff=tariff, service="voice", destination="", price=0, effective_from=EPOCH)],
        batch_size=5000,
    )
    index = tariff_index(tariff)
    assert index.size == 30_001

    def longest(number: str) -> str:
        return next((number[:n] for n in range(len(number), 0, -1) if number[:n] in prefixes), "")

    numbers = [
        # Numbers that start with a known prefix, and arbitrary ones.
        generator.choice(ordered) + "".join(generator.choice("0123456789") for _ in range(6))
        for _ in range(1500)
    ] + ["".join(generator.choice("0123456789") for _ in range(11)) for _ in range(1500)]
    for number in numbers:
        rate, matched = index.find("voice", number, NOW)
        assert matched == longest(number), number
        assert rate.price == (price_of[matched] if matched else 0)


def test_the_index_is_built_from_any_rate_rows():
    # The index needs only the rows' fields: it can be checked without a database.
    rows = [
        Rate(id=1, service="sms", destination="", price=Decimal(3), effective_from=EPOCH),
        Rate(id=2, service="sms", destination="1", price=Decimal(2), effective_from=EPOCH),
    ]
    index = TariffIndex(rows)
    assert index.find("sms", "15551234567", NOW)[0].id == 2
    assert index.find("sms", "815551234567", NOW)[0].id == 1
