"""The ledger service: the only code that writes ledger transactions, postings, credit lots
and customer balances.

Guarantees of every public function here:

- Atomic and keyword-only; the clock is the ``now`` argument (default: the current time).
- Lock order: the company row (``accounts.services.lock_company``), then its credit lots.
  A transaction over many companies (a usage batch, a recurring run) locks all their rows
  first, in id order (``lock_companies``), then reads their lots without locks of their
  own: lots are written only here, under their company's lock. Nothing here calls the
  network, so no lock is held across one.
- Idempotent: every transaction has a unique idempotency key. The same key with the same
  request returns the first result (``duplicate=True``); with a different request it raises
  ``IdempotencyConflict``. Concurrent posts of one key serialise on the company row lock and
  produce one transaction.
- Amounts must already be rounded to the currency's minor unit (``billing.money``): the
  ledger never rounds, so rating owns the one rounding step.
- Prepaid: the balance never goes below zero. A charge takes what the unexpired lots hold,
  records the rest as ``shortfall`` and blocks the company. Postpaid: lots are spent first,
  then the balance goes negative; reaching ``-credit_limit`` blocks the company.
- Lots are spent soonest-expiry first, and only lots unexpired at ``now``: charges never
  depend on the expiry job having run, and the expiry job never touches a lot a charge may
  still spend.
"""

from __future__ import annotations

import hashlib
import json
from bisect import insort
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import IntegrityError, connection, models, transaction
from django.db.models import Sum
from django.utils import timezone, translation
from djmoney.money import Money

from accounts.models import Company, CompanyBlock, CompanyModeChange
from accounts.services import company_block, company_unblock, lock_companies, lock_company

from ..bulk import ReusableQuery, insert_rows, reserve_ids, unsaved_instance, update_column
from ..exceptions import (
    IdempotencyConflict,
    InsufficientCredit,
    InvalidAmount,
    ModeSwitchRefused,
    ReversalRefused,
)
from ..models import CreditLot, LedgerAccount, LedgerPosting, LedgerTransaction
from ..money import money_amount, quantize_amount, set_money_amount

Kind = LedgerTransaction.Kind
Source = CreditLot.Source
ZERO = Decimal(0)

# Which transaction kind and which counter account a grant of each source uses.
GRANT_KIND = {
    Source.PURCHASE: Kind.PURCHASE,
    Source.VOUCHER: Kind.VOUCHER,
    Source.TRIAL: Kind.TRIAL,
    Source.GRANT: Kind.GRANT,
    Source.ADJUSTMENT: Kind.ADJUSTMENT,
}
GRANT_COUNTER_ACCOUNT = {
    Source.PURCHASE: (LedgerAccount.Kind.CASH, "cash"),
    Source.VOUCHER: (LedgerAccount.Kind.VOUCHER, "voucher"),
    Source.TRIAL: (LedgerAccount.Kind.PROMOTIONAL, "promotional"),
    Source.GRANT: (LedgerAccount.Kind.PROMOTIONAL, "promotional"),
    Source.ADJUSTMENT: (LedgerAccount.Kind.ADJUSTMENT, "adjustment"),
}
ADJUSTMENT_ACCOUNT = (LedgerAccount.Kind.ADJUSTMENT, "adjustment")
TAX_ACCOUNT = (LedgerAccount.Kind.TAX, "tax")
BREAKAGE_ACCOUNT = (LedgerAccount.Kind.BREAKAGE, "breakage")
CHARGE_KINDS = frozenset({Kind.USAGE, Kind.RECURRING_FEE, Kind.ONE_TIME_FEE})


def credit_lifetime(source: str) -> timedelta:
    """The default lifetime of credits of ``source`` (settings.TOLLGATE_CREDIT_LIFETIME_DAYS)."""
    return timedelta(days=settings.TOLLGATE_CREDIT_LIFETIME_DAYS[source])


# --- Requests and results -------------------------------------------------------------------


@dataclass(frozen=True)
class ChargeRequest:
    """One charge to post: ``amount`` (>= 0) goes from the company to ``revenue:<revenue>``."""

    amount: Money
    revenue: str
    idempotency_key: str
    description: str
    kind: str = Kind.USAGE
    effective_at: datetime | None = None
    cause: models.Model | None = None
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ChargeResult:
    transaction: LedgerTransaction | None
    charged: Money
    shortfall: Money
    balance: Money
    duplicate: bool = False
    # Not posted because the company was blocked (only with ``refuse_when_blocked``).
    refused: bool = False


@dataclass(frozen=True)
class GrantResult:
    transaction: LedgerTransaction
    lot: CreditLot
    duplicate: bool = False


# --- Public services ------------------------------------------------------------------------


@transaction.atomic
def company_charge(
    *,
    company: Company,
    amount: Money,
    revenue: str,
    idempotency_key: str,
    description: str,
    kind: str = Kind.USAGE,
    effective_at: datetime | None = None,
    cause: models.Model | None = None,
    metadata: dict | None = None,
    now: datetime | None = None,
) -> ChargeResult:
    """Charge ``company`` once for ``amount``; see ``company_charge_many``."""
    request = ChargeRequest(
        amount=amount,
        revenue=revenue,
        idempotency_key=idempotency_key,
        description=description,
        kind=kind,
        effective_at=effective_at,
        cause=cause,
        metadata=metadata or {},
    )
    return company_charge_many(company=company, charges=[request], now=now)[0]


@transaction.atomic
def company_charge_many(
    *,
    company: Company,
    charges: Sequence[ChargeRequest],
    now: datetime | None = None,
    refuse_when_blocked: bool = False,
) -> list[ChargeResult]:
    """Post many charges of one company under one lock, in order; one result per charge.

    Prepaid: each charge takes what the unexpired lots hold and records the rest as its
    shortfall; when the credit is used up the company is blocked. Postpaid: lots first,
    then the balance goes negative, and reaching the credit limit blocks the company.
    With ``refuse_when_blocked`` (the usage API), a charge met by a blocked company, also
    one blocked by an earlier charge of the batch, is not posted and comes back ``refused``.

    Raises ``InvalidAmount`` (nothing is posted) or ``IdempotencyConflict``.
    """
    now = now or timezone.now()
    book = _CompanyBook(company, now)
    fingerprints = _check_charges(book, charges, {})
    existing = book.existing_transactions(fingerprints)
    revenue_accounts = book.system_accounts(_revenue_accounts_wanted(charges))
    results = _post_charges(
        book, charges, fingerprints, existing, revenue_accounts, refuse_when_blocked
    )
    book.flush()
    return results


@transaction.atomic
def companies_charge_many(
    *,
    charges: Sequence[tuple[Company, Sequence[ChargeRequest]]],
    now: datetime | None = None,
) -> list[list[ChargeResult]]:
    """``company_charge_many`` for many companies in one database transaction: one list of
    results per (company, charges) pair, in order. For runs over many companies (the
    recurring charges), whose cost is then a few statements per batch, not per company.

    Each company gets exactly what ``company_charge_many`` would give it (same idempotency,
    prepaid shortfall, blocking). Lock order: every company row first, in id order (the
    order any other multi-company locker uses, so two batches cannot deadlock), then their
    spendable lots. Locks held by the caller are taken again at no risk. Raises
    ``InvalidAmount`` (nothing is posted), ``IdempotencyConflict`` (also for one key used
    by two companies of the batch), and ``ValueError`` for a company listed twice.
    """
    now = now or timezone.now()
    companies = [company for company, _ in charges]
    if len({company.pk for company in companies}) != len(companies):
        raise ValueError("A company appears twice in the batch; give all its charges at once.")
    books = _open_books(companies, now)
    fingerprints: dict[str, str] = {}
    for book, (_, requests) in zip(books, charges, strict=True):
        _check_charges(book, requests, fingerprints)
    existing = _existing_transactions(fingerprints)
    wanted_by_currency: dict[str, set[tuple[str, str]]] = {}
    for book, (_, requests) in zip(books, charges, strict=True):
        wanted_by_currency.setdefault(book.currency, set()).update(
            _revenue_accounts_wanted(requests)
        )
    revenue_by_currency = {
        currency: _system_accounts(wanted, currency)
        for currency, wanted in wanted_by_currency.items()
    }
    results = [
        _post_charges(
            book, requests, fingerprints, existing, revenue_by_currency[book.currency], False
        )
        for book, (_, requests) in zip(books, charges, strict=True)
    ]
    _flush_books(books)
    return results


