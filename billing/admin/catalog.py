"""Back-office for what is sold: tariffs and their rates, plans with bundles, subscriptions.

Subscriptions are ordered and ended only through ``billing.services.recurring`` (the add
page and the "End" action of ``recurring.ServiceAddMixin`` and ``EndItemsMixin``), which
keep their fee schedule right.

Rates change only through ``billing.services.tariffs`` (the CSV import, or one rate saved or
deleted here), which bumps the tariff's version so that rating sees the change at its next
event. A tariff's rates are never shown inline (a tariff may have tens of thousands): its
page links to the rate list filtered to it, and imports and exports the whole list as CSV.
"""

from dataclasses import asdict

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Count, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.http import Http404, HttpResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import content_disposition_header
from django.utils.text import slugify
from django.utils.translation import gettext, ngettext, ngettext_lazy
from django.utils.translation import gettext_lazy as _

from accounts.models import Company

from ..exceptions import InvalidAmount, TariffImportError
from ..forms import BundleForm, PlanAdminForm, RateAdminForm, SubscriptionAddForm, TariffImportForm
from ..models import Bundle, BundleCounter, Plan, Rate, Subscription, Tariff
from ..services import recurring, tariffs
from .base import ActionDone, CappedCountPaginator, ReadOnlyAdmin, StaffActionMixin
from .recurring import (
    RECURRING_CHANGE_FORM,
    EndItemsMixin,
    LocalTimesMixin,
    ServiceAddMixin,
    billing_time,
)


def _count_of(queryset, field: str) -> Coalesce:
    """A correlated COUNT per row: two joined COUNT()s would multiply each other's rows."""
    counted = (
        queryset.filter(**{field: OuterRef("pk")})
        .order_by()
        .values(field)
        .annotate(count=Count("*"))
        .values("count")
    )
    return Coalesce(Subquery(counted, output_field=IntegerField()), 0)


# --- Tariffs and rates ----------------------------------------------------------------------


