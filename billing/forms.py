"""Forms of the back-office: staff actions (balance, credits, reversal, blocking, mode),
tariff import, rates, plans and API keys, and adding, ending and running recurring items.

They only check and convert what staff typed; the rules live in the services, whose
errors the admin shows on the same form.
"""

import uuid
from datetime import date, datetime, time, timedelta
from decimal import Decimal

from django import forms
from django.core.validators import MinValueValidator
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.models import Company, CompanyBlock

from .models import (
    ApiKey,
    Bundle,
    CreditLot,
    PhoneNumber,
    Plan,
    Rate,
    SeatFee,
    ServiceFee,
    Subscription,
)
from .money import MONEY_DECIMAL_PLACES, currency_exponent, quantize_amount
from .rating import COUNTRY_SERVICES, NUMBER_SERVICES, WHOLE_COUNT_SERVICES
from .services.tariffs import HEADER, destination_clean

# Room for ¥99,999,999,999 with the ledger's four decimals, far inside the 19-digit columns.
AMOUNT_MAX_DIGITS = 15


class StaffActionForm(forms.Form):
    """Every staff action says why (blank or spaces only is refused as missing)."""

    reason = forms.CharField(
        label=_("Reason"),
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text=_("Kept in the ledger and the admin history."),
    )

    def __init__(self, *args, company: Company, **kwargs):
        self.company = company
        super().__init__(*args, **kwargs)


class SubmittedOnceForm(forms.Form):
    """Posts to the ledger under a key minted when the page is drawn, so a double submit
    (or a resubmit after a timeout) posts once."""

    idempotency_key = forms.UUIDField(
        widget=forms.HiddenInput,
        initial=uuid.uuid4,
        error_messages={
            "required": _("This page was not drawn by the admin; check it and submit again."),
            "invalid": _("This page was not drawn by the admin; check it and submit again."),
        },
    )

    def _post_clean(self):
        super()._post_clean()
        if "idempotency_key" in self.errors:
            # Draw a fresh key into the page, or the corrected form could never be posted.
            self.data = self.data.copy()
            self.data[self.add_prefix("idempotency_key")] = str(uuid.uuid4())


class MoneyActionForm(SubmittedOnceForm, StaffActionForm):
    """A staff action on a company's money, posted once however often it is submitted."""

    def clean_expires_on(self) -> date | None:
        """For the forms that have the field: at most ten years ahead."""
        day = self.cleaned_data.get("expires_on")
        today = timezone.now().astimezone(self.company.tzinfo).date()
        if day is not None and day > today + LONGEST_EXPIRY:
            raise forms.ValidationError(
                _("Credit expires within ten years at most."), code="too_far"
            )
        return day


def amount_field(**kwargs) -> forms.DecimalField:
    return forms.DecimalField(
        max_digits=AMOUNT_MAX_DIGITS, decimal_places=MONEY_DECIMAL_PLACES, **kwargs
    )


def clean_currency_amount(amount: Decimal, currency: str) -> Decimal:
    """Refuse what the currency cannot hold (¥0.5, $1.234) rather than round it silently."""
    if quantize_amount(amount, currency) != amount:
        places = currency_exponent(currency)
        if places == 0:
            message = _("%(currency)s amounts have no decimals.")
        else:
            message = _("%(currency)s amounts have at most %(places)d decimals.")
        raise forms.ValidationError(
            message, code="decimals", params={"currency": currency, "places": places}
        )
    return quantize_amount(amount, currency)


# As ``CreditsGrantForm.lifetime_days``: credit given for longer is a typo (and a date near
# the calendar's end has no next midnight to expire at).
LONGEST_EXPIRY = timedelta(days=3650)


def end_of_day(day, company: Company) -> datetime:
    """Credit usable through ``day`` in the company's billing time zone expires at the next
    midnight there."""
    return datetime.combine(day + timedelta(days=1), time.min, tzinfo=company.tzinfo)


EXPIRES_ON_HELP = _("Usable through this day, in the company's billing time zone.")


