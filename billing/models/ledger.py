"""The double-entry ledger and credit lots.

Sign convention: every posting amount is *credit-positive* from the point of view of the
account holder. A customer account's balance is what the company holds: positive is credit
it can spend, negative is what it owes. A purchase of ¥1,000 posts +1,000 to the customer
and -1,000 to cash; a ¥100 voice charge posts -100 to the customer and +100 to voice
revenue. The postings of a transaction sum to zero in each currency.

Only ``billing.services.ledger`` writes these tables (and the ``balance`` column). Ledger
transactions and postings are append-only: on PostgreSQL, triggers refuse UPDATE and
DELETE and a deferred constraint trigger refuses, at commit, a transaction whose postings
do not balance (migration 0002).
"""

from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy as _
from djmoney.models.fields import MoneyField

from accounts.models import Company

from ..bulk import LoadedWithoutInit
from ..money import MONEY_DECIMAL_PLACES, MONEY_MAX_DIGITS


def money_field(verbose_name, **kwargs) -> MoneyField:
    return MoneyField(
        verbose_name,
        max_digits=MONEY_MAX_DIGITS,
        decimal_places=MONEY_DECIMAL_PLACES,
        default_currency=None,
        **kwargs,
    )


class LedgerAccount(LoadedWithoutInit, models.Model):
    """A place money sits: one customer account per company, system accounts per currency."""

    class Kind(models.TextChoices):
        CUSTOMER = "customer", _("Customer balance")
        REVENUE = "revenue", _("Revenue")
        TAX = "tax", _("Tax payable")
        CASH = "cash", _("Cash and receivables")
        PROMOTIONAL = "promotional", _("Promotional credit")
        VOUCHER = "voucher", _("Voucher clearing")
        BREAKAGE = "breakage", _("Expired credit (breakage)")
        ADJUSTMENT = "adjustment", _("Adjustments")
        ROUNDING = "rounding", _("Rounding")

    kind = models.CharField(_("kind"), max_length=20, choices=Kind)
    code = models.CharField(
        _("code"), max_length=64, help_text=_("e.g. customer, revenue:voice, cash, breakage")
    )
    company = models.ForeignKey(
        Company, on_delete=models.PROTECT, null=True, blank=True, related_name="ledger_accounts"
    )
    currency = models.CharField(_("currency"), max_length=3)
    # Kept for customer accounts only, under the company row lock; system accounts are
    # summed from their postings when needed (a stored total would be one hot row).
    balance = money_field(_("balance"))

    class Meta:
        verbose_name = _("ledger account")
        verbose_name_plural = _("ledger accounts")
        ordering = ["kind", "code", "currency"]
        constraints = [
            models.UniqueConstraint(
                fields=["company"],
                condition=Q(kind="customer"),
                name="ledger_account_one_customer_account_per_company",
            ),
            models.UniqueConstraint(
                fields=["code", "currency"],
                condition=Q(company__isnull=True),
                name="ledger_account_unique_system_code",
            ),
            models.CheckConstraint(
                name="ledger_account_customer_has_company",
                condition=(Q(kind="customer") & Q(company__isnull=False))
                | (~Q(kind="customer") & Q(company__isnull=True)),
            ),
            models.CheckConstraint(
                name="ledger_account_balance_in_account_currency",
                condition=Q(balance_currency=F("currency")),
            ),
        ]

    def __str__(self) -> str:
        if self.company_id:
            return f"{self.code} {self.company.account_code} ({self.currency})"
        return f"{self.code} ({self.currency})"


