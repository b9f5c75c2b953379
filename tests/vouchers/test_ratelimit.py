"""Brute-force protection: refused attempts per user, company and IP lock further attempts
for an hour, and the count starts again afterwards. The clock moves with time-machine (the
in-memory test cache and the database cache both expire by it)."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.cache import caches
from django.core.cache.backends.db import DatabaseCache
from django.core.management import call_command
from django.test import RequestFactory, override_settings

from accounts.models import Company
from tests.factories import CompanyFactory, MembershipFactory
from tests.factories.vouchers import codes_of, voucher_batch
from vouchers import codes
from vouchers.exceptions import (
    RedemptionLocked,
    VoucherAlreadyRedeemed,
    VoucherCodeMalformed,
    VoucherNotFound,
)
from vouchers.models import VoucherRedemption
from vouchers.ratelimit import AttemptLimiter, client_ip
from vouchers.services import voucher_redeem_attempt

pytestmark = pytest.mark.django_db

START = datetime(2027, 5, 10, 1, 0, tzinfo=UTC)
LIMIT = 10


@pytest.fixture
def clock():
    with time_machine.travel(START, tick=False) as traveller:
        yield traveller


def wrong_code() -> str:
    """A well-formed code that was never issued."""
    return codes.format_code(codes.generate_code())


def member(company=None):
    return MembershipFactory(company=company or CompanyFactory()).user


def attempt(user, company, code, ip="192.0.2.1"):
    return voucher_redeem_attempt(company=company, code=code, user=user, ip=ip)


def fail(user, company, times: int, ip="192.0.2.1"):
    errors = []
    for _ in range(times):
        with pytest.raises(VoucherNotFound) as refused:
            attempt(user, company, wrong_code(), ip)
        errors.append(refused.value)
    return errors


def test_the_tenth_failure_in_an_hour_locks_attempts_for_an_hour_then_they_work_again(clock):
    company = CompanyFactory()
    user = member(company)
    good = codes_of(voucher_batch(now=START - timedelta(days=1), count=1))[0]

    errors = fail(user, company, LIMIT - 1)
    assert all(error.locked_until is None for error in errors)
    clock.shift(timedelta(minutes=30))
    (tenth,) = fail(user, company, 1)
    locked_until = START + timedelta(minutes=30, hours=1)
    assert tenth.locked_until == locked_until

    # Locked: even the right code is not looked up.
    clock.shift(timedelta(minutes=59))
    with pytest.raises(RedemptionLocked) as locked:
        attempt(user, company, good)
    assert locked.value.locked_until == locked_until
    assert "locked until" in str(locked.value)
    assert not VoucherRedemption.objects.exists()

    # An hour after the lock began it lifts, and the count starts from zero.
    clock.shift(timedelta(minutes=1))
    assert (
        AttemptLimiter(user_id=user.pk, company_id=company.pk, ip="192.0.2.1").locked_until(
            START + timedelta(minutes=90)
        )
        is None
    )
    attempt(user, company, good)
    assert VoucherRedemption.objects.count() == 1
    assert all(error.locked_until is None for error in fail(user, company, LIMIT - 1))


def test_a_locked_attempt_looks_nothing_up(clock, django_assert_num_queries):
    company = CompanyFactory()
    user = member(company)
    fail(user, company, LIMIT)
    with django_assert_num_queries(0), pytest.raises(RedemptionLocked):
        attempt(user, company, wrong_code())


def test_failures_spread_over_more_than_an_hour_do_not_lock(clock):
    company = CompanyFactory()
    user = member(company)
    fail(user, company, LIMIT - 1)
    clock.shift(timedelta(minutes=61))
    errors = fail(user, company, LIMIT - 1)
    assert all(error.locked_until is None for error in errors)


def test_failures_of_several_users_of_one_company_lock_the_company(clock):
    company = CompanyFactory()
    alice, bob, carol = member(company), member(company), member(company)
    fail(alice, company, 4, ip="192.0.2.1")
    fail(bob, company, 4, ip="192.0.2.2")
    (last,) = fail(carol, company, 1, ip="192.0.2.3")
    assert last.locked_until is None
    (tripping,) = fail(carol, company, 1, ip="192.0.2.3")
    assert tripping.locked_until is not None
    with pytest.raises(RedemptionLocked):
        attempt(alice, company, wrong_code(), ip="192.0.2.9")
    # Another company is not affected.
    other = CompanyFactory()
    fail(member(other), other, 1, ip="192.0.2.10")


def test_failures_from_one_ip_address_lock_that_address_across_companies(clock):
    for _ in range(LIMIT - 1):
        company = CompanyFactory()
        fail(member(company), company, 1, ip="203.0.113.5")
    company = CompanyFactory()
    user = member(company)
    (tripping,) = fail(user, company, 1, ip="203.0.113.5")
    assert tripping.locked_until is not None
    fresh = CompanyFactory()
    with pytest.raises(RedemptionLocked):
        attempt(member(fresh), fresh, wrong_code(), ip="203.0.113.5")
    fail(member(fresh), fresh, 1, ip="203.0.113.6")  # another address still tries


def test_ipv6_clients_are_counted_by_their_slash_64(clock):
    company = CompanyFactory()
    for n in range(LIMIT):
        user = member(company if n == 0 else CompanyFactory())
        other_company = user.memberships.get().company
        fail(user, other_company, 1, ip=f"2001:db8:1:2::{n + 1:x}")
    fresh = CompanyFactory()
    with pytest.raises(RedemptionLocked):
        attempt(member(fresh), fresh, wrong_code(), ip="2001:db8:1:2:ffff::1")
    fail(member(fresh), fresh, 1, ip="2001:db8:1:3::1")


def test_success_typos_and_own_double_submits_do_not_count_as_failures(clock):
    company = CompanyFactory()
    user = member(company)
    batch = voucher_batch(now=START - timedelta(days=1), count=LIMIT + 1)
    code, *others = codes_of(batch)
    attempt(user, company, code)
    for _ in range(LIMIT + 2):
        with pytest.raises(VoucherCodeMalformed):
            attempt(user, company, "K7QM-3XTD-9PWR-2HCVT")  # check character catches it
        with pytest.raises(VoucherAlreadyRedeemed):
            attempt(user, company, code)
    for other in others:  # successes never count either
        attempt(user, company, other)
    assert all(error.locked_until is None for error in fail(user, company, LIMIT - 1))


def test_a_code_used_by_another_company_counts_like_a_wrong_one(clock):
    used = codes_of(voucher_batch(now=START - timedelta(days=1), count=1))[0]
    attempt(member(), CompanyFactory(), used)
    company = CompanyFactory()
    user = member(company)
    fail(user, company, LIMIT - 1)
    with pytest.raises(VoucherNotFound) as refused:
        attempt(user, company, used)
    assert refused.value.locked_until is not None


@override_settings(VOUCHER_FAILURE_LIMITS={"user": 3, "company": 5, "ip": 5})
def test_the_limits_come_from_the_settings(clock):
    company = CompanyFactory()
    user = member(company)
    (*_, third) = fail(user, company, 3)
    assert third.locked_until == START + timedelta(hours=1)


@pytest.fixture
def database_cache():
    """The embedded default's cache: a table in the database."""
    settings = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "test_voucher_cache",
        }
    }
    with override_settings(CACHES=settings):
        call_command("createcachetable", verbosity=0)
        yield


