"""Back-office for what companies are charged on a schedule: phone numbers (DIDs), seat and
service fees, the record of every recurring charge, and the recurring part of the company
page (``CompanyRecurringMixin``: upcoming charges, "Run recurring charges now").

Items are created and ended only through ``billing.services.recurring``, which keeps each
item's ``next_charge_at`` (what the recurring run reads) in step with its dates: an add
page calls the service and shows its refusal on the same form (``ServiceAddMixin``);
ending, or releasing a number, is an action with a confirmation page, from the list for
many items or from one item's page (``EndItemsMixin``). Nothing is edited in place or
deleted. ``catalog.SubscriptionAdmin`` is built from the same two mixins. Recurring charges
are the detail of ledger transactions: read-only.

Instants are shown and typed on each company's billing clock, where its periods start.
"""

from datetime import datetime

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext, ngettext, ngettext_lazy
from django.utils.translation import gettext_lazy as _
from djmoney.money import Money

from accounts.models import Company

from ..exceptions import BillingError, InvalidAmount, NumberInUse
from ..forms import (
    PhoneNumberAddForm,
    RecurringEndForm,
    RecurringRunForm,
    SeatFeeAddForm,
    ServiceFeeAddForm,
)
from ..models import PhoneNumber, RecurringCharge, SeatFee, ServiceFee
from ..services import recurring
from .base import ActionDone, ReadOnlyAdmin, StaffActionMixin, company_summary, html_table
from .recurring_upcoming import UPCOMING_SHOWN, UpcomingCharge, upcoming_charges


def billing_time(value: datetime | None, company: Company) -> str:
    """An instant on the company's billing clock: "2026-12-01 00:00 JST"."""
    if value is None:
        return ""
    local = value.astimezone(company.tzinfo)
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()}"


def company_list_url(model_name: str, company: Company) -> str:
    return f"{reverse(f'admin:billing_{model_name}_changelist')}?company__id__exact={company.pk}"


# --- Adding and ending through the services -------------------------------------------------


class ServiceAddMixin:
    """The add page creates the object through its service: ``service_create(request,
    data)`` gets the form's cleaned data (with ``at``, the start typed on the company's
    billing clock, None for now). A domain error comes back on the same form (on the field
    ``service_error_fields`` names for its class, else above the form) and nothing is saved.

    Afterwards nothing is changed in place: a saved form would write the item's schedule
    pointer as the page read it, behind a run that moved it since.
    """

    add_form = None
    add_fields: list[str] = []
    service_error_fields: dict[type[BillingError], str] = {}

    def service_create(self, request, data: dict):
        raise NotImplementedError

    def get_fields(self, request, obj=None):
        if obj is None:
            return self.add_fields
        return super().get_fields(request, obj)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return super().get_readonly_fields(request, obj)

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = self.add_form
        form = super().get_form(request, obj, change=change, **kwargs)
        refused = getattr(request, "_service_refusal", None)
        if obj is None and refused is not None:
            form = type(form.__name__, (form,), {"service_error": refused})
        return form

    def add_view(self, request, form_url="", extra_context=None):
        if request.method == "POST" and self.has_add_permission(request):
            form = self.get_form(request)(request.POST, request.FILES)
            if form.is_valid():
                try:
                    with transaction.atomic():
                        obj = self.service_create(request, form.cleaned_data)
                        self.log_addition(request, obj, [{"added": {}}])
                except BillingError as error:
                    field = next(
                        (
                            name
                            for kind, name in self.service_error_fields.items()
                            if isinstance(error, kind)
                        ),
                        None,
                    )
                    # The admin's own add page draws the form again, with this error.
                    request._service_refusal = (field, str(error))
                else:
                    return self.response_add(request, obj)
        return super().add_view(request, form_url, extra_context)

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        # Never reached (``add_view`` creates, nothing changes): a plain save would skip
        # the service that sets the item's schedule.
        raise PermissionDenied


