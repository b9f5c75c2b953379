"""Everything that writes vouchers: batches and their codes, redemption, voiding.

Money only moves through ``billing.services.ledger``: a prepaid redemption is a
``credits_grant`` of source *voucher*; a postpaid one records an ``InvoiceCredit`` that the
next statement applies (no ledger money until then, so the ledger keeps saying what is
owed).

Lock order (the ledger's, extended): the company row, then the voucher row. A batch void
locks the batch row, then its unused vouchers (by its UPDATE), and never a company.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import formats, timezone
from django.utils.translation import gettext
from djmoney.money import Money

from accounts.models import Company
from accounts.services import lock_company
from billing.models import CreditLot
from billing.money import MONEY_DECIMAL_PLACES, MONEY_MAX_DIGITS, quantize_amount
from billing.services import ledger

from . import codes, signals
from .exceptions import (
    BatchInvalid,
    RedemptionLocked,
    VoidRefused,
    VoucherAlreadyRedeemed,
    VoucherCurrencyMismatch,
    VoucherError,
    VoucherExpired,
    VoucherNotFound,
    VoucherVoided,
)
from .models import (
    MAX_BATCH_SIZE,
    MAX_LIFETIME_DAYS,
    InvoiceCredit,
    Voucher,
    VoucherBatch,
    VoucherRedemption,
)
from .ratelimit import AttemptLimiter

# Codes are generated and written this many at a time: memory stays flat whatever the
# batch size, and a (astronomically rare) collision with an existing code redoes one chunk.
INSERT_CHUNK = 10_000
COLLISION_RETRIES = 3
LABEL_MAX_LENGTH = VoucherBatch._meta.get_field("label").max_length
# The money columns' limit (19 digits, 4 of them decimals).
MAX_AMOUNT = Decimal(10) ** (MONEY_MAX_DIGITS - MONEY_DECIMAL_PLACES)


# --- Batches --------------------------------------------------------------------------------


@transaction.atomic
def batch_create(
    *,
    amount: Money,
    count: int,
    lifetime_days: int,
    label: str,
    reseller: str = "",
    notes: str = "",
    redeem_by: datetime | None = None,
    actor=None,
    now: datetime | None = None,
) -> VoucherBatch:
    """Create a batch of ``count`` (1 to 100,000) new codes worth ``amount`` each.

    Validates everything first (``BatchInvalid`` with the reason; nothing is written).
    Codes come from ``secrets`` (``vouchers.codes``) and are written in chunks, with COPY
    on PostgreSQL; the unique index on the code refuses a collision with an existing
    code, and that chunk is generated again. Atomic: all the codes or none.
    """
    now = now or timezone.now()
    batch_validate(
        amount=amount,
        count=count,
        lifetime_days=lifetime_days,
        label=label,
        reseller=reseller,
        redeem_by=redeem_by,
        now=now,
    )
    batch = VoucherBatch.objects.create(
        label=label.strip(),
        reseller=reseller.strip(),
        notes=notes,
        amount=amount,
        count=count,
        lifetime_days=lifetime_days,
        redeem_by=redeem_by,
        created_at=now,
        created_by=actor,
    )
    _insert_codes(batch.pk, count)
    return batch


def batch_validate(
    *, amount, count, lifetime_days, label, redeem_by, now, reseller: str = ""
) -> None:
    """Raise ``BatchInvalid`` with the reason if ``batch_create`` would refuse these details
    (the admin's form asks before it submits). Reads and writes nothing."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_BATCH_SIZE:
        raise BatchInvalid(
            gettext("A batch has from 1 to %(max)s codes, not %(count)s.")
            % {"max": f"{MAX_BATCH_SIZE:,}", "count": count}
        )
    if not isinstance(amount, Money):
        raise BatchInvalid(gettext("Give the amount of each code with its currency."))
    currency = str(amount.currency)
    if currency not in settings.CURRENCIES:
        raise BatchInvalid(
            gettext("%(currency)s is not a currency companies are billed in.")
            % {"currency": currency}
        )
    if amount.amount <= 0:
        raise BatchInvalid(gettext("Each code must be worth more than zero."))
    if amount.amount >= MAX_AMOUNT:
        raise BatchInvalid(gettext("That amount is too large for a credit code."))
    if quantize_amount(amount.amount, currency) != amount.amount:
        raise BatchInvalid(
            gettext("%(amount)s has more decimals than %(currency)s allows.")
            % {"amount": amount.amount, "currency": currency}
        )
    if (
        isinstance(lifetime_days, bool)
        or not isinstance(lifetime_days, int)
        or not 1 <= lifetime_days <= MAX_LIFETIME_DAYS
    ):
        raise BatchInvalid(
            gettext("The credit lifetime is from 1 to %(max)d days, not %(days)s.")
            % {"max": MAX_LIFETIME_DAYS, "days": lifetime_days}
        )
    if not label or not label.strip():
        raise BatchInvalid(gettext("Give the batch a label."))
    if len(label.strip()) > LABEL_MAX_LENGTH or len(reseller.strip()) > LABEL_MAX_LENGTH:
        raise BatchInvalid(
            gettext("The label and the reseller have at most %(max)d characters each.")
            % {"max": LABEL_MAX_LENGTH}
        )
    if redeem_by is not None and redeem_by <= now:
        raise BatchInvalid(gettext("The redeem-by date must be in the future."))


def _insert_codes(batch_id: int, count: int) -> None:
    left = count
    while left > 0:
        size = min(left, INSERT_CHUNK)
        for attempt in range(COLLISION_RETRIES):
            chunk = _distinct_codes(size)
            try:
                with transaction.atomic():  # a savepoint: a collision undoes this chunk only
                    _write_codes(batch_id, chunk)
                break
            except IntegrityError:
                if attempt == COLLISION_RETRIES - 1:
                    raise
        left -= size


def _distinct_codes(size: int) -> list[str]:
    chunk = dict.fromkeys(codes.generate_codes(size))
    while len(chunk) < size:  # two equal codes in one chunk: 80 bits make this theoretical
        chunk.update(dict.fromkeys(codes.generate_codes(size - len(chunk))))
    return list(chunk)


def _write_codes(batch_id: int, chunk: list[str]) -> None:
    if connection.vendor == "postgresql":
        meta = Voucher._meta
        columns = ", ".join(
            meta.get_field(name).column for name in ("batch", "code", "status", "void_reason")
        )
        # COPY text format: tab-separated; the codes' alphabet needs no escaping, and the
        # empty last field is the empty void reason (NULL would be \N).
        rows = "".join(f"{batch_id}\t{code}\t{Voucher.Status.NEW}\t\n" for code in chunk)
        sql = f"COPY {meta.db_table} ({columns}) FROM STDIN"
        # wrap_database_errors: a unique violation in COPY is Django's IntegrityError, as
        # it is from execute().
        with (
            connection.cursor() as cursor,
            connection.wrap_database_errors,
            cursor.copy(sql) as copy,
        ):
            copy.write(rows)
        return
    Voucher.objects.bulk_create(
        [Voucher(batch_id=batch_id, code=code) for code in chunk], batch_size=2000
    )


@transaction.atomic
def batch_void(*, batch: VoucherBatch, actor, reason: str, now: datetime | None = None) -> int:
    """Void every unused code of ``batch``; returns how many. Redeemed codes stay redeemed
    (their credit was given). Idempotent: a voided batch is left as it is and 0 returned.

    Locks the batch row; the UPDATE then locks each unused code, so a redemption holding
    a code's lock finishes first (and its code is no longer unused) or sees it voided.
    """
    now = now or timezone.now()
    reason = (reason or "").strip()
    if not reason:
        raise VoidRefused(gettext("Say why the batch is voided."))
    locked = VoucherBatch.objects.select_for_update().get(pk=batch.pk)
    if locked.voided_at is not None:
        return 0
    voided = Voucher.objects.filter(batch=locked, status=Voucher.Status.NEW).update(
        status=Voucher.Status.VOIDED, voided_at=now, voided_by=actor, void_reason=reason[:500]
    )
    VoucherBatch.objects.filter(pk=locked.pk).update(
        voided_at=now, voided_by=actor, void_reason=reason[:500]
    )
    batch.voided_at, batch.voided_by, batch.void_reason = now, actor, reason[:500]
    return voided


@transaction.atomic
def voucher_void(*, voucher: Voucher, actor, reason: str, now: datetime | None = None) -> bool:
    """Void one unused code; returns False if it was voided already (idempotent).

    Locks the code's row. A redeemed code cannot be voided (``VoidRefused``): its credit
    was given; take it back in the ledger (a reversal) if it must be.
    """
    now = now or timezone.now()
    reason = (reason or "").strip()
    if not reason:
        raise VoidRefused(gettext("Say why the code is voided."))
    locked = Voucher.objects.select_for_update().get(pk=voucher.pk)
    if locked.status == Voucher.Status.VOIDED:
        return False
    if locked.status == Voucher.Status.REDEEMED:
        redemption = VoucherRedemption.objects.select_related("company").get(voucher=locked)
        raise VoidRefused(
            gettext(
                "Code %(code)s was registered by %(company)s on %(date)s; its credit was "
                "given, so it cannot be voided. Reverse the credit in the ledger instead."
            )
            % {
                "code": locked.masked_code,
                "company": redemption.company,
                "date": formats.date_format(
                    timezone.localtime(redemption.redeemed_at), "DATETIME_FORMAT"
                ),
            }
        )
    Voucher.objects.filter(pk=locked.pk).update(
        status=Voucher.Status.VOIDED, voided_at=now, voided_by=actor, void_reason=reason[:500]
    )
    voucher.status, voucher.voided_at = Voucher.Status.VOIDED, now
    voucher.voided_by, voucher.void_reason = actor, reason[:500]
    return True


# --- Redemption -----------------------------------------------------------------------------


def credit_expires_at(redeemed_at: datetime, lifetime_days: int, tzinfo: ZoneInfo) -> datetime:
    """When credit from a code registered at ``redeemed_at`` expires: ``lifetime_days``
    calendar days later in the company's billing time zone, at the same wall-clock time.

    Across a DST change that is an hour more or less than ``days × 24 h``. A wall-clock time
    that does not exist that day (in the spring gap) is read with the offset before the
    gap, i.e. it lands after the gap; one that occurs twice (autumn) is the first.
    """
    local = redeemed_at.astimezone(tzinfo)
    wall = local.replace(tzinfo=None) + timedelta(days=lifetime_days)
    return wall.replace(tzinfo=tzinfo, fold=0).astimezone(UTC)


def voucher_redeem(
    *,
    company: Company,
    code: str,
    actor=None,
    ip: str | None = None,
    now: datetime | None = None,
) -> VoucherRedemption:
    """Register the credit code ``code`` (as typed) for ``company``, at most once ever.

    Prepaid: a credit lot of the code's amount, source *voucher*, expiring
    ``credit_expires_at`` (lifetime days after ``now`` in the billing time zone), posted by
    ``credits_grant`` with the key ``voucher:<id>`` (a retry cannot credit twice). Postpaid:
    an ``InvoiceCredit`` for the next statement, and no ledger money yet.

    Locks the company row, then the code's row, and checks the code's status under that
    lock, so of simultaneous submits one redeems and the others see it redeemed; the
    one-to-one redemption row and the ledger key back that up in the database.
    Announces ``signals.voucher_redeemed`` after commit.

    Atomic. Raises (nothing written): ``VoucherCodeMalformed`` (no query at all),
    ``VoucherNotFound`` (no such code, or one another company registered: the same
    message), ``VoucherAlreadyRedeemed`` (by this company), ``VoucherVoided``,
    ``VoucherExpired`` (redeem-by passed), ``VoucherCurrencyMismatch``.

    No rate limit here: portal attempts go through ``voucher_redeem_attempt``.
    """
    now = now or timezone.now()
    # Outside the transaction: a typo costs no query at all, not even a savepoint.
    normalised = codes.normalise(code)
    with transaction.atomic():
        return _redeem(company=company, code=normalised, actor=actor, ip=ip, now=now)


def _redeem(*, company: Company, code: str, actor, ip, now: datetime) -> VoucherRedemption:
    # Looked up before any lock: a wrong code costs one index probe and locks nothing.
    found = list(Voucher.objects.filter(code=code).values_list("pk", flat=True))
    if not found:
        raise VoucherNotFound()
    (voucher_id,) = found
    locked_company = lock_company(company.pk)
    voucher = (
        Voucher.objects.select_for_update(of=("self",)).select_related("batch").get(pk=voucher_id)
    )
    tzinfo = locked_company.tzinfo
    if voucher.status == Voucher.Status.REDEEMED:
        earlier = VoucherRedemption.objects.only("company_id", "redeemed_at").get(voucher=voucher)
        if earlier.company_id == locked_company.pk:
            raise VoucherAlreadyRedeemed(earlier.redeemed_at, tzinfo)
        raise VoucherNotFound()
    if voucher.status == Voucher.Status.VOIDED:
        raise VoucherVoided()
    batch = voucher.batch
    if batch.is_past_redeem_by(now):
        raise VoucherExpired(batch.redeem_by, tzinfo)
    if batch.currency != locked_company.currency:
        raise VoucherCurrencyMismatch(batch.currency, locked_company.currency)

    description = f"Credit code {voucher.masked_code}"
    redemption = VoucherRedemption(
        voucher=voucher,
        company=locked_company,
        user=actor,
        ip=ip,
        redeemed_at=now,
        mode=locked_company.mode,
        amount=batch.amount,
    )
    if locked_company.mode == Company.Mode.PREPAID:
        grant = ledger.credits_grant(
            company=locked_company,
            amount=batch.amount,
            source=CreditLot.Source.VOUCHER,
            idempotency_key=f"voucher:{voucher.pk}",
            description=description,
            expires_at=credit_expires_at(now, batch.lifetime_days, tzinfo),
            cause=voucher,
            metadata={
                "voucher": voucher.pk,
                "batch": batch.pk,
                "user": getattr(actor, "pk", None),
                "ip": ip,
            },
            now=now,
        )
        redemption.transaction = grant.transaction
    redemption.save()
    if locked_company.mode == Company.Mode.POSTPAID:
        InvoiceCredit.objects.create(
            company=locked_company,
            amount=batch.amount,
            description=description,
            redemption=redemption,
            created_at=now,
        )
    Voucher.objects.filter(pk=voucher.pk).update(status=Voucher.Status.REDEEMED)
    voucher.status = Voucher.Status.REDEEMED
    transaction.on_commit(
        lambda: signals.voucher_redeemed.send(sender=VoucherRedemption, redemption=redemption)
    )
    return redemption


def voucher_redeem_attempt(
    *, company: Company, code: str, user, ip: str | None, now: datetime | None = None
) -> VoucherRedemption:
    """A portal user's attempt: ``voucher_redeem`` behind the brute-force limit.

    While the user, the company or the IP address is locked (``vouchers.ratelimit``),
    raises ``RedemptionLocked`` and looks nothing up. A refusal that looked a code up
    counts as a failure; when it trips the limit, the raised error carries
    ``locked_until``. Not atomic itself (the redemption is): call it outside a database
    transaction, so that a failure counted in the database cache is not rolled back with
    the refused redemption.
    """
    now = now or timezone.now()
    limiter = AttemptLimiter(user_id=user.pk, company_id=company.pk, ip=ip)
    locked_until = limiter.locked_until(now)
    if locked_until is not None:
        raise RedemptionLocked(locked_until, company.tzinfo)
    try:
        return voucher_redeem(company=company, code=code, actor=user, ip=ip, now=now)
    except VoucherError as error:
        if error.counts_as_failure:
            error.locked_until = limiter.record_failure(now)
        raise