@transaction.atomic
def credits_grant(
    *,
    company: Company,
    amount: Money,
    source: str,
    idempotency_key: str,
    description: str,
    expires_at: datetime | None = None,
    lifetime: timedelta | None = None,
    actor=None,
    cause: models.Model | None = None,
    metadata: dict | None = None,
    now: datetime | None = None,
) -> GrantResult:
    """Give ``company`` a credit lot of ``amount`` from ``source``, expiring at ``expires_at``
    (or after ``lifetime``, or the source's default lifetime).

    The counter account follows the source: purchases from cash, vouchers from voucher
    clearing, trial and operator grants from promotional credit. Lifts a prepaid-depleted
    or credit-limit block that the new credit clears.
    """
    now = now or timezone.now()
    if source not in GRANT_KIND:
        raise InvalidAmount(f"“{source}” is not a source of credit.")
    book = _CompanyBook(company, now)
    book.check_amount(amount)
    # What was asked for, not the instant it was asked: a retry later is the same request.
    fingerprint = _fingerprint(
        op="grant",
        company=book.company.pk,
        source=source,
        amount=amount.amount,
        expires_at=expires_at,
        lifetime=lifetime.total_seconds() if lifetime else None,
    )
    existing = book.existing_transactions({idempotency_key: fingerprint})
    if idempotency_key in existing:
        transaction_ = existing[idempotency_key]
        return GrantResult(transaction_, transaction_.created_lot, duplicate=True)
    expires_at = expires_at or now + (lifetime or credit_lifetime(source))
    if expires_at <= now:
        raise InvalidAmount("Credits must expire after the moment they are granted.")
    counter_kind, counter_code = GRANT_COUNTER_ACCOUNT[source]
    counter = book.system_accounts({(counter_kind, counter_code)})[counter_code]
    lot = book.new_lot(amount.amount, source=source, expires_at=expires_at)
    transaction_ = book.add_transaction(
        kind=GRANT_KIND[source],
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
        description=description,
        actor=actor,
        cause=cause,
        metadata=metadata,
        postings=[(book.account, amount.amount, lot), (counter, -amount.amount, None)],
    )
    book.flush()
    return GrantResult(transaction_, lot)


@transaction.atomic
def balance_adjust(
    *,
    company: Company,
    amount: Money,
    reason: str,
    actor,
    idempotency_key: str,
    expires_at: datetime | None = None,
    now: datetime | None = None,
) -> LedgerTransaction:
    """Staff correction of a balance: ``amount`` > 0 credits, < 0 debits the company.

    Prepaid: a credit becomes an adjustment lot (expiring at ``expires_at`` or after the
    adjustment lifetime); a debit spends lots and may not exceed the available credit
    (``InsufficientCredit``). Postpaid: a credit lowers what is owed; a debit spends lots,
    then raises what is owed. The counter account is Adjustments.
    """
    now = now or timezone.now()
    if not reason.strip():
        raise InvalidAmount("Say why the balance is adjusted.")
    book = _CompanyBook(company, now)
    if amount.amount == 0:
        raise InvalidAmount("An adjustment of zero changes nothing.")
    book.check_amount(Money(abs(amount.amount), amount.currency))
    if expires_at is not None and expires_at <= now:
        raise InvalidAmount("Credits must expire after the moment they are granted.")
    fingerprint = _fingerprint(
        op="adjust", company=book.company.pk, amount=amount.amount, expires_at=expires_at
    )
    existing = book.existing_transactions({idempotency_key: fingerprint})
    if idempotency_key in existing:
        return existing[idempotency_key]
    counter = book.system_accounts({ADJUSTMENT_ACCOUNT})["adjustment"]
    value = amount.amount
    if value > 0:
        customer = book.credit(value, source=Source.ADJUSTMENT, expires_at=expires_at)
    else:
        customer, shortfall = book.debit(-value)
        if shortfall:
            raise InsufficientCredit(
                f"Only {book.money(-value - shortfall)} of credit is available; "
                f"a debit of {book.money(-value)} would take the balance below zero."
            )
    transaction_ = book.add_transaction(
        kind=Kind.ADJUSTMENT,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
        description=reason.strip(),
        actor=actor,
        postings=[*customer, (counter, -value, None)],
    )
    book.flush()
    return transaction_


@transaction.atomic
def ledger_reverse(
    *,
    transaction: LedgerTransaction,
    reason: str,
    actor=None,
    idempotency_key: str | None = None,
    now: datetime | None = None,
    with_its_payment: bool = False,
) -> LedgerTransaction:
    """Post the exact opposite of ``transaction``; the original stays as it was.

    A payment's transaction is reversed only with the payment (``with_its_payment``, by
    ``invoicing.payments.payment_reverse``), which also reopens the invoices it paid.

    Credit taken from a lot goes back to that lot if it is still unexpired, otherwise into a
    new adjustment lot (prepaid) or the plain balance (postpaid). Credit granted into a lot
    can be reversed only while the lot still holds all of it. Refuses (``ReversalRefused``)
    a transaction already reversed, a reversal, a credit note (an issued document) and a
    credit expiry (grant new credits instead). Idempotency key: ``reversal:<id>`` unless given.
    """
    now = now or timezone.now()
    original = transaction
    if not reason.strip():
        raise ReversalRefused("Say why the transaction is reversed.")
    if original.kind == Kind.EXPIRY:
        raise ReversalRefused("Expired credit cannot be revived by a reversal; grant new credits.")
    if original.kind == Kind.PAYMENT and not with_its_payment:
        raise ReversalRefused(
            "A payment is reversed from its page under Payments, which also reopens the "
            "invoices it paid."
        )
    if original.kind == Kind.CREDIT_NOTE:
        # The note is an issued, numbered document and may have settled invoices: undoing
        # its money alone would leave both saying what is no longer true.
        raise ReversalRefused(
            "A credit note is an issued document and is not reversed; to take its credit "
            "back, adjust the company's balance with a charge that names it."
        )
    if original.reverses_id is not None:
        raise ReversalRefused(f"Transaction #{original.pk} is itself a reversal.")
    idempotency_key = idempotency_key or f"reversal:{original.pk}"
    if original.company_id is None:
        raise ReversalRefused(f"Transaction #{original.pk} belongs to no company.")
    fingerprint = _fingerprint(op="reverse", transaction=original.pk)
    book = _CompanyBook(original.company, now)
    existing = book.existing_transactions({idempotency_key: fingerprint})
    if idempotency_key in existing:
        return existing[idempotency_key]
    if LedgerTransaction.objects.filter(reverses=original).exists():
        raise ReversalRefused(f"Transaction #{original.pk} has already been reversed.")

    postings = []
    # Credit taken from lots that have expired since goes back as ONE new lot: a lot is
    # granted by one transaction, and a charge may have spent several lots.
    returned_unlotted = ZERO
    for posting in original.postings.select_related("account").order_by("id"):
        value = posting.amount.amount
        if posting.account_id != book.account.pk:
            postings.append((posting.account, -value, None))
        elif value > 0:
            postings.extend(book.take_back_from_lot(posting.lot_id, value, original))
        elif value < 0 and posting.lot_id is not None and book.lot_unexpired(posting.lot_id):
            postings.extend(
                book.credit(-value, source=Source.ADJUSTMENT, into_lot_id=posting.lot_id)
            )
        elif value < 0:
            returned_unlotted -= value
        else:
            postings.append((posting.account, ZERO, None))
    if returned_unlotted:
        postings.extend(book.credit(returned_unlotted, source=Source.ADJUSTMENT))
    description = f"Reversal of #{original.pk} ({original.description}): {reason.strip()}"
    transaction_ = book.add_transaction(
        kind=Kind.REVERSAL,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
        description=description,
        actor=actor,
        postings=postings,
        reverses=original,
    )
    book.flush()
    return transaction_


