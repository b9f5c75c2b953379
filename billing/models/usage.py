"""Usage detail records (CDRs) and the API keys the platform reports them with."""

import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.models import Company, Subaccount

from ..bulk import LoadedWithoutInit
from .ledger import LedgerTransaction, money_field
from .plans import QUANTITY, BundleCounter
from .tariffs import RATE_DECIMAL_PLACES

API_KEY_PREFIX = "tg_"


def api_key_hash(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def api_key_generate() -> str:
    """A new secret key: 256 bits from ``secrets``, shown once and stored only as a hash."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


class ApiKey(models.Model):
    name = models.CharField(_("name"), max_length=100)
    prefix = models.CharField(
        _("prefix"), max_length=12, help_text=_("The first characters, to recognise the key.")
    )
    key_hash = models.CharField(_("SHA-256 of the key"), max_length=64, unique=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True)

    class Meta:
        verbose_name = _("API key")
        verbose_name_plural = _("API keys")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class UsageRecord(LoadedWithoutInit, models.Model):
    """One reported usage event as received, rated and charged (or why it was rejected).

    The rating explanation is copied onto the record (matched destination, unit price,
    increments, bundle units) so that it stays true after the tariff changes.
    """

    class Status(models.TextChoices):
        CHARGED = "charged", _("Charged")
        REJECTED = "rejected", _("Rejected")

    # Indexes are what usage ingestion pays for on every row, so each FK below has one only
    # where a query needs it (see Meta): api_key and company lead a composite index; nothing
    # looks records up by transaction or counter (neither is ever deleted).
    # Foreign-key checks are paid on every row too, at COMMIT while the companies are
    # locked. The API key, bundle counter and ledger transaction have none
    # (``db_constraint=False``): the database never deletes those rows (migrations 0002 and
    # 0010), so a record cannot lose them, and ``manage.py reconcile`` proves that each
    # record points at rows that exist. The company and subaccount, which staff can
    # delete, keep theirs.
    api_key = models.ForeignKey(
        ApiKey,
        on_delete=models.PROTECT,
        related_name="usage_records",
        db_index=False,
        db_constraint=False,
    )
    event_id = models.CharField(_("event id"), max_length=64)
    account_code = models.CharField(_("account"), max_length=64)
    company = models.ForeignKey(
        Company,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="usage_records",
        db_index=False,
    )
    subaccount = models.ForeignKey(
        Subaccount,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="usage_records",
        db_index=False,
    )
    service = models.CharField(_("service"), max_length=16)
    destination = models.CharField(_("destination"), max_length=32, blank=True)
    quantity = models.DecimalField(_("quantity"), **QUANTITY)
    occurred_at = models.DateTimeField(_("occurred at"))
    received_at = models.DateTimeField(_("received at"))
    status = models.CharField(_("status"), max_length=10, choices=Status)
    error_code = models.CharField(_("error code"), max_length=40, blank=True)
    error_message = models.CharField(_("error"), max_length=300, blank=True)
    # The explanation of the price.
    matched_destination = models.CharField(_("matched destination"), max_length=16, blank=True)
    rate_id = models.BigIntegerField(_("rate row"), null=True, blank=True)
    unit_price = models.DecimalField(
        _("unit price"), max_digits=19, decimal_places=RATE_DECIMAL_PLACES, null=True, blank=True
    )
    connection_fee = models.DecimalField(
        _("connection fee"),
        max_digits=19,
        decimal_places=RATE_DECIMAL_PLACES,
        null=True,
        blank=True,
    )
    increments = models.CharField(_("increments"), max_length=20, blank=True)
    billed_quantity = models.DecimalField(_("billed quantity"), null=True, blank=True, **QUANTITY)
    bundle_quantity = models.DecimalField(_("from bundle"), default=0, **QUANTITY)
    bundle_counter = models.ForeignKey(
        BundleCounter,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    amount = money_field(_("charge"), null=True, blank=True)
    shortfall = money_field(_("shortfall"), null=True, blank=True)
    balance_after = money_field(_("balance after"), null=True, blank=True)
    transaction = models.ForeignKey(
        LedgerTransaction,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="usage_records",
        db_index=False,
        db_constraint=False,
    )

    class Meta:
        verbose_name = _("usage record")
        verbose_name_plural = _("usage records")
        ordering = ["-occurred_at", "-id"]
        indexes = [
            models.Index(fields=["company", "occurred_at"], name="usage_company_time"),
            models.Index(fields=["occurred_at"], name="usage_time"),
            # A statement's detail records: a company's charged records received in its
            # window, as its usage transactions are (``invoicing.statement_content``).
            models.Index(
                fields=["company", "received_at"],
                condition=models.Q(status="charged"),
                name="usage_company_received",
            ),
            # A subaccount's records (its deletion is refused while it has any); most
            # records have none, and those are left out.
            models.Index(
                fields=["subaccount"],
                condition=models.Q(subaccount__isnull=False),
                name="usage_subaccount",
            ),
            # The admin's search for an account code no company has (events rejected as
            # unknown_account); other records stay out of it.
            models.Index(
                fields=["account_code"],
                condition=models.Q(company__isnull=True),
                name="usage_unknown_account",
            ),
        ]
        constraints = [
            # An event id is handled once per key, whatever the outcome: a retry is harmless.
            models.UniqueConstraint(
                fields=["api_key", "event_id"], name="usage_event_once_per_key"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_id} {self.service} {self.quantity}"
