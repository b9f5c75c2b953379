"""Back-office for companies, subaccounts, contacts, memberships and blocks.

Mode and status are shown but not edited here: switching mode, blocking, moving money and
running the recurring charges now are staff actions of their own (confirmation pages
reached from the company page), each calling its service. The company page also shows its
upcoming recurring charges and links to its subscriptions, numbers and fees
(``billing.admin.CompanyRecurringMixin``).
"""

from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html_join
from django.utils.safestring import mark_safe
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from djmoney.money import Money

from billing.admin import (
    ActionDone,
    CompanyMoneyMixin,
    CompanyRecurringMixin,
    ReadOnlyAdmin,
    StaffActionMixin,
    company_summary,
    html_table,
    money_or_unlimited,
    replayed,
    when,
)
from billing.forms import (
    BalanceAdjustForm,
    CompanyBlockForm,
    CompanyUnblockForm,
    CreditsGrantForm,
    ModeSwitchForm,
)
from billing.services import ledger
from billing.services.ledger import company_details_save

from . import services
from .models import BillingContact, Company, CompanyBlock, Membership, Subaccount


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
class CompanyAdmin(CompanyMoneyMixin, CompanyRecurringMixin, StaffActionMixin, admin.ModelAdmin):
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
    readonly_fields = ["status", "blocked_reason", "created_at", "mode_history"]
    autocomplete_fields = ["tariff"]
    inlines = [BillingContactInline, SubaccountInline, MembershipInline]
    fieldsets = [
        (None, {"fields": ["account_code", "name", "language"]}),
        (
            _("Billing"),
            {
                "fields": [
                    "mode",
                    "mode_history",
                    "currency",
                    "billing_timezone",
                    "tax_rate",
                    "credit_limit",
                    "tariff",
                ]
            },
        ),
        (_("Status"), {"fields": ["status", "blocked_reason", "created_at"]}),
    ]

    @admin.display(description=_("mode changes"))
    def mode_history(self, company: Company) -> str:
        """The company's switches between prepaid and postpaid, newest first (made by the
        switch action; each decides which charges an invoice taxes)."""
        changes = company.mode_changes.select_related("changed_by")[:20] if company.pk else []
        if not changes:
            return gettext("None")
        return format_html_join(
            mark_safe("<br>"),
            "{} → {}: {} ({})",
            (
                (
                    timezone.localtime(change.changed_at, company.tzinfo).strftime(
                        "%Y-%m-%d %H:%M"
                    ),
                    change.get_mode_display(),
                    change.reason,
                    change.changed_by or gettext("system"),
                )
                for change in changes
            ),
        )

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
            return [
                *self.readonly_fields,
                "mode",
                "currency",
                "active_blocks_table",
                *self.money_fields,
                *self.recurring_fields,
                "recurring_add_links",
            ]
        return self.readonly_fields

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return self.fieldsets
        return [
            *self.fieldsets[:-1],
            (_("Status"), {"fields": ["status", "blocked_reason", "active_blocks_table"]}),
            (_("Money"), {"fields": self.money_fields}),
            (_("Recurring charges"), {"fields": self.recurring_fields_for(request)}),
            (_("Opened"), {"fields": ["created_at"]}),
        ]

    def save_model(self, request, obj, form, change):
        if not change:
            super().save_model(request, obj, form, change)
            return
        # Only what the form changed, under the company's lock: a whole-row save would write
        # back the status, blocks and mode as this request read them.
        company_details_save(company=obj, fields=form.changed_data)

    @admin.display(description=_("active seats"), ordering="_active_seats")
    def active_seats(self, obj):
        return obj._active_seats

    @admin.display(description=_("active blocks"))
    def active_blocks_table(self, obj):
        blocks = obj.blocks.filter(lifted_at=None).select_related("blocked_by")
        rows = [
            (
                block.get_reason_display(),
                block.note,
                when(block.blocked_at),
                block.blocked_by or gettext("automatic"),
            )
            for block in blocks
        ]
        return html_table(
            [_("reason"), _("note"), _("since"), _("by")], rows, empty=gettext("None.")
        )

    # Staff actions ------------------------------------------------------------------------

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        actions = [
            ("adjust-balance", self.adjust_balance_view, "adjust_balance"),
            ("grant-credits", self.grant_credits_view, "grant_credits"),
            ("block", self.block_view, "block"),
            ("unblock", self.unblock_view, "unblock"),
            ("switch-mode", self.switch_mode_view, "switch_mode"),
            ("run-recurring", self.run_recurring_view, "run_recurring"),
        ]
        return [
            *(
                path(
                    f"<path:object_id>/{route}/",
                    self.admin_site.admin_view(view),
                    name="{}_{}_{}".format(*info, name),
                )
                for route, view, name in actions
            ),
            *super().get_urls(),
        ]

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context["staff_actions"] = self._staff_actions(request, obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def _staff_actions(self, request, company: Company) -> list[dict]:
        user = request.user
        other_mode = (
            gettext("Switch to postpaid")
            if company.mode == Company.Mode.PREPAID
            else gettext("Switch to prepaid")
        )
        offered = [
            ("adjust_balance", gettext("Adjust balance"), "billing.adjust_balance", True),
            ("grant_credits", gettext("Grant credits"), "billing.grant_credits", True),
            ("block", gettext("Block"), "accounts.block_company", True),
            ("unblock", gettext("Unblock"), "accounts.block_company", company.is_blocked),
            ("switch_mode", other_mode, "accounts.switch_company_mode", True),
            (
                "run_recurring",
                gettext("Run recurring charges now"),
                "billing.run_recurring",
                True,
            ),
        ]
        return [
            {"url": reverse(f"admin:accounts_company_{name}", args=[company.pk]), "label": label}
            for name, label, permission, shown in offered
            if shown and user.has_perm(permission)
        ]

    def adjust_balance_view(self, request, object_id):
        company = self.staff_action_object(request, object_id, "billing.adjust_balance")
        form = BalanceAdjustForm(self.staff_action_data(request), company=company)
        now = timezone.now()

        def perform(data) -> ActionDone:
            amount = Money(data["amount"], company.currency)
            adjustment = ledger.balance_adjust(
                company=company,
                amount=amount,
                reason=data["reason"],
                actor=request.user,
                idempotency_key=f"admin:adjust:{data['idempotency_key']}",
                expires_at=data.get("expires_at"),
                now=now,
            )
            if replayed(adjustment.posted_at, now):
                return ActionDone(
                    gettext("This adjustment was already posted as transaction #%(id)s.")
                    % {"id": adjustment.pk},
                    level=messages.WARNING,
                )
            return ActionDone(
                gettext(
                    "Balance of %(company)s adjusted by %(amount)s (transaction #%(id)s). "
                    "Balance now %(balance)s."
                )
                % {
                    "company": company,
                    "amount": amount,
                    "id": adjustment.pk,
                    "balance": adjustment.balance_after,
                },
                log=f"Adjusted the balance by {amount} (transaction #{adjustment.pk}): "
                f"{data['reason']}",
            )

        if company.mode == Company.Mode.PREPAID:
            effect = gettext(
                "A positive amount becomes an adjustment credit lot (expiring on the date you "
                "give, or after %(days)d days); a negative amount spends credit, soonest expiry "
                "first, and may not exceed what is available."
            ) % {"days": ledger.credit_lifetime("adjustment").days}
        else:
            effect = gettext(
                "A positive amount lowers what the company owes; a negative amount spends any "
                "credit lots first, then raises what it owes."
            )
        return self.staff_action_response(
            request,
            obj=company,
            form=form,
            perform=perform,
            title=gettext("Adjust the balance of %(company)s") % {"company": company},
            submit_label=gettext("Adjust balance"),
            summary=company_summary(company, now),
            effect=effect,
        )

    def grant_credits_view(self, request, object_id):
        company = self.staff_action_object(request, object_id, "billing.grant_credits")
        form = CreditsGrantForm(self.staff_action_data(request), company=company)
        now = timezone.now()

        def perform(data) -> ActionDone:
            amount = Money(data["amount"], company.currency)
            result = ledger.credits_grant(
                company=company,
                amount=amount,
                source=data["source"],
                idempotency_key=f"admin:grant:{data['idempotency_key']}",
                description=data["reason"],
                expires_at=data["expires_at"],
                lifetime=data["lifetime"],
                actor=request.user,
                now=now,
            )
            if result.duplicate:
                return ActionDone(
                    gettext("These credits were already granted as transaction #%(id)s.")
                    % {"id": result.transaction.pk},
                    level=messages.WARNING,
                )
            lot = result.lot
            return ActionDone(
                gettext(
                    "Granted %(amount)s of %(source)s credit to %(company)s, expiring "
                    "%(expires)s (transaction #%(id)s)."
                )
                % {
                    "amount": amount,
                    "source": lot.get_source_display().lower(),
                    "company": company,
                    "expires": when(lot.expires_at),
                    "id": result.transaction.pk,
                },
                log=f"Granted {amount} of {lot.source} credit expiring "
                f"{lot.expires_at.isoformat()} (transaction #{result.transaction.pk}): "
                f"{data['reason']}",
            )

        lifetimes = ", ".join(
            f"{label.lower()} {ledger.credit_lifetime(value).days}"
            for value, label in CreditsGrantForm.SOURCES
        )
        effect = gettext(
            "Adds a credit lot to %(company)s, spent soonest-expiry first. Usual lifetimes "
            "(days): %(lifetimes)s. Lifts a block for used-up credit that this clears."
        ) % {"company": company, "lifetimes": lifetimes}
        return self.staff_action_response(
            request,
            obj=company,
            form=form,
            perform=perform,
            title=gettext("Grant credits to %(company)s") % {"company": company},
            submit_label=gettext("Grant credits"),
            summary=company_summary(company, now),
            effect=effect,
        )

    def _active_blocks(self, company: Company) -> list[CompanyBlock]:
        return list(company.blocks.filter(lifted_at=None).order_by("blocked_at", "id"))

    def block_view(self, request, object_id):
        company = self.staff_action_object(request, object_id, "accounts.block_company")
        form = CompanyBlockForm(self.staff_action_data(request), company=company)
        now = timezone.now()

        def perform(data) -> ActionDone:
            block = services.company_block(
                company=company,
                reason=CompanyBlock.Reason.MANUAL,
                note=data["reason"],
                actor=request.user,
                now=now,
            )
            if replayed(block.blocked_at, now):
                return ActionDone(
                    gettext("%(company)s was already blocked by staff since %(since)s.")
                    % {"company": company, "since": when(block.blocked_at)},
                    level=messages.WARNING,
                )
            return ActionDone(
                gettext("%(company)s is blocked: its usage is refused until staff unblock it.")
                % {"company": company},
                log=f"Blocked: {data['reason']}",
            )

        return self.staff_action_response(
            request,
            obj=company,
            form=form,
            perform=perform,
            title=gettext("Block %(company)s") % {"company": company},
            submit_label=gettext("Block"),
            summary=company_summary(company, now),
            effect=gettext(
                "The usage API refuses %(company)s's usage until staff lift this block. "
                "Blocks set automatically (credit used up, credit limit, overdue invoice) are "
                "not affected."
            )
            % {"company": company},
        )

    def unblock_view(self, request, object_id):
        company = self.staff_action_object(request, object_id, "accounts.block_company")
        blocks = self._active_blocks(company)
        form = CompanyUnblockForm(self.staff_action_data(request), company=company, blocks=blocks)
        now = timezone.now()

        def perform(data) -> ActionDone:
            reason = CompanyBlock.Reason(data["block"])
            block = services.company_unblock(
                company=company, reason=reason, note=data["reason"], actor=request.user, now=now
            )
            if block is None:
                return ActionDone(
                    gettext("%(company)s was no longer blocked for “%(reason)s”.")
                    % {"company": company, "reason": reason.label},
                    level=messages.WARNING,
                )
            if company.is_blocked:
                message = gettext(
                    "Lifted “%(reason)s”; %(company)s is still blocked: %(remaining)s."
                ) % {
                    "reason": reason.label,
                    "company": company,
                    "remaining": company.blocked_reason,
                }
            else:
                message = gettext("Lifted “%(reason)s”; %(company)s is active again.") % {
                    "reason": reason.label,
                    "company": company,
                }
            return ActionDone(message, log=f"Unblocked “{reason.label}”: {data['reason']}")

        if blocks:
            effect = gettext(
                "Lifts the chosen block. An automatic block comes back by itself if its cause "
                "has not cleared (for example at the next charge with no credit left)."
            )
        else:
            effect = gettext("%(company)s is not blocked.") % {"company": company}
        return self.staff_action_response(
            request,
            obj=company,
            form=form,
            perform=perform,
            title=gettext("Unblock %(company)s") % {"company": company},
            submit_label=gettext("Unblock"),
            summary=company_summary(company, now),
            effect=effect,
            can_submit=bool(blocks),
        )

    def switch_mode_view(self, request, object_id):
        company = self.staff_action_object(request, object_id, "accounts.switch_company_mode")
        form = ModeSwitchForm(self.staff_action_data(request), company=company)
        now = timezone.now()
        old = company.get_mode_display()

        def perform(data) -> ActionDone:
            ledger.company_mode_switch(
                company=company,
                mode=data["mode"],
                actor=request.user,
                reason=data["reason"],
                now=now,
            )
            new = company.get_mode_display()
            return ActionDone(
                gettext("%(company)s switched from %(old)s to %(new)s.")
                % {"company": company, "old": old.lower(), "new": new.lower()},
                log=f"Switched from {old.lower()} to {new.lower()}: {data['reason']}",
            )

        if company.mode == Company.Mode.PREPAID:
            target = Company.Mode.POSTPAID
            effect = gettext(
                "%(company)s becomes postpaid: its credit lots are spent first, then the balance "
                "goes negative and is invoiced monthly; reaching the credit limit (%(limit)s) "
                "blocks it. A block for used-up credit is lifted."
            ) % {"company": company, "limit": money_or_unlimited(company.credit_limit)}
        else:
            target = Company.Mode.PREPAID
            effect = gettext(
                "%(company)s becomes prepaid: it spends only credit lots and its balance never "
                "goes below zero. The tax on its charges not yet invoiced is posted first, "
                "as its invoice would have; refused while it then owes money or holds balance "
                "outside credit lots."
            ) % {"company": company}
        return self.staff_action_response(
            request,
            obj=company,
            form=form,
            perform=perform,
            title=gettext("Switch %(company)s to %(mode)s")
            % {"company": company, "mode": target.label.lower()},
            submit_label=gettext("Switch to %(mode)s") % {"mode": target.label.lower()},
            summary=company_summary(company, now),
            effect=effect,
        )


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


@admin.register(CompanyBlock)
class CompanyBlockAdmin(ReadOnlyAdmin):
    """Every block and unblock, as the record of who stopped a company and why."""

    list_display = [
        "company",
        "reason",
        "note",
        "blocked_at",
        "blocked_by",
        "is_active_display",
        "lifted_at",
        "lifted_by",
        "lift_note",
    ]
    list_filter = [("lifted_at", admin.EmptyFieldListFilter), "reason"]
    search_fields = ["=company__account_code", "company__name", "note"]
    list_select_related = ["company", "blocked_by", "lifted_by"]
    # Blocks are few: an exact count is cheap here.
    paginator = Paginator
    fields = [
        "company",
        "reason",
        "note",
        "blocked_at",
        "blocked_by",
        "lifted_at",
        "lifted_by",
        "lift_note",
    ]
    readonly_fields = fields

    @admin.display(description=_("active"), boolean=True)
    def is_active_display(self, obj):
        return obj.is_active
