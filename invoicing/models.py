"""Monthly statements (invoices and prepaid account statements), their numbering, the runs
that issue them, and credit notes.

Sign convention of a statement: amounts are *owed-positive*, the way a customer reads an
invoice. A charge line is positive, a payment or a credit negative; ``closing_balance`` is
what the company owes at the end of the period (negative: credit it holds). That is the
opposite sign of the ledger's customer balance (credit-positive), so
``closing_balance == -(ledger balance at the period end)`` and
``closing_balance == balance_forward + sum(lines)``, to the minor unit.

Issued statements never change: ``save`` and ``delete`` refuse, and on PostgreSQL triggers
refuse UPDATE and DELETE of statements and their lines (migration 0002). A correction is a
credit note or an adjustment, which shows on the next statement.
"""

import zoneinfo
from datetime import date, timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from accounts.models import Company, CompanyBlock
from billing.models import CreditLot, LedgerTransaction, money_field


class ImmutableError(Exception):
    """An issued statement (or one of its lines) was about to be changed or deleted."""


class NumberSeries(models.Model):
    """The next number of one series, e.g. ``INV-2026``: a row locked (``SELECT ... FOR
    UPDATE``) by the transaction that issues a document, never a database sequence. A
    rolled-back issue rolls the counter back with it, so numbers have no gaps."""

    name = models.CharField(_("series"), max_length=32, unique=True)
    next_value = models.PositiveBigIntegerField(_("next number"), default=1)

    class Meta:
        verbose_name = _("number series")
        verbose_name_plural = _("number series")
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} (next {self.next_value})"


class StatementRun(models.Model):
    """Closing one calendar month (in each company's billing time zone): one row per month,
    one item per company. A run that was killed is resumed by running it again; the items
    say which companies are done."""

    year = models.PositiveSmallIntegerField(_("year"))
    month = models.PositiveSmallIntegerField(_("month"))
    started_at = models.DateTimeField(_("started at"))
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    companies = models.PositiveIntegerField(_("companies"), default=0)
    issued = models.PositiveIntegerField(_("issued"), default=0)
    failed = models.PositiveIntegerField(_("failed"), default=0)

    class Meta:
        verbose_name = _("statement run")
        verbose_name_plural = _("statement runs")
        ordering = ["-year", "-month"]
        constraints = [
            models.UniqueConstraint(fields=["year", "month"], name="statement_run_once_per_month")
        ]
        permissions = [("close_period", _("Can close a month (issue statements)"))]

    def __str__(self) -> str:
        return f"{self.year}-{self.month:02d}"

    @property
    def label(self) -> str:
        return f"{self.year}-{self.month:02d}"

    @property
    def pending(self) -> int:
        return max(self.companies - self.issued - self.failed, 0)


class StatementRunItem(models.Model):
    class State(models.TextChoices):
        PENDING = "pending", _("Pending")
        ISSUED = "issued", _("Issued")
        FAILED = "failed", _("Failed")

    run = models.ForeignKey(StatementRun, on_delete=models.CASCADE, related_name="items")
    company = models.ForeignKey(Company, on_delete=models.PROTECT, related_name="+")
    state = models.CharField(_("state"), max_length=10, choices=State, default=State.PENDING)
    statement = models.OneToOneField(
        "Statement", on_delete=models.PROTECT, null=True, blank=True, related_name="run_item"
    )
    error = models.TextField(_("error"), blank=True)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    updated_at = models.DateTimeField(_("updated at"), null=True, blank=True)

    class Meta:
        verbose_name = _("statement run item")
        verbose_name_plural = _("statement run items")
        ordering = ["run", "company_id"]
        constraints = [
            models.UniqueConstraint(fields=["run", "company"], name="statement_run_item_once")
        ]
        indexes = [models.Index(fields=["run", "state"], name="statement_run_item_state")]

    def __str__(self) -> str:
        return f"{self.run} {self.company_id}: {self.state}"


