"""Back-office for vouchers: batches (created through the service, counted by state,
exported for the reseller, voided), codes with their history, redemptions and the credits
waiting for postpaid invoices.

Codes are shown in full, searched in full and exported only with
``vouchers.view_voucher_codes``; everyone else sees the last four characters. Searching
by a whole code is allowed to every viewer: someone who has the code learns nothing new.
Nothing here holds a rule: pages and actions call ``vouchers.services``.
"""

import csv

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db import transaction
from django.http import HttpResponseRedirect, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.text import slugify
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from billing.admin import ActionDone, ReadOnlyAdmin, StaffActionMixin, html_table, when

from . import codes, services
from .exceptions import VoucherCodeMalformed, VoucherError
from .forms import VoidForm, VoucherBatchCreateForm
from .models import InvoiceCredit, Voucher, VoucherBatch, VoucherRedemption
from .selectors import (
    batch_counts,
    batch_export_rows,
    batch_redemptions_per_day,
    voucher_history,
    vouchers_in_state,
    with_counts,
)

CODES_PERMISSION = "vouchers.view_voucher_codes"
VOID_CONFIRMATION_TEMPLATE = "admin/vouchers/void_confirmation.html"


def can_see_codes(request) -> bool:
    return request.user.has_perm(CODES_PERMISSION)


class _Echo:
    """A file-like object whose write returns the line, for streaming csv.writer output."""

    def write(self, value):
        return value


class VoidSelectedMixin:
    """The list action "Void selected ...": a confirmation page with a reason first (like
    ``delete_selected``), then one service call per object, each with a ``LogEntry``."""

    void_title = ""

    def void_one(self, request, obj, reason: str, now) -> bool:
        raise NotImplementedError

    def void_selected_response(self, request, queryset, *, action: str, describe):
        objects = list(queryset)
        form = VoidForm(request.POST if request.POST.get("post") == "yes" else None)
        if form.is_bound and form.is_valid():
            now = timezone.now()
            done, failed = 0, []
            for obj in objects:
                try:
                    with transaction.atomic():
                        if self.void_one(request, obj, form.cleaned_data["reason"], now):
                            self.log_change(request, obj, f"Voided: {form.cleaned_data['reason']}")
                            done += 1
                except VoucherError as error:
                    failed.append(str(error))
            message = ngettext("%(count)d voided.", "%(count)d voided.", done) % {"count": done}
            if failed:
                message += " " + ngettext(
                    "%(count)d could not be: %(reasons)s",
                    "%(count)d could not be: %(reasons)s",
                    len(failed),
                ) % {"count": len(failed), "reasons": " ".join(failed)}
            level = messages.WARNING if failed or not done else messages.SUCCESS
            self.message_user(request, message, level)
            return None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": self.void_title,
            "rows": [describe(obj) for obj in objects],
            "objects": objects,
            "form": form,
            "action": action,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": self.media,
        }
        return TemplateResponse(request, VOID_CONFIRMATION_TEMPLATE, context)


# --- Batches --------------------------------------------------------------------------------


