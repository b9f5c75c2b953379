"""Back-office of invoicing: statement runs with their progress, statements read-only (with
their PDF and their emails, which staff can have sent again), credit notes issued through the
service. Nothing here holds a business rule."""

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _
from djmoney.money import Money

from billing.admin.base import (
    ActionDone,
    ReadOnlyAdmin,
    StaffActionMixin,
    company_summary,
    database_id,
)
from billing.forms import TransactionReverseForm

from .credit_notes import credit_note_issue
from .emails import statement_email_resend
from .exceptions import InvoicingError
from .forms import CreditNoteForm, PaymentForm
from .models import (
    BillingEmail,
    CreditNote,
    Payment,
    PaymentAllocation,
    Receivable,
    Statement,
    StatementLine,
    StatementRun,
    StatementRunItem,
    TopUpReminder,
)
from .payments import payment_record, payment_reverse
from .selectors import AGING_BUCKETS, receivables_aging
from .views import credit_note_response, pdf_response, receipt_response


class StatementRunItemInline(admin.TabularInline):
    model = StatementRunItem
    fields = ["company", "state", "statement", "attempts", "error", "updated_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    max_num = 0

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("company", "statement")


@admin.register(StatementRun)
class StatementRunAdmin(ReadOnlyAdmin):
    list_display = [
        "label",
        "started_at",
        "finished_at",
        "companies",
        "issued",
        "failed",
        "pending",
    ]
    inlines = [StatementRunItemInline]
    fields = ["year", "month", "started_at", "finished_at", "companies", "issued", "failed"]
    readonly_fields = fields

    @admin.display(description=_("month"))
    def label(self, obj):
        return obj.label

    @admin.display(description=_("pending"))
    def pending(self, obj):
        return obj.pending


class StatementLineInline(admin.TabularInline):
    model = StatementLine
    fields = ["group", "description", "quantity", "unit", "amount", "transaction"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    max_num = 0


class BillingEmailInline(admin.TabularInline):
    """The emails of a statement (issued, resent, reminders), newest first."""

    model = BillingEmail
    fields = [
        "created_at",
        "kind",
        "reminder_days",
        "recipient",
        "language",
        "status",
        "attempts",
        "sent_at",
        "requested_by",
        "error",
    ]
    readonly_fields = fields
    ordering = ["-created_at", "-id"]
    extra = 0
    can_delete = False
    max_num = 0
    verbose_name_plural = _("emails")

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("requested_by")

    @admin.display(description=_("last error"))
    def error(self, obj):
        # The exception itself is the traceback's last line; the whole of it is on the row.
        return obj.last_error.strip().splitlines()[-1] if obj.last_error.strip() else ""


@admin.register(Statement)
class StatementAdmin(ReadOnlyAdmin):
    list_display = [
        "number",
        "company",
        "period_start",
        "kind",
        "closing_balance",
        "amount_due",
        "due_date",
        "payment_status",
        "pdf_link",
    ]
    list_filter = ["kind", "payment_status", "series"]
    search_fields = ["number", "company__account_code", "company__name"]
    list_select_related = ["company"]
    inlines = [StatementLineInline, BillingEmailInline]
    # As the document shows it: the period in the company's days, each amount once (its
    # currency is the statement's), the totals in the order they add up.
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "number",
                    "kind",
                    "company",
                    "bill_to",
                    "period",
                    "issued_at",
                    "due_date",
                    "language",
                    "pdf_link",
                ]
            },
        ),
        (
            _("Totals"),
            {
                "fields": [
                    "currency",
                    "balance_forward",
                    "new_charges",
                    "adjustments",
                    "credits_applied",
                    "expired",
                    "taxable",
                    "tax_rate",
                    "tax",
                    "payments",
                    "closing_balance",
                    "amount_due",
                    "invoice_amount",
                    "payment_status",
                ]
            },
        ),
        (
            _("Books"),
            {"fields": ["series", "period_start", "period_end", "last_transaction_id"]},
        ),
    ]
    actions = ["resend_statement_email"]
    resend_template = "admin/invoicing/statement_resend_email.html"

    def get_readonly_fields(self, request, obj=None):
        return [field for _, options in self.fieldsets for field in options["fields"]]

    @admin.display(description=_("period"))
    def period(self, obj):
        first, last = obj.period_first_day, obj.period_last_day
        return f"{first:%Y-%m-%d} – {last:%Y-%m-%d} ({obj.billing_timezone})"

    @admin.display(description=_("bill to (at issue)"))
    def bill_to(self, obj):
        return bill_to(obj)

    def get_urls(self):
        return [
            path(
                "<int:pk>/pdf/",
                self.admin_site.admin_view(self.pdf_view),
                name="invoicing_statement_pdf",
            ),
            *super().get_urls(),
        ]

    def pdf_view(self, request, pk):
        statement = self.get_object(request, str(pk))
        if statement is None or not self.has_view_permission(request, statement):
            from django.http import Http404

            raise Http404
        return pdf_response(statement)

    @admin.display(description="PDF")
    def pdf_link(self, obj):
        return format_html(
            '<a href="{}">PDF</a>', reverse("admin:invoicing_statement_pdf", args=[obj.pk])
        )

    def has_resend_email_permission(self, request):
        return request.user.has_perm("invoicing.add_billingemail")

    @admin.action(description=_("Resend statement email"), permissions=["resend_email"])
    def resend_statement_email(self, request, queryset):
        """A confirmation page listing who gets each statement, then one service call per
        statement, each with a ``LogEntry``."""
        statements = list(
            queryset.select_related("company").prefetch_related("company__billing_contacts")
        )
        if request.POST.get("post") != "yes":
            context = {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": _("Resend statement emails"),
                "statements": statements,
                "action": "resend_statement_email",
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "media": self.media,
            }
            return TemplateResponse(request, self.resend_template, context)
        now = timezone.now()
        emails, without_contacts = 0, []
        for statement in statements:
            # The rows and their LogEntry commit together; the emails go out after.
            with transaction.atomic():
                sent = statement_email_resend(statement=statement, actor=request.user, now=now)
                if sent:
                    recipients = ", ".join(email.recipient for email in sent)
                    self.log_change(request, statement, f"Statement email resent to {recipients}")
            if not sent:
                without_contacts.append(statement.number)
            emails += len(sent)
        message = ngettext("%(count)d email queued.", "%(count)d emails queued.", emails) % {
            "count": emails
        }
        if without_contacts:
            message += " " + gettext("No billing contact, nothing sent: %(numbers)s.") % {
                "numbers": ", ".join(without_contacts)
            }
        self.message_user(
            request, message, messages.WARNING if without_contacts else messages.SUCCESS
        )
        return None