class BalanceAdjustForm(MoneyActionForm):
    amount = amount_field(
        label=_("Amount"),
        help_text=_("Positive credits the company, negative debits it."),
    )
    expires_on = forms.DateField(
        label=_("Credit expires after"),
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text=EXPIRES_ON_HELP,
    )
    field_order = ["amount", "expires_on", "reason"]

    def __init__(self, *args, company: Company, **kwargs):
        super().__init__(*args, company=company, **kwargs)
        self.fields["amount"].label = _("Amount (%(currency)s)") % {"currency": company.currency}
        # A postpaid credit lowers what is owed; it never becomes a lot, so it has no expiry.
        if company.mode != Company.Mode.PREPAID:
            del self.fields["expires_on"]

    def clean_amount(self) -> Decimal:
        amount = clean_currency_amount(self.cleaned_data["amount"], self.company.currency)
        if amount == 0:
            raise forms.ValidationError(_("An adjustment of zero changes nothing."), code="zero")
        return amount

    def clean(self):
        cleaned = super().clean()
        expires_on = cleaned.get("expires_on")
        cleaned["expires_at"] = end_of_day(expires_on, self.company) if expires_on else None
        if expires_on and cleaned.get("amount") is not None and cleaned["amount"] < 0:
            self.add_error("expires_on", _("Only a credit has an expiry; a debit spends lots."))
        return cleaned


class CreditsGrantForm(MoneyActionForm):
    SOURCES = [
        (source.value, source.label)
        for source in (CreditLot.Source.GRANT, CreditLot.Source.TRIAL, CreditLot.Source.PURCHASE)
    ]

    amount = amount_field(label=_("Amount"), min_value=Decimal(0))
    source = forms.ChoiceField(label=_("Source"), choices=SOURCES)
    lifetime_days = forms.IntegerField(
        label=_("Lifetime (days)"),
        required=False,
        min_value=1,
        max_value=3650,
        help_text=_("Leave both this and the date empty for the source's usual lifetime."),
    )
    expires_on = forms.DateField(
        label=_("Or expires after"),
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text=EXPIRES_ON_HELP,
    )
    field_order = ["amount", "source", "lifetime_days", "expires_on", "reason"]

    def __init__(self, *args, company: Company, **kwargs):
        super().__init__(*args, company=company, **kwargs)
        self.fields["amount"].label = _("Amount (%(currency)s)") % {"currency": company.currency}
        self.fields["reason"].label = _("Description")
        self.fields["reason"].help_text = _(
            "Why the credit is given; the company sees it in its history."
        )

    def clean_amount(self) -> Decimal:
        amount = clean_currency_amount(self.cleaned_data["amount"], self.company.currency)
        if amount <= 0:
            raise forms.ValidationError(_("Grant more than zero."), code="zero")
        return amount

    def clean(self):
        cleaned = super().clean()
        days, expires_on = cleaned.get("lifetime_days"), cleaned.get("expires_on")
        if days and expires_on:
            raise forms.ValidationError(
                _("Give a lifetime or an expiry date, not both."), code="both"
            )
        cleaned["lifetime"] = timedelta(days=days) if days else None
        cleaned["expires_at"] = end_of_day(expires_on, self.company) if expires_on else None
        return cleaned


class TransactionReverseForm(StaffActionForm):
    """No key of its own: the service's ``reversal:<id>`` allows one reversal per
    transaction, however many times the page is drawn."""


class CompanyBlockForm(StaffActionForm):
    def __init__(self, *args, company: Company, **kwargs):
        super().__init__(*args, company=company, **kwargs)
        self.fields["reason"].help_text = _(
            "Shown to staff and kept on the block; only staff can lift a manual block."
        )


class CompanyUnblockForm(StaffActionForm):
    block = forms.ChoiceField(label=_("Block to lift"))
    field_order = ["block", "reason"]

    def __init__(self, *args, company: Company, blocks: list[CompanyBlock], **kwargs):
        super().__init__(*args, company=company, **kwargs)
        self.fields["block"].choices = [
            (
                block.reason,
                f"{block.get_reason_display()}: {block.note}"
                if block.note
                else block.get_reason_display(),
            )
            for block in blocks
        ]
        if len(blocks) == 1:
            self.fields["block"].initial = blocks[0].reason


class ModeSwitchForm(StaffActionForm):
    # The mode the page offered: if someone switched meanwhile, the service says so instead
    # of this submit switching back.
    mode = forms.ChoiceField(choices=Company.Mode.choices, widget=forms.HiddenInput)

    def __init__(self, *args, company: Company, **kwargs):
        super().__init__(*args, company=company, **kwargs)
        self.fields["mode"].initial = (
            Company.Mode.POSTPAID if company.mode == Company.Mode.PREPAID else Company.Mode.PREPAID
        )


# --- Catalog and usage ------------------------------------------------------------------


