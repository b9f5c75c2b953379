"""Back-office for companies, subaccounts, contacts and memberships.

Mode and status are shown but not edited here: switching mode and blocking move money
rules and are staff actions of their own.
"""

from django.contrib import admin
from django.db.models import Count, Q
from django.utils.translation import gettext_lazy as _

from . import services
from .models import BillingContact, Company, Membership, Subaccount


class SubaccountInline(admin.TabularInline):
    model = Subaccount
    extra = 0
    fields = ["code", "name", "is_active", "created_at", "deactivated_at"]
    readonly_fields = ["is_active", "created_at", "deactivated_at"]
    show_change_link = True


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    fields = ["user", "role", "created_at"]
    readonly_fields = ["created_at"]
    autocomplete_fields = ["user"]


class BillingContactInline(admin.TabularInline):
    model = BillingContact
    extra = 0


@admin.register(Company)
class CompanyAdmin(admin.ModelAdmin):
    list_display = [
        "account_code",
        "name",
        "mode",
        "currency",
        "status",
        "active_seats",
        "billing_timezone",
    ]
    list_filter = ["mode", "status", "currency", "billing_timezone"]
    search_fields = ["account_code", "name", "billing_contacts__email"]
    readonly_fields = ["status", "blocked_reason", "created_at"]
    inlines = [BillingContactInline, SubaccountInline, MembershipInline]
    fieldsets = [
        (None, {"fields": ["account_code", "name", "language"]}),
        (
            _("Billing"),
            {"fields": ["mode", "currency", "billing_timezone", "tax_rate", "credit_limit"]},
        ),
        (_("Status"), {"fields": ["status", "blocked_reason", "created_at"]}),
    ]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(_active_seats=Count("subaccounts", filter=Q(subaccounts__is_active=True)))
        )

    def get_readonly_fields(self, request, obj=None):
        # Mode and currency are chosen at opening; afterwards they change only through
        # their own staff actions, which check the balance first.
        if obj is not None:
            return [*self.readonly_fields, "mode", "currency"]
        return self.readonly_fields

    @admin.display(description=_("active seats"), ordering="_active_seats")
    def active_seats(self, obj):
        return obj._active_seats


@admin.register(Subaccount)
class SubaccountAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "company", "is_active", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["code", "name", "company__account_code", "company__name"]
    list_select_related = ["company"]
    autocomplete_fields = ["company"]
    readonly_fields = ["is_active", "created_at", "deactivated_at"]
    actions = ["deactivate", "reactivate"]

    def get_readonly_fields(self, request, obj=None):
        # The code is what the platform reports usage with: fixed once created.
        if obj is not None:
            return [*self.readonly_fields, "company", "code"]
        return self.readonly_fields

    @admin.action(description=_("Deactivate selected subaccounts"), permissions=["change"])
    def deactivate(self, request, queryset):
        self._set_active(request, queryset, active=False)

    @admin.action(description=_("Reactivate selected subaccounts"), permissions=["change"])
    def reactivate(self, request, queryset):
        self._set_active(request, queryset, active=True)

    def _set_active(self, request, queryset, *, active: bool):
        changed = 0
        for subaccount in queryset:
            if subaccount.is_active != active:
                services.subaccount_set_active(subaccount=subaccount, active=active)
                self.log_change(request, subaccount, "Reactivated" if active else "Deactivated")
                changed += 1
        self.message_user(request, _("%(count)d subaccounts changed.") % {"count": changed})


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "company", "role", "created_at"]
    list_filter = ["role"]
    search_fields = ["user__username", "user__email", "company__account_code", "company__name"]
    list_select_related = ["user", "company"]
    autocomplete_fields = ["user", "company"]


@admin.register(BillingContact)
class BillingContactAdmin(admin.ModelAdmin):
    list_display = ["email", "name", "company", "language"]
    search_fields = ["email", "name", "company__account_code"]
    list_select_related = ["company"]
    autocomplete_fields = ["company"]
