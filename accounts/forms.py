from django import forms
from django.utils.translation import gettext_lazy as _

from .models import BillingContact, Subaccount


class SubaccountForm(forms.ModelForm):
    class Meta:
        model = Subaccount
        fields = ["code", "name"]
        help_texts = {"code": _("Letters, digits, - and _. Used by the platform; cannot change.")}
        error_messages = {"code": {"invalid": _("Use only letters, digits, - and _ (no spaces).")}}


class SubaccountRenameForm(forms.ModelForm):
    class Meta:
        model = Subaccount
        fields = ["name"]


class CompanySwitchForm(forms.Form):
    company = forms.IntegerField(min_value=1, max_value=2**63 - 1)  # an id the database holds


class BillingContactForm(forms.ModelForm):
    class Meta:
        model = BillingContact
        fields = ["email", "name", "language", "gets_statements", "gets_notices"]
        labels = {
            "gets_statements": _("Statements and reminders of overdue invoices"),
            "gets_notices": _("Notices: account suspended or active again, credit expiring soon"),
        }
        help_texts = {"language": _("The language of the emails this person receives.")}