class EndItemsMixin(StaffActionMixin):
    """Ending items (``end_item(obj, at)`` calls the service) after a confirmation page that
    asks when (on each company's billing clock; empty: now) and why. From the list, an
    action for the selected items; from an item's page, a button (``<id>/end/``). Each item
    ends in its own transaction with its ``LogEntry``; one that cannot end is reported and
    the others go on. An item with an end already is left as it is: its schedule pointer
    may be cleared already, and a later end could not bring its periods back.

    Needs the model's change permission (``has_end_permission``).
    """

    start_field = "started_at"
    end_field = "ended_at"
    end_template = "admin/billing/recurring_end.html"
    end_log = "Ended"
    end_button = _("End")
    end_title = _("End")
    end_effect = ""
    end_done = ngettext_lazy("%(count)d item ended", "%(count)d items ended", "count")

    def end_item(self, obj, at: datetime) -> None:
        raise NotImplementedError

    @property
    def end_permission(self) -> str:
        return f"{self.opts.app_label}.change_{self.opts.model_name}"

    def has_end_permission(self, request, obj=None) -> bool:
        return request.user.has_perm(self.end_permission)

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "<path:object_id>/end/",
                self.admin_site.admin_view(self.end_view),
                name="{}_{}_end".format(*info),
            ),
            *super().get_urls(),
        ]

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        open_ = obj is not None and getattr(obj, self.end_field) is None
        if open_ and self.has_end_permission(request, obj):
            url = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_end", args=[obj.pk])
            context["staff_actions"] = [{"url": url, "label": self.end_button}]
        return super().render_change_form(request, context, add, change, form_url, obj)

    def end_view(self, request, object_id):
        obj = self.staff_action_object(request, object_id, self.end_permission)
        response = self.end_items_response(request, [obj], action=None)
        return response or HttpResponseRedirect(self.object_url(obj))

    def end_items_response(self, request, items: list, *, action: str | None):
        """The confirmation page, or (None) the items ended and a message sent. ``action``:
        the list action's name (its page posts back to the list), None on an item's page."""
        bound = request.POST.get("post") == "yes" if action else request.method == "POST"
        form = RecurringEndForm(request.POST if bound else None)
        if bound and form.is_valid():
            self._end_items(request, items, form)
            return None
        now = timezone.now()
        rows = [
            {
                "item": obj,
                "company": obj.company,
                "start": billing_time(getattr(obj, self.start_field), obj.company),
                "next_charge": billing_time(obj.next_charge_at, obj.company),
                "ends": billing_time(getattr(obj, self.end_field), obj.company),
            }
            for obj in items
        ]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": self.end_title,
            "rows": rows,
            "any_open": any(not row["ends"] for row in rows),
            "form": form,
            "effect": self.end_effect,
            "submit_label": self.end_button,
            "action": action,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            "cancel_url": (
                self.object_url(items[0])
                if action is None
                else reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist")
            ),
            "now": billing_time(now, items[0].company) if len(items) == 1 else "",
            "media": self.media + form.media,
        }
        return TemplateResponse(request, self.end_template, context)

    def _end_items(self, request, items: list, form: RecurringEndForm) -> None:
        now = timezone.now()
        reason = form.cleaned_data["reason"]
        ended, failed, left = 0, [], 0
        for obj in items:
            if getattr(obj, self.end_field) is not None:
                left += 1
                continue
            at = form.end_at(obj.company, now)
            start = getattr(obj, self.start_field)
            if at <= start:
                failed.append(
                    gettext("%(item)s: it starts %(start)s, not before the end chosen")
                    % {"item": obj, "start": billing_time(start, obj.company)}
                )
                continue
            try:
                with transaction.atomic():
                    self.end_item(obj, at)
                    self.log_change(request, obj, f"{self.end_log} at {at.isoformat()}: {reason}")
            except BillingError as error:
                failed.append(f"{obj}: {error}")
            else:
                ended += 1
        parts = [self.end_done % {"count": ended}]
        if failed:
            parts.append(
                ngettext(
                    "%(count)d failed: %(errors)s", "%(count)d failed: %(errors)s", len(failed)
                )
                % {"count": len(failed), "errors": "; ".join(failed)}
            )
        if left:
            parts.append(
                ngettext(
                    "%(count)d had an end already and was left as it was",
                    "%(count)d had an end already and were left as they were",
                    left,
                )
                % {"count": left}
            )
        level = messages.SUCCESS if ended and not failed else messages.WARNING
        if failed and not ended:
            level = messages.ERROR
        self.message_user(request, ", ".join(parts) + ".", level)


