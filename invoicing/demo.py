"""Demo statements: every month of the demo's usage that has ended is closed, so the
portal's Statements page has invoices (postpaid) and account statements (prepaid) to show.

The demo companies are created when the seed runs, but their usage and fees go back
``billing.demo.DAYS`` days; they are dated as customers since then, or no month before
today would be theirs to close. Closing is idempotent, so running the seed again adds
nothing. Each month is issued on the 2nd of the next, as the hourly run would have, and
each invoice is paid by bank transfer three days before its due date, recorded on that day:
so each statement shows the payments of its month, the Payment history has receipts and no
demo company is overdue. ``seed_demo`` runs this as the simulated days pass
(``billing.demo.seed_billing``'s ``midday``), so the ledger holds it in the order it happened.
The postpaid demo company also has one credit note, on its latest invoice; the prepaid one a
top-up reminder.
"""

from datetime import UTC, datetime, time, timedelta

from djmoney.money import Money

from accounts.models import Company
from billing.demo import DAYS
from billing.money import quantize_amount

from .credit_notes import credit_note_issue
from .models import OPEN_PAYMENT_STATUSES, CreditNote, Statement, TopUpReminder
from .payments import payment_record
from .runs import period_close
from .selectors import open_amounts
from .topup import topup_reminder_set

DEMO_COMPANIES = ("acme-prepaid", "kumo-postpaid", "globex-usd")


def seed_statements(now: datetime, until: datetime | None = None) -> int:
    """Close the demo's ended months, oldest first, and pay what was due; returns the
    statements issued now. With ``until`` (a moment of the simulated past, as
    ``billing.demo.seed_billing`` passes each day), only what happened by then."""
    until = min(until or now, now)
    start = (now - timedelta(days=DAYS)).replace(hour=0, minute=0, second=0, microsecond=0)
    Company.objects.filter(account_code__in=DEMO_COMPANIES, created_at__gt=start).update(
        created_at=start
    )
    issued = 0
    year, month = start.year, start.month
    while (year, month) < (now.year, now.month):
        following = (year + 1, 1) if month == 12 else (year, month + 1)
        # Issued as the hourly run would have: early on the 2nd in UTC, when the month has
        # ended in every time zone (UTC-12 ends it at noon on the 1st), not all today.
        issued_at = min(now, datetime(*following, 2, 9, tzinfo=UTC))
        if issued_at > until:
            break
        seed_payments(now=issued_at)
        issued += period_close(year=year, month=month, now=issued_at).issued
        year, month = following
    seed_payments(now=until)
    return issued


def seed_payments(now: datetime) -> int:
    """Pay every demo invoice three days before its due date, recorded on that day at 10:00,
    once that moment has passed. Idempotent: paid ones are not open any more. Returns the
    payments recorded now."""
    overdue = Statement.objects.filter(
        company__account_code__in=DEMO_COMPANIES,
        kind=Statement.Kind.INVOICE,
        payment_status__in=OPEN_PAYMENT_STATUSES,
    ).select_related("company")
    open_amount = open_amounts(overdue)
    recorded = 0
    for invoice in overdue.order_by("company_id", "period_start"):
        if invoice.due_date is None:
            continue
        received_on = invoice.due_date - timedelta(days=3)
        recorded_at = datetime.combine(received_on, time(10), tzinfo=invoice.company.tzinfo)
        if recorded_at > now:
            continue
        payment_record(
            company=invoice.company,
            amount=Money(open_amount[invoice.pk], invoice.currency),
            received_on=received_on,
            reference=f"Bank transfer for {invoice.number}",
            allocations=[(invoice, None)],
            now=recorded_at,
        )
        recorded += 1
    return recorded


def seed_credit_note(now: datetime) -> CreditNote | None:
    """A goodwill credit note of a tenth of the postpaid demo company's latest invoice,
    settling part of it (once: none is issued when the company has one already)."""
    invoice = (
        Statement.objects.filter(company__account_code="kumo-postpaid", kind=Statement.Kind.INVOICE)
        .select_related("company")
        .order_by("-period_start")
        .first()
    )
    if invoice is None or CreditNote.objects.filter(company=invoice.company).exists():
        return None
    amount = quantize_amount(invoice.invoice_amount.amount / 10, invoice.currency)
    if amount <= 0:
        return None
    return credit_note_issue(
        company=invoice.company,
        amount=Money(amount, invoice.currency),
        reason="Goodwill for the voice outage of the 14th",
        actor=None,
        statement=invoice,
        idempotency_key=f"demo-credit-note:{invoice.pk}",
        now=now,
    )


def seed_topup_reminder(now: datetime) -> TopUpReminder | None:
    """Acme's billing team hears when its credit falls below ¥10,000. Idempotent: a reminder
    already there (or stopped in the portal) is left as it is."""
    company = Company.objects.filter(account_code="acme-prepaid").first()
    if company is None or TopUpReminder.objects.filter(company=company).exists():
        return None
    return topup_reminder_set(
        company=company,
        threshold=Money(10000, "JPY"),
        recipients=["alice@acme.example", "billing@acme.example"],
        now=now,
    )