class ImmutableModel(models.Model):
    """Rows written once, in the issuing transaction, and never again."""

    # Fields that may still change after issue (a statement's payment status).
    mutable_fields: frozenset[str] = frozenset()

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        update_fields = kwargs.get("update_fields")
        changes_only_mutable = update_fields is not None and set(update_fields) <= set(
            self.mutable_fields
        )
        if not self._state.adding and not changes_only_mutable:
            raise ImmutableError(f"{self._meta.verbose_name} #{self.pk} is issued and final.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ImmutableError(f"{self._meta.verbose_name} #{self.pk} is issued and final.")


class Statement(ImmutableModel):
    """One company's statement of one calendar month in its billing time zone."""

    class Kind(models.TextChoices):
        INVOICE = "invoice", _("Invoice")
        ACCOUNT_STATEMENT = "account_statement", _("Account statement")

    mutable_fields = frozenset({"payment_status"})

    class PaymentStatus(models.TextChoices):
        NOT_DUE = "not_due", _("Nothing due")
        PENDING = "pending", _("Pending")
        PARTIALLY_PAID = "partially_paid", _("Partially paid")
        PAID = "paid", _("Paid")

    company = models.ForeignKey(
        Company, on_delete=models.PROTECT, related_name="statements", verbose_name=_("company")
    )
    kind = models.CharField(_("kind"), max_length=20, choices=Kind)
    number = models.CharField(_("number"), max_length=40, unique=True)
    series = models.CharField(_("series"), max_length=32)
    period_start = models.DateTimeField(_("period start"))
    period_end = models.DateTimeField(_("period end"))
    issued_at = models.DateTimeField(_("issued at"))
    due_date = models.DateField(_("due date"), null=True, blank=True)
    currency = models.CharField(_("currency"), max_length=3)
    tax_rate = models.DecimalField(_("tax rate"), max_digits=5, decimal_places=4)
    language = models.CharField(_("language"), max_length=8, default="en")
    # Who issued the statement and to whom, as they stood at issue (``document_parties``):
    # the operator's name, address, registration and email; the company's name, account
    # code and billing time zone; its first billing contact. The document shows these, so
    # renaming the company or changing a setting later does not change an issued statement.
    parties = models.JSONField(_("parties at issue"), default=dict)
    balance_forward = money_field(_("balance forward"))
    new_charges = money_field(_("new charges"))
    adjustments = money_field(_("adjustments"))
    credits_applied = money_field(_("credits applied"))
    payments = money_field(_("payments"))
    expired = money_field(_("credits expired"))
    taxable = money_field(_("taxable amount"))
    tax = money_field(_("tax"))
    closing_balance = money_field(_("closing balance"))
    # What the company owes in all at the period end (the closing balance, never below zero):
    # the "Total due" a customer reads, older unpaid invoices included.
    amount_due = money_field(_("amount due"))
    # This invoice's own amount, which payments are allocated against: the period's charges
    # less credits plus tax, less any credit the account already held, never below zero and
    # never more than the total due. Older invoices keep their own open amounts, so an
    # unpaid balance carried forward is owed once, not once per invoice that shows it.
    invoice_amount = money_field(_("invoice amount"))
    # The statement row stays immutable: what has been paid lives in allocation rows
    # (``PaymentAllocation``), summed when read; only ``payment_status`` follows them.
    payment_status = models.CharField(
        _("payment status"), max_length=20, choices=PaymentStatus, default=PaymentStatus.PENDING
    )
    # Which ledger transactions the statement covers: those of the company with
    # ``effective_at < period_end`` and ``id <= last_transaction_id`` (the last one written
    # when it was issued, under the company lock), less those an earlier statement covered.
    last_transaction_id = models.BigIntegerField(_("last transaction covered"), default=0)
    tax_transaction = models.OneToOneField(
        LedgerTransaction,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="taxed_statement",
        verbose_name=_("tax transaction"),
    )
    run = models.ForeignKey(
        StatementRun, on_delete=models.PROTECT, null=True, blank=True, related_name="statements"
    )

    class Meta:
        verbose_name = _("statement")
        verbose_name_plural = _("statements")
        ordering = ["-period_start", "company_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["company", "period_start"], name="statement_once_per_company_period"
            ),
            models.CheckConstraint(
                name="statement_period_is_forward",
                condition=Q(period_end__gt=models.F("period_start")),
            ),
        ]
        indexes = [
            models.Index(fields=["company", "-period_start"], name="statement_company"),
            # The email sweep reads recent statements; dunning reads open invoices by due date.
            models.Index(fields=["issued_at"], name="statement_issued"),
            models.Index(
                fields=["due_date", "company"],
                condition=Q(kind="invoice", payment_status__in=["pending", "partially_paid"]),
                name="statement_open_invoice_due",
            ),
        ]

    def __str__(self) -> str:
        return self.number

    @property
    def is_invoice(self) -> bool:
        return self.kind == self.Kind.INVOICE

    def is_overdue_on(self, today: date) -> bool:
        """Unpaid (wholly or partly) after its due date, ``today`` being the company's date."""
        return (
            self.due_date is not None
            and today > self.due_date
            and self.payment_status in OPEN_PAYMENT_STATUSES
        )

    @property
    def billing_timezone(self) -> str:
        """The company's billing time zone when the statement was issued: its period's days
        are that zone's days, whatever the company's zone is now."""
        return self.parties["company"]["billing_timezone"]

    @property
    def period_first_day(self) -> date:
        return self.period_start.astimezone(zoneinfo.ZoneInfo(self.billing_timezone)).date()

    @property
    def period_month(self) -> tuple[int, int]:
        """The (year, month) the statement is for."""
        first = self.period_first_day
        return first.year, first.month

    @property
    def period_last_day(self) -> date:
        """The period's last day in the billing time zone (``period_end`` is exclusive)."""
        end = self.period_end.astimezone(zoneinfo.ZoneInfo(self.billing_timezone))
        return (end - timedelta(days=1)).date()

    @property
    def credit_balance(self):
        """What a prepaid company holds at the end of the period."""
        return -self.closing_balance

    @property
    def other_changes(self):
        """Everything between the balance forward and the closing balance besides new
        charges and tax: credits, payments, adjustments, expired credit (owed-positive), so
        that a row of the statements list adds up."""
        return self.closing_balance - self.balance_forward - self.new_charges - self.tax

    @property
    def opening_credit(self):
        return -self.balance_forward


