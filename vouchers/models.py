"""Voucher batches, their one-time credit codes, redemptions, and credits waiting for a
postpaid company's next invoice.

Only ``vouchers.services`` writes these tables. A code's status is ``new``, ``redeemed``
or ``voided``; "expired" is not stored but derived: a new code whose batch's redeem-by
instant has passed (``Voucher.state``), so no job has to run for counts to be right.
"""

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy as _

from accounts.models import Company
from billing.models import LedgerTransaction, money_field

from . import codes

MAX_BATCH_SIZE = 100_000
MAX_LIFETIME_DAYS = 3650


class VoucherBatch(models.Model):
    """Codes generated together for one reseller or promotion, all of the same value."""

    label = models.CharField(
        _("label"), max_length=200, help_text=_("What staff call this batch, e.g. the campaign.")
    )
    reseller = models.CharField(
        _("reseller"), max_length=200, blank=True, help_text=_("Who sells or hands out the codes.")
    )
    notes = models.TextField(_("notes"), blank=True)
    amount = money_field(_("amount"), help_text=_("The credit each code gives."))
    count = models.PositiveIntegerField(_("number of codes"))
    lifetime_days = models.PositiveIntegerField(
        _("credit lifetime (days)"),
        help_text=_(
            "Credit from a code expires this many calendar days after it is registered, "
            "in the company's billing time zone."
        ),
    )
    redeem_by = models.DateTimeField(
        _("redeem by"),
        null=True,
        blank=True,
        help_text=_("Codes can be registered up to this moment; empty: no deadline."),
    )
    created_at = models.DateTimeField(_("created at"))
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("created by"),
    )
    voided_at = models.DateTimeField(_("voided at"), null=True, blank=True)
    voided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("voided by"),
    )
    void_reason = models.CharField(_("reason for voiding"), max_length=500, blank=True)

    class Meta:
        verbose_name = _("voucher batch")
        verbose_name_plural = _("voucher batches")
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                name="voucher_batch_amount_positive",
                condition=Q(amount__gt=0),
                violation_error_message=_("The amount must be more than zero."),
            ),
            models.CheckConstraint(
                name="voucher_batch_count_in_range",
                condition=Q(count__gte=1) & Q(count__lte=MAX_BATCH_SIZE),
            ),
            models.CheckConstraint(
                name="voucher_batch_lifetime_in_range",
                condition=Q(lifetime_days__gte=1) & Q(lifetime_days__lte=MAX_LIFETIME_DAYS),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.label} ({self.amount} × {self.count})"

    @property
    def currency(self) -> str:
        return str(self.amount.currency)

    def is_past_redeem_by(self, now) -> bool:
        return self.redeem_by is not None and now > self.redeem_by


class Voucher(models.Model):
    """One credit code. ``code`` is the normalised form (``vouchers.codes``), unique, so a
    lookup is one exact match on an index. Codes are stored in clear so that a batch can be
    exported for its reseller; seeing them needs ``vouchers.view_voucher_codes``."""

    class Status(models.TextChoices):
        NEW = "new", _("New")
        REDEEMED = "redeemed", _("Redeemed")
        VOIDED = "voided", _("Voided")

    # The derived state shown to staff: a status, or "expired" for a new code past its
    # batch's redeem-by instant.
    EXPIRED = "expired"
    STATE_LABELS = {**dict(Status.choices), EXPIRED: _("Expired")}

    batch = models.ForeignKey(
        VoucherBatch, on_delete=models.PROTECT, related_name="vouchers", verbose_name=_("batch")
    )
    code = models.CharField(_("code"), max_length=codes.CODE_LENGTH, unique=True)
    status = models.CharField(_("status"), max_length=10, choices=Status, default=Status.NEW)
    voided_at = models.DateTimeField(_("voided at"), null=True, blank=True)
    voided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("voided by"),
    )
    void_reason = models.CharField(_("reason for voiding"), max_length=500, blank=True)

    class Meta:
        verbose_name = _("voucher code")
        verbose_name_plural = _("voucher codes")
        ordering = ["id"]
        indexes = [models.Index(fields=["batch", "status"], name="voucher_batch_status")]
        permissions = [("view_voucher_codes", _("Can see and export voucher codes"))]
        constraints = [
            models.CheckConstraint(
                name="voucher_voided_has_voided_at",
                condition=(Q(status="voided") & Q(voided_at__isnull=False))
                | (~Q(status="voided") & Q(voided_at__isnull=True)),
            ),
        ]

    def __str__(self) -> str:
        return codes.mask_code(self.code)

    @property
    def formatted_code(self) -> str:
        return codes.format_code(self.code)

    @property
    def masked_code(self) -> str:
        return codes.mask_code(self.code)

    def state(self, now) -> str:
        if self.status == self.Status.NEW and self.batch.is_past_redeem_by(now):
            return self.EXPIRED
        return self.status

    def state_label(self, now) -> str:
        return self.STATE_LABELS[self.state(now)]


