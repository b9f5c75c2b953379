"""Back-office for the ledger: read-only books, and staff actions as confirmation pages.

Nothing here writes a ledger row: every change goes through ``billing.services.ledger``.
Transactions, postings, accounts and lots are shown read-only and cannot be deleted; a
mistake is corrected by a reversal or an adjustment. ``StaffActionMixin`` is the shared
machinery of the staff actions (here and on the company page in ``accounts.admin``), and
``CompanyMoneyMixin`` the money part of that company page.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import transaction
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils import formats, timezone
from django.utils.formats import date_format
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from djmoney.money import Money

from accounts.exceptions import BlockingError
from accounts.models import Company

from .exceptions import BillingError
from .forms import TransactionReverseForm
from .models import CreditLot, LedgerAccount, LedgerPosting, LedgerTransaction
from .selectors import (
    company_available,
    company_balance,
    company_lots,
    company_transactions,
    with_customer_amount,
)
from .services import ledger

# --- Shared machinery -----------------------------------------------------------------------


class CappedCountPaginator(Paginator):
    """Counts at most ``cap`` rows.

    The admin counts the filtered list to draw its pages; on a ledger of millions of rows
    an unfiltered COUNT(*) reads the whole table. Counting stops at the cap instead, the
    page links stop there and the list says "more than"; filters and search find the rest.
    """

    cap = 10_000

    @cached_property
    def _counted(self) -> int:
        # No ordering and only the key: the count must not sort or compute annotations.
        return self.object_list.order_by().values("pk")[: self.cap + 1].count()

    @cached_property
    def count(self) -> int:
        return min(self._counted, self.cap)

    @property
    def capped(self) -> bool:
        return self._counted > self.cap


class ReadOnlyAdmin(admin.ModelAdmin):
    """The books are append-only: shown, never added, changed or deleted here."""

    paginator = CappedCountPaginator
    show_full_result_count = False
    actions = None

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@dataclass(frozen=True)
class ActionDone:
    """What a staff action did: the message for staff, and the admin history entry (None
    when nothing changed, e.g. a double submit that found its first result)."""

    message: str
    log: str | None = None
    level: int = messages.SUCCESS


def money_or_unlimited(value: Money | None) -> str:
    return str(value) if value is not None else gettext("Unlimited (no credit limit)")


def company_summary(company: Company, now: datetime) -> list[tuple[str, str]]:
    """What staff see before confirming an action on ``company``'s money or status."""
    status = company.get_status_display()
    if company.is_blocked:
        status = f"{status}: {company.blocked_reason}"
    rows = [
        (_("Company"), str(company)),
        (_("Mode"), company.get_mode_display()),
        (_("Status"), status),
        (_("Balance"), str(company_balance(company))),
        (_("Available"), money_or_unlimited(company_available(company, now))),
    ]
    if company.mode == Company.Mode.POSTPAID:
        rows.append((_("Credit limit"), money_or_unlimited(company.credit_limit)))
    return rows


class StaffActionMixin:
    """Staff actions as confirmation pages, like Django's ``delete_selected``.

    A GET shows the object, its money and a form that needs a reason; a valid POST calls
    one service. A domain error (``BillingError``, ``BlockingError``) becomes a form error
    and nothing changes; success writes a ``LogEntry`` in the same database transaction
    and redirects to the object's page with a message.
    """

    staff_action_template = "admin/billing/staff_action.html"

    def staff_action_object(self, request, object_id: str, permission: str):
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404(
                gettext("%(name)s with ID “%(key)s” doesn’t exist.")
                % {"name": self.opts.verbose_name, "key": object_id}
            )
        if not (self.has_view_permission(request, obj) and request.user.has_perm(permission)):
            raise PermissionDenied
        return obj

    @staticmethod
    def staff_action_data(request):
        return request.POST if request.method == "POST" else None

    def object_url(self, obj) -> str:
        return reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
            args=[obj.pk],
            current_app=self.admin_site.name,
        )

    def staff_action_response(
        self,
        request,
        *,
        obj,
        form,
        perform: Callable[[dict], ActionDone],
        title: str,
        submit_label: str,
        summary: Sequence[tuple[str, str]],
        effect: str = "",
        can_submit: bool = True,
    ):
        if form.is_bound and can_submit and form.is_valid():
            try:
                with transaction.atomic():
                    done = perform(form.cleaned_data)
                    if done.log:
                        self.log_change(request, obj, done.log)
            except (BillingError, BlockingError) as error:
                form.add_error(None, str(error))
            else:
                self.message_user(request, done.message, done.level)
                return HttpResponseRedirect(self.object_url(obj))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": obj,
            "title": title,
            "form": form,
            "summary": summary,
            "effect": effect,
            "submit_label": submit_label,
            "can_submit": can_submit,
            "cancel_url": self.object_url(obj),
        }
        return TemplateResponse(request, self.staff_action_template, context)


