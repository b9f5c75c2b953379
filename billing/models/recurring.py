"""What a company is charged for on a schedule, and the record of each charge.

Every recurring item keeps ``next_charge_at``: the start of its first period not charged
yet (None when it has stopped). A run charges every period whose start has come, in order,
and moves the pointer on; a run with nothing due is one indexed query. Exactly-once does
not rest on the pointer: ``RecurringCharge`` is unique per (item, period) and its ledger
transaction has the same key.
"""

from django.db import models
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.models import Company

from .ledger import LedgerTransaction, money_field
from .plans import QUANTITY, Subscription


class PhoneNumber(models.Model):
    """A DID assigned to a company, charged monthly from its assignment until released."""

    company = models.ForeignKey(Company, on_delete=models.PROTECT, related_name="phone_numbers")
    number = models.CharField(
        _("number"), max_length=32, help_text=_("As customers read it, e.g. +81 50 1234 5678.")
    )
    monthly_price = money_field(_("monthly price"))
    assigned_at = models.DateTimeField(_("assigned at"))
    released_at = models.DateTimeField(_("released at"), null=True, blank=True)
    next_charge_at = models.DateTimeField(_("next charge"), null=True, blank=True, db_index=True)

    class Meta:
        verbose_name = _("phone number (DID)")
        verbose_name_plural = _("phone numbers (DIDs)")
        ordering = ["company", "number"]
        constraints = [
            models.UniqueConstraint(
                fields=["number"],
                condition=Q(released_at__isnull=True),
                name="phone_number_assigned_once",
            ),
            models.CheckConstraint(
                name="phone_number_released_after_assigned",
                condition=Q(released_at__isnull=True) | Q(released_at__gt=F("assigned_at")),
            ),
        ]

    def __str__(self) -> str:
        return self.number


class SeatFee(models.Model):
    """A price per active subaccount per month, counted at each charge instant."""

    company = models.ForeignKey(Company, on_delete=models.PROTECT, related_name="seat_fees")
    price_per_seat = money_field(_("price per seat"))
    started_at = models.DateTimeField(_("started at"))
    ended_at = models.DateTimeField(_("ended at"), null=True, blank=True)
    next_charge_at = models.DateTimeField(_("next charge"), null=True, blank=True, db_index=True)

    class Meta:
        verbose_name = _("seat fee")
        verbose_name_plural = _("seat fees")
        constraints = [
            models.CheckConstraint(
                name="seat_fee_ends_after_it_starts",
                condition=Q(ended_at__isnull=True) | Q(ended_at__gt=F("started_at")),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.company.account_code}: {self.price_per_seat} per seat"


class ServiceFee(models.Model):
    class Period(models.TextChoices):
        MONTHLY = "monthly", _("Monthly")
        WEEKLY = "weekly", _("Weekly")

    company = models.ForeignKey(Company, on_delete=models.PROTECT, related_name="service_fees")
    name = models.CharField(_("name"), max_length=100)
    amount = money_field(_("amount"))
    period = models.CharField(_("period"), max_length=10, choices=Period, default=Period.MONTHLY)
    started_at = models.DateTimeField(_("started at"))
    ended_at = models.DateTimeField(_("ended at"), null=True, blank=True)
    next_charge_at = models.DateTimeField(_("next charge"), null=True, blank=True, db_index=True)

    class Meta:
        verbose_name = _("service fee")
        verbose_name_plural = _("service fees")
        constraints = [
            models.CheckConstraint(
                name="service_fee_ends_after_it_starts",
                condition=Q(ended_at__isnull=True) | Q(ended_at__gt=F("started_at")),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.company.account_code}: {self.name}"


class RecurringCharge(models.Model):
    """One charge of one item for one period (or the one-time activation fee)."""

    class Item(models.TextChoices):
        PLAN_FEE = "plan_fee", _("Plan monthly fee")
        ACTIVATION = "activation", _("Activation fee")
        DID = "did", _("Phone number (DID)")
        SEATS = "seats", _("Seats")
        SERVICE_FEE = "service_fee", _("Service fee")

    company = models.ForeignKey(Company, on_delete=models.PROTECT, related_name="recurring_charges")
    item = models.CharField(_("item"), max_length=20, choices=Item)
    # "<item>:<id>", e.g. "did:42": with period_index, what makes a charge unique.
    item_key = models.CharField(_("item key"), max_length=40)
    period_index = models.IntegerField(_("period number"))
    period_start = models.DateTimeField(_("period start"))
    period_end = models.DateTimeField(_("period end"))
    subscription = models.ForeignKey(
        Subscription, on_delete=models.PROTECT, null=True, blank=True, related_name="charges"
    )
    phone_number = models.ForeignKey(
        PhoneNumber, on_delete=models.PROTECT, null=True, blank=True, related_name="charges"
    )
    seat_fee = models.ForeignKey(
        SeatFee, on_delete=models.PROTECT, null=True, blank=True, related_name="charges"
    )
    service_fee = models.ForeignKey(
        ServiceFee, on_delete=models.PROTECT, null=True, blank=True, related_name="charges"
    )
    quantity = models.DecimalField(_("quantity"), default=1, **QUANTITY)
    amount = money_field(_("amount"))
    description = models.CharField(_("description"), max_length=300)
    # None when nothing was owed (e.g. no active seats that month).
    transaction = models.OneToOneField(
        LedgerTransaction,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="recurring_charge",
    )
    created_at = models.DateTimeField(_("charged at"), default=timezone.now)

    class Meta:
        verbose_name = _("recurring charge")
        verbose_name_plural = _("recurring charges")
        ordering = ["-period_start", "item_key"]
        permissions = [("run_recurring", _("Can run recurring charges now"))]
        constraints = [
            models.UniqueConstraint(
                fields=["item_key", "period_index"], name="recurring_charge_once_per_period"
            ),
        ]
        indexes = [
            models.Index(fields=["company", "period_start"], name="recurring_company_period")
        ]

    def __str__(self) -> str:
        return self.description