class LocalTimesMixin:
    """List and page columns for an item's instants on its company's billing clock."""

    @admin.display(description=_("starts"), ordering="started_at")
    def started_display(self, obj):
        return billing_time(obj.started_at, obj.company)

    @admin.display(description=_("ends"), ordering="ended_at")
    def ended_display(self, obj):
        return billing_time(obj.ended_at, obj.company)

    @admin.display(description=_("next charge"), ordering="next_charge_at")
    def next_charge_display(self, obj):
        return billing_time(obj.next_charge_at, obj.company)


RECURRING_CHANGE_FORM = "admin/billing/change_form_with_actions.html"


# --- Phone numbers, seat and service fees ---------------------------------------------------


@admin.register(PhoneNumber)
class PhoneNumberAdmin(LocalTimesMixin, ServiceAddMixin, EndItemsMixin, admin.ModelAdmin):
    list_display = [
        "number",
        "company",
        "monthly_price",
        "assigned_display",
        "released_display",
        "next_charge_display",
    ]
    list_filter = [("released_at", admin.EmptyFieldListFilter)]
    search_fields = ["number", "=company__account_code", "company__name"]
    search_help_text = _("Number (as stored, with its spaces), company account code or name.")
    list_select_related = ["company"]
    autocomplete_fields = ["company"]
    ordering = ["number", "-assigned_at"]
    change_form_template = RECURRING_CHANGE_FORM
    actions = ["release_selected"]

    add_form = PhoneNumberAddForm
    add_fields = ["company", "number", "monthly_price", "start_date", "start_time"]
    service_error_fields = {NumberInUse: "number", InvalidAmount: "monthly_price"}
    fields = [
        "company",
        "number",
        "monthly_price",
        "assigned_display",
        "released_display",
        "next_charge_display",
    ]
    readonly_fields = ["assigned_display", "released_display", "next_charge_display"]

    start_field = "assigned_at"
    end_field = "released_at"
    end_log = "Released"
    end_button = _("Release")
    end_title = _("Release phone numbers")
    end_effect = _(
        "A released number is no longer charged: no monthly period starting at or after the "
        "release is charged; periods already charged stay charged (no proration), and one "
        "that started before the release and is not charged yet is charged at the next run. "
        "The number can be assigned again."
    )
    end_done = ngettext_lazy("%(count)d number released", "%(count)d numbers released", "count")

    def service_create(self, request, data):
        return recurring.phone_number_assign(
            company=data["company"],
            number=data["number"],
            monthly_price=data["monthly_price"],
            at=data["at"],
        )

    def end_item(self, obj, at):
        recurring.phone_number_release(phone_number=obj, at=at)

    @admin.action(description=_("Release selected numbers"), permissions=["end"])
    def release_selected(self, request, queryset):
        items = list(queryset.select_related("company"))
        return self.end_items_response(request, items, action="release_selected")

    @admin.display(description=_("assigned"), ordering="assigned_at")
    def assigned_display(self, obj):
        return billing_time(obj.assigned_at, obj.company)

    @admin.display(description=_("released"), ordering="released_at")
    def released_display(self, obj):
        return billing_time(obj.released_at, obj.company)


