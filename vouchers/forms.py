"""Forms of the voucher pages: the customer's "Register credit code" and the staff's batch
creation and voiding. They check shape only; the rules are the services'."""

from django import forms
from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from . import codes, services
from .exceptions import BatchInvalid
from .models import MAX_BATCH_SIZE, MAX_LIFETIME_DAYS, VoucherBatch


class VoucherRedeemForm(forms.Form):
    code = forms.CharField(
        label=_("Credit code"),
        # Generous: people paste codes with spaces and dashes; normalisation is the service's.
        max_length=codes.MAX_INPUT_LENGTH,
        error_messages={
            "required": _("Enter the credit code."),
            "max_length": _("That is too long for a credit code."),
        },
        widget=forms.TextInput(
            attrs={
                "autocomplete": "off",
                "autocapitalize": "characters",
                "spellcheck": "false",
                "placeholder": codes.EXAMPLE,
                "size": 24,
            }
        ),
    )


class VoucherBatchCreateForm(forms.ModelForm):
    """The admin's "Add voucher batch" page. The count is not a model field the form saves:
    ``vouchers.services.batch_create`` creates the batch and its codes."""

    count = forms.IntegerField(
        label=_("number of codes"),
        min_value=1,
        max_value=MAX_BATCH_SIZE,
        error_messages={
            "min_value": _("A batch has from 1 to 100,000 codes."),
            "max_value": _("A batch has from 1 to 100,000 codes."),
        },
        help_text=_("From 1 to 100,000."),
    )
    lifetime_days = forms.IntegerField(
        label=_("credit lifetime (days)"),
        min_value=1,
        max_value=MAX_LIFETIME_DAYS,
        initial=90,
        help_text=VoucherBatch._meta.get_field("lifetime_days").help_text,
    )

    class Meta:
        model = VoucherBatch
        fields = ["label", "reseller", "amount", "count", "lifetime_days", "redeem_by", "notes"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The house currency first, not the alphabet's (AUD).
        self.fields["amount"].initial = [None, settings.DEFAULT_CURRENCY]

    def clean(self):
        """The service's rules, asked before submitting, so that a refusal is shown on the
        form (``batch_create`` checks them again)."""
        data = super().clean()
        if self.errors:
            return data
        try:
            services.batch_validate(
                amount=data["amount"],
                count=data["count"],
                lifetime_days=data["lifetime_days"],
                label=data["label"],
                reseller=data.get("reseller", ""),
                redeem_by=data.get("redeem_by"),
                now=timezone.now(),
            )
        except BatchInvalid as error:
            raise forms.ValidationError(str(error)) from error
        return data


class VoidForm(forms.Form):
    reason = forms.CharField(
        label=_("Reason"),
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text=_("Kept with the codes and in the admin history."),
    )