@admin.register(Tariff)
class TariffAdmin(StaffActionMixin, admin.ModelAdmin):
    list_display = ["name", "currency", "rates_count", "companies_count", "version", "created_at"]
    list_filter = ["currency"]
    search_fields = ["name"]
    fields = ["name", "currency", "description", "rates_link", "version", "created_at"]
    readonly_fields = ["rates_link", "version", "created_at"]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                _rates=_count_of(Rate.objects, "tariff"),
                _companies=_count_of(Company.objects, "tariff"),
            )
        )

    def get_readonly_fields(self, request, obj=None):
        # The prices are in the tariff's currency: changing it would reprice every rate.
        if obj is not None:
            return [*self.readonly_fields, "currency"]
        return self.readonly_fields

    @admin.display(description=_("rates"), ordering="_rates")
    def rates_count(self, obj):
        return obj._rates

    @admin.display(description=_("companies"), ordering="_companies")
    def companies_count(self, obj):
        return obj._companies

    @admin.display(description=_("rates"))
    def rates_link(self, obj):
        if obj.pk is None:
            return "-"
        url = reverse("admin:billing_rate_changelist") + f"?tariff__id__exact={obj.pk}"
        label = ngettext("%(count)d rate", "%(count)d rates", obj._rates) % {"count": obj._rates}
        return format_html('<a href="{}">{}</a>', url, label)

    # Import and export --------------------------------------------------------------------

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "<path:object_id>/import/",
                self.admin_site.admin_view(self.import_view),
                name="{}_{}_import".format(*info),
            ),
            path(
                "<path:object_id>/export/",
                self.admin_site.admin_view(self.export_view),
                name="{}_{}_export".format(*info),
            ),
            *super().get_urls(),
        ]

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            actions = [
                ("import", gettext("Import CSV"), request.user.has_perm("billing.change_tariff")),
                ("export", gettext("Export CSV"), self.has_view_permission(request, obj)),
            ]
            context["staff_actions"] = [
                {"url": reverse(f"admin:billing_tariff_{name}", args=[obj.pk]), "label": label}
                for name, label, allowed in actions
                if allowed
            ]
        return super().render_change_form(request, context, add, change, form_url, obj)

    def staff_action_failed(self, form, error):
        if isinstance(error, TariffImportError):
            form.add_error(None, [str(error), *error.lines()])
        else:
            super().staff_action_failed(form, error)

    def import_view(self, request, object_id):
        tariff = self.staff_action_object(request, object_id, "billing.change_tariff")
        data = self.staff_action_data(request)
        form = TariffImportForm(data, request.FILES if data is not None else None)
        now = timezone.now()

        def perform(cleaned) -> ActionDone:
            upload = cleaned["file"]
            result = tariffs.tariff_import(tariff=tariff, file=upload, now=now)
            return ActionDone(
                gettext(
                    "Imported %(imported)d rates into %(tariff)s, replacing %(replaced)d; "
                    "%(in_force)d are in force now. Rating uses them from its next event "
                    "(version %(version)d)."
                )
                % {"tariff": tariff, **asdict(result)},
                log=f"Imported {result.imported} rates from {upload.name} (replacing "
                f"{result.replaced}); version {result.version}",
            )

        summary = [
            (_("Tariff"), str(tariff)),
            (_("Rates now"), str(tariff._rates)),
            (_("Companies rated with it"), str(tariff._companies)),
            (_("Version"), str(tariff.version)),
        ]
        replaces = ngettext(
            "Replaces the %(count)d rate of this tariff with the rates of the file, in one step.",
            "Replaces all %(count)d rates of this tariff with the rates of the file, in one step.",
            tariff._rates,
        ) % {"count": tariff._rates}
        checks = gettext(
            "Every line is checked first: if any line is bad, nothing changes and each bad "
            "line is listed with its reason. Companies on this tariff are rated with the new "
            "rates from their next event; usage already charged keeps its price."
        )
        return self.staff_action_response(
            request,
            obj=tariff,
            form=form,
            perform=perform,
            title=gettext("Import the rates of %(tariff)s") % {"tariff": tariff},
            submit_label=gettext("Import and replace the rates"),
            summary=summary,
            effect=f"{replaces} {checks}",
        )

    def export_view(self, request, object_id):
        tariff = self.get_object(request, object_id)
        if tariff is None:
            raise Http404
        if not self.has_view_permission(request, tariff):
            raise PermissionDenied
        response = HttpResponse(
            tariffs.tariff_export(tariff=tariff), content_type="text/csv; charset=utf-8"
        )
        filename = f"tariff-{slugify(tariff.name) or tariff.pk}-v{tariff.version}.csv"
        response["Content-Disposition"] = content_disposition_header(True, filename)
        return response


@admin.register(Rate)
class RateAdmin(admin.ModelAdmin):
    form = RateAdminForm
    list_display = [
        "service",
        "destination_display",
        "price",
        "connection_fee",
        "increments_display",
        "minimum_seconds",
        "effective_from",
        "effective_until",
        "tariff",
    ]
    list_filter = ["tariff", "service"]
    search_fields = ["^destination"]
    search_help_text = _("Destination: the beginning of a number prefix (+81 or 81), or a country.")
    list_select_related = ["tariff"]
    autocomplete_fields = ["tariff"]
    # Tariffs hold tens of thousands of rates: count at most the cap, and the (tariff,
    # service, destination) index gives the order.
    paginator = CappedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    ordering = ["tariff_id", "service", "destination", "effective_from"]

    def get_search_results(self, request, queryset, search_term):
        # Prefixes as rates store them (digits without "+", countries in upper case), and
        # case-sensitive, so the (tariff, service, destination) index can serve the search.
        term = search_term.strip().removeprefix("+").upper()
        if not term:
            return queryset, False
        return queryset.filter(destination__startswith=term), False

    @admin.display(description=_("destination"), ordering="destination")
    def destination_display(self, obj):
        return obj.destination or gettext("(default)")

    @admin.display(description=_("increments"))
    def increments_display(self, obj):
        return obj.increments

    def save_model(self, request, obj, form, change):
        tariffs.rate_save(rate=obj)

    def delete_model(self, request, obj):
        tariffs.rates_delete(rates=Rate.objects.filter(pk=obj.pk))

    def delete_queryset(self, request, queryset):
        tariffs.rates_delete(rates=queryset)