@admin.register(BillingEmail)
class BillingEmailAdmin(ReadOnlyAdmin):
    """Every statement email and reminder, to watch for failures; resending is an action on
    the statements."""

    list_display = [
        "created_at",
        "kind",
        "statement",
        "reminder_days",
        "recipient",
        "language",
        "status",
        "attempts",
        "sent_at",
        "requested_by",
    ]
    list_filter = ["status", "kind", "language"]
    search_fields = [
        "recipient",
        "statement__number",
        "statement__company__account_code",
        "block__company__account_code",
        "topup_reminder__company__account_code",
        "lot__company__account_code",
    ]
    list_select_related = ["statement", "requested_by"]
    readonly_fields = [
        *list_display,
        "block",
        "topup_reminder",
        "below_since",
        "lot",
        "recipient_name",
        "claimed_at",
        "last_error",
    ]
    exclude = []


@admin.register(TopUpReminder)
class TopUpReminderAdmin(ReadOnlyAdmin):
    """The companies' top-up reminders, as their billing users set them in the portal (staff
    read them; the emails they sent are among the billing emails)."""

    list_display = ["company", "threshold", "addresses", "below_since", "updated_at"]
    search_fields = ["company__account_code", "company__name"]
    list_select_related = ["company"]
    readonly_fields = [*list_display, "updated_by"]
    exclude = ["recipients"]

    @admin.display(description=_("recipients"))
    def addresses(self, obj: TopUpReminder) -> str:
        return ", ".join(obj.recipients) or _("none: stopped")


