from django import forms
from django.utils.translation import gettext_lazy as _

from accounts.models import Company
from billing.forms import SubmittedOnceForm


class CreditNoteForm(SubmittedOnceForm):
    company = forms.ModelChoiceField(Company.objects.order_by("name"), label=_("company"))
    amount = forms.DecimalField(
        label=_("amount"),
        min_value=0,
        max_digits=19,
        decimal_places=4,
        help_text=_("What the customer gets back, tax included, as on an invoice."),
    )
    reason = forms.CharField(label=_("reason"), max_length=500)
    statement_number = forms.CharField(
        label=_("corrects statement"),
        max_length=40,
        required=False,
        help_text=_(
            "The number of the statement or invoice it corrects, e.g. INV-2026-000012. An "
            "open invoice named here is settled first; then the oldest open invoices."
        ),
    )

    def clean(self):
        from .models import Statement

        data = super().clean()
        number = data.get("statement_number", "").strip()
        company = data.get("company")
        data["statement"] = None
        if number and company is not None:
            statement = Statement.objects.filter(number=number).first()
            if statement is None or statement.company_id != company.pk:
                self.add_error(
                    "statement_number",
                    _("%(company)s has no statement numbered %(number)s.")
                    % {"company": company.name, "number": number},
                )
            else:
                data["statement"] = statement
        return data


class PaymentForm(forms.Form):
    """A bank transfer received. Invoices offered are the chosen company's open ones (the
    company comes from ``?company=`` or the posted form); none chosen: oldest first."""

    company = forms.ModelChoiceField(Company.objects.order_by("name"), label=_("company"))
    amount = forms.DecimalField(label=_("amount"), min_value=0, max_digits=19, decimal_places=4)
    received_on = forms.DateField(label=_("payment date"))
    reference = forms.CharField(label=_("reference"), max_length=200, required=False)
    invoices = forms.ModelMultipleChoiceField(
        queryset=None,
        label=_("invoices to pay"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=_("None chosen: the oldest open invoices are paid first."),
    )
    same_details_confirmed = forms.BooleanField(
        label=_("This is another payment with the same amount, date and reference"),
        required=False,
    )

    def __init__(self, *args, company_id=None, **kwargs):
        from .models import OPEN_PAYMENT_STATUSES, Statement

        super().__init__(*args, **kwargs)
        self.fields["invoices"].queryset = (
            Statement.objects.filter(
                company_id=company_id,
                kind=Statement.Kind.INVOICE,
                payment_status__in=OPEN_PAYMENT_STATUSES,
            ).order_by("period_start", "id")
            if company_id
            else Statement.objects.none()
        )
        if company_id:
            self.fields["company"].initial = company_id


class TopUpReminderForm(forms.Form):
    """The portal's top-up reminder: the amount in the company's currency and the
    addresses, one per line (or separated by commas). The service checks the rest."""

    threshold = forms.DecimalField(max_digits=19, decimal_places=4)
    recipients = forms.CharField(
        label=_("Email addresses"),
        widget=forms.Textarea(attrs={"rows": 3}),
        max_length=2000,
        help_text=_("One per line, at most five."),
    )

    def __init__(self, *args, currency: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["threshold"].label = _(
            "Remind me when my available credit falls below (%(currency)s)"
        ) % {"currency": currency}

    def addresses(self) -> list[str]:
        return [
            part
            for line in self.cleaned_data["recipients"].splitlines()
            for part in line.split(",")
        ]