def test_the_database_cache_shares_the_counts_between_processes_and_survives_rollback(
    clock, database_cache
):
    """The embedded default: the cache table is read and written by every process like the
    database; a refused redemption rolls back, the failure it counted stays."""
    company = CompanyFactory(mode=Company.Mode.PREPAID)
    user = member(company)
    errors = fail(user, company, LIMIT)
    assert errors[-1].locked_until == START + timedelta(hours=1)
    # Another process: its own cache object on the same table.
    elsewhere = DatabaseCache("test_voucher_cache", {})
    assert isinstance(caches["default"], DatabaseCache)
    lock_key = f"vouchers:redeem:locked:user:{user.pk}"
    assert elsewhere.get(lock_key) == (START + timedelta(hours=1)).timestamp()
    with pytest.raises(RedemptionLocked):
        attempt(user, company, wrong_code())


def test_on_the_database_cache_failures_minutes_apart_still_lock_within_the_hour(
    clock, database_cache
):
    """The database cache's incr() writes the counter again with the cache's default
    timeout (300 s): the count must still last the hour from the first failure."""
    company = CompanyFactory(mode=Company.Mode.PREPAID)
    user = member(company)
    for _ in range(LIMIT - 1):
        (error,) = fail(user, company, 1)
        assert error.locked_until is None
        clock.shift(timedelta(seconds=305))
    # 9 × 305 s = 45 min 45 s after the first failure: the tenth locks.
    (tenth,) = fail(user, company, 1)
    assert tenth.locked_until == START + timedelta(seconds=9 * 305, hours=1)
    # Past the hour from the first failure, the count starts again.
    clock.shift(timedelta(hours=2))
    errors = fail(user, company, LIMIT - 1)
    assert all(error.locked_until is None for error in errors)


# --- The client's address -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("proxies", "remote", "forwarded", "expected"),
    [
        (0, "198.51.100.4", "", "198.51.100.4"),
        (0, "198.51.100.4", "203.0.113.9", "198.51.100.4"),  # no proxy: the header is a lie
        (1, "10.0.0.2", "203.0.113.9", "203.0.113.9"),
        (1, "10.0.0.2", "6.6.6.6, 203.0.113.9", "203.0.113.9"),  # the client's own part ignored
        (2, "10.0.0.2", "6.6.6.6, 203.0.113.9, 10.0.0.1", "203.0.113.9"),
        (1, "10.0.0.2", "", "10.0.0.2"),
        (0, "not an address", "", None),
        (1, "10.0.0.2", "garbage", None),
        (0, "2001:DB8::1", "", "2001:db8::1"),
    ],
)
def test_the_client_address_is_read_behind_the_configured_number_of_proxies(
    settings, proxies, remote, forwarded, expected
):
    settings.TOLLGATE_PROXY_COUNT = proxies
    request = RequestFactory().get("/", REMOTE_ADDR=remote, HTTP_X_FORWARDED_FOR=forwarded)
    assert client_ip(request) == expected


def test_an_attempt_without_an_address_is_still_limited_by_user_and_company(clock):
    company = CompanyFactory()
    user = member(company)
    assert fail(user, company, LIMIT, ip=None)[-1].locked_until == START + timedelta(hours=1)
    with pytest.raises(RedemptionLocked):
        attempt(user, company, wrong_code(), ip=None)