class PaymentAllocationInline(admin.TabularInline):
    model = PaymentAllocation
    fields = ["statement", "amount"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    max_num = 0

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("statement")


class CreditNoteAllocationInline(PaymentAllocationInline):
    verbose_name = _("invoice settled")
    verbose_name_plural = _("invoices settled")
    fk_name = "credit_note"


@admin.register(CreditNote)
class CreditNoteAdmin(ReadOnlyAdmin):
    list_display = ["number", "company", "amount", "reason", "issued_at", "issued_by", "pdf_link"]
    list_select_related = ["company", "issued_by"]
    search_fields = ["number", "company__account_code"]
    readonly_fields = [
        *list_display[:-1],
        "bill_to",
        "statement",
        "transaction",
        "tax_transaction",
        "pdf_link",
    ]
    exclude = ["parties"]
    inlines = [CreditNoteAllocationInline]

    @admin.display(description=_("bill to (at issue)"))
    def bill_to(self, obj):
        return bill_to(obj)

    @admin.display(description="PDF")
    def pdf_link(self, obj):
        return format_html(
            '<a href="{}">PDF</a>', reverse("admin:invoicing_creditnote_pdf", args=[obj.pk])
        )

    def get_urls(self):
        return [
            path(
                "<int:pk>/pdf/",
                self.admin_site.admin_view(self.pdf_view),
                name="invoicing_creditnote_pdf",
            ),
            *super().get_urls(),
        ]

    def pdf_view(self, request, pk):
        note = self.get_object(request, str(pk))
        if note is None or not self.has_view_permission(request, note):
            from django.http import Http404

            raise Http404
        return credit_note_response(note)

    def has_add_permission(self, request, obj=None):
        return request.user.has_perm("invoicing.add_creditnote")

    def add_view(self, request, form_url="", extra_context=None):
        """Issue a credit note through the service (no model form: the ledger posts it)."""
        # This view replaces Django's add view, so it asks for the permission itself.
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = CreditNoteForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            company = form.cleaned_data["company"]
            try:
                note = credit_note_issue(
                    company=company,
                    amount=Money(form.cleaned_data["amount"], company.currency),
                    reason=form.cleaned_data["reason"],
                    statement=form.cleaned_data["statement"],
                    actor=request.user,
                    idempotency_key=f"admin:credit-note:{form.cleaned_data['idempotency_key']}",
                )
            except InvoicingError as error:
                form.add_error(None, str(error))
            except Exception as error:  # the ledger's refusals (amount, currency)
                from billing.exceptions import BillingError

                if not isinstance(error, BillingError):
                    raise
                form.add_error(None, str(error))
            else:
                self.log_addition(request, note, f"Issued credit note {note.number}")
                self.message_user(request, f"Credit note {note.number} issued.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:invoicing_creditnote_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Issue a credit note"),
            "form": form,
        }
        return TemplateResponse(request, "admin/invoicing/creditnote_add.html", context)


def bill_to(document: Statement | Payment | CreditNote) -> str:
    """Whom the document names, which may differ from the company as it is now."""
    company = document.parties["company"]
    return format_html(
        "{} ({})<br>{}", company["name"], company["account_code"], document.parties["contact"]
    )


# Who may reverse a payment: whoever may reverse ledger transactions.
REVERSE_PERMISSION = "billing.reverse_transaction"


