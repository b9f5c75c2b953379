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

from datetime import date, timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from accounts.models import Company
from billing.models import LedgerTransaction, money_field


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
    balance_forward = money_field(_("balance forward"))
    new_charges = money_field(_("new charges"))
    adjustments = money_field(_("adjustments"))
    credits_applied = money_field(_("credits applied"))
    payments = money_field(_("payments"))
    expired = money_field(_("credits expired"))
    taxable = money_field(_("taxable amount"))
    tax = money_field(_("tax"))
    closing_balance = money_field(_("closing balance"))
    amount_due = money_field(_("amount due"))
    # Payments are allocated to invoices later (issue #7, payments): the statement row stays
    # immutable, so what has been paid will live in allocation rows, summed when read.
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
        indexes = [models.Index(fields=["company", "-period_start"], name="statement_company")]

    def __str__(self) -> str:
        return self.number

    @property
    def is_invoice(self) -> bool:
        return self.kind == self.Kind.INVOICE

    @property
    def period_first_day(self) -> date:
        return self.period_start.astimezone(self.company.tzinfo).date()

    @property
    def period_last_day(self) -> date:
        """The period's last day in the billing time zone (``period_end`` is exclusive)."""
        return (self.period_end.astimezone(self.company.tzinfo) - timedelta(days=1)).date()

    @property
    def credit_balance(self):
        """What a prepaid company holds at the end of the period."""
        return -self.closing_balance

    @property
    def opening_credit(self):
        return -self.balance_forward


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
    It is posted to the ledger when issued and shows on the next statement."""

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

    class Meta:
        verbose_name = _("credit note")
        verbose_name_plural = _("credit notes")
        ordering = ["-issued_at"]
        constraints = [
            models.CheckConstraint(name="credit_note_amount_positive", condition=Q(amount__gt=0))
        ]

    def __str__(self) -> str:
        return self.number


class Payment(models.Model):
    """Money received from a company (a bank transfer now; a card or credits later), with its
    receipt number (series ``RCP-<year>``, gapless, taken in the recording transaction).

    A successful payment is posted to the ledger once (idempotency key ``payment:<id>``:
    customer balance up, ``cash`` down) and allocated to open invoices by
    ``PaymentAllocation`` rows; what no invoice took stays unallocated on the payment.
    Recorded payments are never edited or deleted: a mistake is reversed in the ledger.
    """

    class Method(models.TextChoices):
        BANK_TRANSFER = "bank_transfer", _("Bank transfer")
        CARD = "card", _("Card")
        CREDITS = "credits", _("Credits")

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        SUCCESSFUL = "successful", _("Successful")
        FAILED = "failed", _("Failed")

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
    """The part of a payment that pays one invoice. The statement row stays immutable: what
    an invoice has been paid is the sum of its allocations."""

    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="allocations")
    statement = models.ForeignKey(
        Statement,
        on_delete=models.PROTECT,
        related_name="allocations",
        verbose_name=_("invoice"),
    )
    amount = money_field(_("amount"))

    class Meta:
        verbose_name = _("payment allocation")
        verbose_name_plural = _("payment allocations")
        ordering = ["payment", "id"]
        constraints = [
            models.CheckConstraint(
                name="payment_allocation_amount_positive", condition=Q(amount__gt=0)
            ),
            models.UniqueConstraint(
                fields=["payment", "statement"], name="payment_allocation_once_per_invoice"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.payment_id} → {self.statement_id}: {self.amount}"
