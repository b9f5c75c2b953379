"""The ledger's rules, one by one, with the clock passed explicitly."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from djmoney.money import Money

from accounts.models import Company, CompanyBlock
from billing.exceptions import (
    IdempotencyConflict,
    InsufficientCredit,
    InvalidAmount,
    ModeSwitchRefused,
    ReversalRefused,
)
from billing.models import CreditLot, LedgerTransaction
from billing.reconcile import reconcile
from billing.selectors import company_available, company_balance
from billing.services import ledger
from tests.factories import CompanyFactory, UserFactory
from tests.factories.billing import charge, grant, next_key

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)


def jpy(amount) -> Money:
    return Money(Decimal(amount), "JPY")


@pytest.fixture
def prepaid():
    return CompanyFactory(mode=Company.Mode.PREPAID)


@pytest.fixture
def postpaid():
    return CompanyFactory(mode=Company.Mode.POSTPAID, credit_limit=jpy(1000))


@pytest.fixture(autouse=True)
def books_always_reconcile():
    yield
    report = reconcile(now=NOW + timedelta(days=400))
    assert report.ok, report.problems


def test_grant_creates_a_lot_and_a_balanced_transaction(prepaid):
    result = grant(prepaid, 1000, now=NOW, days=90)
    lot = result.lot
    assert (lot.amount, lot.remaining) == (jpy(1000), jpy(1000))
    assert lot.expires_at == NOW + timedelta(days=90)
    postings = {p.account.code: p.amount for p in result.transaction.postings.all()}
    assert postings == {"customer": jpy(1000), "promotional": jpy(-1000)}
    assert company_balance(prepaid) == jpy(1000)
    assert result.transaction.balance_after == jpy(1000)


def test_default_lifetime_follows_the_source(prepaid, settings):
    settings.TOLLGATE_CREDIT_LIFETIME_DAYS = {
        **settings.TOLLGATE_CREDIT_LIFETIME_DAYS,
        "purchase": 90,
    }
    result = ledger.credits_grant(
        company=prepaid,
        amount=jpy(500),
        source="purchase",
        idempotency_key="p1",
        description="Bought credits",
        now=NOW,
    )
    assert result.lot.expires_at == NOW + timedelta(days=90)
    postings = {p.account.code: p.amount for p in result.transaction.postings.all()}
    assert postings["cash"] == jpy(-500)


def test_charge_consumes_soonest_expiring_lot_first(prepaid):
    late = grant(prepaid, 500, now=NOW, days=60).lot
    soon = grant(prepaid, 300, now=NOW, days=10).lot
    result = charge(prepaid, 400, now=NOW)
    assert result.charged == jpy(400) and result.shortfall == jpy(0)
    soon.refresh_from_db()
    late.refresh_from_db()
    assert (soon.remaining, late.remaining) == (jpy(0), jpy(400))
    assert result.balance == jpy(400)


def test_charge_never_spends_a_lot_expired_at_that_instant_even_before_the_expiry_job(prepaid):
    expired = grant(prepaid, 500, now=NOW - timedelta(days=10), days=5).lot
    fresh = grant(prepaid, 100, now=NOW, days=30).lot
    result = charge(prepaid, 300, now=NOW)
    assert result.charged == jpy(100)
    assert result.shortfall == jpy(200)
    expired.refresh_from_db()
    assert expired.remaining == jpy(500)  # untouched, waiting for the expiry job
    fresh.refresh_from_db()
    assert fresh.remaining == jpy(0)


def test_lot_expiring_exactly_at_the_charge_instant_is_not_spent(prepaid):
    grant(prepaid, 100, now=NOW - timedelta(days=1), days=1)  # expires_at == NOW
    assert charge(prepaid, 50, now=NOW).shortfall == jpy(50)
    assert charge(prepaid, 0, now=NOW - timedelta(seconds=1)).charged == jpy(0)


def test_prepaid_charge_never_takes_balance_below_zero_and_blocks(prepaid):
    grant(prepaid, 100, now=NOW)
    result = charge(prepaid, 250, now=NOW)
    assert (result.charged, result.shortfall, result.balance) == (jpy(100), jpy(150), jpy(0))
    assert result.transaction.shortfall == jpy(150)
    prepaid.refresh_from_db()
    assert prepaid.status == Company.Status.BLOCKED
    assert "Prepaid credit used up" in prepaid.blocked_reason
    # A charge against nothing is still recorded, with its whole amount as shortfall.
    again = charge(prepaid, 30, now=NOW)
    assert (again.charged, again.shortfall) == (jpy(0), jpy(30))
    assert company_balance(prepaid) == jpy(0)


def test_prepaid_charge_that_exactly_uses_up_the_credit_blocks(prepaid):
    grant(prepaid, 100, now=NOW)
    result = charge(prepaid, 100, now=NOW)
    assert result.shortfall == jpy(0)
    prepaid.refresh_from_db()
    assert prepaid.is_blocked


def test_a_zero_charge_does_not_block_a_prepaid_company_without_credit(prepaid):
    # Nothing was asked of the credit, so nothing ran out: a free plan fee or a zero-priced
    # DID on a new company without credit leaves it active (and emails nobody).
    result = charge(prepaid, 0, now=NOW)
    assert (result.charged, result.shortfall, result.balance) == (jpy(0), jpy(0), jpy(0))
    prepaid.refresh_from_db()
    assert prepaid.status == Company.Status.ACTIVE
    assert not CompanyBlock.objects.filter(company=prepaid).exists()
    # A real charge against nothing still blocks.
    assert charge(prepaid, 1, now=NOW).shortfall == jpy(1)
    prepaid.refresh_from_db()
    assert prepaid.is_blocked


def test_grant_lifts_the_prepaid_depleted_block(prepaid):
    grant(prepaid, 10, now=NOW)
    charge(prepaid, 20, now=NOW)
    grant(prepaid, 1000, now=NOW + timedelta(hours=1))
    prepaid.refresh_from_db()
    assert prepaid.status == Company.Status.ACTIVE
    block = CompanyBlock.objects.get(company=prepaid)
    assert block.lifted_at == NOW + timedelta(hours=1)
    assert block.lift_note == "Credit added"


def test_grant_does_not_lift_a_manual_block(prepaid):
    from accounts.services import company_block

    company_block(
        company=prepaid, reason="manual", note="fraud check", actor=UserFactory(is_staff=True)
    )
    grant(prepaid, 1000, now=NOW)
    prepaid.refresh_from_db()
    assert prepaid.is_blocked and "fraud check" in prepaid.blocked_reason


def test_postpaid_spends_lots_first_then_goes_negative(postpaid):
    grant(postpaid, 100, now=NOW)
    result = charge(postpaid, 300, now=NOW)
    assert (result.charged, result.shortfall, result.balance) == (jpy(300), jpy(0), jpy(-200))
    customer_postings = sorted(
        (p.amount.amount, p.lot_id is not None)
        for p in result.transaction.postings.filter(account__kind="customer")
    )
    assert customer_postings == [(Decimal(-200), False), (Decimal(-100), True)]
    assert company_available(postpaid, NOW) == jpy(800)


def test_postpaid_is_blocked_at_the_credit_limit_and_unblocked_below_it(postpaid):
    charge(postpaid, 999, now=NOW)
    postpaid.refresh_from_db()
    assert not postpaid.is_blocked
    charge(postpaid, 1, now=NOW)
    postpaid.refresh_from_db()
    assert postpaid.is_blocked and "Credit limit reached" in postpaid.blocked_reason
    ledger.balance_adjust(
        company=postpaid,
        amount=jpy(1),
        reason="Goodwill",
        actor=UserFactory(is_staff=True),
        idempotency_key="adj-1",
        now=NOW,
    )
    postpaid.refresh_from_db()
    assert not postpaid.is_blocked


def test_postpaid_without_a_limit_is_never_blocked_and_available_is_unlimited():
    company = CompanyFactory(mode=Company.Mode.POSTPAID, credit_limit=None)
    charge(company, 10_000_000, now=NOW)
    company.refresh_from_db()
    assert not company.is_blocked
    assert company_available(company, NOW) is None


def test_same_idempotency_key_and_request_returns_the_first_result(prepaid):
    grant(prepaid, 1000, now=NOW)
    first = charge(prepaid, 300, now=NOW, key="usage:evt-1")
    again = charge(prepaid, 300, now=NOW + timedelta(minutes=5), key="usage:evt-1")
    assert again.duplicate and not first.duplicate
    assert again.transaction.pk == first.transaction.pk
    assert (again.charged, again.balance) == (jpy(300), jpy(700))
    assert company_balance(prepaid) == jpy(700)


def test_same_idempotency_key_with_another_amount_is_a_clear_error(prepaid):
    grant(prepaid, 1000, now=NOW)
    charge(prepaid, 300, now=NOW, key="usage:evt-2")
    with pytest.raises(IdempotencyConflict, match="already used for a different request"):
        charge(prepaid, 301, now=NOW, key="usage:evt-2")


def test_grant_retried_later_with_a_default_lifetime_is_still_the_same_request(prepaid):
    kwargs = {
        "company": prepaid,
        "amount": jpy(100),
        "source": "trial",
        "idempotency_key": "trial:1",
        "description": "Trial",
    }
    first = ledger.credits_grant(**kwargs, now=NOW)
    again = ledger.credits_grant(**kwargs, now=NOW + timedelta(hours=3))
    assert again.duplicate and again.lot.pk == first.lot.pk


def test_batch_with_one_key_twice_for_different_charges_posts_nothing(prepaid):
    grant(prepaid, 1000, now=NOW)
    requests = [
        ledger.ChargeRequest(amount=jpy(1), revenue="sms", idempotency_key="k", description="a"),
        ledger.ChargeRequest(amount=jpy(2), revenue="sms", idempotency_key="k", description="b"),
    ]
    with pytest.raises(IdempotencyConflict):
        ledger.company_charge_many(company=prepaid, charges=requests, now=NOW)
    assert company_balance(prepaid) == jpy(1000)


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        (Money("10", "USD"), "not in"),
        (Money("-5", "JPY"), "more than zero"),
        (Money("1.5", "JPY"), "more decimals"),
    ],
)
def test_bad_amounts_are_refused_and_post_nothing(prepaid, amount, message):
    with pytest.raises(InvalidAmount, match=message):
        ledger.company_charge(
            company=prepaid,
            amount=amount,
            revenue="voice",
            idempotency_key=next_key(),
            description="x",
            now=NOW,
        )
    assert not LedgerTransaction.objects.exists()


def test_usd_amounts_keep_cents():
    company = CompanyFactory(currency="USD", mode=Company.Mode.PREPAID)
    ledger.credits_grant(
        company=company,
        amount=Money("10.00", "USD"),
        source="grant",
        idempotency_key="g",
        description="x",
        now=NOW,
    )
    result = ledger.company_charge(
        company=company,
        amount=Money("0.07", "USD"),
        revenue="sms",
        idempotency_key="c",
        description="SMS",
        now=NOW,
    )
    assert result.balance == Money("9.93", "USD")


def test_batch_refuses_charges_after_the_company_blocks_midway(prepaid):
    grant(prepaid, 250, now=NOW)
    requests = [
        ledger.ChargeRequest(
            amount=jpy(100), revenue="sms", idempotency_key=f"b{i}", description="SMS"
        )
        for i in range(4)
    ]
    results = ledger.company_charge_many(
        company=prepaid, charges=requests, now=NOW, refuse_when_blocked=True
    )
    assert [(r.charged.amount, r.shortfall.amount, r.refused) for r in results] == [
        (100, 0, False),
        (100, 0, False),
        (50, 50, False),
        (0, 0, True),
    ]
    assert LedgerTransaction.objects.filter(kind="usage").count() == 3


def test_batch_replayed_answers_duplicates_without_posting_again(prepaid):
    grant(prepaid, 1000, now=NOW)
    requests = [
        ledger.ChargeRequest(
            amount=jpy(10 * i), revenue="voice", idempotency_key=f"r{i}", description="Call"
        )
        for i in range(1, 4)
    ]
    first = ledger.company_charge_many(company=prepaid, charges=requests, now=NOW)
    replay = ledger.company_charge_many(company=prepaid, charges=requests, now=NOW)
    assert all(r.duplicate for r in replay)
    assert [r.charged for r in replay] == [r.charged for r in first]
    assert company_balance(prepaid) == jpy(940)


def test_expiry_posts_the_remainder_once_to_breakage(prepaid):
    lot = grant(prepaid, 500, now=NOW, days=5).lot
    charge(prepaid, 200, now=NOW + timedelta(days=1))
    assert ledger.credits_expire(company=prepaid, now=NOW + timedelta(days=4)) == []
    expired = ledger.credits_expire(company=prepaid, now=NOW + timedelta(days=5))
    assert len(expired) == 1
    postings = {p.account.code: p.amount for p in expired[0].postings.all()}
    assert postings == {"customer": jpy(-300), "breakage": jpy(300)}
    assert "Expired" in expired[0].description
    assert ledger.credits_expire(company=prepaid, now=NOW + timedelta(days=6)) == []
    lot.refresh_from_db()
    assert lot.remaining == jpy(0)
    assert company_balance(prepaid) == jpy(0)


def test_expire_credits_command_is_idempotent(prepaid, capsys):
    from django.core.management import call_command

    grant(prepaid, 500, now=NOW - timedelta(days=100), days=90)
    call_command("expire_credits", "--at", NOW.isoformat())
    call_command("expire_credits", "--at", NOW.isoformat())
    out = capsys.readouterr().out
    assert "Expired 1 credit lot(s)" in out and "Expired 0 credit lot(s)" in out
    assert LedgerTransaction.objects.filter(kind="expiry").count() == 1


def test_expire_credits_command_refuses_a_bad_instant():
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="not an ISO 8601 instant"):
        call_command("expire_credits", "--at", "tomorrow")
    with pytest.raises(CommandError, match="not an ISO 8601 instant"):
        call_command("expire_credits", "--at", "2026-02-30T00:00:00+00:00")
    with pytest.raises(CommandError, match="in the future"):
        call_command("expire_credits", "--at", "9999-12-31T23:59:59-05:00")


def test_expire_credits_command_refuses_an_instant_in_the_future(prepaid):
    from django.core.management import CommandError, call_command

    grant(prepaid, 500, now=datetime.now(tz=UTC), days=90)
    later = (datetime.now(tz=UTC) + timedelta(days=365)).isoformat()
    with pytest.raises(CommandError, match="in the future"):
        call_command("expire_credits", "--at", later)
    assert company_balance(prepaid) == jpy(500)
    assert not LedgerTransaction.objects.filter(kind="expiry").exists()


def test_adjust_prepaid_credit_makes_a_lot_and_debit_cannot_exceed_available(prepaid):
    staff = UserFactory(is_staff=True)
    ledger.balance_adjust(
        company=prepaid,
        amount=jpy(300),
        reason="Compensation for outage",
        actor=staff,
        idempotency_key="adj-a",
        now=NOW,
    )
    lot = CreditLot.objects.get(company=prepaid)
    assert lot.source == "adjustment" and lot.remaining == jpy(300)
    with pytest.raises(InsufficientCredit, match="Only ¥300"):
        ledger.balance_adjust(
            company=prepaid,
            amount=jpy(-301),
            reason="Too much",
            actor=staff,
            idempotency_key="adj-b",
            now=NOW,
        )
    tx = ledger.balance_adjust(
        company=prepaid,
        amount=jpy(-100),
        reason="Correction",
        actor=staff,
        idempotency_key="adj-c",
        now=NOW,
    )
    assert tx.actor == staff and tx.balance_after == jpy(200)


def test_reversing_a_charge_returns_credit_to_its_lot(prepaid):
    lot = grant(prepaid, 1000, now=NOW).lot
    charged = charge(prepaid, 400, now=NOW)
    reversal = ledger.ledger_reverse(
        transaction=charged.transaction, reason="Billing error", actor=UserFactory(), now=NOW
    )
    assert reversal.reverses == charged.transaction
    lot.refresh_from_db()
    assert lot.remaining == jpy(1000)
    assert company_balance(prepaid) == jpy(1000)
    with pytest.raises(ReversalRefused, match="already been reversed"):
        ledger.ledger_reverse(
            transaction=charged.transaction, reason="Again", idempotency_key="other", now=NOW
        )
    with pytest.raises(ReversalRefused, match="itself a reversal"):
        ledger.ledger_reverse(transaction=reversal, reason="Undo", now=NOW)


def test_reversing_a_charge_whose_lot_expired_credits_a_new_lot(prepaid):
    grant(prepaid, 100, now=NOW, days=1)
    charged = charge(prepaid, 60, now=NOW)
    later = NOW + timedelta(days=2)
    ledger.ledger_reverse(transaction=charged.transaction, reason="Dispute won", now=later)
    fresh = CreditLot.objects.filter(company=prepaid, source="adjustment").get()
    assert fresh.remaining == jpy(60) and fresh.expires_at > later
    assert company_available(prepaid, later) == jpy(60)


def test_reversing_a_charge_over_two_lots_that_both_expired_credits_one_new_lot(prepaid):
    # A lot is granted by one transaction: two new lots for one reversal broke that rule.
    grant(prepaid, 200, now=NOW, days=1)
    grant(prepaid, 200, now=NOW, days=2)
    charged = charge(prepaid, 265, now=NOW)
    later = NOW + timedelta(days=3)
    ledger.credits_expire(company=prepaid, now=later)
    reversal = ledger.ledger_reverse(
        transaction=charged.transaction, reason="Dispute won", now=later
    )
    fresh = CreditLot.objects.filter(company=prepaid, source="adjustment").get()
    assert fresh.remaining == jpy(265) and fresh.grant_transaction == reversal
    assert company_available(prepaid, later) == jpy(265)


def test_reversing_a_grant_whose_credit_was_used_is_refused(prepaid):
    granted = grant(prepaid, 100, now=NOW)
    charge(prepaid, 30, now=NOW)
    with pytest.raises(ReversalRefused, match="already been used"):
        ledger.ledger_reverse(transaction=granted.transaction, reason="Mistake", now=NOW)


def test_reversing_an_expiry_is_refused(prepaid):
    grant(prepaid, 100, now=NOW, days=1)
    expiry = ledger.credits_expire(company=prepaid, now=NOW + timedelta(days=2))[0]
    with pytest.raises(ReversalRefused, match="grant new credits"):
        ledger.ledger_reverse(transaction=expiry, reason="Oops", now=NOW + timedelta(days=2))


def test_reversal_that_reblocks_a_prepaid_company(prepaid):
    granted = grant(prepaid, 100, now=NOW)
    ledger.ledger_reverse(transaction=granted.transaction, reason="Sent to wrong company", now=NOW)
    prepaid.refresh_from_db()
    assert company_balance(prepaid) == jpy(0)
    assert prepaid.is_blocked


def test_switch_prepaid_to_postpaid_keeps_lots_and_lifts_depleted_block(prepaid):
    grant(prepaid, 10, now=NOW)
    charge(prepaid, 20, now=NOW)
    ledger.company_mode_switch(
        company=prepaid,
        mode="postpaid",
        actor=UserFactory(is_staff=True),
        reason="Contract",
        now=NOW,
    )
    prepaid.refresh_from_db()
    assert prepaid.mode == "postpaid" and not prepaid.is_blocked


def test_switch_postpaid_to_prepaid_refused_while_money_is_owed(postpaid):
    charge(postpaid, 10, now=NOW)
    with pytest.raises(ModeSwitchRefused, match="owes ¥11, with ¥1 of tax on its charges"):
        ledger.company_mode_switch(
            company=postpaid, mode="prepaid", actor=None, reason="x", now=NOW
        )


def test_switch_postpaid_to_prepaid_refused_with_money_outside_lots(postpaid):
    ledger.balance_adjust(
        company=postpaid,
        amount=jpy(50),
        reason="Overpayment",
        actor=None,
        idempotency_key="adj",
        now=NOW,
    )
    with pytest.raises(ModeSwitchRefused, match="not in credit lots"):
        ledger.company_mode_switch(
            company=postpaid, mode="prepaid", actor=None, reason="x", now=NOW
        )


def test_switch_postpaid_to_prepaid_refused_while_a_credit_code_waits_for_the_invoice(
    postpaid,
):
    from vouchers.models import InvoiceCredit

    credit = InvoiceCredit.objects.create(
        company=postpaid, amount=jpy(5000), description="Credit code", created_at=NOW
    )
    with pytest.raises(ModeSwitchRefused, match="¥5,000 of credit codes waiting"):
        ledger.company_mode_switch(
            company=postpaid, mode="prepaid", actor=None, reason="x", now=NOW
        )
    postpaid.refresh_from_db()
    assert postpaid.mode == "postpaid"
    # Once an invoice has applied it, the switch goes through.
    InvoiceCredit.objects.filter(pk=credit.pk).update(applied_at=NOW)
    ledger.company_mode_switch(company=postpaid, mode="prepaid", actor=None, reason="x", now=NOW)
    postpaid.refresh_from_db()
    assert postpaid.mode == "prepaid"


def test_switch_postpaid_to_prepaid_with_only_lots_is_allowed(postpaid):
    grant(postpaid, 50, now=NOW)
    ledger.company_mode_switch(company=postpaid, mode="prepaid", actor=None, reason="x", now=NOW)
    postpaid.refresh_from_db()
    assert postpaid.mode == "prepaid"


def test_expiry_at_a_month_end_in_the_billing_time_zone(prepaid):
    from zoneinfo import ZoneInfo

    tokyo = ZoneInfo("Asia/Tokyo")
    granted_at = datetime(2026, 1, 31, 23, 30, tzinfo=tokyo)
    expires_at = datetime(2026, 2, 28, 23, 59, 59, tzinfo=tokyo)
    ledger.credits_grant(
        company=prepaid,
        amount=jpy(100),
        source="grant",
        idempotency_key="feb",
        description="February credit",
        expires_at=expires_at,
        now=granted_at,
    )
    assert charge(prepaid, 10, now=expires_at - timedelta(seconds=1)).charged == jpy(10)
    assert charge(prepaid, 10, now=expires_at).shortfall == jpy(10)
    assert ledger.credits_expire(company=prepaid, now=expires_at - timedelta(seconds=1)) == []
    assert len(ledger.credits_expire(company=prepaid, now=datetime(2026, 3, 1, tzinfo=tokyo))) == 1
