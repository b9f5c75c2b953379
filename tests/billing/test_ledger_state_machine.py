"""The money invariants under random sequences of everything the ledger can be asked to do.

A Hypothesis state machine drives one company (prepaid or postpaid, with a credit limit)
through grants, charges (some replayed with their idempotency key), clock jumps of an
hour to four months or to the very instant a lot expires, expiry runs, staff
adjustments, reversals of any earlier transaction and mode switches. It keeps its own
model of the balance and, after every step, checks the books against it and against
``reconcile``; a neighbouring company must never be touched. The clock is machine state
and is passed as ``now=`` to every service, so time only moves when a rule moves it.

Each example runs inside its own ``transaction.atomic()``, rolled back at teardown. On
PostgreSQL every step also fires the deferred balance triggers (``SET CONSTRAINTS ALL
IMMEDIATE``), so the database itself checks each transaction the services wrote.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.db.models import Q
from djmoney.money import Money
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from accounts.models import Company, CompanyBlock
from billing.exceptions import InsufficientCredit, ModeSwitchRefused, ReversalRefused
from billing.models import CreditLot, LedgerAccount, LedgerTransaction
from billing.reconcile import reconcile
from billing.selectors import company_available, company_balance
from billing.services import ledger
from invoicing.services import tax_amount
from invoicing.statement_content import untaxed_postpaid_charges
from tests.factories import CompanyFactory, UserFactory
from tests.factories.billing import charge, grant, next_key

START = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
ZERO = Decimal(0)
Mode = Company.Mode
Reason = CompanyBlock.Reason
Kind = LedgerTransaction.Kind


def jpy(amount) -> Money:
    return Money(Decimal(amount), "JPY")


@dataclass(frozen=True)
class Posted:
    """A transaction the machine posted; charges keep their key and amount for replays."""

    pk: int
    key: str | None = None
    amount: int | None = None


def customer_net(transaction_: LedgerTransaction) -> Decimal:
    """What the transaction did to the company's balance."""
    postings = transaction_.postings.filter(account__kind=LedgerAccount.Kind.CUSTOMER)
    return sum((posting.amount.amount for posting in postings), ZERO)


hours = st.one_of(st.integers(1, 72), st.integers(1, 120).map(lambda days: days * 24))
lifetimes = st.one_of(st.integers(1, 72), st.integers(1, 180).map(lambda days: days * 24)).map(
    lambda h: timedelta(hours=h)
)


