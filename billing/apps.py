from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = _("Billing")

    def ready(self) -> None:
        from django.db.models import Field, ForeignObject

        from .bulk import AnyOf

        # Relations keep lookups of their own (they do not inherit Field's).
        Field.register_lookup(AnyOf)
        ForeignObject.register_lookup(AnyOf)
