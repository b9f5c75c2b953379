from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = _("Billing")

    def ready(self) -> None:
        from django.db.backends.signals import connection_created
        from django.db.models import Field, ForeignObject

        from .bulk import AnyOf, use_fast_timestamp_loader

        connection_created.connect(use_fast_timestamp_loader, dispatch_uid="fast_timestamps")

        # Relations keep lookups of their own (they do not inherit Field's).
        Field.register_lookup(AnyOf)
        ForeignObject.register_lookup(AnyOf)
