"""Back-office for the ledger: read-only books, and the reversal as a confirmation page.

Nothing here writes a ledger row: every change goes through ``billing.services.ledger``.
Transactions, postings, accounts and lots are shown read-only and cannot be deleted; a
mistake is corrected by a reversal or an adjustment. ``CompanyMoneyMixin`` is the money
part of the company page in ``accounts.admin``.
"""

from django.contrib import admin, messages
from django.db.models import Q
from django.http import Http404
from django.urls import NoReverseMatch, path, reverse
from django.utils import formats, timezone
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.text import Truncator
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _
from djmoney.money import Money

from accounts.models import Company

from ..forms import TransactionReverseForm
from ..models import CreditLot, LedgerAccount, LedgerPosting, LedgerTransaction
from ..selectors import (
    company_available,
    company_balance,
    company_lots,
    company_transactions,
    with_customer_amount,
)
from ..services import ledger
from .base import (
    ActionDone,
    ReadOnlyAdmin,
    StaffActionMixin,
    company_summary,
    database_id,
    html_table,
    money_or_unlimited,
    replayed,
    when,
)

# How much history the company page shows; the ledger lists hold the rest.
RECENT_TRANSACTIONS = 20
LOTS_SHOWN = 20


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


# Kinds the ledger service never reverses from this page: an expiry (grant anew), a payment
# (reversed from its own page, with its invoices), a credit note (an issued document).
NOT_REVERSIBLE_HERE = (
    LedgerTransaction.Kind.EXPIRY,
    LedgerTransaction.Kind.PAYMENT,
    LedgerTransaction.Kind.CREDIT_NOTE,
)


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
    # Searched by get_search_results (these name what it searches, and make the box appear).
    search_fields = ["idempotency_key", "company__account_code", "description"]
    search_help_text = _(
        "Transaction number, idempotency key (its beginning) or company account code "
        "(exact). Words of the description: in the list of one company."
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
        "usage_records_display",
        "reverses",
        "reversed_by_display",
        "idempotency_key",
        "metadata",
    ]
    readonly_fields = fields

    def get_queryset(self, request):
        return with_customer_amount(super().get_queryset(request), name="company_amount")

    def get_search_results(self, request, queryset, search_term):
        # Each branch is one an index serves, so a search never reads the whole ledger (the
        # admin's own search would: its case-insensitive terms and the description, OR-ed,
        # fit no index): the number through the primary key, a key's beginning through the
        # key's pattern index, a company's code through (company, posted at). Words of the
        # description only where the list is one company's already (company__id__exact).
        term = search_term.strip()
        if not term:
            return queryset, False
        matches = Q(idempotency_key__startswith=term)
        if (number := database_id(term)) is not None:
            matches |= Q(pk=number)
        companies = list(Company.objects.filter(account_code=term).values_list("pk", flat=True))
        if companies:
            matches |= Q(company_id__in=companies)
        if request is not None and request.GET.get("company__id__exact"):
            matches |= Q(description__icontains=term)
        return queryset.filter(matches), False

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
                and obj.kind not in NOT_REVERSIBLE_HERE
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

    @admin.display(description=_("usage records"))
    def usage_records_display(self, obj):
        # The records are indexed by company and time, not by transaction: the link narrows
        # them by both first, with the span of the events the transaction charged.
        metadata = obj.metadata or {}
        if obj.kind != LedgerTransaction.Kind.USAGE or "occurred_from" not in metadata:
            return None
        query = urlencode(
            {
                "company__id__exact": obj.company_id,
                "occurred_at__gte": metadata["occurred_from"],
                "occurred_at__lte": metadata["occurred_until"],
                "transaction__id__exact": obj.pk,
            }
        )
        count = metadata["events"]
        return format_html(
            '<a href="{}?{}">{}</a>',
            reverse("admin:billing_usagerecord_changelist"),
            query,
            ngettext("%(count)d event", "%(count)d events", count) % {"count": count},
        )

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