# An invoice with something still to pay on it.
OPEN_PAYMENT_STATUSES = (Statement.PaymentStatus.PENDING, Statement.PaymentStatus.PARTIALLY_PAID)


class StatementLine(ImmutableModel):
    class Group(models.TextChoices):
        BASE_FEE = "base_fee", _("Base fees")
        USAGE = "usage", _("Usage fees")
        ADJUSTMENT = "adjustment", _("Adjustments")
        CREDIT = "credit", _("Credits")
        PAYMENT = "payment", _("Payments")
        EXPIRY = "expiry", _("Expired credit")
        TAX = "tax", _("Tax")

    statement = models.ForeignKey(Statement, on_delete=models.PROTECT, related_name="lines")
    group = models.CharField(_("group"), max_length=20, choices=Group)
    service = models.CharField(_("service"), max_length=32, blank=True)
    description = models.CharField(_("description"), max_length=500)
    quantity = models.DecimalField(
        _("quantity"), max_digits=24, decimal_places=6, null=True, blank=True
    )
    unit = models.CharField(_("unit"), max_length=16, blank=True)
    amount = money_field(_("amount"))
    # An itemised line (a fee, an adjustment, a payment) names its ledger transaction; a
    # grouped line (usage of one service) says how many transactions and records it sums.
    transaction = models.ForeignKey(
        LedgerTransaction,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="statement_lines",
    )
    transaction_count = models.PositiveIntegerField(_("transactions"), default=0)
    record_count = models.PositiveIntegerField(_("detail records"), default=0)
    sort_order = models.PositiveIntegerField(_("order"))

    class Meta:
        verbose_name = _("statement line")
        verbose_name_plural = _("statement lines")
        ordering = ["statement", "sort_order"]

    def __str__(self) -> str:
        return f"{self.description}: {self.amount}"


class CreditNote(ImmutableModel):
    """A correction in the company's favour, numbered in its own series (``CN-2026-...``).
    It is posted to the ledger when issued and shows on the next statement. Its amount
    includes tax, as an invoice's does (the tax in it is posted at issue). For a postpaid
    company it settles open invoices as a payment does (``PaymentAllocation`` rows: the
    invoice it corrects first, then the oldest); what no invoice takes lowers the next one."""

    company = models.ForeignKey(
        Company, on_delete=models.PROTECT, related_name="credit_notes", verbose_name=_("company")
    )
    number = models.CharField(_("number"), max_length=40, unique=True)
    amount = money_field(_("amount"))
    reason = models.CharField(_("reason"), max_length=500)
    statement = models.ForeignKey(
        Statement,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="credit_notes",
        verbose_name=_("corrects statement"),
    )
    issued_at = models.DateTimeField(_("issued at"))
    issued_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    transaction = models.OneToOneField(
        LedgerTransaction, on_delete=models.PROTECT, related_name="credit_note"
    )
    # The parties as they stood at issue: its PDF shows these (see ``Statement.parties``).
    parties = models.JSONField(_("parties at issue"), default=dict)
    # The tax in the note (postpaid with a tax rate): posted with it, so the next statement
    # does not tax the credit again (``invoicing.credit_notes.credit_note_split``).
    tax_transaction = models.OneToOneField(
        LedgerTransaction,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="credit_note_tax",
        verbose_name=_("tax transaction"),
    )

    class Meta:
        verbose_name = _("credit note")
        verbose_name_plural = _("credit notes")
        ordering = ["-issued_at"]
        constraints = [
            models.CheckConstraint(name="credit_note_amount_positive", condition=Q(amount__gt=0))
        ]

    def __str__(self) -> str:
        return self.number


