"""Tariffs: price lists with rates by service and destination, in force between instants."""

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from ..bulk import LoadedWithoutInit
from ..rating import SERVICES

SERVICE_CHOICES = [(service, service) for service in SERVICES]
RATE_DECIMAL_PLACES = 6


class Tariff(models.Model):
    name = models.CharField(_("name"), max_length=100, unique=True)
    currency = models.CharField(
        _("currency"),
        max_length=3,
        choices=settings.CURRENCY_CHOICES,
        default=settings.DEFAULT_CURRENCY,
    )
    description = models.TextField(_("description"), blank=True)
    # Bumped by every change of the rates (import, edit): rating caches its prefix index by
    # (tariff id, version), so a change is seen by the next request of every process.
    version = models.PositiveIntegerField(_("version"), default=1)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        verbose_name = _("tariff")
        verbose_name_plural = _("tariffs")
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.currency})"


class Rate(LoadedWithoutInit, models.Model):
    """The price of one service to one destination, in force in ``[effective_from,
    effective_until)``.

    ``destination`` is a number prefix (digits of the E.164 number, e.g. ``8190`` for
    Japanese mobiles) for voice, SMS and fax; an ISO 3166 alpha-2 country for data; empty
    for the service's default rate. The price is per unit of the service (see
    ``billing.rating``): per minute for voice, per message, page or call, per MB of data,
    per GB of disk.
    """

    tariff = models.ForeignKey(Tariff, on_delete=models.CASCADE, related_name="rates")
    service = models.CharField(_("service"), max_length=8, choices=SERVICE_CHOICES)
    destination = models.CharField(_("destination"), max_length=16, blank=True)
    price = models.DecimalField(
        _("price per unit"), max_digits=19, decimal_places=RATE_DECIMAL_PLACES
    )
    connection_fee = models.DecimalField(
        _("connection fee"), max_digits=19, decimal_places=RATE_DECIMAL_PLACES, default=0
    )
    minimum_seconds = models.PositiveIntegerField(_("minimum seconds"), default=0)
    first_increment = models.PositiveIntegerField(_("first increment (s)"), default=1)
    next_increment = models.PositiveIntegerField(_("next increment (s)"), default=1)
    effective_from = models.DateTimeField(_("effective from"))
    effective_until = models.DateTimeField(_("effective until"), null=True, blank=True)

    class Meta:
        verbose_name = _("rate")
        verbose_name_plural = _("rates")
        ordering = ["service", "destination", "effective_from"]
        indexes = [models.Index(fields=["tariff", "service", "destination"], name="rate_lookup")]
        constraints = [
            models.UniqueConstraint(
                fields=["tariff", "service", "destination", "effective_from"],
                name="rate_unique_start",
            ),
            models.CheckConstraint(name="rate_price_not_negative", condition=Q(price__gte=0)),
            models.CheckConstraint(
                name="rate_connection_fee_not_negative", condition=Q(connection_fee__gte=0)
            ),
            models.CheckConstraint(
                name="rate_increments_positive",
                condition=Q(first_increment__gte=1) & Q(next_increment__gte=1),
            ),
            models.CheckConstraint(
                name="rate_ends_after_it_starts",
                condition=Q(effective_until__isnull=True)
                | Q(effective_until__gt=F("effective_from")),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.service} {self.destination or '*'} {self.price}"

    @property
    def increments(self) -> str:
        return f"{self.first_increment}/{self.next_increment}"