def replayed(posted_at: datetime, now: datetime) -> bool:
    """A service called with ``now`` stamps what it creates with ``now``; an older stamp is
    the first result of the same idempotency key coming back (a double submit)."""
    return posted_at != now


# How much history the company page shows; the ledger lists hold the rest.
RECENT_TRANSACTIONS = 20
LOTS_SHOWN = 20


def when(value) -> str:
    return date_format(timezone.localtime(value), "SHORT_DATETIME_FORMAT")


def html_table(headers, rows, empty: str, more_url: str | None = None, more_label: str = ""):
    """A small read-only table for the company page (every cell escaped by format_html)."""
    if not rows:
        return empty
    head = format_html_join("", "<th>{}</th>", ((header,) for header in headers))
    body = format_html_join(
        "",
        "<tr>{}</tr>",
        ((format_html_join("", "<td>{}</td>", ((cell,) for cell in row)),) for row in rows),
    )
    table = format_html("<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>", head, body)
    if more_url:
        table = format_html('{}<p><a href="{}">{}</a></p>', table, more_url, more_label)
    return table


class CompanyMoneyMixin:
    """The money part of the company page: balance, available credit, the lots with credit
    left and the latest transactions. A fixed number of queries however long the history:
    one per table, each limited; the ledger lists hold the rest."""

    money_fields = [
        "balance_display",
        "available_display",
        "credit_lots_table",
        "recent_transactions_table",
    ]

    @admin.display(description=_("balance"))
    def balance_display(self, obj):
        return str(company_balance(obj))

    @admin.display(description=_("available"))
    def available_display(self, obj):
        return money_or_unlimited(company_available(obj))

    @admin.display(description=_("credit lots with credit left"))
    def credit_lots_table(self, obj):
        now = timezone.now()
        lots = company_lots(obj).filter(remaining__gt=0)[:LOTS_SHOWN]
        rows = [
            (
                lot.get_source_display(),
                str(lot.amount),
                str(lot.remaining),
                when(lot.granted_at),
                when(lot.expires_at),
                gettext("Expired") if lot.expires_at <= now else gettext("Active"),
            )
            for lot in lots
        ]
        return html_table(
            [_("source"), _("amount"), _("remaining"), _("granted"), _("expires"), _("status")],
            rows,
            empty=gettext("No credit left in any lot."),
            more_url=self._ledger_list_url("creditlot", obj),
            more_label=gettext("All credit lots of this company, used and expired too"),
        )

    @admin.display(description=_("recent transactions"))
    def recent_transactions_table(self, obj):
        transactions = list(company_transactions(obj)[:RECENT_TRANSACTIONS])
        rows = [
            (
                when(transaction_.posted_at),
                transaction_.get_kind_display(),
                format_html(
                    '<a href="{}">#{}</a> {}',
                    reverse("admin:billing_ledgertransaction_change", args=[transaction_.pk]),
                    transaction_.pk,
                    transaction_.description,
                ),
                self._amount_cell(transaction_, obj),
                "" if transaction_.balance_after is None else str(transaction_.balance_after),
            )
            for transaction_ in transactions
        ]
        return html_table(
            [_("posted"), _("kind"), _("description"), _("amount"), _("balance after")],
            rows,
            empty=gettext("No transactions yet."),
            more_url=self._ledger_list_url("ledgertransaction", obj) if rows else None,
            more_label=gettext("All transactions of this company"),
        )

    @staticmethod
    def _amount_cell(transaction_, company: Company) -> str:
        amount = str(Money(transaction_.amount, company.currency))
        if transaction_.shortfall is None:
            return amount
        return gettext("%(amount)s (%(shortfall)s short)") % {
            "amount": amount,
            "shortfall": transaction_.shortfall,
        }

    @staticmethod
    def _ledger_list_url(model_name: str, company: Company) -> str:
        url = reverse(f"admin:billing_{model_name}_changelist")
        return f"{url}?company__id__exact={company.pk}"


