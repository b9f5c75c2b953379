"""Companies (the billing accounts), their subaccounts (seats), contacts and members."""

import zoneinfo
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Lower
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from djmoney.models.fields import MoneyField

from billing.bulk import LoadedWithoutInit
from billing.money import MONEY_DECIMAL_PLACES, MONEY_MAX_DIGITS


def validate_timezone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(
            _("%(value)s is not a known IANA time zone."), params={"value": value}
        )


class Company(LoadedWithoutInit, models.Model):
    """The billing account: every charge of its subaccounts is the company's."""

    class Mode(models.TextChoices):
        PREPAID = "prepaid", _("Prepaid")
        POSTPAID = "postpaid", _("Postpaid")

    class Status(models.TextChoices):
        ACTIVE = "active", _("Active")
        BLOCKED = "blocked", _("Blocked")

    account_code = models.SlugField(
        _("account code"),
        max_length=64,
        unique=True,
        help_text=_("The code the platform uses for this company in the API."),
    )
    name = models.CharField(_("name"), max_length=200)
    mode = models.CharField(_("mode"), max_length=10, choices=Mode, default=Mode.PREPAID)
    currency = models.CharField(
        _("currency"),
        max_length=3,
        choices=settings.CURRENCY_CHOICES,
        default=settings.DEFAULT_CURRENCY,
    )
    billing_timezone = models.CharField(
        _("billing time zone"),
        max_length=64,
        default="Asia/Tokyo",
        validators=[validate_timezone],
        help_text=_("Billing periods, due dates and monthly charge days are in this zone."),
    )
    language = models.CharField(
        _("language"),
        max_length=8,
        choices=settings.LANGUAGES,
        default="en",
        help_text=_("Language of statements and emails."),
    )
    tax_rate = models.DecimalField(
        _("tax rate"),
        max_digits=5,
        decimal_places=4,
        default=Decimal("0.1000"),
        validators=[MinValueValidator(Decimal(0)), MaxValueValidator(Decimal(1))],
        help_text=_("As a fraction: 0.1000 is 10%."),
    )
    credit_limit = MoneyField(
        _("credit limit"),
        max_digits=MONEY_MAX_DIGITS,
        decimal_places=MONEY_DECIMAL_PLACES,
        null=True,
        blank=True,
        default_currency=None,
        help_text=_("Postpaid only: paid services are blocked when the debt reaches it."),
    )
    tariff = models.ForeignKey(
        "billing.Tariff",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="companies",
        verbose_name=_("tariff"),
        help_text=_("The price list its usage is rated with."),
    )
    status = models.CharField(_("status"), max_length=10, choices=Status, default=Status.ACTIVE)
    blocked_reason = models.CharField(_("blocked reason"), max_length=500, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        verbose_name = _("company")
        verbose_name_plural = _("companies")
        ordering = ["name"]
        permissions = [
            ("block_company", _("Can block and unblock companies")),
            ("switch_company_mode", _("Can switch a company between prepaid and postpaid")),
        ]
        constraints = [
            models.CheckConstraint(
                name="company_tax_rate_between_0_and_1",
                condition=Q(tax_rate__gte=0) & Q(tax_rate__lte=1),
            ),
            models.CheckConstraint(
                name="company_credit_limit_in_company_currency",
                condition=Q(credit_limit__isnull=True) | Q(credit_limit_currency=F("currency")),
            ),
            models.CheckConstraint(
                name="company_credit_limit_not_negative",
                condition=Q(credit_limit__isnull=True) | Q(credit_limit__gte=0),
            ),
            models.CheckConstraint(
                name="company_blocked_has_reason",
                condition=Q(status="active") | ~Q(blocked_reason=""),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.account_code})"

    def clean(self) -> None:
        errors = {}
        if self.credit_limit is not None and str(self.credit_limit.currency) != self.currency:
            errors["credit_limit"] = _(
                "The credit limit must be in the company's currency (%(c)s)."
            ) % {"c": self.currency}
        if self.tariff_id is not None and self.tariff.currency != self.currency:
            errors["tariff"] = _("The tariff must price in the company's currency (%(c)s).") % {
                "c": self.currency
            }
        if errors:
            raise ValidationError(errors)

    @property
    def is_blocked(self) -> bool:
        return self.status == self.Status.BLOCKED

    @property
    def tzinfo(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.billing_timezone)


class BillingContact(models.Model):
    """A person who receives the company's statements and billing notices: each chooses
    which of the two (at least one; ``invoicing.emails`` sends each kind only to those)."""

    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="billing_contacts")
    name = models.CharField(_("name"), max_length=200, blank=True)
    email = models.EmailField(_("email"))
    language = models.CharField(
        _("language"), max_length=8, choices=settings.LANGUAGES, default="en"
    )
    # Statements when issued, and reminders of overdue invoices.
    gets_statements = models.BooleanField(_("statements and overdue reminders"), default=True)
    # The account suspended or active again, credit expiring soon.
    gets_notices = models.BooleanField(_("account notices"), default=True)

    class Meta:
        verbose_name = _("billing contact")
        verbose_name_plural = _("billing contacts")
        constraints = [
            models.UniqueConstraint(
                fields=["company", "email"], name="billing_contact_unique_email"
            ),
            models.CheckConstraint(
                name="billing_contact_gets_something",
                condition=models.Q(gets_statements=True) | models.Q(gets_notices=True),
                violation_error_message=_(
                    "Choose what this person receives: statements, notices or both."
                ),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>" if self.name else self.email


class Subaccount(LoadedWithoutInit, models.Model):
    """A seat of the platform under a company. It has no balance: its charges are the company's."""

    company = models.ForeignKey(Company, on_delete=models.PROTECT, related_name="subaccounts")
    code = models.SlugField(
        _("code"), max_length=64, help_text=_("The code the platform uses in usage events.")
    )
    name = models.CharField(_("name"), max_length=200)
    is_active = models.BooleanField(
        _("active"), default=True, help_text=_("Active subaccounts count as seats.")
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    deactivated_at = models.DateTimeField(_("deactivated at"), null=True, blank=True)

    class Meta:
        verbose_name = _("subaccount")
        verbose_name_plural = _("subaccounts")
        ordering = ["company", "code"]
        constraints = [
            # In any case: "Sales" beside "sales" would be two seats a person cannot tell apart.
            models.UniqueConstraint(
                "company", Lower("code"), name="subaccount_unique_code_any_case"
            ),
            models.CheckConstraint(
                name="subaccount_inactive_has_deactivated_at",
                condition=Q(is_active=True) | Q(deactivated_at__isnull=False),
            ),
        ]
        # Usage events name their subaccount exactly as it was created.
        indexes = [models.Index(fields=["company", "code"], name="subaccount_company_code")]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"


class SubaccountInactivity(models.Model):
    """A past stretch during which a subaccount was deactivated, written when it is activated
    again: ``deactivated_at`` only tells of the latest deactivation, and a per-seat fee
    charged late (a catch-up for a missed run) must not count a seat through its gap."""

    subaccount = models.ForeignKey(
        Subaccount, on_delete=models.CASCADE, related_name="inactivities"
    )
    started_at = models.DateTimeField(_("deactivated at"))
    ended_at = models.DateTimeField(_("activated again at"))

    class Meta:
        verbose_name = _("subaccount inactivity")
        verbose_name_plural = _("subaccount inactivities")
        ordering = ["subaccount", "started_at"]
        constraints = [
            models.CheckConstraint(
                name="subaccount_inactivity_ends_after_start",
                condition=Q(ended_at__gte=F("started_at")),
            )
        ]

    def __str__(self) -> str:
        return f"{self.subaccount_id}: {self.started_at:%Y-%m-%d} – {self.ended_at:%Y-%m-%d}"


class Membership(models.Model):
    """A portal user's seat at a company's table, with the role that decides what they may do."""

    class Role(models.TextChoices):
        ADMIN = "admin", _("Administrator")
        BILLING = "billing", _("Billing")
        MEMBER = "member", _("Member")

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(_("role"), max_length=10, choices=Role, default=Role.MEMBER)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        verbose_name = _("membership")
        verbose_name_plural = _("memberships")
        ordering = ["company__name"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "company"], name="membership_unique_user_company"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.company.account_code} ({self.role})"


class CompanyModeChange(models.Model):
    """A switch between prepaid and postpaid, kept for good: it decides which charges were
    made in which mode, so that each is taxed once (``invoicing.statement_content``)."""

    company = models.ForeignKey(Company, on_delete=models.PROTECT, related_name="mode_changes")
    mode = models.CharField(_("new mode"), max_length=10, choices=Company.Mode)
    changed_at = models.DateTimeField(_("changed at"))
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("changed by"),
    )
    reason = models.CharField(_("reason"), max_length=500)

    class Meta:
        verbose_name = _("mode change")
        verbose_name_plural = _("mode changes")
        ordering = ["-changed_at", "-id"]
        indexes = [models.Index(fields=["company", "-changed_at"], name="mode_change_company")]

    def __str__(self) -> str:
        return f"{self.company} → {self.get_mode_display()} ({self.changed_at:%Y-%m-%d %H:%M})"


class CompanyBlock(models.Model):
    """One reason a company is blocked, from when it was set until it was lifted.

    ``Company.status`` is blocked exactly while at least one block is active (not lifted).
    Automatic reasons lift themselves when their cause clears; manual ones only by staff.
    """

    class Reason(models.TextChoices):
        PREPAID_DEPLETED = "prepaid_depleted", _("Prepaid credit used up")
        CREDIT_LIMIT = "credit_limit", _("Credit limit reached")
        OVERDUE = "overdue", _("Overdue invoice")
        MANUAL = "manual", _("Blocked by staff")

    AUTOMATIC_REASONS = frozenset({Reason.PREPAID_DEPLETED, Reason.CREDIT_LIMIT, Reason.OVERDUE})

    company = models.ForeignKey(Company, on_delete=models.PROTECT, related_name="blocks")
    reason = models.CharField(_("reason"), max_length=20, choices=Reason)
    note = models.CharField(_("note"), max_length=500, blank=True)
    blocked_at = models.DateTimeField(_("blocked at"))
    blocked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("blocked by"),
    )
    lifted_at = models.DateTimeField(_("lifted at"), null=True, blank=True)
    lifted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("lifted by"),
    )
    lift_note = models.CharField(_("lift note"), max_length=500, blank=True)

    class Meta:
        verbose_name = _("block")
        verbose_name_plural = _("blocks")
        ordering = ["-blocked_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["company", "reason"],
                condition=Q(lifted_at__isnull=True),
                name="company_block_one_active_per_reason",
            ),
            models.CheckConstraint(
                name="company_block_lifted_after_blocked",
                condition=Q(lifted_at__isnull=True) | Q(lifted_at__gte=F("blocked_at")),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.company.account_code}: {self.get_reason_display()}"

    @property
    def is_active(self) -> bool:
        return self.lifted_at is None