@transaction.atomic
def credits_expire(*, company: Company, now: datetime | None = None) -> list[LedgerTransaction]:
    """Post one expiry transaction for each lot that expired at or before ``now`` with credit
    left, moving the remainder to breakage. Idempotent: a lot expires once
    (key ``expiry:lot:<id>``), and a second run finds nothing left to expire.
    """
    now = now or timezone.now()
    book = _CompanyBook(company, now)
    lots = list(
        CreditLot.objects.select_for_update()
        .filter(company=book.company, remaining__gt=0, expires_at__lte=now)
        .order_by("expires_at", "id")
    )
    if not lots:
        return []
    breakage = book.system_accounts({BREAKAGE_ACCOUNT})["breakage"]
    transactions = []
    for lot in lots:
        book.adopt_lot(lot)
        value = book.lot_remaining[lot.pk]
        book.lot_remaining[lot.pk] = ZERO
        book.dirty_lots.add(lot.pk)
        book.balance -= value
        book.debited = True
        book.expired_unposted_total = ZERO
        transactions.append(
            book.add_transaction(
                kind=Kind.EXPIRY,
                idempotency_key=f"expiry:lot:{lot.pk}",
                fingerprint=_fingerprint(op="expire", lot=lot.pk),
                description=(
                    f"Expired: {book.money(value)} left of {lot.get_source_display().lower()} "
                    f"credit granted {lot.granted_at:%Y-%m-%d}, expired {lot.expires_at:%Y-%m-%d}"
                ),
                effective_at=lot.expires_at,
                cause=lot,
                postings=[(book.account, -value, lot), (breakage, value, None)],
            )
        )
    book.flush()
    return transactions


@transaction.atomic
def company_mode_switch(
    *, company: Company, mode: str, actor, reason: str, now: datetime | None = None
) -> Company:
    """Switch between prepaid and postpaid (a staff action).

    Rules: prepaid → postpaid is always allowed (lots stay and are spent first; a
    prepaid-depleted block is lifted). Postpaid → prepaid is allowed only when nothing is
    owed, no money sits outside credit lots (a prepaid balance lives in lots only) and no
    credit code waits for the next invoice; a credit-limit block is lifted. Raises
    ``ModeSwitchRefused`` with the reason.

    Each charge is taxed once, by the mode it was made in: prepaid prices include tax, and
    an invoice taxes only what was charged since the company last became postpaid. So a
    switch to prepaid posts, first, the tax on the postpaid charges no invoice has taxed
    yet (``invoicing.statement_content.untaxed_postpaid_charges``); what is owed then
    includes it. The switch is recorded (``CompanyModeChange``).
    """
    now = now or timezone.now()
    if mode not in Company.Mode.values:
        raise ModeSwitchRefused(f"“{mode}” is not a billing mode.")
    if not reason.strip():
        raise ModeSwitchRefused("Say why the mode is switched.")
    book = _CompanyBook(company, now)
    if book.company.mode == mode:
        raise ModeSwitchRefused(
            f"{book.company.name} is already {book.company.get_mode_display().lower()}."
        )
    if mode == Company.Mode.PREPAID:
        tax = _post_tax_before_prepaid(book, actor)
        in_lots = (
            CreditLot.objects.filter(company=book.company).aggregate(total=Sum("remaining"))[
                "total"
            ]
            or ZERO
        )
        outside_lots = book.balance - in_lots
        if outside_lots < 0:
            with_tax = (
                f", with {book.money(tax)} of tax on its charges not yet invoiced" if tax else ""
            )
            raise ModeSwitchRefused(
                f"{book.company.name} owes {book.money(-outside_lots)}{with_tax}; it can switch "
                "to prepaid once that is paid."
            )
        if outside_lots > 0:
            raise ModeSwitchRefused(
                f"{book.money(outside_lots)} of the balance is not in credit lots; debit it "
                "and grant it as credits (with an expiry) before switching to prepaid."
            )
        # Credit codes registered while postpaid wait for the next invoice, which a prepaid
        # company never gets: switching now would leave them unused. Under the company
        # lock, which registering a code takes too, none can appear meanwhile.
        from vouchers.models import InvoiceCredit  # vouchers builds on billing

        waiting = InvoiceCredit.objects.filter(company=book.company, applied_at=None).aggregate(
            total=Sum("amount")
        )["total"]
        if waiting:
            raise ModeSwitchRefused(
                f"{book.company.name} has {book.money(waiting)} of credit codes waiting for "
                "its next invoice; switch it to prepaid once that invoice has applied them."
            )
    Company.objects.filter(pk=book.company.pk).update(mode=mode)
    CompanyModeChange.objects.create(
        company=book.company, mode=mode, changed_at=now, changed_by=actor, reason=reason.strip()
    )
    book.company.mode = company.mode = mode
    book.sync_blocks()
    return company


def _post_tax_before_prepaid(book: _CompanyBook, actor) -> Decimal:
    """Post the tax on the postpaid charges no invoice has taxed, as the month's invoice would
    (on their total, rounded once, half up), before a switch to prepaid: no invoice will."""
    # invoicing builds on billing: it knows what its statements have covered.
    from invoicing.services import tax_amount
    from invoicing.statement_content import untaxed_postpaid_charges

    company = book.company
    taxable = untaxed_postpaid_charges(company)
    tax = tax_amount(taxable, company.tax_rate, book.currency)
    if tax == 0:
        return tax
    counter = book.system_accounts({TAX_ACCOUNT})["tax"]
    customer, _shortfall = book.debit(tax)  # postpaid: no shortfall
    rate = f"{(company.tax_rate * 100).normalize():f}"
    with translation.override("en"):  # the ledger's English record, whoever asked
        taxable_text = str(book.money(taxable))
    book.add_transaction(
        kind=Kind.ADJUSTMENT,
        idempotency_key=f"mode-switch-tax:{company.pk}:{book.now.isoformat()}",
        fingerprint=_fingerprint(op="mode-switch-tax", company=company.pk, tax=tax),
        description=f"Tax {rate}% on {taxable_text} of charges not yet invoiced, "
        "at the switch to prepaid",
        actor=actor,
        metadata={
            "mode_switch_tax": True,
            "taxable": str(taxable),
            "tax_rate": str(company.tax_rate),
        },
        postings=[*customer, (counter, tax, None)],
    )
    book.flush()
    return tax


# The company fields staff edit on its admin form once it is open. Mode and currency have
# their own actions; status and the blocked reason follow the blocks.
COMPANY_DETAIL_FIELDS = (
    "account_code", "name", "language", "billing_timezone", "tax_rate", "credit_limit", "tariff",
)  # fmt: skip