@admin.register(SeatFee)
class SeatFeeAdmin(LocalTimesMixin, ServiceAddMixin, EndItemsMixin, admin.ModelAdmin):
    list_display = [
        "company",
        "price_per_seat",
        "started_display",
        "ended_display",
        "next_charge_display",
    ]
    list_filter = [("ended_at", admin.EmptyFieldListFilter)]
    search_fields = ["=company__account_code", "company__name"]
    list_select_related = ["company"]
    autocomplete_fields = ["company"]
    ordering = ["company__account_code", "-started_at"]
    change_form_template = RECURRING_CHANGE_FORM
    actions = ["end_selected"]

    add_form = SeatFeeAddForm
    add_fields = ["company", "price_per_seat", "start_date", "start_time"]
    service_error_fields = {InvalidAmount: "price_per_seat"}
    fields = [
        "company",
        "price_per_seat",
        "started_display",
        "ended_display",
        "next_charge_display",
    ]
    readonly_fields = ["started_display", "ended_display", "next_charge_display"]

    end_title = _("End seat fees")
    end_effect = _(
        "No period starting at or after the end is charged; periods already charged stay "
        "charged (no proration), and one that started before the end and is not charged yet "
        "is charged at the next run."
    )
    end_done = ngettext_lazy("%(count)d seat fee ended", "%(count)d seat fees ended", "count")

    def service_create(self, request, data):
        return recurring.seat_fee_set(
            company=data["company"], price_per_seat=data["price_per_seat"], at=data["at"]
        )

    def end_item(self, obj, at):
        recurring.seat_fee_end(seat_fee=obj, at=at)

    @admin.action(description=_("End selected seat fees"), permissions=["end"])
    def end_selected(self, request, queryset):
        items = list(queryset.select_related("company"))
        return self.end_items_response(request, items, action="end_selected")