class TariffImportForm(forms.Form):
    file = forms.FileField(label=_("CSV file"))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Formatted here, per request, so that it is translated into the page's language.
        self.fields["file"].help_text = _(
            "UTF-8 CSV whose first line is exactly: %(header)s. Instants in ISO 8601 with a "
            "UTC offset; an empty effective_until is open-ended. Export the tariff to see the "
            "format with its present rates."
        ) % {"header": ",".join(HEADER)}


class RateAdminForm(forms.ModelForm):
    """A rate as the CSV import would accept it: the destination in the form rating uses
    (digits for numbers, an upper-case country for data, empty for the default)."""

    class Meta:
        model = Rate
        fields = [
            "tariff",
            "service",
            "destination",
            "price",
            "connection_fee",
            "minimum_seconds",
            "first_increment",
            "next_increment",
            "effective_from",
            "effective_until",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Disabled rather than read-only: the form still validates the uniqueness of the
        # rate's start within its tariff, which needs the tariff among its fields.
        # A member who may only view the rate gets a form without the fields (the admin shows
        # them read-only), so each is adjusted only where it is there.
        if self.instance.pk is not None and "tariff" in self.fields:
            self.fields["tariff"].disabled = True
        # The database refuses these too, but its message names a constraint, not the field.
        for name, minimum in [
            ("price", 0),
            ("connection_fee", 0),
            ("first_increment", 1),
            ("next_increment", 1),
        ]:
            if name not in self.fields:
                continue
            self.fields[name].validators.append(MinValueValidator(minimum))
            self.fields[name].widget.attrs["min"] = minimum

    def clean(self):
        cleaned = super().clean()
        service = cleaned.get("service")
        if service is not None:
            try:
                cleaned["destination"] = destination_clean(service, cleaned.get("destination", ""))
            except ValueError as error:
                self.add_error("destination", str(error))
        start, end = cleaned.get("effective_from"), cleaned.get("effective_until")
        if start and end and end <= start:
            self.add_error("effective_until", _("Must be later than “effective from”."))
        # The model's checks (one start per service and destination) run after this, on
        # the destination as stored.
        return cleaned


class BundleForm(forms.ModelForm):
    """A bundle's destinations as usage is matched against them: number prefixes in digits
    (a leading + is dropped), upper-case countries, none for services priced without one."""

    class Meta:
        model = Bundle
        fields = ["name", "service", "destinations", "included_quantity"]

    def clean(self):
        cleaned = super().clean()
        service, destinations = cleaned.get("service"), cleaned.get("destinations")
        included = cleaned.get("included_quantity")
        if service in WHOLE_COUNT_SERVICES and included is not None and included % 1:
            # Usage of these comes in whole units: half a message could never be drawn.
            self.add_error(
                "included_quantity",
                _("%(service)s is counted in whole units: include a whole number.")
                % {"service": service},
            )
        if service is None or not destinations:
            return cleaned
        kept, refused = [], []
        for entry in destinations.replace(",", " ").upper().split():  # as typed, but for case
            try:  # the rule of a rate's destination, the one usage is matched by
                kept.append(destination_clean(service, entry))
            except ValueError:
                refused.append(entry)
        if refused:
            if service in NUMBER_SERVICES:
                wanted = _("number prefixes such as +8190")
            elif service in COUNTRY_SERVICES:
                wanted = _("ISO 3166 alpha-2 countries such as JP")
            else:
                wanted = _("nothing: this service has no destinations")
            self.add_error(
                "destinations",
                _("Not a destination of %(service)s: %(entries)s. Give %(wanted)s.")
                % {"service": service, "entries": ", ".join(refused), "wanted": wanted},
            )
        else:
            cleaned["destinations"] = " ".join(kept)
        return cleaned


class PlanAdminForm(forms.ModelForm):
    class Meta:
        model = Plan
        fields = [
            "name",
            "currency",
            "monthly_fee",
            "activation_fee",
            "is_paygo",
            "fee_starts",
            "description",
            "is_active",
        ]

    def clean(self):
        cleaned = super().clean()
        currency = cleaned.get("currency")
        for name in ("monthly_fee", "activation_fee"):
            fee = cleaned.get(name)
            if fee is None:
                continue
            if currency and str(fee.currency) != currency:
                self.add_error(
                    name,
                    _("Fees are in the plan's currency, %(currency)s.") % {"currency": currency},
                )
            elif fee.amount < 0:
                self.add_error(name, _("A fee is zero or more."))
            else:
                # The ledger refuses a charge its currency cannot hold (¥1000.5): refused
                # here, not every month when the fee falls due.
                try:
                    clean_currency_amount(fee.amount, str(fee.currency))
                except forms.ValidationError as error:
                    self.add_error(name, error)
        return cleaned


class ApiKeyAddForm(forms.ModelForm):
    """Only the name: the key itself is generated, shown once and stored as a hash."""

    class Meta:
        model = ApiKey
        fields = ["name"]
        help_texts = {
            "name": _("What uses the key, e.g. “voice platform (production)”."),
        }


# --- Recurring items --------------------------------------------------------------------


def billing_instant(day: date, clock: time | None, company: Company) -> datetime:
    """``day`` at ``clock`` (midnight if None) on the company's billing clock. Periods are
    anchored there: a start typed in UTC could fall on the day before for a company west
    of UTC and move every anniversary with it."""
    return datetime.combine(day, clock or time.min, tzinfo=company.tzinfo)


class ServiceAddForm(forms.ModelForm):
    """The add page of an item created by a service (``billing.admin.recurring.
    ServiceAddMixin``). When the service refuses, the admin draws the page again with the
    refusal in ``service_error`` (field or None, message), which this form shows.

    ``start_date`` and ``start_time`` give the instant the item starts, in the company's
    billing time zone (``cleaned_data["at"]``); both empty: now.
    """

    service_error: tuple[str | None, str] | None = None
    money_fields: tuple[str, ...] = ()

    start_date = forms.DateField(
        label=_("Starts on"),
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text=_("In the company's billing time zone. Empty: now."),
    )
    start_time = forms.TimeField(
        label=_("at"),
        required=False,
        widget=forms.TimeInput(attrs={"type": "time"}),
        help_text=_("Empty: midnight (with a date)."),
    )

    def clean(self):
        cleaned = super().clean()
        company = cleaned.get("company")
        day, clock = cleaned.get("start_date"), cleaned.get("start_time")
        if clock is not None and day is None:
            self.add_error("start_date", _("Give the day too, or leave both empty for now."))
        cleaned["at"] = billing_instant(day, clock, company) if day and company else None
        for name in self.money_fields:
            money = cleaned.get(name)
            if money is None:
                continue
            try:
                clean_currency_amount(money.amount, str(money.currency))
            except forms.ValidationError as error:
                self.add_error(name, error)
        if self.service_error is not None:
            field, message = self.service_error
            self.add_error(field, message)
        return cleaned


class SubscriptionAddForm(ServiceAddForm):
    class Meta:
        model = Subscription
        fields = ["company", "plan"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["plan"].queryset = Plan.objects.filter(is_active=True)
        self.fields["start_date"].help_text = _(
            "In the company's billing time zone. Empty: now. The monthly fee is charged "
            "from this instant (or from the first use, for a PAYGO plan that starts then), "
            "every month on the same day."
        )


class PhoneNumberAddForm(ServiceAddForm):
    money_fields = ("monthly_price",)

    class Meta:
        model = PhoneNumber
        fields = ["company", "number", "monthly_price"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["start_date"].label = _("Assigned on")


class SeatFeeAddForm(ServiceAddForm):
    money_fields = ("price_per_seat",)

    class Meta:
        model = SeatFee
        fields = ["company", "price_per_seat"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["start_date"].help_text = _(
            "In the company's billing time zone. Empty: now. A seat fee still running then "
            "ends at this instant: to change the price without charging both for the same "
            "days, start the new one on the running fee's next charge."
        )


class ServiceFeeAddForm(ServiceAddForm):
    money_fields = ("amount",)

    class Meta:
        model = ServiceFee
        fields = ["company", "name", "amount", "period"]


class RecurringEndForm(forms.Form):
    """When an item ends (or a number is released), on each company's billing clock."""

    end_date = forms.DateField(
        label=_("Ends on"),
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text=_("In each company's billing time zone. Empty: now."),
    )
    end_time = forms.TimeField(
        label=_("at"),
        required=False,
        widget=forms.TimeInput(attrs={"type": "time"}),
        help_text=_("Empty: midnight (with a date)."),
    )
    reason = forms.CharField(
        label=_("Reason"),
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text=_("Kept in the admin history."),
    )

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("end_time") is not None and cleaned.get("end_date") is None:
            self.add_error("end_date", _("Give the day too, or leave both empty for now."))
        return cleaned

    def end_at(self, company: Company, now: datetime) -> datetime:
        day = self.cleaned_data["end_date"]
        return billing_instant(day, self.cleaned_data["end_time"], company) if day else now


class RecurringRunForm(StaffActionForm):
    def __init__(self, *args, company: Company, **kwargs):
        super().__init__(*args, company=company, **kwargs)
        self.fields["reason"].help_text = _("Kept in the admin history.")