@admin.register(VoucherBatch)
class VoucherBatchAdmin(VoidSelectedMixin, StaffActionMixin, admin.ModelAdmin):
    list_display = [
        "label",
        "reseller",
        "amount_display",
        "created_at",
        "redeem_by",
        "lifetime_days",
        "count",
        "new_count",
        "redeemed_count_display",
        "voided_count_display",
        "expired_count",
        "voided",
    ]
    list_filter = ["amount_currency", ("voided_at", admin.EmptyFieldListFilter)]
    search_fields = ["label", "reseller"]
    ordering = ["-created_at", "-id"]
    actions = ["void_selected_batches"]
    change_form_template = "admin/billing/change_form_with_actions.html"
    readonly_fields = [
        "amount_display",
        "count",
        "lifetime_days",
        "redeem_by",
        "created_at",
        "created_by",
        "counts_table",
        "redemptions_per_day_table",
        "voided_at",
        "voided_by",
        "void_reason",
    ]
    void_title = _("Void voucher batches")

    def get_queryset(self, request):
        return with_counts(super().get_queryset(request))

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = VoucherBatchCreateForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return list(VoucherBatchCreateForm._meta.fields)
        return [
            "label",
            "reseller",
            "notes",
            "amount_display",
            "count",
            "lifetime_days",
            "redeem_by",
            "created_at",
            "created_by",
            "counts_table",
            "redemptions_per_day_table",
            "voided_at",
            "voided_by",
            "void_reason",
        ]

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def has_delete_permission(self, request, obj=None):
        return False  # codes may be in customers' hands: void instead

    def has_void_permission(self, request):
        return request.user.has_perm("vouchers.change_voucherbatch")

    # Columns ------------------------------------------------------------------------------

    def _counts(self, obj):
        if not hasattr(obj, "_counts_cache"):
            obj._counts_cache = batch_counts(obj, timezone.now())
        return obj._counts_cache

    @admin.display(description=_("amount"), ordering="amount")
    def amount_display(self, obj):
        return str(obj.amount)

    @admin.display(description=_("new"))
    def new_count(self, obj):
        return self._counts(obj).new

    @admin.display(description=_("redeemed"))
    def redeemed_count_display(self, obj):
        return self._counts(obj).redeemed

    @admin.display(description=_("voided"))
    def voided_count_display(self, obj):
        return self._counts(obj).voided

    @admin.display(description=_("expired"))
    def expired_count(self, obj):
        return self._counts(obj).expired

    @admin.display(description=_("batch voided"), boolean=True)
    def voided(self, obj):
        return obj.voided_at is not None

    @admin.display(description=_("codes by state"))
    def counts_table(self, obj):
        counts = self._counts(obj)
        url = reverse("admin:vouchers_voucher_changelist")
        rows = [
            (
                format_html(
                    '<a href="{}?batch__id__exact={}&state={}">{}</a>',
                    url,
                    obj.pk,
                    state,
                    Voucher.STATE_LABELS[state],
                ),
                number,
            )
            for state, number in [
                (Voucher.Status.NEW, counts.new),
                (Voucher.Status.REDEEMED, counts.redeemed),
                (Voucher.Status.VOIDED, counts.voided),
                (Voucher.EXPIRED, counts.expired),
            ]
        ]
        rows.append(
            (
                format_html('<a href="{}?batch__id__exact={}">{}</a>', url, obj.pk, _("All")),
                counts.total,
            )
        )
        return html_table([_("state"), _("codes")], rows, empty="")

    @admin.display(description=_("registrations per day"))
    def redemptions_per_day_table(self, obj):
        lines = batch_redemptions_per_day(obj)
        return html_table(
            [_("day"), _("registrations"), _("credit given")],
            [(line.day.isoformat(), line.redemptions, str(line.amount)) for line in lines],
            empty=gettext("No code of this batch has been registered yet."),
        )

    # Creation through the service ---------------------------------------------------------

    def add_view(self, request, form_url="", extra_context=None):
        if request.method == "POST" and self.has_add_permission(request):
            # The admin's own form class (its widgets: split date and time, money).
            form = self.get_form(request, None)(request.POST)
            if form.is_valid():
                data = form.cleaned_data
                try:
                    with transaction.atomic():
                        batch = services.batch_create(
                            amount=data["amount"],
                            count=data["count"],
                            lifetime_days=data["lifetime_days"],
                            label=data["label"],
                            reseller=data["reseller"],
                            notes=data["notes"],
                            redeem_by=data["redeem_by"],
                            actor=request.user,
                        )
                        self.log_addition(request, batch, [{"added": {}}])
                except VoucherError as error:  # the form asked first; a rule met meanwhile
                    self.message_user(request, str(error), messages.ERROR)
                    return HttpResponseRedirect(request.get_full_path())
                else:
                    self.message_user(
                        request,
                        gettext("Batch “%(label)s” created with %(count)s codes of %(amount)s.")
                        % {"label": batch.label, "count": batch.count, "amount": batch.amount},
                        messages.SUCCESS,
                    )
                    return HttpResponseRedirect(self.object_url(batch))
        # The empty form, or the form with its errors (the admin validates it again).
        return super().add_view(request, form_url, extra_context)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if add:
            context.update(show_save_and_add_another=False, show_save_and_continue=False)
        if obj is not None:
            context["staff_actions"] = self._staff_actions(request, obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def _staff_actions(self, request, obj) -> list[dict]:
        actions = []
        if can_see_codes(request):
            actions.append(
                {
                    "url": reverse("admin:vouchers_voucherbatch_export", args=[obj.pk]),
                    "label": gettext("Export codes (CSV)"),
                }
            )
        if obj.voided_at is None and self.has_void_permission(request):
            actions.append(
                {
                    "url": reverse("admin:vouchers_voucherbatch_void", args=[obj.pk]),
                    "label": gettext("Void batch"),
                }
            )
        return actions

    def get_urls(self):
        return [
            path(
                "<path:object_id>/export/",
                self.admin_site.admin_view(self.export_view),
                name="vouchers_voucherbatch_export",
            ),
            path(
                "<path:object_id>/void/",
                self.admin_site.admin_view(self.void_view),
                name="vouchers_voucherbatch_void",
            ),
            *super().get_urls(),
        ]

    # Export --------------------------------------------------------------------------------

    def export_view(self, request, object_id):
        """The batch's codes as CSV for the reseller, streamed from the database in chunks.
        Needs the code permission (403 without); every export is in the admin history."""
        batch = self.staff_action_object(request, object_id, CODES_PERMISSION)
        self.log_change(request, batch, "Exported the codes (CSV)")
        writer = csv.writer(_Echo())
        lines = (writer.writerow(row) for row in batch_export_rows(batch, timezone.now()))
        response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
        name = slugify(batch.label) or "batch"
        response["Content-Disposition"] = f'attachment; filename="vouchers-{batch.pk}-{name}.csv"'
        return response

    # Voiding ------------------------------------------------------------------------------

    def void_view(self, request, object_id):
        batch = self.staff_action_object(request, object_id, "vouchers.change_voucherbatch")
        counts = self._counts(batch)

        def perform(data) -> ActionDone:
            voided = services.batch_void(batch=batch, actor=request.user, reason=data["reason"])
            return ActionDone(
                ngettext(
                    "Batch voided: %(count)d unused code can no longer be registered.",
                    "Batch voided: %(count)d unused codes can no longer be registered.",
                    voided,
                )
                % {"count": voided},
                log=f"Voided the batch ({voided} unused codes): {data['reason']}",
            )

        return self.staff_action_response(
            request,
            obj=batch,
            form=VoidForm(self.staff_action_data(request)),
            perform=perform,
            title=gettext("Void batch “%(label)s”") % {"label": batch.label},
            submit_label=gettext("Void batch"),
            summary=[
                (_("Batch"), str(batch)),
                (_("New"), counts.new),
                (_("Expired"), counts.expired),
                (_("Redeemed"), counts.redeemed),
                (_("Voided"), counts.voided),
            ],
            effect=gettext(
                "Every unused code of the batch (new or expired) becomes void and can no longer "
                "be registered. Codes already registered keep their credit."
            ),
            can_submit=batch.voided_at is None,
        )

    def void_one(self, request, obj, reason, now) -> bool:
        return services.batch_void(batch=obj, actor=request.user, reason=reason, now=now) > 0

    @admin.action(description=_("Void selected batches"), permissions=["void"])
    def void_selected_batches(self, request, queryset):
        return self.void_selected_response(
            request,
            queryset,
            action="void_selected_batches",
            describe=lambda batch: {
                "object": batch,
                "detail": gettext("%(unused)d unused codes")
                % {"unused": self._counts(batch).new + self._counts(batch).expired},
                "done": batch.voided_at is not None,
            },
        )


# --- Codes ----------------------------------------------------------------------------------


class VoucherStateFilter(admin.SimpleListFilter):
    title = _("state")
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return list(Voucher.STATE_LABELS.items())

    def queryset(self, request, queryset):
        if self.value() in Voucher.STATE_LABELS:
            return vouchers_in_state(queryset, self.value(), timezone.now())
        return queryset


@admin.register(Voucher)
class VoucherAdmin(VoidSelectedMixin, StaffActionMixin, ReadOnlyAdmin):
    list_filter = [VoucherStateFilter, "batch"]
    list_select_related = ["batch", "redemption__company"]
    search_fields = ["code"]
    search_help_text = _("A whole code, as printed (dashes, spaces and case do not matter).")
    ordering = ["-id"]
    sortable_by = ["id"]
    actions = ["void_selected_codes"]
    change_form_template = "admin/billing/change_form_with_actions.html"
    void_title = _("Void voucher codes")

    def get_list_display(self, request):
        code = "full_code" if can_see_codes(request) else "masked_code_display"
        return [code, "batch", "state_display", "amount_display", "redeemed_by", "redeemed_at"]

    def get_list_display_links(self, request, list_display):
        return [list_display[0]]

    def get_fields(self, request, obj=None):
        code = "full_code" if can_see_codes(request) else "masked_code_display"
        return [code, "batch", "state_display", "amount_display", "history_table"]

    def get_readonly_fields(self, request, obj=None):
        return self.get_fields(request, obj)

    def has_void_permission(self, request):
        return request.user.has_perm("vouchers.change_voucher")

    def get_search_results(self, request, queryset, search_term):
        # One exact match on the unique index, after the same normalisation as the portal;
        # never a partial match, which would let a viewer enumerate codes.
        if not search_term.strip():
            return queryset, False
        try:
            return queryset.filter(code=codes.normalise(search_term)), False
        except VoucherCodeMalformed:
            return queryset.none(), False

    # Columns ------------------------------------------------------------------------------

    @admin.display(description=_("code"))
    def full_code(self, obj):
        return obj.formatted_code

    @admin.display(description=_("code"))
    def masked_code_display(self, obj):
        return obj.masked_code

    @admin.display(description=_("state"))
    def state_display(self, obj):
        return obj.state_label(timezone.now())

    @admin.display(description=_("amount"))
    def amount_display(self, obj):
        return str(obj.batch.amount)

    @admin.display(description=_("registered by"))
    def redeemed_by(self, obj):
        redemption = self._redemption(obj)
        return redemption.company if redemption else ""

    @admin.display(description=_("registered at"))
    def redeemed_at(self, obj):
        redemption = self._redemption(obj)
        return when(redemption.redeemed_at) if redemption else ""

    @staticmethod
    def _redemption(obj) -> VoucherRedemption | None:
        try:
            return obj.redemption
        except VoucherRedemption.DoesNotExist:
            return None

    @admin.display(description=_("history"))
    def history_table(self, obj):
        rows = []
        for event in voucher_history(obj):
            by = event.by.get_username() if event.by is not None else ""
            if event.what == "created":
                what = gettext("Created")
                detail = format_html(
                    '<a href="{}">{}</a>',
                    reverse("admin:vouchers_voucherbatch_change", args=[obj.batch_id]),
                    obj.batch.label,
                )
            elif event.what == "redeemed":
                what = gettext("Registered")
                detail = self._redemption_detail(event.redemption)
            else:
                what = gettext("Voided")
                detail = event.reason
            rows.append((when(event.at), what, by, detail))
        return html_table([_("when"), _("what"), _("by"), _("detail")], rows, empty="")

    @staticmethod
    def _redemption_detail(redemption: VoucherRedemption):
        company = format_html(
            '<a href="{}">{}</a>',
            reverse("admin:accounts_company_change", args=[redemption.company_id]),
            redemption.company,
        )
        ip = redemption.ip or gettext("no IP address")
        if redemption.transaction_id is not None:
            return format_html(
                '{} ({}), {}: <a href="{}">{} #{}</a>',
                company,
                redemption.get_mode_display(),
                ip,
                reverse("admin:billing_ledgertransaction_change", args=[redemption.transaction_id]),
                gettext("ledger transaction"),
                redemption.transaction_id,
            )
        try:
            credit = redemption.invoice_credit
        except InvoiceCredit.DoesNotExist:
            credit = None
        state = (
            gettext("applied %(when)s") % {"when": when(credit.applied_at)}
            if credit is not None and credit.applied_at
            else gettext("pending")
        )
        return format_html(
            "{} ({}), {}: {} ({})",
            company,
            redemption.get_mode_display(),
            ip,
            gettext("credit for the next invoice"),
            state,
        )

    # Voiding ------------------------------------------------------------------------------

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if (
            obj is not None
            and obj.status == Voucher.Status.NEW
            and self.has_void_permission(request)
        ):
            context["staff_actions"] = [
                {
                    "url": reverse("admin:vouchers_voucher_void", args=[obj.pk]),
                    "label": gettext("Void code"),
                }
            ]
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_urls(self):
        return [
            path(
                "<path:object_id>/void/",
                self.admin_site.admin_view(self.void_view),
                name="vouchers_voucher_void",
            ),
            *super().get_urls(),
        ]

    def void_view(self, request, object_id):
        voucher = self.staff_action_object(request, object_id, "vouchers.change_voucher")

        def perform(data) -> ActionDone:
            if services.voucher_void(voucher=voucher, actor=request.user, reason=data["reason"]):
                return ActionDone(
                    gettext("Code %(code)s voided: it can no longer be registered.")
                    % {"code": voucher.masked_code},
                    log=f"Voided: {data['reason']}",
                )
            return ActionDone(gettext("The code was already voided."), level=messages.WARNING)

        now = timezone.now()
        return self.staff_action_response(
            request,
            obj=voucher,
            form=VoidForm(self.staff_action_data(request)),
            perform=perform,
            title=gettext("Void code %(code)s") % {"code": voucher.masked_code},
            submit_label=gettext("Void code"),
            summary=[
                (_("Code"), voucher.masked_code),
                (_("Batch"), str(voucher.batch)),
                (_("State"), voucher.state_label(now)),
            ],
            effect=gettext("The code can no longer be registered. This cannot be undone."),
            can_submit=voucher.status == Voucher.Status.NEW,
        )

    def void_one(self, request, obj, reason, now) -> bool:
        return services.voucher_void(voucher=obj, actor=request.user, reason=reason, now=now)

    @admin.action(description=_("Void selected codes"), permissions=["void"])
    def void_selected_codes(self, request, queryset):
        now = timezone.now()
        return self.void_selected_response(
            request,
            queryset.select_related("batch"),
            action="void_selected_codes",
            describe=lambda voucher: {
                "object": voucher.masked_code,
                "detail": voucher.state_label(now),
                "done": voucher.status != Voucher.Status.NEW,
            },
        )


# --- Redemptions and invoice credits --------------------------------------------------------


@admin.register(VoucherRedemption)
class VoucherRedemptionAdmin(ReadOnlyAdmin):
    list_display = ["redeemed_at", "code", "company", "user", "ip", "mode", "amount_display"]
    list_filter = [("redeemed_at", admin.DateFieldListFilter), "mode"]
    search_fields = ["=company__account_code"]
    list_select_related = ["voucher", "company", "user"]
    ordering = ["-redeemed_at", "-id"]
    sortable_by = ["redeemed_at"]
    fields = [
        "voucher",
        "company",
        "user",
        "ip",
        "redeemed_at",
        "mode",
        "amount_display",
        "transaction",
    ]
    readonly_fields = fields

    @admin.display(description=_("code"))
    def code(self, obj):
        return obj.voucher.masked_code

    @admin.display(description=_("amount"))
    def amount_display(self, obj):
        return str(obj.amount)


@admin.register(InvoiceCredit)
class InvoiceCreditAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "company", "description", "amount_display", "applied_at"]
    list_filter = [("applied_at", admin.EmptyFieldListFilter)]
    search_fields = ["=company__account_code"]
    list_select_related = ["company"]
    ordering = ["-created_at", "-id"]
    sortable_by = ["created_at"]
    fields = [
        "company",
        "description",
        "amount_display",
        "created_at",
        "redemption",
        "applied_at",
        "applied_transaction",
    ]
    readonly_fields = fields

    @admin.display(description=_("amount"))
    def amount_display(self, obj):
        return str(obj.amount)