class VoucherRedemption(models.Model):
    """A code registered by a company: who, when, from where, and what it gave.

    One per voucher (the one-to-one is the database's guarantee of "at most once, ever").
    Prepaid: ``transaction`` is the ledger grant that created the credit lot. Postpaid:
    there is no ledger money yet; the credit waits as an ``InvoiceCredit``.
    """

    voucher = models.OneToOneField(
        Voucher, on_delete=models.PROTECT, related_name="redemption", verbose_name=_("code")
    )
    company = models.ForeignKey(
        Company,
        on_delete=models.PROTECT,
        related_name="voucher_redemptions",
        verbose_name=_("company"),
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("registered by"),
    )
    ip = models.GenericIPAddressField(_("IP address"), null=True, blank=True)
    redeemed_at = models.DateTimeField(_("registered at"))
    mode = models.CharField(_("mode"), max_length=10, choices=Company.Mode)
    amount = money_field(_("amount"))
    transaction = models.OneToOneField(
        LedgerTransaction,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="voucher_redemption",
        verbose_name=_("ledger transaction"),
    )

    class Meta:
        verbose_name = _("voucher redemption")
        verbose_name_plural = _("voucher redemptions")
        ordering = ["-redeemed_at", "-id"]
        indexes = [
            models.Index(fields=["company", "redeemed_at"], name="voucher_redemption_company"),
            models.Index(fields=["redeemed_at"], name="voucher_redemption_at"),
        ]
        constraints = [
            models.CheckConstraint(
                name="voucher_redemption_prepaid_has_transaction",
                condition=Q(mode="postpaid") | Q(transaction__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.voucher} → {self.company.account_code}"


class InvoiceCredit(models.Model):
    """Credit a postpaid company will get on its next statement, before tax.

    Recorded without ledger money so that the ledger keeps saying exactly what is owed.
    The statement run (issue #7) applies it: with the company row locked (the lock order:
    company, then its pending credits with ``select_for_update``), it posts the credit as a
    ledger transaction (counter account: voucher clearing) on the statement, before tax,
    and sets ``applied_at`` and ``applied_transaction``. Until then the portal's Credits
    page shows it as pending credit. ``pending`` is the partial index that run reads.
    """

    company = models.ForeignKey(
        Company, on_delete=models.PROTECT, related_name="invoice_credits", verbose_name=_("company")
    )
    amount = money_field(_("amount"))
    description = models.CharField(_("description"), max_length=500)
    redemption = models.OneToOneField(
        VoucherRedemption,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="invoice_credit",
        verbose_name=_("voucher redemption"),
    )
    created_at = models.DateTimeField(_("created at"))
    applied_at = models.DateTimeField(_("applied at"), null=True, blank=True)
    applied_transaction = models.OneToOneField(
        LedgerTransaction,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="applied_invoice_credit",
        verbose_name=_("applied by transaction"),
    )

    class Meta:
        verbose_name = _("invoice credit")
        verbose_name_plural = _("invoice credits")
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(
                fields=["company", "created_at"],
                condition=Q(applied_at__isnull=True),
                name="invoice_credit_pending",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                name="invoice_credit_amount_positive", condition=Q(amount__gt=0)
            ),
            models.CheckConstraint(
                name="invoice_credit_applied_has_instant",
                condition=Q(applied_transaction__isnull=True) | Q(applied_at__isnull=False),
            ),
            models.CheckConstraint(
                name="invoice_credit_applied_after_created",
                condition=Q(applied_at__isnull=True) | Q(applied_at__gte=F("created_at")),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.company.account_code}: {self.amount} ({self.description})"

    @property
    def is_pending(self) -> bool:
        return self.applied_at is None