@transaction.atomic
def company_details_save(
    *, company: Company, fields: Iterable[str], now: datetime | None = None
) -> Company:
    """Write ``fields`` of ``company`` (validated by the caller, as it holds them) under
    the company's row lock, and nothing else: a block or a mode switch committed since the
    caller read the company stays as it is. A changed credit limit is applied at once: a
    postpaid company at or beyond the new limit is blocked, and a credit-limit block is
    lifted once the company is back under it (without waiting for its next charge)."""
    unknown = set(fields) - set(COMPANY_DETAIL_FIELDS)
    if unknown:
        raise ValueError(f"Not company details: {sorted(unknown)}")
    fields = [name for name in COMPANY_DETAIL_FIELDS if name in set(fields)]
    if not fields:
        return company
    book = _CompanyBook(company, now or timezone.now())
    columns = [
        column
        for name in fields
        for column in (
            ("credit_limit", "credit_limit_currency") if name == "credit_limit" else (name,)
        )
    ]
    company.save(update_fields=columns)
    for column in columns:
        setattr(book.company, column, getattr(company, column))
    if "credit_limit" in fields:
        if book._credit_limit_reached():
            book.block_pending = CompanyBlock.Reason.CREDIT_LIMIT
        book.sync_blocks()
    return company


# --- The locked state of one company --------------------------------------------------------


@dataclass
class _Preloaded:
    """A company's state read under its row lock by a caller that locks many at once:
    the locked company row, its customer account and (optionally) its spendable lots,
    locked, soonest expiry first."""

    company: Company
    account: LedgerAccount
    spendable_lots: list[CreditLot] | None = None


class _CompanyBook:
    """One company's money, locked for the length of the database transaction.

    Opening it locks the company row; spending loads and locks the spendable lots in
    expiry order. Changes are collected in memory and written by ``flush`` in a few bulk
    statements, so a batch of charges costs a fixed number of queries.
    """

    def __init__(
        self,
        company: Company,
        now: datetime,
        *,
        preloaded: _Preloaded | None = None,
    ):
        """Lock ``company`` and read its account; or, with ``preloaded``, take the state a
        caller that handles many companies at once has already locked and read (in one
        query per table for all of them) under the same lock order."""
        self.now = now
        self.caller_company = company
        self.lots: dict[int, CreditLot] = {}
        self.lot_remaining: dict[int, Decimal] = {}
        self.dirty_lots: set[int] = set()
        self._spendable: list[tuple[datetime, int, CreditLot]] | None = None
        if preloaded is None:
            self.company = lock_company(company.pk)
            self.currency = self.company.currency
            self.account, _ = LedgerAccount.objects.get_or_create(
                kind=LedgerAccount.Kind.CUSTOMER,
                company=self.company,
                defaults={
                    "code": "customer",
                    "currency": self.currency,
                    "balance": Money(ZERO, self.currency),
                },
            )
        else:
            self.company = preloaded.company
            self.currency = self.company.currency
            self.account = preloaded.account
            if preloaded.spendable_lots is not None:
                self._spendable = []
                for lot in preloaded.spendable_lots:
                    self.adopt_lot(lot)
                    self._spendable.append((lot.expires_at, lot.id, lot))
        self.balance: Decimal = money_amount(self.account, "balance")
        self._new_lots: list[CreditLot] = []
        self._pending: list[tuple[LedgerTransaction, list[_PostingRow]]] = []
        self._lots_awaiting_grant: list[CreditLot] = []
        self.expired_unposted_total: Decimal | None = None
        self.debited = False
        self.shortfall_seen = False
        self.block_pending: str | None = None

    # Amounts ------------------------------------------------------------------------------

    def money(self, value: Decimal) -> Money:
        return Money(value, self.currency)

    def check_amount(self, amount: Money, *, allow_zero: bool = False) -> None:
        if str(amount.currency) != self.currency:
            raise InvalidAmount(
                f"{amount} is not in {self.company.name}'s currency ({self.currency})."
            )
        if amount.amount < 0 or (amount.amount == 0 and not allow_zero):
            raise InvalidAmount(f"The amount must be more than zero, not {amount}.")
        if quantize_amount(amount.amount, self.currency) != amount.amount:
            raise InvalidAmount(
                f"{amount.amount} has more decimals than {self.currency} allows; round it first."
            )

    # Lots ---------------------------------------------------------------------------------

    def spendable(self) -> list[tuple[datetime, int, CreditLot]]:
        """Unexpired lots with credit left, soonest expiry first (locked on first use)."""
        if self._spendable is None:
            self._spendable = []
            for lot in (
                CreditLot.objects.select_for_update()
                .filter(company=self.company, remaining__gt=0, expires_at__gt=self.now)
                .order_by("expires_at", "id")
            ):
                self.adopt_lot(lot)
                self._spendable.append((lot.expires_at, lot.id, lot))
        return self._spendable

    def adopt_lot(self, lot: CreditLot) -> None:
        if lot.id not in self.lots:
            self.lots[lot.id] = lot
            self.lot_remaining[lot.id] = money_amount(lot, "remaining")

    def lot_unexpired(self, lot_id: int) -> bool:
        return self.locked_lot(lot_id).expires_at > self.now

    def locked_lot(self, lot_id: int) -> CreditLot:
        if lot_id not in self.lots:
            self.adopt_lot(CreditLot.objects.select_for_update().get(pk=lot_id))
        return self.lots[lot_id]

    def _has_credit_in_lots(self) -> bool:
        # Stops at the first lot with credit: called after every debit of a batch.
        return any(self.lot_remaining[_lot_key(lot)] > 0 for *_, lot in self.spendable())

    def available_in_lots(self) -> Decimal:
        return sum((self.lot_remaining[lot.id] for *_, lot in self.spendable()), ZERO)

    def expired_unposted(self) -> Decimal:
        """Credit in lots already expired whose expiry the job has not posted yet (once)."""
        if self.expired_unposted_total is None:
            total = CreditLot.objects.filter(
                company=self.company, remaining__gt=0, expires_at__lte=self.now
            ).aggregate(total=Sum("remaining"))["total"]
            self.expired_unposted_total = total or ZERO
        return self.expired_unposted_total

    def new_lot(self, value: Decimal, *, source: str, expires_at: datetime | None) -> CreditLot:
        expires_at = expires_at or self.now + credit_lifetime(source)
        lot = CreditLot(
            company=self.company,
            source=source,
            amount=self.money(value),
            remaining=self.money(value),
            granted_at=self.now,
            expires_at=expires_at,
        )
        self._new_lots.append(lot)
        self._lots_awaiting_grant.append(lot)
        # Until it is saved the lot has no id; a temporary negative key keeps it apart.
        key = -len(self._new_lots)
        self.lots[key] = lot
        self.lot_remaining[key] = value
        lot._book_key = key
        insort(self.spendable(), (expires_at, key, lot), key=_spend_order)
        self.balance += value
        return lot

    # Spending and crediting ---------------------------------------------------------------

    def debit(self, value: Decimal) -> tuple[list[tuple], Decimal]:
        """Take ``value`` from the company: lots first; then the plain balance (postpaid) or
        a shortfall (prepaid). Returns the customer postings and the shortfall."""
        postings, left = [], value
        for *_, lot in self.spendable():
            if left <= 0:
                break
            key = _lot_key(lot)
            take = min(self.lot_remaining[key], left)
            if take > 0:
                self.lot_remaining[key] -= take
                self.dirty_lots.add(key)
                postings.append((self.account, -take, lot))
                left -= take
        shortfall = ZERO
        if left > 0:
            if self.company.mode == Company.Mode.PREPAID:
                shortfall = left
            else:
                postings.append((self.account, -left, None))
        self.balance -= value - shortfall
        # A debit of nothing asked nothing of the credit: it cannot be what used it up.
        self.debited = self.debited or value > 0
        return postings, shortfall

    def credit(
        self,
        value: Decimal,
        *,
        source: str,
        expires_at: datetime | None = None,
        into_lot_id: int | None = None,
    ) -> list[tuple]:
        """Give ``value`` to the company: back into ``into_lot_id`` if it is unexpired, else a
        new lot (prepaid) or the plain balance (postpaid)."""
        if into_lot_id is not None:
            lot = self.locked_lot(into_lot_id)
            if lot.expires_at > self.now:
                self.lot_remaining[lot.pk] += value
                self.dirty_lots.add(lot.pk)
                if all(entry[1] != lot.pk for entry in self.spendable()):
                    insort(self.spendable(), (lot.expires_at, lot.pk, lot), key=_spend_order)
                self.balance += value
                return [(self.account, value, lot)]
        if self.company.mode == Company.Mode.PREPAID:
            lot = self.new_lot(value, source=source, expires_at=expires_at)
            return [(self.account, value, lot)]
        self.balance += value
        return [(self.account, value, None)]

    def take_back_from_lot(self, lot_id: int | None, value: Decimal, original) -> list[tuple]:
        """Reverse credit that ``original`` put into a lot (or the plain balance)."""
        if lot_id is None:
            postings, shortfall = self.debit(value)
            if shortfall:
                raise ReversalRefused(
                    f"Reversing #{original.pk} needs {self.money(value)} but only "
                    f"{self.money(value - shortfall)} of credit is left."
                )
            return postings
        lot = self.locked_lot(lot_id)
        left = self.lot_remaining[lot.pk]
        if left < value:
            raise ReversalRefused(
                f"{self.money(value - left)} of the credit granted by #{original.pk} has "
                f"already been used or expired; adjust the balance instead."
            )
        self.lot_remaining[lot.pk] -= value
        self.dirty_lots.add(lot.pk)
        self.balance -= value
        self.debited = True
        return [(self.account, -value, lot)]

    def charge(
        self, request: ChargeRequest, revenue_account: LedgerAccount, fingerprint: str
    ) -> ChargeResult:
        value = request.amount.amount
        postings, shortfall = self.debit(value)
        taken = value - shortfall
        if not postings:
            postings = [(self.account, ZERO, None)]  # keep the company's side on record
        postings.append((revenue_account, taken, None))
        if shortfall:
            self.shortfall_seen = True
        transaction_ = self.add_transaction(
            kind=request.kind,
            idempotency_key=request.idempotency_key,
            fingerprint=fingerprint,
            description=request.description,
            effective_at=request.effective_at,
            cause=request.cause,
            metadata=request.metadata,
            postings=postings,
            shortfall=shortfall or None,
        )
        if value > 0:
            self._note_block_after_debit()
        return ChargeResult(
            transaction=transaction_,
            charged=self.money(taken),
            shortfall=self.money(shortfall),
            balance=self.money(self.balance),
        )

    # Blocking -----------------------------------------------------------------------------

    @property
    def is_blocked(self) -> bool:
        return self.company.status == Company.Status.BLOCKED or self.block_pending is not None

    def _credit_limit_reached(self) -> bool:
        if self.company.mode != Company.Mode.POSTPAID:
            return False
        limit = money_amount(self.company, "credit_limit")  # after every debit: no Money
        if limit is None:
            return False
        return self.balance - self.expired_unposted() <= -limit

    def _note_block_after_debit(self) -> None:
        """Decide in memory whether the last debit blocks the company (written at flush)."""
        if self.block_pending is not None:
            return
        if self.company.mode == Company.Mode.PREPAID:
            if self.shortfall_seen or not self._has_credit_in_lots():
                self.block_pending = CompanyBlock.Reason.PREPAID_DEPLETED
        elif self._credit_limit_reached():
            self.block_pending = CompanyBlock.Reason.CREDIT_LIMIT

    def sync_blocks(self) -> None:
        """Set a block the money now calls for, and lift automatic blocks whose cause cleared."""
        if self.debited:
            self._note_block_after_debit()
        if self.block_pending is not None:
            company_block(company=self.company, reason=self.block_pending, now=self.now)
        if self.company.status != Company.Status.BLOCKED:
            return
        prepaid = self.company.mode == Company.Mode.PREPAID
        if not prepaid or self.available_in_lots() > 0:
            company_unblock(
                company=self.company,
                reason=CompanyBlock.Reason.PREPAID_DEPLETED,
                now=self.now,
                note="Credit added" if prepaid else "Switched to postpaid",
            )
        if prepaid or not self._credit_limit_reached():
            company_unblock(
                company=self.company,
                reason=CompanyBlock.Reason.CREDIT_LIMIT,
                now=self.now,
                note="Switched to prepaid" if prepaid else "Back under the credit limit",
            )
        self.caller_company.status = self.company.status
        self.caller_company.blocked_reason = self.company.blocked_reason

    # Transactions -------------------------------------------------------------------------

    def system_accounts(self, wanted: set[tuple[str, str]]) -> dict[str, LedgerAccount]:
        return _system_accounts(wanted, self.currency)

    def existing_transactions(self, fingerprints: dict[str, str]) -> dict[str, LedgerTransaction]:
        return _existing_transactions(fingerprints)

    def add_transaction(
        self,
        *,
        kind,
        idempotency_key,
        fingerprint,
        description,
        postings,
        actor=None,
        cause=None,
        metadata=None,
        effective_at=None,
        shortfall=None,
        reverses=None,
    ) -> LedgerTransaction:
        transaction_ = _new_transaction(
            kind=kind,
            idempotency_key=idempotency_key,
            fingerprint=fingerprint,
            description=description,
            actor=actor,
            cause=cause,
            metadata=metadata,
            posted_at=self.now,
            effective_at=effective_at,
            reverses=reverses,
            company=self.company,
            currency=self.currency,
        )
        set_money_amount(transaction_, "shortfall", shortfall or None, self.currency)
        set_money_amount(transaction_, "balance_after", self.balance, self.currency)
        # A lot created for this transaction records it as its grant.
        for lot in self._lots_awaiting_grant:
            lot.grant_transaction = transaction_
        self._lots_awaiting_grant = []
        self._pending.append((transaction_, _new_postings(transaction_, postings, self.currency)))
        return transaction_

    def flush(self) -> None:
        """Write everything collected, in few statements; then blocks follow the balance."""
        _flush_books([self])

    def duplicate_result(
        self, transaction_: LedgerTransaction, request: ChargeRequest
    ) -> ChargeResult:
        """The first result again. Same fingerprint means the same amount was asked for, so
        what it charged is that amount less its recorded shortfall."""
        shortfall = transaction_.shortfall.amount if transaction_.shortfall else ZERO
        return ChargeResult(
            transaction=transaction_,
            charged=self.money(request.amount.amount - shortfall),
            shortfall=self.money(shortfall),
            balance=transaction_.balance_after,
            duplicate=True,
        )

    def refused_result(self) -> ChargeResult:
        return ChargeResult(
            transaction=None,
            charged=self.money(ZERO),
            shortfall=self.money(ZERO),
            balance=self.money(self.balance),
            refused=True,
        )