class LedgerMachine(RuleBasedStateMachine):
    posted = Bundle("posted")
    charges = Bundle("charges")

    def __init__(self):
        super().__init__()
        # One rolled-back transaction per example keeps the examples apart without a flush.
        self._atomic = transaction.atomic()
        self._atomic.__enter__()
        self.clock = START
        self.expected_balance = ZERO
        self.staff = UserFactory(is_staff=True)
        self.neighbour = CompanyFactory(mode=Mode.PREPAID)
        grant(self.neighbour, 500, now=START, days=30)
        charge(self.neighbour, 120, now=START)

    def teardown(self):
        transaction.set_rollback(True)
        self._atomic.__exit__(None, None, None)

    @initialize(mode=st.sampled_from(Mode.values), limit=st.sampled_from([0, 300, 1000]))
    def open_the_company(self, mode, limit):
        self.limit = Decimal(limit)
        self.company = CompanyFactory(mode=mode, credit_limit=jpy(limit))

    # Reads --------------------------------------------------------------------------------

    def _mode(self) -> str:
        self.company.refresh_from_db()
        return self.company.mode

    def _balance(self) -> Decimal:
        return company_balance(self.company).amount

    def _lots(self) -> tuple[Decimal, Decimal]:
        """Credit left in lots (unexpired, already expired) at the machine's clock."""
        live = expired = ZERO
        for remaining, expires_at in CreditLot.objects.filter(
            company=self.company, remaining__gt=0
        ).values_list("remaining", "expires_at"):
            if expires_at > self.clock:
                live += remaining
            else:
                expired += remaining
        return live, expired

    def _available(self) -> Decimal:
        return company_available(self.company, self.clock).amount

    def _active_reasons(self) -> set[str]:
        blocks = CompanyBlock.objects.filter(company=self.company, lifted_at=None)
        return set(blocks.values_list("reason", flat=True))

    # Rules --------------------------------------------------------------------------------

    @rule(
        target=posted,
        source=st.sampled_from(CreditLot.Source.values),
        amount=st.integers(1, 2000),
        lifetime=lifetimes,
    )
    def grant(self, source, amount, lifetime):
        result = ledger.credits_grant(
            company=self.company,
            amount=jpy(amount),
            source=source,
            idempotency_key=next_key("grant"),
            description=f"{source} credit",
            lifetime=lifetime,
            now=self.clock,
        )
        assert not result.duplicate
        assert result.lot.remaining == jpy(amount)
        assert result.lot.expires_at == self.clock + lifetime
        self.expected_balance += amount
        if self._mode() == Mode.PREPAID:
            assert Reason.PREPAID_DEPLETED not in self._active_reasons()
        return Posted(result.transaction.pk)

    @rule(targets=(posted, charges), amount=st.integers(0, 1500))
    def charge(self, amount):
        prepaid = self._mode() == Mode.PREPAID
        live_before, _ = self._lots()
        self.company.refresh_from_db()
        blocked_before = self.company.is_blocked
        key = next_key("usage")
        result = charge(self.company, amount, now=self.clock, key=key)
        # Prepaid takes what the unexpired lots hold and no more; postpaid takes it all.
        taken = min(amount, live_before) if prepaid else amount
        assert (result.charged, result.shortfall) == (jpy(taken), jpy(amount - taken))
        assert not result.duplicate
        self.expected_balance -= taken
        self.company.refresh_from_db()
        live, expired = self._lots()
        if amount == 0:  # asks nothing of the credit: decides no block
            assert self.company.is_blocked == blocked_before
        elif prepaid:
            assert self.company.is_blocked == (live == 0)
        else:
            assert self.company.is_blocked == (self._balance() - expired <= -self.limit)
        return Posted(result.transaction.pk, key, amount)

    @rule(record=charges)
    def replay_charge(self, record):
        balance = self._balance()
        result = charge(self.company, record.amount, now=self.clock, key=record.key)
        assert result.duplicate and result.transaction.pk == record.pk
        assert self._balance() == balance

    @rule(hours=hours)
    def advance_clock(self, hours):
        self.clock += timedelta(hours=hours)

    @rule(offset=st.sampled_from([-1, 0, 1]))
    def advance_clock_to_the_next_expiry(self, offset):
        # Lots end on the instant they expire: land on it, and one second either side.
        upcoming = (
            CreditLot.objects.filter(company=self.company, expires_at__gt=self.clock)
            .order_by("expires_at")
            .values_list("expires_at", flat=True)
            .first()
        )
        if upcoming is not None:
            self.clock = max(self.clock, upcoming + timedelta(seconds=offset))

    @rule(target=posted)
    def expire(self):
        due = list(
            CreditLot.objects.filter(
                company=self.company, remaining__gt=0, expires_at__lte=self.clock
            )
        )
        expired = ledger.credits_expire(company=self.company, now=self.clock)
        assert sorted(tx.cause_id for tx in expired) == sorted(lot.pk for lot in due)
        due_total = sum((lot.remaining.amount for lot in due), ZERO)
        assert sum((customer_net(tx) for tx in expired), ZERO) == -due_total
        self.expected_balance -= due_total
        assert self._lots()[1] == 0
        assert ledger.credits_expire(company=self.company, now=self.clock) == []
        return multiple(*(Posted(tx.pk) for tx in expired))

    @rule(target=posted, amount=st.integers(-1500, 1500).filter(bool))
    def adjust(self, amount):
        too_much = self._mode() == Mode.PREPAID and -amount > self._lots()[0]
        try:
            adjustment = ledger.balance_adjust(
                company=self.company,
                amount=jpy(amount),
                reason="Staff correction",
                actor=self.staff,
                idempotency_key=next_key("adjust"),
                now=self.clock,
            )
        except InsufficientCredit:
            assert too_much
            return multiple()
        assert not too_much
        assert customer_net(adjustment) == amount
        self.expected_balance += amount
        return Posted(adjustment.pk)

    @rule(target=posted, record=posted)
    def reverse(self, record):
        original = LedgerTransaction.objects.get(pk=record.pk)
        earlier = LedgerTransaction.objects.filter(reverses=original).first()
        balance, available = self._balance(), self._available()
        try:
            reversal = ledger.ledger_reverse(
                transaction=original, reason="Posted in error", actor=self.staff, now=self.clock
            )
        except ReversalRefused as refusal:
            # Refused only for a documented reason; a charge can always be given back.
            assert original.kind not in ledger.CHARGE_KINDS, refusal
            assert (
                original.kind == Kind.EXPIRY
                or original.reverses_id is not None
                or "already been used or expired" in str(refusal)
                or "of credit is left" in str(refusal)
            ), refusal
            assert self._balance() == balance
            return multiple()
        assert original.kind != Kind.EXPIRY and original.reverses_id is None
        if earlier is not None:  # reversing again answers with the first reversal
            assert reversal.pk == earlier.pk
            assert self._balance() == balance
            return multiple()
        net = customer_net(original)
        assert reversal.reverses_id == original.pk
        assert customer_net(reversal) == -net
        if net < 0:
            # What a debit took comes back spendable, even if the lot it came from expired.
            assert self._available() == available - net
        self.expected_balance -= net
        return Posted(reversal.pk)

    @rule(mode=st.sampled_from(Mode.values))
    def switch_mode(self, mode):
        current = self._mode()
        in_lots = sum(
            (lot.remaining.amount for lot in CreditLot.objects.filter(company=self.company)), ZERO
        )
        outside_lots = self._balance() - in_lots
        # A switch to prepaid first posts the tax no invoice will charge (none is issued
        # here: on everything charged since the company last became postpaid).
        tax = ZERO
        if mode == Mode.PREPAID and current == Mode.POSTPAID:
            taxable = untaxed_postpaid_charges(self.company)
            tax = tax_amount(taxable, self.company.tax_rate, self.company.currency)
        # The tax is debited as any charge is: unexpired lots first, then the balance.
        live = sum(
            (
                lot.remaining.amount
                for lot in CreditLot.objects.filter(company=self.company, expires_at__gt=self.clock)
            ),
            ZERO,
        )
        outside_after = outside_lots - (tax - min(tax, live))
        try:
            ledger.company_mode_switch(
                company=self.company,
                mode=mode,
                actor=self.staff,
                reason="Contract changed",
                now=self.clock,
            )
        except ModeSwitchRefused:
            # Refused only for no change, or postpaid → prepaid with money outside lots
            # once the tax is posted; then nothing is posted at all.
            assert mode == current or (mode == Mode.PREPAID and outside_after != 0)
            return
        assert mode != current
        assert mode == Mode.POSTPAID or outside_after == 0
        assert self._mode() == mode
        self.expected_balance -= tax

    # Invariants ---------------------------------------------------------------------------
    # Checked after every step. Thousands of steps run, and the ORM, more than the
    # database, is what costs time here: each invariant reads what it needs once.

    @invariant()
    def books_reconcile(self):
        report = reconcile(now=self.clock)
        assert report.ok, report.problems
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                # Switching to IMMEDIATE fires the trigger checks queued so far.
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
                cursor.execute("SET CONSTRAINTS ALL DEFERRED")

    @invariant()
    def company_money_is_what_the_model_expects(self):
        balance = self._balance()
        live, expired = self._lots()
        available = self._available()
        reasons = self._active_reasons()
        assert balance == self.expected_balance
        if self._mode() == Mode.PREPAID:
            assert balance >= 0
            assert available == live
            assert Reason.CREDIT_LIMIT not in reasons
            if Reason.PREPAID_DEPLETED in reasons:
                assert live == 0, "blocked as depleted while credit is available"
        else:
            assert available == balance - expired + self.limit
            assert Reason.PREPAID_DEPLETED not in reasons

    @invariant()
    def the_neighbour_is_never_touched(self):
        # Reconcile already catches a balance or a lot changed without postings; what is
        # left is a posting or a block landing on the wrong company.
        touching = LedgerTransaction.objects.filter(
            Q(company=self.neighbour)
            | Q(postings__account__company=self.neighbour)
            | Q(postings__lot__company=self.neighbour)
        )
        assert touching.distinct().count() == 2  # its own grant and charge
        assert not CompanyBlock.objects.filter(company=self.neighbour).exists()


@pytest.mark.django_db
def test_ledger_money_invariants_hold_under_random_operations():
    # About a thousand steps, each followed by a full reconcile (a dozen aggregate
    # queries): some 15 s on SQLite and 25 s on PostgreSQL. One bug is shrunk at a time,
    # so a failure is reported in a minute or two rather than five.
    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(
            max_examples=40, stateful_step_count=25, deadline=None, report_multiple_bugs=False
        ),
    )