@admin.register(ServiceFee)
class ServiceFeeAdmin(LocalTimesMixin, ServiceAddMixin, EndItemsMixin, admin.ModelAdmin):
    list_display = [
        "name",
        "company",
        "amount",
        "period",
        "started_display",
        "ended_display",
        "next_charge_display",
    ]
    list_filter = ["period", ("ended_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "=company__account_code", "company__name"]
    list_select_related = ["company"]
    autocomplete_fields = ["company"]
    ordering = ["company__account_code", "name", "-started_at"]
    change_form_template = RECURRING_CHANGE_FORM
    actions = ["end_selected"]

    add_form = ServiceFeeAddForm
    add_fields = ["company", "name", "amount", "period", "start_date", "start_time"]
    service_error_fields = {InvalidAmount: "amount"}
    fields = [
        "company",
        "name",
        "amount",
        "period",
        "started_display",
        "ended_display",
        "next_charge_display",
    ]
    readonly_fields = ["started_display", "ended_display", "next_charge_display"]

    end_title = _("End service fees")
    end_effect = SeatFeeAdmin.end_effect
    end_done = ngettext_lazy("%(count)d service fee ended", "%(count)d service fees ended", "count")

    def service_create(self, request, data):
        return recurring.service_fee_add(
            company=data["company"],
            name=data["name"],
            amount=data["amount"],
            period=data["period"],
            at=data["at"],
        )

    def end_item(self, obj, at):
        recurring.service_fee_end(service_fee=obj, at=at)

    @admin.action(description=_("End selected service fees"), permissions=["end"])
    def end_selected(self, request, queryset):
        items = list(queryset.select_related("company"))
        return self.end_items_response(request, items, action="end_selected")


# --- Recurring charges ----------------------------------------------------------------------


@admin.register(RecurringCharge)
class RecurringChargeAdmin(ReadOnlyAdmin):
    """Every charge of every item per period, as the recurring run made it."""

    list_display = [
        "period_start",
        "company",
        "item",
        "description",
        "quantity",
        "amount",
        "transaction_link",
        "created_at",
    ]
    list_filter = ["item", ("period_start", admin.DateFieldListFilter)]
    show_facets = admin.ShowFacets.NEVER
    search_fields = ["description", "=company__account_code", "company__name"]
    search_help_text = _("Description (the plan, number or fee, and the period), or company.")
    list_select_related = ["company"]
    ordering = ["-period_start", "-id"]
    fields = [
        "company",
        "item",
        "item_key",
        "period_index",
        "period_start",
        "period_end",
        "subscription",
        "phone_number",
        "seat_fee",
        "service_fee",
        "quantity",
        "amount",
        "description",
        "transaction_link",
        "created_at",
    ]
    readonly_fields = fields

    @admin.display(description=_("transaction"))
    def transaction_link(self, obj):
        if obj.transaction_id is None:
            return gettext("none (nothing owed)")
        url = reverse("admin:billing_ledgertransaction_change", args=[obj.transaction_id])
        return format_html('<a href="{}">#{}</a>', url, obj.transaction_id)


# --- The company page -----------------------------------------------------------------------


class CompanyRecurringMixin:
    """The recurring part of the company page: its upcoming charges (one query) with links
    to its items, and the staff action "Run recurring charges now"."""

    recurring_fields = ["upcoming_charges_table", "recurring_items_links"]
    upcoming_shown = UPCOMING_SHOWN
    ITEM_LISTS = [
        ("subscription", _("Subscriptions")),
        ("phonenumber", _("Phone numbers (DIDs)")),
        ("seatfee", _("Seat fees")),
        ("servicefee", _("Service fees")),
        ("recurringcharge", _("Recurring charges made")),
    ]
    ITEM_ADDS = [
        ("subscription", _("Order a plan")),
        ("phonenumber", _("Assign a number")),
        ("seatfee", _("Set the seat price")),
        ("servicefee", _("Add a service fee")),
    ]

    @admin.display(description=_("upcoming charges"))
    def upcoming_charges_table(self, obj):
        now = timezone.now()
        upcoming, more = upcoming_charges(obj, now, self.upcoming_shown)
        rows = [
            (
                format_html(
                    '<a href="{}">{}</a>',
                    reverse(f"admin:billing_{line.model_name}_change", args=[line.pk]),
                    self._upcoming_item(line),
                ),
                self._upcoming_next(line, obj, now),
                self._upcoming_amount(line),
                self._upcoming_detail(line, obj),
            )
            for line in upcoming
        ]
        table = html_table(
            [
                _("item"),
                gettext("next charge (%(zone)s)") % {"zone": obj.billing_timezone},
                _("amount"),
                _("detail"),
            ],
            rows,
            empty=gettext("Nothing is charged on a schedule."),
        )
        if more:
            table = format_html(
                "{}<p>{}</p>",
                table,
                gettext("The %(count)d soonest are shown; the lists below hold the rest.")
                % {"count": len(rows)},
            )
        return table

    @staticmethod
    def _upcoming_item(line: UpcomingCharge) -> str:
        item = RecurringCharge.Item(line.item)
        if line.item == RecurringCharge.Item.PLAN_FEE:
            return gettext("Plan %(name)s") % {"name": line.label}
        if line.item == RecurringCharge.Item.SERVICE_FEE:
            period = ServiceFee.Period(line.period).label.lower()
            return f"{line.label} ({period})"
        if line.label:
            return f"{item.label} {line.label}"
        return item.label

    @staticmethod
    def _upcoming_next(line: UpcomingCharge, company: Company, now: datetime) -> str:
        if line.next_charge_at is None:
            if line.awaiting_first_use:
                return gettext("at its first use")
            return gettext("nothing more")
        when = billing_time(line.next_charge_at, company)
        if line.due(now):
            return gettext("%(when)s: due now") % {"when": when}
        return when

    @staticmethod
    def _upcoming_amount(line: UpcomingCharge) -> str:
        if line.next_charge_at is None and not line.awaiting_first_use:
            return ""
        return str(line.amount)

    @staticmethod
    def _upcoming_detail(line: UpcomingCharge, company: Company) -> str:
        parts = []
        if line.seats is not None:
            parts.append(
                ngettext(
                    "%(count)d seat active now × %(price)s",
                    "%(count)d seats active now × %(price)s",
                    line.seats,
                )
                % {"count": line.seats, "price": line.price}
            )
        if line.activation_fee is not None:
            parts.append(
                gettext("%(fee)s monthly fee + %(activation)s activation fee")
                % {"fee": line.price, "activation": line.activation_fee}
            )
        if line.ends_at is not None:
            parts.append(gettext("ends %(when)s") % {"when": billing_time(line.ends_at, company)})
        return "; ".join(parts)

    @admin.display(description=_("recurring items"))
    def recurring_items_links(self, obj):
        return format_html_join(
            " · ",
            '<a href="{}">{}</a>',
            ((company_list_url(name, obj), label) for name, label in self.ITEM_LISTS),
        )

    @admin.display(description=_("add"))
    def recurring_add_links(self, obj):
        return format_html_join(
            " · ",
            '<a href="{}?company={}">{}</a>',
            (
                (reverse(f"admin:billing_{name}_add"), obj.pk, label)
                for name, label in self.ITEM_ADDS
            ),
        )

    def recurring_fields_for(self, request) -> list[str]:
        """The panel's fields; the add links only for staff who may add every item."""
        if all(request.user.has_perm(f"billing.add_{name}") for name, _label in self.ITEM_ADDS):
            return [*self.recurring_fields, "recurring_add_links"]
        return self.recurring_fields

    def run_recurring_view(self, request, object_id):
        company = self.staff_action_object(request, object_id, "billing.run_recurring")
        form = RecurringRunForm(self.staff_action_data(request), company=company)
        now = timezone.now()
        due = recurring.recurring_due(company, now)

        def perform(data) -> ActionDone:
            records = recurring.recurring_charge_company(company=company, as_of=now, now=now)
            posted = [record for record in records if record.transaction_id is not None]
            if not records:
                return ActionDone(
                    gettext("Nothing was due: %(company)s has no charge to make now.")
                    % {"company": company},
                    level=messages.WARNING,
                )
            total = Money(sum(record.amount.amount for record in posted), company.currency)
            message = ngettext(
                "%(count)d charge posted (%(total)s).",
                "%(count)d charges posted (%(total)s).",
                len(posted),
            ) % {"count": len(posted), "total": total}
            unpaid = len(records) - len(posted)
            if unpaid:
                message += " " + ngettext(
                    "%(count)d more recorded with nothing owed (no active seats).",
                    "%(count)d more recorded with nothing owed (no active seats).",
                    unpaid,
                ) % {"count": unpaid}
            return ActionDone(
                message,
                log=f"Ran recurring charges: {len(posted)} posted ({total}), "
                f"{unpaid} with nothing owed: {data['reason']}",
            )

        rows = [
            (RecurringCharge.Item(charge.item).label, charge.description, str(charge.amount))
            for charge in due
        ]
        due_table = html_table(
            [_("item"), _("charge"), _("amount")], rows, empty=gettext("Nothing is due now.")
        )
        total = Money(sum(charge.amount.amount for charge in due), company.currency)
        summary = [
            *company_summary(company, now),
            (_("Due now"), due_table),
            (_("Total due now"), str(total)),
        ]
        effect = gettext(
            "Charges every period listed (each item's periods that started by now, oldest "
            "first) to the ledger, once: a period charged already, by the nightly run or a "
            "double submit, is not charged again. A prepaid company that cannot pay is "
            "charged what it has and blocked."
        )
        return self.staff_action_response(
            request,
            obj=company,
            form=form,
            perform=perform,
            title=gettext("Run the recurring charges of %(company)s now") % {"company": company},
            submit_label=gettext("Post these charges"),
            summary=summary,
            effect=effect,
            can_submit=bool(due) or form.is_bound,
        )