# --- Helpers --------------------------------------------------------------------------------


def _lot_key(lot: CreditLot) -> int:
    return lot._book_key if lot.id is None else lot.id


def _spend_order(entry: tuple[datetime, int, CreditLot]) -> tuple:
    """Soonest expiry first; among equal expiries the older (saved) lot first."""
    expires_at, key, _ = entry
    return (expires_at, key < 0, abs(key))


def _charge_fingerprint(company_id: int, request: ChargeRequest) -> str:
    return _fingerprint(
        op="charge",
        company=company_id,
        kind=request.kind,
        revenue=request.revenue,
        amount=request.amount.amount,
    )


def _fingerprint(**request) -> str:
    """A stable hash of what was asked for (amounts as strings, keys sorted)."""
    payload = json.dumps(request, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def _existing_transactions(fingerprints: dict[str, str]) -> dict[str, LedgerTransaction]:
    found = {
        transaction_.idempotency_key: transaction_
        for transaction_ in LedgerTransaction.objects.filter(idempotency_key__in=list(fingerprints))
    }
    for key, transaction_ in found.items():
        if transaction_.fingerprint != fingerprints[key]:
            raise IdempotencyConflict(
                f"The idempotency key “{key}” was already used for a different request "
                f"(transaction #{transaction_.pk}); use a new key for a new request."
            )
    return found


def _insert_transactions(transactions: list[LedgerTransaction]) -> None:
    """Insert new transactions; a key another company's transaction took meanwhile is an
    ``IdempotencyConflict``, not a database error.

    The company row lock serialises one company's posts, so its own keys were checked
    under the lock; but keys are unique across the ledger, and a concurrent post for
    another company can commit the same key between that check and this insert.
    """
    try:
        with transaction.atomic():  # a savepoint, so the unique violation can be handled
            LedgerTransaction.objects.bulk_create(transactions)
    except IntegrityError:
        _existing_transactions({tx.idempotency_key: tx.fingerprint for tx in transactions})
        raise


# The system accounts (no company) of some codes in some currencies.
_SYSTEM_ACCOUNTS = ReusableQuery(
    lambda codes, currencies: LedgerAccount.objects.filter(
        company=None, code__any=codes, currency__any=currencies
    ).order_by()
)


def _system_accounts(wanted: set[tuple[str, str]], currency: str) -> dict[str, LedgerAccount]:
    codes = {code for _, code in wanted}
    accounts = {account.code: account for account in _SYSTEM_ACCOUNTS(codes, [currency])}
    for kind, code in wanted:
        if code not in accounts:
            accounts[code], _ = LedgerAccount.objects.get_or_create(
                company=None,
                code=code,
                currency=currency,
                defaults={"kind": kind, "balance": Money(ZERO, currency)},
            )
    return accounts


def _new_transaction(
    *,
    kind,
    idempotency_key,
    fingerprint,
    description,
    actor,
    cause,
    metadata,
    posted_at,
    effective_at,
    reverses,
    company,
    currency,
) -> LedgerTransaction:
    # Without Model.__init__ (a usage batch makes one per company): every field given.
    related = {"company": company, "actor": actor, "reverses": reverses}
    return unsaved_instance(
        LedgerTransaction,
        {
            "id": None,
            "idempotency_key": idempotency_key,
            "fingerprint": fingerprint,
            "kind": kind,
            "company_id": company.id if company is not None else None,
            "description": description[:500],
            "posted_at": posted_at,
            "effective_at": effective_at or posted_at,
            "actor_id": actor.pk if actor is not None else None,
            "cause_type_id": (
                ContentType.objects.get_for_model(cause).pk if cause is not None else None
            ),
            "cause_id": cause.pk if cause is not None else None,
            "reverses_id": reverses.pk if reverses is not None else None,
            "shortfall_currency": None,
            "shortfall": None,
            "balance_after_currency": None,
            "balance_after": None,
            "metadata": metadata or {},
        },
        {name: value for name, value in related.items() if value is not None},
    )


class _PostingRow:
    """A posting to write: plain values, not a model instance (a usage batch has a thousand,
    and the instance with its ``Money`` costs more than writing the row). The transaction
    and a lot created with it are referred to as objects: their ids come when they are
    saved, before the postings are written."""

    __slots__ = ("transaction", "account_id", "amount", "currency", "lot")

    def __init__(self, transaction_, account_id: int, amount: Decimal, currency: str, lot):
        self.transaction = transaction_
        self.account_id = account_id
        self.amount = amount
        self.currency = currency
        self.lot = lot

    def values(self) -> tuple:
        """The row in the order of ``POSTING_COLUMNS``. (Here and on the other paths run per
        row or per company, ``.id``: ``.pk`` is a property, a call each time.)"""
        lot_id = None if self.lot is None else self.lot.id
        return (self.transaction.id, self.account_id, self.currency, self.amount, lot_id)


def _new_postings(transaction_, postings: list[tuple], currency: str) -> list[_PostingRow]:
    total = sum((value for _, value, _ in postings), ZERO)
    if total != 0 or len(postings) < 2:
        raise AssertionError(f"Unbalanced transaction {transaction_.idempotency_key}: {postings}")
    return [
        _PostingRow(transaction_, account.id, value, currency, lot)
        for account, value, lot in postings
    ]


def _check_charges(
    book: _CompanyBook, charges: Sequence[ChargeRequest], fingerprints: dict[str, str]
) -> dict[str, str]:
    """Refuse a bad amount or kind before anything is written; add each charge's fingerprint
    to ``fingerprints`` (shared by a batch's companies: a key given twice for different
    charges, even by two companies, is an ``IdempotencyConflict``)."""
    for request in charges:
        book.check_amount(request.amount, allow_zero=True)
        if request.kind not in CHARGE_KINDS:
            raise InvalidAmount(f"“{request.kind}” is not a kind of charge.")
    for request in charges:
        fingerprint = _charge_fingerprint(book.company.pk, request)
        if fingerprints.setdefault(request.idempotency_key, fingerprint) != fingerprint:
            raise IdempotencyConflict(
                f"The idempotency key “{request.idempotency_key}” appears twice in the batch "
                "for different charges."
            )
    return fingerprints


def _revenue_accounts_wanted(charges: Sequence[ChargeRequest]) -> set[tuple[str, str]]:
    return {(LedgerAccount.Kind.REVENUE, f"revenue:{request.revenue}") for request in charges}


def _post_charges(
    book: _CompanyBook,
    charges: Sequence[ChargeRequest],
    fingerprints: dict[str, str],
    existing: dict[str, LedgerTransaction],
    revenue_accounts: dict[str, LedgerAccount],
    refuse_when_blocked: bool,
) -> list[ChargeResult]:
    """Charge one company's requests in order, in memory (``flush`` writes them)."""
    results: list[ChargeResult] = []
    for request in charges:
        if request.idempotency_key in existing:
            results.append(book.duplicate_result(existing[request.idempotency_key], request))
            continue
        if refuse_when_blocked and book.is_blocked:
            results.append(book.refused_result())
            continue
        result = book.charge(
            request,
            revenue_accounts[f"revenue:{request.revenue}"],
            fingerprints[request.idempotency_key],
        )
        existing[request.idempotency_key] = result.transaction
        results.append(result)
    return results


# The customer accounts of some companies.
_CUSTOMER_ACCOUNTS = ReusableQuery(
    lambda company_ids: LedgerAccount.objects.filter(
        kind=LedgerAccount.Kind.CUSTOMER, company_id__any=company_ids
    ).order_by()
)
# The lots of some companies that can still be spent at an instant, soonest to expire first.
_SPENDABLE_LOTS = ReusableQuery(
    lambda company_ids, at: CreditLot.objects.filter(
        company_id__any=company_ids, remaining__gt=0, expires_at__gt=at
    ).order_by("company_id", "expires_at", "id")
)


def _open_books(
    companies: Sequence[Company], now: datetime, locked_rows: Sequence[Company] | None = None
) -> list[_CompanyBook]:
    """One book per company, in the order given, with one query per table for all of them:
    the company rows locked in id order (or ``locked_rows``, the rows the caller has locked
    already in this transaction), their customer accounts (those missing created, as
    ``_CompanyBook`` would), then their spendable lots."""
    if locked_rows is None:
        locked_rows = lock_companies([c.id for c in companies])
    wanted = {company.id for company in companies}
    locked = {company.id: company for company in locked_rows if company.id in wanted}
    missing = [company.id for company in companies if company.id not in locked]
    if missing:
        raise Company.DoesNotExist(f"No company with id {missing[0]}.")
    accounts = {account.company_id: account for account in _CUSTOMER_ACCOUNTS(list(locked))}
    # Under the company locks no one else can create these (``_CompanyBook`` creates a
    # customer account under its company's lock too).
    new_accounts = [
        LedgerAccount(
            kind=LedgerAccount.Kind.CUSTOMER,
            company=company,
            code="customer",
            currency=company.currency,
            balance=Money(ZERO, company.currency),
        )
        for company in locked.values()
        if company.id not in accounts
    ]
    for account in LedgerAccount.objects.bulk_create(new_accounts):
        accounts[account.company_id] = account
    lots: dict[int, list[CreditLot]] = {pk: [] for pk in locked}
    # Without row locks of their own: lots are written only here, under their company's row
    # lock, which this transaction now holds, so what it reads is the latest and stays so.
    # (A lock per lot would write each lot's row for nothing: one more WAL record a lot.)
    for lot in _SPENDABLE_LOTS(list(locked), now):
        lots[lot.company_id].append(lot)
    # Only postpaid companies with a limit need the credit that expired unposted.
    limited = [
        company.id
        for company in locked.values()
        if company.mode == Company.Mode.POSTPAID and company.credit_limit is not None
    ]
    expired = (
        dict(
            CreditLot.objects.filter(company_id__any=limited, remaining__gt=0, expires_at__lte=now)
            .order_by()
            .values("company_id")
            .annotate(total=Sum("remaining"))
            .values_list("company_id", "total")
        )
        if limited
        else {}
    )
    books = []
    for company in companies:
        book = _CompanyBook(
            company,
            now,
            preloaded=_Preloaded(
                company=locked[company.id],
                account=accounts[company.id],
                spendable_lots=lots[company.id],
            ),
        )
        if company.id in limited:
            book.expired_unposted_total = expired.get(company.id) or ZERO
        books.append(book)
    return books


# --- Usage: many events, one transaction per company and batch -----------------------------


class UsageBooks:
    """The companies of one usage API call, locked and read together: one ``UsageBatch``
    per company, all written by ``post`` in one set of statements.

    Opening locks the company rows in id order (so two calls never wait on each other in
    a cycle), unless the caller has locked them (``locked_rows``), then reads their customer
    accounts and their spendable lots, one query each for all the companies
    (``_open_books``).
    """

    def __init__(
        self,
        companies: Sequence[Company],
        now: datetime,
        locked_rows: Sequence[Company] | None = None,
    ):
        unique = {company.id: company for company in companies}
        self.batches: dict[int, UsageBatch] = {
            book.company.id: UsageBatch(book)
            for book in _open_books(sorted(unique.values(), key=lambda c: c.id), now, locked_rows)
        }

    def post(
        self, posts: dict[int, dict], known_accounts: dict | None = None
    ) -> dict[int, LedgerTransaction | None]:
        """Post each company's batch (``posts``: company id → the keyword arguments of
        ``UsageBatch.prepare``) and write them all; returns each company's transaction.

        ``known_accounts`` (currency → code → revenue account), when given, holds the
        revenue accounts found before in the same database transaction or API call, and
        gets those found now: a call of several groups reads them once.
        """
        known = {} if known_accounts is None else known_accounts
        wanted: dict[str, set[tuple[str, str]]] = {}
        for company_id in posts:
            batch = self.batches[company_id]
            currency = batch._book.currency
            have = known.get(currency, {})
            wanted.setdefault(currency, set()).update(
                (kind, code) for kind, code in batch.revenue_accounts_wanted() if code not in have
            )
        for currency, codes in wanted.items():
            if codes:
                known.setdefault(currency, {}).update(_system_accounts(codes, currency))
        transactions = {
            company_id: self.batches[company_id].prepare(
                revenue_accounts=known[self.batches[company_id]._book.currency],
                **arguments,
            )
            for company_id, arguments in posts.items()
        }
        # The keys name the events posted (see ``UsageBatch.prepare``): one taken meanwhile
        # is the same request, whose unique violation the caller retries as a whole.
        _flush_books([self.batches[company_id]._book for company_id in posts], own_keys=True)
        return transactions


class UsageBatch:
    """The charges of one company's usage events in one API batch, posted as ONE ledger
    transaction whose postings are summed by credit lot and by service.

    Each event is still charged once and in order (lots soonest-expiry first; prepaid
    shortfall; blocking at the limit), and its own amount, shortfall and balance after are
    returned for its usage record, which links to the transaction. Opened by
    ``UsageBooks``, which holds the company row lock and writes the batch.
    """

    def __init__(self, book: _CompanyBook):
        self._book = book
        self._customer: dict[int | None, Decimal] = {}
        self._lots: dict[int | None, CreditLot | None] = {None: None}
        self._revenue: dict[str, Decimal] = {}
        self._shortfall = ZERO

    @property
    def company(self) -> Company:
        return self._book.company

    @property
    def is_blocked(self) -> bool:
        return self._book.is_blocked

    @property
    def blocked_reason(self) -> str:
        """Why it is blocked, readable: the block this batch has decided (written at flush)
        before the company's own, which does not show it yet."""
        pending = self._book.block_pending
        if pending is not None:
            return str(CompanyBlock.Reason(pending).label)
        return self._book.company.blocked_reason

    def charge(self, amount: Decimal, revenue: str) -> tuple[Decimal, Decimal, Decimal]:
        """Charge one event's ``amount`` (already rounded); returns (taken, shortfall,
        balance after)."""
        book = self._book
        if amount > 0:
            postings, shortfall = book.debit(amount)
            for _account, value, lot in postings:
                key = _lot_key(lot) if lot is not None else None
                self._lots[key] = lot
                self._customer[key] = self._customer.get(key, ZERO) + value
            taken = amount - shortfall
            self._revenue[revenue] = self._revenue.get(revenue, ZERO) + taken
            if shortfall:
                book.shortfall_seen = True
                self._shortfall += shortfall
            book._note_block_after_debit()
        else:
            taken = shortfall = ZERO
        return taken, shortfall, book.balance

    def revenue_accounts_wanted(self) -> set[tuple[str, str]]:
        services = set(self._revenue) or {"usage"}
        return {(LedgerAccount.Kind.REVENUE, f"revenue:{service}") for service in services}

    def prepare(
        self,
        *,
        idempotency_key: str,
        fingerprint_payload: dict,
        description: str,
        revenue_accounts: dict[str, LedgerAccount],
        metadata: dict | None = None,
    ) -> LedgerTransaction | None:
        """Add the one transaction (None when no money moved) to the book; ``UsageBooks``
        writes it.

        Idempotency is the caller's: each event is charged once because its usage record is
        unique per API key; the key here names the batch's set of new events.
        """
        book = self._book
        postings = [
            (book.account, value, self._lots[key])
            for key, value in self._customer.items()
            if value != 0
        ]
        postings += [
            (revenue_accounts[f"revenue:{service}"], value, None)
            for service, value in sorted(self._revenue.items())
            if value != 0
        ]
        if not postings and not self._shortfall:
            return None
        if not any(account.id == book.account.id for account, *_ in postings):
            postings.insert(0, (book.account, ZERO, None))
        if len(postings) < 2:
            revenue = next(iter(self._revenue), "usage")
            postings.append((revenue_accounts[f"revenue:{revenue}"], ZERO, None))
        return book.add_transaction(
            kind=Kind.USAGE,
            idempotency_key=idempotency_key,
            fingerprint=_fingerprint(op="usage", **fingerprint_payload),
            description=description,
            metadata=metadata,
            postings=postings,
            shortfall=self._shortfall or None,
        )


# --- Writing what the books collected --------------------------------------------------------


def _flush_books(books: list[_CompanyBook], *, own_keys: bool = False) -> None:
    """Write what ``books`` collected in one statement per table, whatever their number;
    then each company's blocks follow its balance.

    ``own_keys``: the caller's idempotency keys cannot be taken by a different request, so
    a unique violation needs no savepoint to tell an ``IdempotencyConflict`` from a race
    (two statements saved per call); it aborts the database transaction as it is."""
    pending = [entry for book in books for entry in book._pending]
    if pending:
        transactions = [transaction_ for transaction_, _ in pending]
        if len(transactions) > 1 and connection.vendor == "postgresql":
            _copy_transactions(transactions, savepoint=not own_keys)
        else:
            _insert_transactions(transactions)
        new_lots = []
        for book in books:
            for lot in book._new_lots:
                lot.remaining = book.money(book.lot_remaining[lot._book_key])
                new_lots.append(lot)
        if new_lots:
            CreditLot.objects.bulk_create(new_lots)
            for book in books:
                for lot in book._new_lots:
                    del book.lots[lot._book_key]
                    book.lots[lot.pk] = lot
                    book.lot_remaining[lot.pk] = book.lot_remaining.pop(lot._book_key)
                    book.dirty_lots.discard(lot._book_key)
        _insert_postings([posting for _, postings in pending for posting in postings])
        remaining: dict[int, Decimal] = {}
        balances: dict[int, Decimal] = {}
        for book in books:
            for key in book.dirty_lots:
                lot = book.lots[key]
                set_money_amount(lot, "remaining", book.lot_remaining[key], book.currency)
                remaining[lot.id] = book.lot_remaining[key]
            if book._pending:
                set_money_amount(book.account, "balance", book.balance, book.currency)
                balances[book.account.id] = book.balance
            book._pending, book._new_lots, book.dirty_lots = [], [], set()
        update_column(CreditLot, "remaining", remaining)
        update_column(LedgerAccount, "balance", balances)
    for book in books:
        book.sync_blocks()


# Many transactions at once (a usage batch, a recurring run) are written with COPY on
# PostgreSQL: the ORM's per-field preparation costs more than the database's work.
TRANSACTION_COLUMNS = (
    "id", "idempotency_key", "fingerprint", "kind", "company_id", "description", "posted_at",
    "effective_at", "actor_id", "cause_type_id", "cause_id", "reverses_id",
    "shortfall_currency", "shortfall", "balance_after_currency", "balance_after", "metadata",
)  # fmt: skip
POSTING_COLUMNS = ("transaction_id", "account_id", "amount_currency", "amount", "lot_id")


def _copy_transactions(transactions: list[LedgerTransaction], *, savepoint: bool = True) -> None:
    """``_insert_transactions`` for many rows: ids reserved from the sequence, rows copied.
    A key another company's transaction took meanwhile is an ``IdempotencyConflict``
    (``savepoint=False``: left as the unique violation, see ``_flush_books``)."""
    for transaction_, pk in zip(
        transactions, reserve_ids(LedgerTransaction, len(transactions)), strict=True
    ):
        transaction_.pk = pk
    encoder = LedgerTransaction._meta.get_field("metadata").encoder
    rows = [
        (
            tx.id,
            tx.idempotency_key,
            tx.fingerprint,
            tx.kind,
            tx.company_id,
            tx.description,
            tx.posted_at.isoformat(),  # COPY: see billing.bulk.timestamps_as_text
            tx.effective_at.isoformat(),
            tx.actor_id,
            tx.cause_type_id,
            tx.cause_id,
            tx.reverses_id,
            *_money_columns(tx, "shortfall"),
            *_money_columns(tx, "balance_after"),
            json.dumps(tx.metadata, cls=encoder),
        )
        for tx in transactions
    ]
    if not savepoint:
        insert_rows(LedgerTransaction, TRANSACTION_COLUMNS, rows)
    else:
        try:
            with transaction.atomic():  # a savepoint, so the unique violation can be handled
                insert_rows(LedgerTransaction, TRANSACTION_COLUMNS, rows)
        except IntegrityError:
            for tx in transactions:
                tx.pk = None
            _existing_transactions({tx.idempotency_key: tx.fingerprint for tx in transactions})
            raise
    for tx in transactions:
        tx._state.adding = False


def _insert_postings(postings: list[_PostingRow]) -> None:
    # insert_rows: COPY on PostgreSQL, model instances through the ORM elsewhere.
    insert_rows(LedgerPosting, POSTING_COLUMNS, (posting.values() for posting in postings))


def _money_columns(instance, name: str) -> tuple[str | None, Decimal | None]:
    amount = money_amount(instance, name)
    return (None, None) if amount is None else (str(getattr(instance, f"{name}_currency")), amount)


# --- Statements (invoicing): credits applied and tax, for many companies at once ------------


@dataclass(frozen=True)
class StatementEntry:
    """One amount a statement run posts: ``amount`` > 0 credits the company (an invoice
    credit, a credit note), < 0 charges it (tax). ``counter`` is the system account on the
    other side, as (kind, code): e.g. (voucher, "voucher") or (tax, "tax")."""

    amount: Money
    kind: str
    counter: tuple[str, str]
    idempotency_key: str
    description: str
    effective_at: datetime | None = None
    cause: models.Model | None = None
    actor: object = None
    metadata: dict = field(default_factory=dict)


@transaction.atomic
def statement_entries_post(
    *,
    entries: Sequence[tuple[Company, Sequence[StatementEntry]]],
    now: datetime | None = None,
) -> list[list[LedgerTransaction]]:
    """Post the credits and charges of statements for many companies in one database
    transaction: one list of transactions per (company, entries) pair, in order.

    A credit goes to the plain balance (postpaid) or into an adjustment lot (prepaid); a
    charge spends lots first, then takes a postpaid balance negative, and may not exceed a
    prepaid company's credit (``InsufficientCredit``). Idempotent per key, like every
    posting here (the same key and request returns the first transaction). Lock order: the
    company rows in id order, then their spendable lots (``_open_books``); a fixed number
    of statements whatever the number of companies. Raises ``InvalidAmount`` (zero, too
    many decimals, another currency), ``IdempotencyConflict`` and ``ValueError`` for a
    company listed twice.
    """
    now = now or timezone.now()
    companies = [company for company, _ in entries]
    if len({company.pk for company in companies}) != len(companies):
        raise ValueError("A company appears twice; give all its entries at once.")
    books = _open_books(companies, now)
    fingerprints: dict[str, str] = {}
    wanted: dict[str, set[tuple[str, str]]] = {}
    for book, (_, items) in zip(books, entries, strict=True):
        for entry in items:
            if entry.amount.amount == 0:
                raise InvalidAmount("A statement entry of zero changes nothing.")
            book.check_amount(Money(abs(entry.amount.amount), entry.amount.currency))
            fingerprint = _fingerprint(
                op="statement",
                company=book.company.pk,
                kind=entry.kind,
                amount=entry.amount.amount,
                counter=entry.counter[1],
            )
            if fingerprints.setdefault(entry.idempotency_key, fingerprint) != fingerprint:
                raise IdempotencyConflict(
                    f"The idempotency key “{entry.idempotency_key}” appears twice in the batch "
                    "for different entries."
                )
            wanted.setdefault(book.currency, set()).add(entry.counter)
    existing = _existing_transactions(fingerprints)
    counters = {currency: _system_accounts(codes, currency) for currency, codes in wanted.items()}
    results: list[list[LedgerTransaction]] = []
    for book, (_, items) in zip(books, entries, strict=True):
        posted = []
        for entry in items:
            if entry.idempotency_key in existing:
                posted.append(existing[entry.idempotency_key])
                continue
            value = entry.amount.amount
            if value > 0:
                customer = book.credit(value, source=Source.ADJUSTMENT)
            else:
                customer, shortfall = book.debit(-value)
                if shortfall:
                    raise InsufficientCredit(
                        f"Only {book.money(-value - shortfall)} of credit is available for "
                        f"{book.money(-value)} ({entry.description})."
                    )
            counter = counters[book.currency][entry.counter[1]]
            transaction_ = book.add_transaction(
                kind=entry.kind,
                idempotency_key=entry.idempotency_key,
                fingerprint=fingerprints[entry.idempotency_key],
                description=entry.description,
                actor=entry.actor,
                cause=entry.cause,
                metadata=entry.metadata,
                effective_at=entry.effective_at,
                postings=[*customer, (counter, -value, None)],
            )
            existing[entry.idempotency_key] = transaction_
            posted.append(transaction_)
        results.append(posted)
    _flush_books(books)
    return results
