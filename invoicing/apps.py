from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class InvoicingConfig(AppConfig):
    name = "invoicing"
    verbose_name = _("Invoicing")

    def ready(self):
        # Blocks are set and lifted in accounts, which knows nothing of emails: the notices
        # to the billing contacts hang on its signals (sent once the change has committed).
        from accounts import signals

        from .emails import block_email_on_commit

        signals.company_blocked.connect(block_email_on_commit, dispatch_uid="invoicing.blocked")
        signals.company_unblocked.connect(block_email_on_commit, dispatch_uid="invoicing.unblocked")