# --- Plans and subscriptions ----------------------------------------------------------------


class BundleInline(admin.TabularInline):
    model = Bundle
    form = BundleForm
    extra = 0
    fields = ["name", "service", "destinations", "included_quantity"]


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    form = PlanAdminForm
    list_display = [
        "name",
        "currency",
        "monthly_fee",
        "activation_fee",
        "is_paygo",
        "fee_starts",
        "is_active",
    ]
    list_filter = ["is_active", "is_paygo", "currency"]
    search_fields = ["name"]
    inlines = [BundleInline]


@admin.register(Subscription)
class SubscriptionAdmin(LocalTimesMixin, ServiceAddMixin, EndItemsMixin, admin.ModelAdmin):
    """Ordered through ``subscription_order`` (which sets when the monthly fee starts) and
    ended through ``subscription_end``; the plan and start are fixed once ordered: a change
    of plan is a new subscription and the end of the old one."""

    list_display = [
        "company",
        "plan",
        "started_display",
        "ended_display",
        "fee_anchor_display",
        "next_charge_display",
        "created_at",
    ]
    list_filter = ["plan", ("ended_at", admin.EmptyFieldListFilter)]
    search_fields = ["=company__account_code", "company__name", "plan__name"]
    list_select_related = ["company", "plan"]
    autocomplete_fields = ["company"]
    change_form_template = RECURRING_CHANGE_FORM
    actions = ["end_selected"]

    add_form = SubscriptionAddForm
    add_fields = ["company", "plan", "start_date", "start_time"]
    service_error_fields = {InvalidAmount: "plan"}
    fields = [
        "company",
        "plan",
        "started_display",
        "ended_display",
        "fee_anchor_display",
        "next_charge_display",
        "created_at",
    ]
    readonly_fields = [
        "started_display",
        "ended_display",
        "fee_anchor_display",
        "next_charge_display",
        "created_at",
    ]

    end_title = _("End subscriptions")
    end_effect = _(
        "No monthly period starting at or after the end is charged; periods already charged "
        "stay charged (no proration), and one that started before the end and is not "
        "charged yet is charged at the next run. The subscription's bundles end with it."
    )
    end_done = ngettext_lazy(
        "%(count)d subscription ended", "%(count)d subscriptions ended", "count"
    )

    def service_create(self, request, data):
        return recurring.subscription_order(
            company=data["company"], plan=data["plan"], at=data["at"]
        )

    def end_item(self, obj, at):
        recurring.subscription_end(subscription=obj, at=at)

    @admin.action(description=_("End selected subscriptions"), permissions=["end"])
    def end_selected(self, request, queryset):
        items = list(queryset.select_related("company", "plan"))
        return self.end_items_response(request, items, action="end_selected")

    @admin.display(description=_("monthly fee from"), ordering="fee_anchor_at")
    def fee_anchor_display(self, obj):
        if obj.fee_anchor_at is None:
            return gettext("its first use") if obj.ended_at is None else ""
        return billing_time(obj.fee_anchor_at, obj.company)


@admin.register(BundleCounter)
class BundleCounterAdmin(ReadOnlyAdmin):
    """What each subscription used of each bundle per period; written only by rating."""

    list_display = ["subscription", "bundle", "period_start", "period_end", "used", "included"]
    search_fields = ["=subscription__company__account_code"]
    search_help_text = _("Company account code (exact).")
    list_select_related = ["subscription__company", "subscription__plan", "bundle__plan"]
    ordering = ["-period_start", "-id"]
    fields = ["subscription", "bundle", "period_start", "period_end", "used", "included"]
    readonly_fields = fields

    @admin.display(description=_("included per period"))
    def included(self, obj):
        return obj.bundle.included_quantity
