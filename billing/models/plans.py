"""Plans with bundles of included usage, and the companies' subscriptions to them."""

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.models import Company

from ..bulk import LoadedWithoutInit
from .ledger import money_field
from .tariffs import SERVICE_CHOICES

QUANTITY = {"max_digits": 24, "decimal_places": 6}


class Plan(LoadedWithoutInit, models.Model):
    class FeeStart(models.TextChoices):
        ORDER = "order", _("When ordered")
        FIRST_USE = "first_use", _("From first use")

    name = models.CharField(_("name"), max_length=100, unique=True)
    currency = models.CharField(
        _("currency"),
        max_length=3,
        choices=settings.CURRENCY_CHOICES,
        default=settings.DEFAULT_CURRENCY,
    )
    monthly_fee = money_field(_("monthly fee"))
    activation_fee = money_field(_("activation fee"), null=True, blank=True)
    is_paygo = models.BooleanField(
        _("pay as you go"),
        default=False,
        help_text=_("Usage (e.g. data per MB by country) is charged at the tariff; no bundles."),
    )
    fee_starts = models.CharField(
        _("monthly fee starts"), max_length=10, choices=FeeStart, default=FeeStart.ORDER
    )
    description = models.TextField(_("description"), blank=True)
    is_active = models.BooleanField(_("can be ordered"), default=True)

    class Meta:
        verbose_name = _("plan")
        verbose_name_plural = _("plans")
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                name="plan_fees_in_plan_currency",
                condition=Q(monthly_fee_currency=F("currency"))
                & (Q(activation_fee__isnull=True) | Q(activation_fee_currency=F("currency"))),
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Bundle(LoadedWithoutInit, models.Model):
    """Usage included in a plan each period: ``included_quantity`` of ``service`` (in the
    unit the platform reports: seconds, messages, pages, calls, bytes) to ``destinations``
    (number prefixes or countries, separated by spaces or commas; blank: everywhere)."""

    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="bundles")
    name = models.CharField(_("name"), max_length=100)
    service = models.CharField(_("service"), max_length=8, choices=SERVICE_CHOICES)
    destinations = models.CharField(_("destinations"), max_length=500, blank=True)
    included_quantity = models.DecimalField(_("included per period"), **QUANTITY)

    class Meta:
        verbose_name = _("bundle")
        verbose_name_plural = _("bundles")
        ordering = ["plan", "service", "name"]
        constraints = [
            models.CheckConstraint(
                name="bundle_included_positive", condition=Q(included_quantity__gt=0)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.plan.name}: {self.name}"

    @property
    def destination_list(self) -> list[str]:
        return destination_list(self.destinations)

    def covers(self, destination: str) -> bool:
        """True if usage to ``destination`` (digits or a country) draws from this bundle."""
        return destinations_cover(self.destinations, destination)


def destination_list(destinations: str) -> list[str]:
    """A bundle's destinations field as prefixes/countries (spaces or commas between; a
    number's leading + is not part of the prefix that usage is matched against)."""
    return [d.removeprefix("+") for d in destinations.replace(",", " ").upper().split() if d]


def destinations_cover(destinations: str, destination: str | None) -> bool:
    """True if usage to ``destination`` draws from a bundle with ``destinations`` (blank:
    everywhere)."""
    wanted = destination_list(destinations)
    return not wanted or (destination or "").upper().startswith(tuple(wanted))


class Subscription(LoadedWithoutInit, models.Model):
    """A plan ordered by a company; its bundles are shared by all the company's subaccounts."""

    company = models.ForeignKey(Company, on_delete=models.PROTECT, related_name="subscriptions")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="subscriptions")
    started_at = models.DateTimeField(
        _("started at"), help_text=_("Monthly periods start on this day of the month.")
    )
    ended_at = models.DateTimeField(_("ended at"), null=True, blank=True)
    # When the monthly fee's periods start: the order, or (PAYGO from first use) the first
    # usage; None until then.
    fee_anchor_at = models.DateTimeField(_("monthly fee from"), null=True, blank=True)
    next_charge_at = models.DateTimeField(_("next charge"), null=True, blank=True, db_index=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        verbose_name = _("subscription")
        verbose_name_plural = _("subscriptions")
        ordering = ["company", "started_at", "id"]
        constraints = [
            models.CheckConstraint(
                name="subscription_ends_after_it_starts",
                condition=Q(ended_at__isnull=True) | Q(ended_at__gt=F("started_at")),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.company.account_code}: {self.plan.name}"

    def is_live(self, at) -> bool:
        return self.started_at <= at and (self.ended_at is None or at < self.ended_at)


class BundleCounter(LoadedWithoutInit, models.Model):
    """How much of a bundle a subscription used in one period (reset by starting a new row
    for the next period). Written only by the usage service, under the company row lock."""

    subscription = models.ForeignKey(
        Subscription, on_delete=models.PROTECT, related_name="bundle_counters"
    )
    bundle = models.ForeignKey(Bundle, on_delete=models.PROTECT, related_name="counters")
    period_start = models.DateTimeField(_("period start"))
    period_end = models.DateTimeField(_("period end"))
    used = models.DecimalField(_("used"), default=Decimal(0), **QUANTITY)

    class Meta:
        verbose_name = _("bundle counter")
        verbose_name_plural = _("bundle counters")
        ordering = ["-period_start"]
        constraints = [
            models.UniqueConstraint(
                fields=["subscription", "bundle", "period_start"], name="bundle_counter_per_period"
            ),
            models.CheckConstraint(
                name="bundle_counter_used_not_negative", condition=Q(used__gte=0)
            ),
            models.CheckConstraint(
                name="bundle_counter_period_order", condition=Q(period_end__gt=F("period_start"))
            ),
        ]

    def __str__(self) -> str:
        return f"{self.bundle} {self.period_start:%Y-%m-%d}: {self.used}"