@admin.register(Payment)
class PaymentAdmin(StaffActionMixin, ReadOnlyAdmin):
    """Payments are recorded through the service (add form) and never changed afterwards;
    one recorded by mistake is reversed from its page (``payment_reverse``)."""

    list_display = [
        "receipt_number",
        "company",
        "method",
        "amount",
        "received_on",
        "reference",
        "status",
        "recorded_by",
        "receipt_link",
    ]
    list_filter = ["method", "status"]
    list_select_related = ["company", "recorded_by"]
    search_fields = ["receipt_number", "reference", "company__account_code", "company__name"]
    inlines = [PaymentAllocationInline]
    readonly_fields = [
        *list_display[:-1],
        "bill_to",
        "recorded_at",
        "transaction",
        "receipt_link",
    ]
    exclude = ["parties"]
    change_form_template = "admin/billing/change_form_with_actions.html"

    @admin.display(description=_("bill to (at issue)"))
    def bill_to(self, obj):
        return bill_to(obj)

    def has_add_permission(self, request, obj=None):
        return request.user.has_perm("invoicing.add_payment")

    def get_urls(self):
        return [
            path(
                "<int:pk>/receipt/",
                self.admin_site.admin_view(self.receipt_view),
                name="invoicing_payment_receipt",
            ),
            path(
                "<path:object_id>/reverse/",
                self.admin_site.admin_view(self.reverse_view),
                name="invoicing_payment_reverse",
            ),
            *super().get_urls(),
        ]

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if (
            obj is not None
            and obj.status == Payment.Status.SUCCESSFUL
            and request.user.has_perm(REVERSE_PERMISSION)
        ):
            context["staff_actions"] = [
                {
                    "url": reverse("admin:invoicing_payment_reverse", args=[obj.pk]),
                    "label": gettext("Reverse payment"),
                }
            ]
        return super().render_change_form(request, context, add, change, form_url, obj)

    def reverse_view(self, request, object_id):
        payment = self.staff_action_object(request, object_id, REVERSE_PERMISSION)
        form = TransactionReverseForm(self.staff_action_data(request), company=payment.company)
        invoices = ", ".join(
            allocation.statement.number
            for allocation in payment.allocations.select_related("statement")
        )

        def perform(data) -> ActionDone:
            payment_reverse(payment=payment, reason=data["reason"], actor=request.user)
            return ActionDone(
                gettext("Payment %(number)s reversed; the invoices it paid are open again.")
                % {"number": payment.receipt_number},
                log=f"Reversed: {data['reason']}",
            )

        summary = [
            (_("receipt"), payment.receipt_number),
            (_("amount"), str(payment.amount)),
            (_("Invoices it paid"), invoices or "—"),
            *company_summary(payment.company, timezone.now()),
        ]
        effect = gettext(
            "Reverses the payment's ledger transaction (the company owes the amount again), "
            "removes its allocations and reopens the invoices it paid. The payment and its "
            "receipt number stay, marked reversed."
        )
        return self.staff_action_response(
            request,
            obj=payment,
            form=form,
            perform=perform,
            title=gettext("Reverse payment %(number)s") % {"number": payment.receipt_number},
            submit_label=gettext("Reverse payment"),
            summary=summary,
            effect=effect,
            can_submit=payment.status == Payment.Status.SUCCESSFUL,
        )

    def receipt_view(self, request, pk):
        payment = self.get_object(request, str(pk))
        if payment is None or not self.has_view_permission(request, payment):
            from django.http import Http404

            raise Http404
        return receipt_response(payment)

    @admin.display(description=_("receipt"))
    def receipt_link(self, obj):
        return format_html(
            '<a href="{}">PDF</a>', reverse("admin:invoicing_payment_receipt", args=[obj.pk])
        )

    def add_view(self, request, form_url="", extra_context=None):
        """Record a bank transfer through the service (the ledger posts it, the service
        allocates it); a refusal is shown on the form."""
        # This view replaces Django's add view, so it asks for the permission itself.
        if not self.has_add_permission(request):
            raise PermissionDenied
        company_id = database_id(request.POST.get("company") or request.GET.get("company"))
        form = PaymentForm(request.POST or None, company_id=company_id)
        if request.method == "POST" and form.is_valid():
            company = form.cleaned_data["company"]
            invoices = form.cleaned_data["invoices"]
            try:
                payment = payment_record(
                    company=company,
                    amount=Money(form.cleaned_data["amount"], company.currency),
                    received_on=form.cleaned_data["received_on"],
                    reference=form.cleaned_data["reference"],
                    allocations=[(invoice, None) for invoice in invoices] or None,
                    actor=request.user,
                    same_details_confirmed=form.cleaned_data["same_details_confirmed"],
                )
            except InvoicingError as error:
                form.add_error(None, str(error))
            else:
                self.log_addition(request, payment, f"Recorded payment {payment.receipt_number}")
                self.message_user(
                    request,
                    f"Payment {payment.receipt_number} of {payment.amount} recorded.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:invoicing_payment_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Record a bank transfer"),
            "form": form,
        }
        return TemplateResponse(request, "admin/invoicing/payment_add.html", context)


@admin.register(Receivable)
class ReceivablesAgingAdmin(admin.ModelAdmin):
    """Open invoices by how late they are, per company and in total per currency: what
    finance chases first. Seen by whoever may see statements."""

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm("invoicing.view_statement") or request.user.has_perm(
            "invoicing.view_receivable"
        )

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        if not self.has_view_permission(request):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        now = timezone.now()
        report = receivables_aging(now)
        labels = {
            "current": _("Not yet due"),
            "1-30": _("1–30 days"),
            "31-60": _("31–60 days"),
            "61-90": _("61–90 days"),
            "over-90": _("Over 90 days"),
        }
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Receivables aging"),
            "report": report,
            "bucket_labels": [labels[label] for label, _last in AGING_BUCKETS],
            "as_of": now,
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/invoicing/receivables_aging.html", context)
