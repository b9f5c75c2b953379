from django import forms
from django.utils.translation import gettext_lazy as _

from accounts.models import Company


class CreditNoteForm(forms.Form):
    company = forms.ModelChoiceField(Company.objects.order_by("name"), label=_("company"))
    amount = forms.DecimalField(label=_("amount"), min_value=0, max_digits=19, decimal_places=4)
    reason = forms.CharField(label=_("reason"), max_length=500)