class KeptPdf(ImmutableModel):
    """The PDF of an issued statement or credit note, as it was first rendered, kept so
    that every later download and email hands out the same bytes: an issued document does
    not change when the templates, the fonts or WeasyPrint do (``invoicing.documents``).
    Receipts are not kept: they show the payment's status, which a reversal changes."""

    statement = models.OneToOneField(
        Statement, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    credit_note = models.OneToOneField(
        CreditNote, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    content = models.BinaryField(_("PDF"))
    rendered_at = models.DateTimeField(_("rendered at"))

    class Meta:
        verbose_name = _("kept PDF")
        verbose_name_plural = _("kept PDFs")
        constraints = [
            models.CheckConstraint(
                name="kept_pdf_of_one_document",
                condition=Q(statement__isnull=False, credit_note__isnull=True)
                | Q(statement__isnull=True, credit_note__isnull=False),
            )
        ]

    def __str__(self) -> str:
        return f"PDF of {self.statement or self.credit_note}"


class Payment(models.Model):
    """Money received from a company (a bank transfer now; a card or credits later), with its
    receipt number (series ``RCP-<year>``, gapless, taken in the recording transaction).

    A successful payment is posted to the ledger once (idempotency key ``payment:<id>``:
    customer balance up, ``cash`` down) and allocated to open invoices by
    ``PaymentAllocation`` rows; what no invoice took stays unallocated on the payment.
    Recorded payments are never edited or deleted: a mistake is reversed in the ledger with
    the payment (``payment_reverse``), which reopens the invoices it paid.
    """

    class Method(models.TextChoices):
        BANK_TRANSFER = "bank_transfer", _("Bank transfer")
        CARD = "card", _("Card")
        CREDITS = "credits", _("Credits")

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        SUCCESSFUL = "successful", _("Successful")
        FAILED = "failed", _("Failed")
        # Recorded by mistake and reversed in the ledger (``payment_reverse``).
        REVERSED = "reversed", _("Reversed")

    company = models.ForeignKey(
        Company, on_delete=models.PROTECT, related_name="payments", verbose_name=_("company")
    )
    method = models.CharField(_("method"), max_length=20, choices=Method)
    amount = money_field(_("amount"))
    received_on = models.DateField(_("payment date"))
    recorded_at = models.DateTimeField(_("recorded at"))
    reference = models.CharField(_("reference"), max_length=200, blank=True)
    status = models.CharField(_("status"), max_length=12, choices=Status)
    receipt_number = models.CharField(_("receipt"), max_length=40, unique=True)
    # The parties as they stood when the payment was recorded: its receipt shows these (see
    # ``Statement.parties``).
    parties = models.JSONField(_("parties at issue"), default=dict)
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("recorded by"),
    )
    transaction = models.OneToOneField(
        LedgerTransaction,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="payment",
        verbose_name=_("ledger transaction"),
    )

    class Meta:
        verbose_name = _("payment")
        verbose_name_plural = _("payments")
        ordering = ["-recorded_at", "-id"]
        constraints = [
            models.CheckConstraint(name="payment_amount_positive", condition=Q(amount__gt=0))
        ]
        indexes = [models.Index(fields=["company", "-recorded_at"], name="payment_company")]

    def __str__(self) -> str:
        return self.receipt_number


class PaymentAllocation(models.Model):
    """The part of a payment, or of a credit note, that settles one invoice. The statement
    row stays immutable: what an invoice has been paid is the sum of its allocations,
    whichever of the two each came from (exactly one is set)."""

    payment = models.ForeignKey(
        Payment, on_delete=models.PROTECT, null=True, blank=True, related_name="allocations"
    )
    credit_note = models.ForeignKey(
        CreditNote,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="allocations",
        verbose_name=_("credit note"),
    )
    statement = models.ForeignKey(
        Statement,
        on_delete=models.PROTECT,
        related_name="allocations",
        verbose_name=_("invoice"),
    )
    amount = money_field(_("amount"))

    class Meta:
        verbose_name = _("allocation")
        verbose_name_plural = _("allocations")
        ordering = ["payment", "credit_note", "id"]
        constraints = [
            models.CheckConstraint(
                name="payment_allocation_amount_positive", condition=Q(amount__gt=0)
            ),
            models.CheckConstraint(
                name="allocation_from_a_payment_or_a_credit_note",
                condition=Q(payment__isnull=False, credit_note__isnull=True)
                | Q(payment__isnull=True, credit_note__isnull=False),
            ),
            models.UniqueConstraint(
                fields=["payment", "statement"], name="payment_allocation_once_per_invoice"
            ),
            models.UniqueConstraint(
                fields=["credit_note", "statement"], name="credit_note_allocation_once_per_invoice"
            ),
        ]

    def __str__(self) -> str:
        if self.payment_id:
            source = f"payment {self.payment_id}"
        else:
            source = f"credit note {self.credit_note_id}"
        return f"{source} → {self.statement_id}: {self.amount}"


class TopUpReminder(models.Model):
    """A company's top-up reminder: one email to ``recipients`` when the credit the company
    can still spend (``billing.selectors.company_available``) falls below ``threshold``, and
    the next only once it has been back at or above it (``invoicing.topup``)."""

    company = models.OneToOneField(
        Company,
        on_delete=models.PROTECT,
        related_name="topup_reminder",
        verbose_name=_("company"),
    )
    threshold = money_field(_("remind below"))
    recipients = models.JSONField(_("recipients"), default=list)  # email addresses
    # Since when the credit has been below the threshold, as the check saw it (the emails
    # of that fall were queued then); None while it is at or above: the reminder is armed.
    below_since = models.DateTimeField(_("below since"), null=True, blank=True)
    updated_at = models.DateTimeField(_("updated at"))
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("updated by"),
    )

    class Meta:
        verbose_name = _("top-up reminder")
        verbose_name_plural = _("top-up reminders")
        constraints = [
            models.CheckConstraint(
                name="topup_reminder_threshold_positive", condition=Q(threshold__gt=0)
            )
        ]

    def __str__(self) -> str:
        return f"{self.company}: below {self.threshold}"


