"""Reads of balances, lots, history and the credit runway, with the clock passed explicitly."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from djmoney.money import Money

from accounts.models import Company
from billing.models import LedgerTransaction
from billing.selectors import (
    average_daily_spend,
    company_available,
    company_history,
    company_lot_lines,
    company_transactions,
    credit_runway,
)
from billing.services import ledger
from tests.factories import CompanyFactory
from tests.factories.billing import charge, grant

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 10, 20, 0, tzinfo=UTC)
Kind = LedgerTransaction.Kind


def jpy(amount) -> Money:
    return Money(Decimal(amount), "JPY")


@pytest.fixture
def prepaid():
    return CompanyFactory(mode=Company.Mode.PREPAID)


def spend_100_a_day(company) -> None:
    """¥3,000 of charges over the last 30 days, from a lot that they use up completely."""
    grant(company, 3000, now=NOW - timedelta(days=40), days=365)
    for day in range(1, 11):
        charge(company, 300, now=NOW - timedelta(days=day))


# --- credit_runway -------------------------------------------------------------------------


def test_runway_without_spending_has_no_run_out_date(prepaid):
    grant(prepaid, 1000, now=NOW - timedelta(days=1), days=3)
    runway = credit_runway(prepaid, NOW)
    assert runway.daily_spend == jpy(0)
    assert runway.runs_out_at is None
    assert runway.expiring_unused == jpy(0)


def test_average_daily_spend_counts_only_charges_of_the_last_30_days(prepaid):
    spend_100_a_day(prepaid)
    charge(prepaid, 0, now=NOW)  # at ``now`` itself: outside the half-open window
    grant(prepaid, 5000, now=NOW - timedelta(days=2))  # credit added is not spend
    assert average_daily_spend(prepaid, NOW) == jpy(100)
    assert average_daily_spend(prepaid, NOW + timedelta(days=31)) == jpy(0)


def test_runway_runs_out_before_the_lot_expires(prepaid):
    spend_100_a_day(prepaid)
    grant(prepaid, 700, now=NOW, days=90)
    runway = credit_runway(prepaid, NOW)
    assert runway.daily_spend == jpy(100)
    assert runway.runs_out_at == NOW + timedelta(days=7)
    assert runway.expiring_unused == jpy(0)


def test_credit_expiring_before_it_can_be_spent_counts_as_expiring_unused(prepaid):
    spend_100_a_day(prepaid)
    grant(prepaid, 1000, now=NOW, days=5)
    runway = credit_runway(prepaid, NOW)
    # Five days at ¥100 spend ¥500 of it; the other ¥500 expires with the lot.
    assert runway.runs_out_at == NOW + timedelta(days=5)
    assert runway.expiring_unused == jpy(500)


def test_runway_with_two_lots_spends_the_sooner_expiring_one_first(prepaid):
    spend_100_a_day(prepaid)
    grant(prepaid, 2000, now=NOW, days=90)
    grant(prepaid, 1000, now=NOW, days=5)  # granted later, expires sooner: spent first
    runway = credit_runway(prepaid, NOW)
    # ¥500 of the short lot is lost at day 5; the long lot then lasts 20 more days.
    assert runway.runs_out_at == NOW + timedelta(days=25)
    assert runway.expiring_unused == jpy(500)


def test_runway_with_two_lots_both_spent_in_time(prepaid):
    spend_100_a_day(prepaid)
    grant(prepaid, 300, now=NOW, days=5)
    grant(prepaid, 500, now=NOW, days=90)
    runway = credit_runway(prepaid, NOW)
    assert runway.runs_out_at == NOW + timedelta(days=8)
    assert runway.expiring_unused == jpy(0)


def test_runway_ignores_a_lot_already_expired_but_not_yet_swept(prepaid):
    spend_100_a_day(prepaid)
    grant(prepaid, 900, now=NOW - timedelta(days=20), days=10)  # expired 10 days ago
    grant(prepaid, 400, now=NOW, days=90)
    runway = credit_runway(prepaid, NOW)
    assert runway.runs_out_at == NOW + timedelta(days=4)
    assert runway.expiring_unused == jpy(0)


# --- company_available ---------------------------------------------------------------------


def test_prepaid_available_is_the_credit_in_unexpired_lots(prepaid):
    grant(prepaid, 1000, now=NOW - timedelta(days=1), days=30)
    grant(prepaid, 500, now=NOW - timedelta(days=10), days=5)  # expired, not yet swept
    charge(prepaid, 200, now=NOW - timedelta(hours=1))
    assert company_available(prepaid, NOW) == jpy(800)
    assert company_available(prepaid, NOW + timedelta(days=30)) == jpy(0)


def test_postpaid_available_is_the_headroom_under_the_credit_limit():
    company = CompanyFactory(mode=Company.Mode.POSTPAID, credit_limit=jpy(1000))
    charge(company, 300, now=NOW - timedelta(days=1))
    assert company_available(company, NOW) == jpy(700)
    grant(company, 200, now=NOW - timedelta(days=20), days=10)  # expired: cannot be spent
    assert company_available(company, NOW) == jpy(700)


def test_postpaid_without_a_credit_limit_is_unlimited():
    company = CompanyFactory(mode=Company.Mode.POSTPAID, credit_limit=None)
    charge(company, 300, now=NOW - timedelta(days=1))
    assert company_available(company, NOW) is None


# --- company_transactions and company_history ----------------------------------------------


def test_transactions_are_newest_first_with_their_net_effect_on_the_balance():
    company = CompanyFactory(mode=Company.Mode.POSTPAID, credit_limit=None)
    grant(company, 200, now=NOW - timedelta(days=3))
    # Takes ¥200 from the lot and ¥300 from the plain balance: two customer postings.
    charge(company, 500, now=NOW - timedelta(days=2))
    grant(CompanyFactory(), 999, now=NOW - timedelta(days=1))  # another company's
    rows = [(t.kind, t.amount, t.balance_after) for t in company_transactions(company)]
    assert rows == [
        (Kind.USAGE, Decimal(-500), jpy(-300)),
        (Kind.GRANT, Decimal(200), jpy(200)),
    ]


def test_transactions_come_in_the_order_their_balances_changed_not_by_posting_time():
    """A call reads its clock before it waits for the company's lock: a charge stamped
    earlier can change the balance after one stamped later. The history follows the
    balances, so that each line's balance is the one below it plus its amount."""
    company = CompanyFactory(mode=Company.Mode.POSTPAID, credit_limit=None)
    grant(company, 1000, now=NOW - timedelta(days=1))
    charge(company, 100, now=NOW)  # took the lock first
    charge(company, 30, now=NOW - timedelta(seconds=2))  # had waited for it
    rows = [(t.amount, t.balance_after) for t in company_transactions(company)]
    assert rows == [
        (Decimal(-30), jpy(870)),
        (Decimal(-100), jpy(900)),
        (Decimal(1000), jpy(1000)),
    ]
    for line, below in zip(rows, rows[1:], strict=False):
        assert line[1].amount == below[1].amount + line[0]