# --- Ledger ---------------------------------------------------------------------------------


class LedgerPostingInline(admin.TabularInline):
    model = LedgerPosting
    fields = ["account", "amount", "lot"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("account__company", "lot")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(LedgerTransaction)
class LedgerTransactionAdmin(StaffActionMixin, ReadOnlyAdmin):
    list_display = [
        "id",
        "posted_at",
        "company",
        "kind",
        "short_description",
        "amount_display",
        "shortfall_display",
        "balance_after_display",
    ]
    list_filter = ["kind", "posted_at"]
    search_fields = ["^idempotency_key", "=company__account_code", "description"]
    search_help_text = _(
        "Idempotency key (beginning), company account code (exact) or words of the description."
    )
    list_select_related = ["company"]
    # The id follows posting order and has an index; sorting by another column would sort
    # the whole table for every page.
    ordering = ["-id"]
    sortable_by = ["id"]
    inlines = [LedgerPostingInline]
    fields = [
        "id",
        "kind",
        "company",
        "description",
        "amount_display",
        "shortfall_display",
        "balance_after_display",
        "posted_at",
        "effective_at",
        "actor",
        "cause_display",
        "reverses",
        "reversed_by_display",
        "idempotency_key",
        "metadata",
    ]
    readonly_fields = fields

    def get_queryset(self, request):
        return with_customer_amount(super().get_queryset(request), name="company_amount")

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "<path:object_id>/reverse/",
                self.admin_site.admin_view(self.reverse_view),
                name="{}_{}_reverse".format(*info),
            ),
            *super().get_urls(),
        ]

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None and request.user.has_perm("billing.reverse_transaction"):
            # Offered only where the service could agree; it still has the last word.
            reversible = (
                obj.company_id is not None
                and obj.kind != LedgerTransaction.Kind.EXPIRY
                and obj.reverses_id is None
                and self._reversal_of(obj) is None
            )
            if reversible:
                context["staff_actions"] = [
                    {
                        "url": reverse("admin:billing_ledgertransaction_reverse", args=[obj.pk]),
                        "label": gettext("Reverse"),
                    }
                ]
        return super().render_change_form(request, context, add, change, form_url, obj)

    @staticmethod
    def _reversal_of(obj) -> LedgerTransaction | None:
        # The reverse one-to-one caches what it found (or that nothing was), so the page
        # asks once for the button and the "reversed by" field.
        try:
            return obj.reversed_by
        except LedgerTransaction.DoesNotExist:
            return None

    # Columns ------------------------------------------------------------------------------

    def _money(self, obj, value):
        if value is None:
            return None
        if isinstance(value, Money):
            return str(value)
        return str(Money(value, obj.company.currency)) if obj.company_id else str(value)

    @admin.display(description=_("description"))
    def short_description(self, obj):
        return Truncator(obj.description).chars(80)

    @admin.display(description=_("amount"))
    def amount_display(self, obj):
        return self._money(obj, obj.company_amount)

    @admin.display(description=_("shortfall"))
    def shortfall_display(self, obj):
        return self._money(obj, obj.shortfall)

    @admin.display(description=_("balance after"))
    def balance_after_display(self, obj):
        return self._money(obj, obj.balance_after)

    @admin.display(description=_("cause"))
    def cause_display(self, obj):
        if obj.cause_type_id is None:
            return None
        cause_type = obj.cause_type
        try:
            url = reverse(
                f"admin:{cause_type.app_label}_{cause_type.model}_change", args=[obj.cause_id]
            )
        except NoReverseMatch:  # the cause's model has no admin page
            return f"{cause_type.name} #{obj.cause_id}"
        return format_html('<a href="{}">{} #{}</a>', url, cause_type.name, obj.cause_id)

    @admin.display(description=_("reversed by"))
    def reversed_by_display(self, obj):
        reversal = self._reversal_of(obj)
        if reversal is None:
            return None
        url = reverse("admin:billing_ledgertransaction_change", args=[reversal.pk])
        return format_html('<a href="{}">#{}</a>', url, reversal.pk)

    # Reversal -----------------------------------------------------------------------------

    def reverse_view(self, request, object_id):
        original = self.staff_action_object(request, object_id, "billing.reverse_transaction")
        company = original.company
        if company is None:
            raise Http404(gettext("Only a company's transactions can be reversed here."))
        form = TransactionReverseForm(self.staff_action_data(request), company=company)
        now = timezone.now()

        def perform(data) -> ActionDone:
            reversal = ledger.ledger_reverse(
                transaction=original, reason=data["reason"], actor=request.user, now=now
            )
            if replayed(reversal.posted_at, now):
                return ActionDone(
                    gettext("Transaction #%(id)s was already reversed by #%(reversal)s.")
                    % {"id": original.pk, "reversal": reversal.pk},
                    level=messages.WARNING,
                )
            return ActionDone(
                gettext("Transaction #%(id)s reversed by #%(reversal)s. Balance now %(balance)s.")
                % {"id": original.pk, "reversal": reversal.pk, "balance": reversal.balance_after},
                log=f"Reversed by #{reversal.pk}: {data['reason']}",
            )

        amount = self._money(original, original.company_amount)
        summary = [
            (_("Transaction"), str(original)),
            (_("Posted at"), formats.localize(timezone.localtime(original.posted_at))),
            (_("Effect on the balance"), amount),
            *company_summary(company, now),
        ]
        effect = gettext(
            "Posts the exact opposite of transaction #%(id)s; the original stays as it was. "
            "Credit it took from a lot goes back to that lot (or a new one if it has expired); "
            "credit it granted can be taken back only while its lot still holds all of it."
        ) % {"id": original.pk}
        return self.staff_action_response(
            request,
            obj=original,
            form=form,
            perform=perform,
            title=gettext("Reverse transaction #%(id)s") % {"id": original.pk},
            submit_label=gettext("Reverse"),
            summary=summary,
            effect=effect,
        )