class BillingEmail(models.Model):
    """One email to one billing contact: a statement when it is issued (or again when staff
    ask), a reminder that an invoice is overdue, a notice that the company's use of the
    service is suspended (a block set) or resumed (that block lifted), that credit left in
    a lot expires soon, or, to a recipient of the company's top-up reminder, that its credit
    fell below the reminder's threshold.

    The row is written before the message is sent, and is what makes sending safe to repeat:
    the automatic emails are unique per statement, recipient and kind (and, for reminders,
    days after the due date; for top-up emails, per fall below the threshold; for expiry
    notices, per lot); a send first
    claims the row (queued or failed → sending, one UPDATE), so a task run twice, or twice
    at once, sends once. A worker that dies after the mail server took the message but
    before the row says sent leaves it "sending"; once that claim is older than
    ``invoicing.emails.CLAIM_TIMEOUT`` it is sent again: at worst one duplicate, never a
    lost email.
    """

    class Kind(models.TextChoices):
        STATEMENT = "statement", _("Statement issued")
        REMINDER = "reminder", _("Overdue reminder")
        # The company's use was suspended (a block set), or resumed (that block lifted).
        BLOCKED = "blocked", _("Company blocked")
        UNBLOCKED = "unblocked", _("Company unblocked")
        # The company's credit fell below its top-up reminder's threshold.
        TOPUP = "topup", _("Top-up reminder")
        # A credit lot with credit left expires soon.
        EXPIRING = "expiring", _("Credit expiring soon")

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        SENDING = "sending", _("Sending")
        SENT = "sent", _("Sent")
        FAILED = "failed", _("Failed")
        # A reminder whose invoice was paid before it went out.
        NOT_NEEDED = "not_needed", _("Not needed any more")

    kind = models.CharField(_("kind"), max_length=12, choices=Kind)
    # The statement of a statement email or reminder; the block of a block email.
    statement = models.ForeignKey(
        Statement,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="emails",
        verbose_name=_("statement"),
    )
    block = models.ForeignKey(
        CompanyBlock,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="emails",
        verbose_name=_("block"),
    )
    # The reminder of a top-up email, and the fall below its threshold the email is about.
    topup_reminder = models.ForeignKey(
        TopUpReminder,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="emails",
        verbose_name=_("top-up reminder"),
    )
    below_since = models.DateTimeField(_("below since"), null=True, blank=True)
    # The credit lot of an expiry notice.
    lot = models.ForeignKey(
        CreditLot,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("credit lot"),
    )
    recipient = models.EmailField(_("recipient"))
    recipient_name = models.CharField(_("recipient name"), max_length=200, blank=True)
    language = models.CharField(_("language"), max_length=8, choices=settings.LANGUAGES)
    # Reminders: how many days after the due date this one is for (1, 7, 14...).
    reminder_days = models.PositiveSmallIntegerField(
        _("days after due date"), null=True, blank=True
    )
    status = models.CharField(_("status"), max_length=12, choices=Status, default=Status.QUEUED)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    last_error = models.TextField(_("last error"), blank=True)
    created_at = models.DateTimeField(_("created at"))
    claimed_at = models.DateTimeField(_("last attempt at"), null=True, blank=True)
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)
    # Staff who asked for the statement to be sent again (None: sent automatically).
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("resend requested by"),
    )

    class Meta:
        verbose_name = _("billing email")
        verbose_name_plural = _("billing emails")
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["statement", "recipient"],
                condition=Q(kind="statement", requested_by__isnull=True),
                name="billing_email_statement_once_per_recipient",
            ),
            models.UniqueConstraint(
                fields=["statement", "recipient", "reminder_days"],
                condition=Q(kind="reminder"),
                name="billing_email_reminder_once_per_recipient_and_day",
            ),
            models.UniqueConstraint(
                fields=["block", "recipient", "kind"],
                condition=Q(kind__in=["blocked", "unblocked"]),
                name="billing_email_block_once_per_recipient",
            ),
            models.CheckConstraint(
                name="billing_email_reminder_has_days",
                condition=Q(kind="reminder", reminder_days__isnull=False)
                | ~Q(kind="reminder") & Q(reminder_days__isnull=True),
            ),
            models.UniqueConstraint(
                fields=["topup_reminder", "below_since", "recipient"],
                condition=Q(kind="topup"),
                name="billing_email_topup_once_per_fall_and_recipient",
            ),
            models.UniqueConstraint(
                fields=["lot", "recipient"],
                condition=Q(kind="expiring"),
                name="billing_email_expiring_once_per_lot_and_recipient",
            ),
            models.CheckConstraint(
                name="billing_email_about_one_thing",
                condition=Q(
                    kind__in=["statement", "reminder"],
                    statement__isnull=False,
                    block__isnull=True,
                    topup_reminder__isnull=True,
                    lot__isnull=True,
                )
                | Q(
                    kind__in=["blocked", "unblocked"],
                    statement__isnull=True,
                    block__isnull=False,
                    topup_reminder__isnull=True,
                    lot__isnull=True,
                )
                | Q(
                    kind="topup",
                    statement__isnull=True,
                    block__isnull=True,
                    topup_reminder__isnull=False,
                    below_since__isnull=False,
                    lot__isnull=True,
                )
                | Q(
                    kind="expiring",
                    statement__isnull=True,
                    block__isnull=True,
                    topup_reminder__isnull=True,
                    lot__isnull=False,
                ),
            ),
        ]
        indexes = [
            # The sweep for emails whose task was lost reads only the few unsent rows.
            models.Index(
                fields=["created_at"],
                condition=Q(status__in=["queued", "sending"]),
                name="billing_email_unsent",
            )
        ]

    def __str__(self) -> str:
        if self.statement_id:
            about = self.statement_id
        elif self.block_id:
            about = f"block {self.block_id}"
        elif self.lot_id:
            about = f"lot {self.lot_id}"
        else:
            about = f"top-up reminder {self.topup_reminder_id}"
        return f"{self.get_kind_display()} {about} → {self.recipient}"


class Receivable(Statement):
    """The receivables aging report in the admin (open invoices by how late they are): a
    view of statements, with its own place and permission in the back-office."""

    class Meta:
        proxy = True
        verbose_name = _("receivables aging")
        verbose_name_plural = _("receivables aging")