class LedgerTransaction(LoadedWithoutInit, models.Model):
    """One money movement: two or more postings that sum to zero per currency."""

    class Kind(models.TextChoices):
        USAGE = "usage", _("Usage")
        RECURRING_FEE = "recurring_fee", _("Recurring fee")
        ONE_TIME_FEE = "one_time_fee", _("One-time fee")
        PURCHASE = "purchase", _("Credit purchase")
        VOUCHER = "voucher", _("Voucher")
        GRANT = "grant", _("Credit grant")
        TRIAL = "trial", _("Trial credit")
        PAYMENT = "payment", _("Payment")
        ADJUSTMENT = "adjustment", _("Adjustment")
        EXPIRY = "expiry", _("Credit expiry")
        REFUND = "refund", _("Refund")
        CREDIT_NOTE = "credit_note", _("Credit note")
        ROUNDING = "rounding", _("Rounding")
        REVERSAL = "reversal", _("Reversal")

    idempotency_key = models.CharField(_("idempotency key"), max_length=200, unique=True)
    # A hash of what was asked for, so a reused key with a different request is an error.
    fingerprint = models.CharField(_("request fingerprint"), max_length=64)
    kind = models.CharField(_("kind"), max_length=20, choices=Kind)
    # Both foreign keys are served by the composite indexes of Meta (each leads with it);
    # an index of their own would only cost every posting one more index entry.
    company = models.ForeignKey(
        Company,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="ledger_transactions",
        verbose_name=_("company"),
        db_index=False,
    )
    description = models.CharField(_("description"), max_length=500)
    posted_at = models.DateTimeField(_("posted at"))
    effective_at = models.DateTimeField(
        _("effective at"), help_text=_("When what was charged or credited happened.")
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("staff user"),
    )
    cause_type = models.ForeignKey(
        ContentType,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
    )
    cause_id = models.PositiveBigIntegerField(null=True, blank=True)
    cause = GenericForeignKey("cause_type", "cause_id")
    reverses = models.OneToOneField(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="reversed_by",
        verbose_name=_("reverses"),
    )
    # What a prepaid charge could not take because the credit ran out (not money moved).
    shortfall = money_field(_("shortfall"), null=True, blank=True)
    # The company's balance right after this transaction, for statements and history.
    balance_after = money_field(_("balance after"), null=True, blank=True)
    metadata = models.JSONField(_("details"), default=dict, blank=True)

    class Meta:
        verbose_name = _("ledger transaction")
        verbose_name_plural = _("ledger transactions")
        ordering = ["-posted_at", "-id"]
        indexes = [
            models.Index(fields=["company", "posted_at", "id"], name="ledger_tx_company_posted"),
            # A company's history, in the order its balance changed (``company_transactions``).
            models.Index(fields=["company", "id"], name="ledger_tx_company_id"),
            models.Index(fields=["cause_type", "cause_id"], name="ledger_tx_cause"),
        ]
        permissions = [
            ("adjust_balance", _("Can adjust a company balance")),
            ("grant_credits", _("Can grant credits")),
            ("reverse_transaction", _("Can reverse a ledger transaction")),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.get_kind_display()}: {self.description}"


class CreditLot(LoadedWithoutInit, models.Model):
    """One grant of credit, spent soonest-expiry first and expired explicitly.

    ``remaining`` always equals the sum of the customer postings that name this lot
    (``manage.py reconcile`` checks it).
    """

    class Source(models.TextChoices):
        TRIAL = "trial", _("Trial")
        PURCHASE = "purchase", _("Purchase")
        VOUCHER = "voucher", _("Voucher")
        GRANT = "grant", _("Operator grant")
        ADJUSTMENT = "adjustment", _("Adjustment")

    company = models.ForeignKey(Company, on_delete=models.PROTECT, related_name="credit_lots")
    source = models.CharField(_("source"), max_length=20, choices=Source)
    amount = money_field(_("amount"))
    remaining = money_field(_("remaining"))
    granted_at = models.DateTimeField(_("granted at"))
    expires_at = models.DateTimeField(_("expires at"))
    grant_transaction = models.OneToOneField(
        LedgerTransaction, on_delete=models.PROTECT, related_name="created_lot"
    )

    class Meta:
        verbose_name = _("credit lot")
        verbose_name_plural = _("credit lots")
        ordering = ["expires_at", "id"]
        indexes = [
            models.Index(
                fields=["company", "expires_at", "id"],
                condition=Q(remaining__gt=0),
                name="credit_lot_spendable",
            ),
        ]
        constraints = [
            models.CheckConstraint(name="credit_lot_amount_positive", condition=Q(amount__gt=0)),
            models.CheckConstraint(
                name="credit_lot_remaining_within_amount",
                condition=Q(remaining__gte=0) & Q(remaining__lte=F("amount")),
            ),
            models.CheckConstraint(
                name="credit_lot_expires_after_grant", condition=Q(expires_at__gt=F("granted_at"))
            ),
            models.CheckConstraint(
                name="credit_lot_one_currency",
                condition=Q(remaining_currency=F("amount_currency")),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_source_display()} {self.amount} until {self.expires_at:%Y-%m-%d}"


class LedgerPosting(LoadedWithoutInit, models.Model):
    """One leg of a transaction: an amount on one account, optionally from or into a lot."""

    transaction = models.ForeignKey(
        LedgerTransaction, on_delete=models.PROTECT, related_name="postings"
    )
    account = models.ForeignKey(LedgerAccount, on_delete=models.PROTECT, related_name="postings")
    amount = money_field(_("amount"))
    lot = models.ForeignKey(
        CreditLot, on_delete=models.PROTECT, null=True, blank=True, related_name="postings"
    )

    class Meta:
        verbose_name = _("ledger posting")
        verbose_name_plural = _("ledger postings")
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.account.code} {self.amount}"
