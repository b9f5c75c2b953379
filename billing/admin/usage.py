"""Back-office for the usage API: its keys, and the usage records it received.

A key is created here (or by ``manage.py create_api_key``) through
``billing.services.api_keys``: its secret is shown once, on the page that answers the
creation, and only its SHA-256 is stored. Keys are revoked, never deleted (their usage
records point at them). Usage records are the detail of every charge: read-only, never
deleted, and listed without counting the whole table.
"""

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db import transaction
from django.db.models import Q
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from accounts.models import Company

from ..forms import ApiKeyAddForm
from ..models import ApiKey, UsageRecord
from ..rating import SERVICES
from ..services import api_keys
from .base import ReadOnlyAdmin, database_id

# --- API keys -------------------------------------------------------------------------------


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix_display", "created_at", "created_by", "revoked_at", "active"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "^prefix"]
    list_select_related = ["created_by"]
    actions = ["revoke"]
    created_template = "admin/billing/apikey/created.html"
    revoke_template = "admin/billing/apikey/revoke_confirmation.html"

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = ApiKeyAddForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        # Never the hash: nothing here can show or change the secret.
        if obj is None:
            return ["name"]
        return ["name", "prefix_display", "created_at", "created_by", "revoked_at"]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return ["prefix_display", "created_at", "created_by", "revoked_at"]

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description=_("prefix"), ordering="prefix")
    def prefix_display(self, obj):
        return f"{obj.prefix}…"

    @admin.display(description=_("active"), boolean=True)
    def active(self, obj):
        return obj.is_active

    # Creation: the secret on the answering page, once ------------------------------------

    def add_view(self, request, form_url="", extra_context=None):
        if request.method == "POST" and self.has_add_permission(request):
            form = ApiKeyAddForm(request.POST)
            if form.is_valid():
                with transaction.atomic():
                    key, raw = api_keys.api_key_create(
                        name=form.cleaned_data["name"], actor=request.user
                    )
                    self.log_addition(request, key, [{"added": {}}])
                return self.key_created_response(request, key, raw)
        # The empty form, or the form with its errors (the admin validates it again).
        return super().add_view(request, form_url, extra_context)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if add:
            # One way out of the add page: the one that shows the key.
            context.update(show_save_and_add_another=False, show_save_and_continue=False)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def key_created_response(self, request, key: ApiKey, raw: str):
        """The only page that ever shows the secret; it is not stored, not put in a message
        (messages live in the session or a cookie), and the admin sends the page with
        ``Cache-Control: no-store``."""
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": key,
            "title": gettext("API key created"),
            "raw_key": raw,
            "change_url": self.object_url(key),
        }
        return TemplateResponse(request, self.created_template, context)

    def object_url(self, obj) -> str:
        return reverse(
            "admin:billing_apikey_change", args=[obj.pk], current_app=self.admin_site.name
        )

    # Revocation --------------------------------------------------------------------------

    @admin.action(description=_("Revoke selected API keys"), permissions=["change"])
    def revoke(self, request, queryset):
        """Like ``delete_selected``: a confirmation page first, then one service call per key."""
        keys = list(queryset)
        if request.POST.get("post") != "yes":
            context = {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": gettext("Revoke API keys"),
                "keys": keys,
                "active_keys": [key for key in keys if key.is_active],
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "media": self.media,
            }
            return TemplateResponse(request, self.revoke_template, context)
        now = timezone.now()
        revoked = []
        for key in keys:
            with transaction.atomic():
                if api_keys.api_key_revoke(api_key=key, now=now):
                    self.log_change(request, key, "Revoked")
                    revoked.append(key)
        already = len(keys) - len(revoked)
        message = ngettext(
            "%(count)d API key revoked: the usage API refuses it from now on.",
            "%(count)d API keys revoked: the usage API refuses them from now on.",
            len(revoked),
        ) % {"count": len(revoked)}
        if already:
            message += " " + ngettext(
                "%(count)d was already revoked.", "%(count)d were already revoked.", already
            ) % {"count": already}
        self.message_user(request, message, messages.SUCCESS if revoked else messages.WARNING)
        return None


# --- Usage records --------------------------------------------------------------------------


class ServiceFilter(admin.SimpleListFilter):
    """The services as a fixed list: the default filter of a plain column would read
    every row for its distinct values."""

    title = _("service")
    parameter_name = "service"

    def lookups(self, request, model_admin):
        return [(service, service) for service in SERVICES]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(service=self.value())
        return queryset


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    list_display = [
        "occurred_at",
        "event_id",
        "account_code",
        "subaccount_display",
        "service",
        "destination",
        "quantity",
        "status",
        "amount_display",
        "bundle_quantity",
        "error_code",
        "api_key",
    ]
    # Choices and fixed date ranges only: none of these filters reads the table to draw
    # itself (a date hierarchy would, for its distinct years and months).
    list_filter = ["status", ServiceFilter, ("occurred_at", admin.DateFieldListFilter)]
    show_facets = admin.ShowFacets.NEVER
    search_fields = ["event_id", "account_code"]
    search_help_text = _("Event id or company account code (exact).")
    list_select_related = ["subaccount", "api_key"]
    ordering = ["-occurred_at", "-id"]
    sortable_by = ["occurred_at"]
    fields = [
        "event_id",
        "status",
        "error_code",
        "error_message",
        "api_key",
        "account_code",
        "company",
        "subaccount",
        "service",
        "destination",
        "quantity",
        "occurred_at",
        "received_at",
        "matched_destination",
        "rate_id",
        "unit_price",
        "connection_fee",
        "increments",
        "billed_quantity",
        "bundle_quantity",
        "bundle_counter",
        "amount_display",
        "shortfall_display",
        "balance_after_display",
        "transaction",
    ]
    readonly_fields = fields

    def changelist_view(self, request, extra_context=None):
        # Opened from a usage transaction's page: say whose records these are (the filter
        # is in the address only, the sidebar does not show it).
        transaction_id = database_id(request.GET.get("transaction__id__exact"))
        if transaction_id is not None:
            extra_context = {
                **(extra_context or {}),
                "title": gettext("Usage records charged by ledger transaction #%(id)s")
                % {"id": transaction_id},
            }
        return super().changelist_view(request, extra_context)

    def get_search_results(self, request, queryset, search_term):
        # Exact and case-sensitive (the admin's "=" is case-insensitive, which no index
        # serves): an event id or an account code is copied, not typed from memory. Each
        # branch is one an index serves, so a search never reads the whole table: an event
        # id through the unique (key, event id) index, one probe per key; a company's code
        # through (company, occurred at); the code of an unknown account (rejected records
        # without a company) through its own partial index.
        term = search_term.strip()
        if not term:
            return queryset, False
        keys = list(ApiKey.objects.values_list("pk", flat=True))
        matches = Q(api_key_id__in=keys, event_id=term) | Q(company=None, account_code=term)
        companies = list(Company.objects.filter(account_code=term).values_list("pk", flat=True))
        if companies:
            matches |= Q(company_id__in=companies)
        return queryset.filter(matches), False

    @admin.display(description=_("subaccount"))
    def subaccount_display(self, obj):
        return obj.subaccount.code if obj.subaccount_id else ""

    @admin.display(description=_("charge"))
    def amount_display(self, obj):
        return "" if obj.amount is None else str(obj.amount)

    @admin.display(description=_("shortfall"))
    def shortfall_display(self, obj):
        return "" if obj.shortfall is None else str(obj.shortfall)

    @admin.display(description=_("balance after"))
    def balance_after_display(self, obj):
        return "" if obj.balance_after is None else str(obj.balance_after)