def test_history_groups_credits_added_charges_and_expired(prepaid, django_user_model):
    grant(prepaid, 1000, now=NOW - timedelta(days=20), days=5, source="purchase")
    grant(prepaid, 500, now=NOW - timedelta(days=3), days=90, source="voucher")
    charge(prepaid, 100, now=NOW - timedelta(days=2))
    ledger.credits_expire(company=prepaid, now=NOW - timedelta(days=1))
    staff = django_user_model.objects.create(username="staff")
    for amount in (50, -30):
        ledger.balance_adjust(
            company=prepaid,
            amount=jpy(amount),
            reason="Goodwill",
            actor=staff,
            idempotency_key=f"adjust:{amount}",
            now=NOW,
        )

    def kinds(group):
        return [(t.kind, t.amount) for t in company_history(prepaid, group)]

    assert kinds("added") == [
        (Kind.ADJUSTMENT, Decimal(50)),
        (Kind.VOUCHER, Decimal(500)),
        (Kind.PURCHASE, Decimal(1000)),
    ]
    assert kinds("charges") == [(Kind.USAGE, Decimal(-100))]
    assert kinds("expired") == [(Kind.EXPIRY, Decimal(-1000))]
    assert len(kinds(None)) == 6
    with pytest.raises(KeyError):
        company_history(prepaid, "bogus")


# --- company_lot_lines ---------------------------------------------------------------------


def test_lot_lines_split_each_lot_into_used_expired_and_remaining(prepaid):
    swept = grant(prepaid, 1000, now=NOW - timedelta(days=30), days=10).lot
    charge(prepaid, 400, now=NOW - timedelta(days=25))  # from ``swept``: sooner expiry
    ledger.credits_expire(company=prepaid, now=NOW - timedelta(days=15))
    unswept = grant(prepaid, 300, now=NOW - timedelta(days=12), days=10).lot
    used_up = grant(prepaid, 200, now=NOW - timedelta(days=3), days=30).lot
    active_late = grant(prepaid, 900, now=NOW - timedelta(days=1), days=60).lot
    active_soon = grant(prepaid, 500, now=NOW - timedelta(days=1), days=40).lot
    charge(prepaid, 250, now=NOW - timedelta(hours=1))  # used_up's 200, then 50 of active_soon

    lines = company_lot_lines(prepaid, NOW)
    summary = [
        (line.lot.pk, line.status, line.used, line.expired, line.remaining) for line in lines
    ]
    assert summary == [
        # Spendable, in the order charges spend them.
        (active_soon.pk, "active", jpy(50), jpy(0), jpy(450)),
        (active_late.pk, "active", jpy(0), jpy(0), jpy(900)),
        # Then the rest, latest expiry first; an expired remainder the job has not posted
        # yet already counts as expired.
        (used_up.pk, "used_up", jpy(200), jpy(0), jpy(0)),
        (unswept.pk, "expired", jpy(0), jpy(300), jpy(0)),
        (swept.pk, "expired", jpy(400), jpy(600), jpy(0)),
    ]


def test_lot_lines_show_only_the_companys_own_lots(prepaid):
    grant(CompanyFactory(), 999, now=NOW)
    assert company_lot_lines(prepaid, NOW) == []


def test_runway_of_long_lived_credit_at_a_tiny_spend_ends_when_the_lot_expires(prepaid):
    # ¥1 spent in 30 days would make ¥10 million last some 800,000 years, past any date
    # Python can hold; the lot's expiry comes first, and what is left then is lost.
    grant(prepaid, 1, now=NOW - timedelta(days=40), days=365)
    charge(prepaid, 1, now=NOW - timedelta(days=1))
    grant(prepaid, 10_000_000, now=NOW, days=36_500)
    runway = credit_runway(prepaid, NOW)
    assert runway.runs_out_at == NOW + timedelta(days=36_500)
    assert runway.expiring_unused.amount > Decimal(9_998_000)