@admin.register(LedgerAccount)
class LedgerAccountAdmin(ReadOnlyAdmin):
    list_display = ["code", "kind", "company", "currency", "balance_display"]
    list_filter = ["kind", "currency"]
    search_fields = ["code", "=company__account_code"]
    list_select_related = ["company"]
    ordering = ["-id"]
    sortable_by = ["id"]
    fields = ["kind", "code", "company", "currency", "balance_display"]
    readonly_fields = fields

    @admin.display(description=_("balance"))
    def balance_display(self, obj):
        # System accounts keep no running total (it would be one hot row under every post).
        if obj.company_id is None:
            return gettext("not stored (sum of its postings)")
        return str(obj.balance)


class LotStatusFilter(admin.SimpleListFilter):
    title = _("status")
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [("active", _("Active")), ("expired", _("Expired"))]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "active":
            return queryset.filter(expires_at__gt=now)
        if self.value() == "expired":
            return queryset.filter(expires_at__lte=now)
        return queryset


@admin.register(CreditLot)
class CreditLotAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "company",
        "source",
        "amount_display",
        "remaining_display",
        "granted_at",
        "expires_at",
        "status",
    ]
    list_filter = [LotStatusFilter, "source"]
    search_fields = ["=company__account_code"]
    list_select_related = ["company"]
    ordering = ["-id"]
    sortable_by = ["id"]
    fields = [
        "company",
        "source",
        "amount_display",
        "remaining_display",
        "granted_at",
        "expires_at",
        "status",
        "grant_transaction",
    ]
    readonly_fields = fields

    @admin.display(description=_("amount"))
    def amount_display(self, obj):
        return str(obj.amount)

    @admin.display(description=_("remaining"))
    def remaining_display(self, obj):
        return str(obj.remaining)

    @admin.display(description=_("status"))
    def status(self, obj):
        return gettext("Expired") if obj.expires_at <= timezone.now() else gettext("Active")
