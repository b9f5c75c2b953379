"""Billing emails: each statement to the company's billing contacts when it is issued (and
again when staff ask), reminders of overdue invoices, and notices that the company's use of
the service is suspended (a block set) or resumed (that block lifted), or that credit left
in a lot expires soon (``invoicing.expiry_notices``); and to the recipients of a company's
top-up reminder, that its credit fell below the threshold (``invoicing.topup``).
Everything that writes a ``BillingEmail``.

An email is a row first, then a message. Rows are queued in bulk (one query for the
contacts, one insert, whatever the number of statements) and each is sent by its own task,
``invoicing.tasks.billing_email_send``, once the queuing transaction has committed. Sending
claims the row with one UPDATE that commits before the mail server is called (no lock is held
across the network) and records the outcome afterwards; ``BillingEmail`` says what that
guarantees when a task runs twice, twice at once, or dies half-way.

Each email is in its recipient's language (``BillingContact.language``; a top-up
reminder's recipients, who are addresses only, in the company's), as plain text and HTML.
The statement email carries the statement's PDF in the language it was issued in: an
issued document never changes.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.db.models import F, Q
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from accounts.models import BillingContact, Company, CompanyBlock
from billing.models import CreditLot
from billing.selectors import company_available

from .documents import statement_pdf
from .models import BillingEmail, Statement, TopUpReminder
from .selectors import invoice_open_amount, operator_details

Kind = BillingEmail.Kind
Status = BillingEmail.Status
logger = logging.getLogger(__name__)

BLANK_LINES = re.compile(r"\n\s*\n(\s*\n)+")

# What a billing contact chose to receive (``BillingContact``): statements and overdue
# reminders; block and expiry notices.
STATEMENTS, NOTICES = "gets_statements", "gets_notices"

# How long a claimed email may stay "sending" before it counts as abandoned (its worker
# died) and may be claimed again (far longer than any mail server takes to answer); also how
# long a queued email, or a statement without emails, waits before the sweep takes it over.
CLAIM_TIMEOUT = timedelta(minutes=15)
# How far back the sweep looks for statements whose emails were never queued (the broker
# was down when they were issued). A statement older than that is not emailed any more by
# itself: staff resend it.
STATEMENT_EMAIL_CATCH_UP = timedelta(days=2)


def _tasks():
    from . import tasks  # the tasks call the services of this module

    return tasks


# --- Queuing ----------------------------------------------------------------------------------


def statement_emails_after_commit(statements: Sequence[Statement]) -> None:
    """Once the issuing transaction commits, queue the emails of these statements: one task
    for the whole batch, and no query inside the issuing transaction.

    Robust: a broker that cannot take the task is logged and does not fail the issuing,
    which has committed; the sweep (``statements_not_emailed``) queues those emails later.
    """
    statement_ids = [statement.pk for statement in statements]
    if statement_ids:
        queue = _tasks().statement_emails_queue
        transaction.on_commit(lambda: queue.delay(statement_ids), robust=True)


@transaction.atomic
def statement_emails_queue(
    *, statement_ids: Sequence[int], now: datetime | None = None
) -> list[int]:
    """Queue the issue email of these statements, one per billing contact of each company,
    and send them once this transaction commits. Returns the ids of the emails sent for.

    Idempotent: a statement and a recipient get one such email ever (unique constraint); a
    second call sends again only rows still queued (whose task was lost), and the send
    claims each row, so nothing goes out twice. A company without contacts gets nothing.
    Four queries, whatever the number of statements.
    """
    now = now or timezone.now()
    company_of = dict(
        Statement.objects.filter(pk__in=list(statement_ids)).values_list("pk", "company_id")
    )
    contacts = _contacts_by_company(company_of.values(), wanting=STATEMENTS)
    return _queue(
        [
            _email_to(contact, statement_id=statement_id, kind=Kind.STATEMENT, now=now)
            for statement_id, company_id in company_of.items()
            for contact in contacts[company_id]
        ],
        statement_id__in=list(company_of),
        kind=Kind.STATEMENT,
        requested_by=None,
    )


@transaction.atomic
def statement_email_resend(
    *, statement: Statement, actor, now: datetime | None = None
) -> list[BillingEmail]:
    """Send ``statement`` again to each of its company's billing contacts (as they are now),
    recorded with the staff user who asked. Each call is one more email per contact, on
    purpose. Returns the new rows: none when the company has no billing contacts."""
    now = now or timezone.now()
    emails = [
        _email_to(
            contact, statement_id=statement.pk, kind=Kind.STATEMENT, now=now, requested_by=actor
        )
        for contact in _contacts_by_company([statement.company_id], wanting=STATEMENTS)[
            statement.company_id
        ]
    ]
    BillingEmail.objects.bulk_create(emails)
    _send_after_commit([email.pk for email in emails])
    return emails


# Inside the dunning batch's transaction: no savepoint of its own, it has nothing to undo alone.
@transaction.atomic(savepoint=False)
def reminder_emails_queue(
    *, reminders: Sequence[tuple[Statement, int]], now: datetime | None = None
) -> list[int]:
    """Queue a reminder of each ``(invoice, days after its due date)`` to every billing
    contact of the invoice's company, sent once the caller's transaction commits. Returns
    the ids of the emails sent for.

    Idempotent: one reminder per invoice, recipient and day count, ever (unique
    constraint). Three queries, whatever the number of reminders.
    """
    if not reminders:
        return []
    now = now or timezone.now()
    contacts = _contacts_by_company(
        {invoice.company_id for invoice, _days in reminders}, wanting=STATEMENTS
    )
    BillingEmail.objects.bulk_create(
        [
            _email_to(
                contact, statement_id=invoice.pk, kind=Kind.REMINDER, now=now, reminder_days=days
            )
            for invoice, days in reminders
            for contact in contacts[invoice.company_id]
        ],
        ignore_conflicts=True,
    )
    wanted = {(invoice.pk, days) for invoice, days in reminders}
    queued = BillingEmail.objects.filter(
        kind=Kind.REMINDER,
        status=Status.QUEUED,
        statement_id__in={invoice_id for invoice_id, _days in wanted},
        reminder_days__in={days for _invoice_id, days in wanted},
    ).order_by("id")
    email_ids = [
        email_id
        for email_id, invoice_id, days in queued.values_list("pk", "statement_id", "reminder_days")
        if (invoice_id, days) in wanted
    ]
    _send_after_commit(email_ids)
    return email_ids


def block_email_on_commit(sender, *, company, block, **kwargs) -> None:
    """Receiver of ``accounts.signals.company_blocked`` and ``company_unblocked``, which are
    sent once the block or its lifting has committed: queue the notice to the company's
    billing contacts. It must not fail what has committed: an error is logged, and the
    sweep (``blocks_not_emailed``) queues the notice later."""
    kind = Kind.BLOCKED if block.lifted_at is None else Kind.UNBLOCKED
    try:
        block_emails_queue(block_id=block.pk, kind=kind)
    except Exception:
        logger.exception("Could not queue the %s notice of block %s", kind, block.pk)


@transaction.atomic
def block_emails_queue(*, block_id: int, kind: str, now: datetime | None = None) -> list[int]:
    """Queue the ``blocked`` or ``unblocked`` notice of one block to each billing contact of
    its company and send them once this transaction commits; returns the ids sent for.
    Idempotent as ``statement_emails_queue`` is: one notice of a kind per block and
    recipient, ever."""
    now = now or timezone.now()
    block = CompanyBlock.objects.filter(pk=block_id).first()
    if block is None or (kind == Kind.UNBLOCKED and block.lifted_at is None):
        return []
    contacts = _contacts_by_company([block.company_id], wanting=NOTICES)[block.company_id]
    return _queue(
        [_email_to(contact, block_id=block.pk, kind=kind, now=now) for contact in contacts],
        block_id=block.pk,
        kind=kind,
    )


def topup_emails_queue(*, reminders: Sequence[TopUpReminder], now: datetime) -> list[int]:
    """Queue the email of each reminder's fall below its threshold, the one that began at
    its ``below_since``, to each of its recipients in the company's language, sent once the
    caller's transaction commits (``invoicing.topup`` calls it in the one that records the
    falls). Unique per fall and recipient."""
    return _queue(
        [
            BillingEmail(
                kind=Kind.TOPUP,
                topup_reminder=reminder,
                below_since=reminder.below_since,
                recipient=address,
                language=reminder.company.language or settings.LANGUAGE_CODE,
                created_at=now,
            )
            for reminder in reminders
            for address in reminder.recipients
        ],
        kind=Kind.TOPUP,
        topup_reminder__in=[reminder.pk for reminder in reminders],
        below_since__in={reminder.below_since for reminder in reminders},
    )


def expiry_emails_queue(*, lots: Sequence[CreditLot], now: datetime) -> list[int]:
    """Queue the expiry notice of each of ``lots`` to each billing contact of its company,
    sent once the caller's transaction commits; returns the ids queued. Once per lot and
    contact, ever (``invoicing.expiry_notices``)."""
    contacts = _contacts_by_company((lot.company_id for lot in lots), wanting=NOTICES)
    return _queue(
        [
            _email_to(contact, kind=Kind.EXPIRING, now=now, lot=lot)
            for lot in lots
            for contact in contacts[lot.company_id]
        ],
        lot__in=[lot.pk for lot in lots],
        kind=Kind.EXPIRING,
    )


def _queue(emails: list[BillingEmail], **which) -> list[int]:
    """Insert ``emails``, skipping those a unique constraint holds already, and send every
    row ``which`` names that is still queued once the transaction commits (rows already
    there included: their task may have been lost). Returns their ids. Read back rather
    than taken from the insert: a row that existed already gets no id."""
    BillingEmail.objects.bulk_create(emails, ignore_conflicts=True)
    email_ids = list(
        BillingEmail.objects.filter(status=Status.QUEUED, **which)
        .order_by("id")
        .values_list("pk", flat=True)
    )
    _send_after_commit(email_ids)
    return email_ids


def _contacts_by_company(
    company_ids: Iterable[int], *, wanting: str
) -> dict[int, list[BillingContact]]:
    """The billing contacts of these companies who want ``wanting``: ``"gets_statements"``
    (statements, overdue reminders) or ``"gets_notices"`` (block and expiry notices)."""
    contacts: dict[int, list[BillingContact]] = defaultdict(list)
    for contact in BillingContact.objects.filter(
        company_id__in=list(set(company_ids)), **{wanting: True}
    ).order_by("id"):
        contacts[contact.company_id].append(contact)
    return contacts


def _email_to(contact: BillingContact, *, kind: str, now, **fields):
    return BillingEmail(
        kind=kind,
        recipient=contact.email,
        recipient_name=contact.name,
        language=contact.language,
        created_at=now,
        **fields,
    )


def _send_after_commit(email_ids: Iterable[int]) -> None:
    # Each email has its own task (its own retries); a task started before the commit would
    # find no row to claim. A task the broker did not take leaves its row queued, for the
    # sweep (``billing_emails_stalled``).
    send = _tasks().billing_email_send
    for email_id in email_ids:
        transaction.on_commit(lambda email_id=email_id: send.delay(email_id), robust=True)


# --- Sending ----------------------------------------------------------------------------------


def billing_email_send(*, email_id: int, now: datetime | None = None) -> bool:
    """Send one email and record the outcome. Returns True when this call sent it; False
    when there was nothing to do (sent already, being sent by another worker, a reminder
    whose invoice is paid, or no such row).

    Not atomic on purpose: the claim (queued or failed → sending, attempts + 1) commits
    before the mail server is called, and the result is recorded afterwards. A failure is
    recorded (failed, with the error) and raised again, so that the task retries.
    """
    now = now or timezone.now()
    claimable = Q(status__in=[Status.QUEUED, Status.FAILED]) | Q(
        status=Status.SENDING, claimed_at__lt=now - CLAIM_TIMEOUT
    )
    claimed = BillingEmail.objects.filter(claimable, pk=email_id).update(
        status=Status.SENDING, claimed_at=now, attempts=F("attempts") + 1
    )
    if not claimed:
        return False
    email = BillingEmail.objects.select_related(
        "statement__company", "block__company", "topup_reminder__company", "lot__company"
    ).get(pk=email_id)
    this_claim = BillingEmail.objects.filter(pk=email_id, status=Status.SENDING, claimed_at=now)
    try:
        message = billing_email_message(email)
        if message is None:
            this_claim.update(status=Status.NOT_NEEDED, last_error="")
            return False
        message.send()
    except Exception:
        this_claim.update(status=Status.FAILED, last_error=traceback.format_exc(limit=3)[-2000:])
        raise
    this_claim.update(status=Status.SENT, sent_at=now, last_error="")
    return True


def billing_email_message(email: BillingEmail) -> EmailMultiAlternatives | None:
    """The message of ``email`` in its recipient's language, or None when it is not needed
    any more: a reminder whose invoice has been paid, a block notice whose block was lifted
    before it went out (and the notice of that lifting, since the recipient never heard of
    the block), an unblock notice while the company is still blocked for another reason
    (the notice of that one's lifting follows), a top-up email whose fall is over, or an
    expiry notice whose lot has nothing left to lose."""
    if email.kind in (Kind.BLOCKED, Kind.UNBLOCKED):
        return _block_message(email)
    if email.kind == Kind.TOPUP:
        return _topup_message(email)
    if email.kind == Kind.EXPIRING:
        return _expiring_message(email)
    statement = email.statement
    with translation.override(email.language):
        if email.kind == Kind.REMINDER:
            open_amount = invoice_open_amount(statement)
            if open_amount.amount <= 0:
                return None
            template = "invoicing/email/overdue_reminder"
            subject = _("Reminder: invoice %(number)s is overdue") % {"number": statement.number}
            context = _context(email, open_amount=open_amount)
        else:
            template = "invoicing/email/statement"
            subject = (
                _("Your invoice %(number)s from %(operator)s")
                if statement.is_invoice
                else _("Your account statement %(number)s from %(operator)s")
            ) % {"number": statement.number, "operator": settings.OPERATOR_NAME}
            context = _context(email)
    message = _rendered(email, subject, template, context)
    if email.kind == Kind.STATEMENT:
        message.attach(f"{statement.number}.pdf", statement_pdf(statement), "application/pdf")
    return message


def _block_message(email: BillingEmail) -> EmailMultiAlternatives | None:
    block = email.block
    company = block.company
    if email.kind == Kind.BLOCKED:
        if block.lifted_at is not None:
            return None
        template = "invoicing/email/company_blocked"
    else:
        told = BillingEmail.objects.filter(
            block=block, recipient=email.recipient, kind=Kind.BLOCKED, status=Status.SENT
        ).exists()
        if not told or company.status != Company.Status.ACTIVE:
            return None
        template = "invoicing/email/company_unblocked"
    changed_at = block.blocked_at if email.kind == Kind.BLOCKED else block.lifted_at
    context = {
        "email": email,
        "block": block,
        "company": company,
        "since": _company_time(changed_at, company),
        "operator": operator_details(),
        "credit_limit": company.credit_limit,
        "portal_url": _portal_url("portal:dashboard"),
    }
    with translation.override(email.language):
        subject = (
            _("Your account %(account)s is suspended")
            if email.kind == Kind.BLOCKED
            else _("Your account %(account)s is active again")
        ) % {"account": company.account_code}
    return _rendered(email, subject, template, context)


def _topup_message(email: BillingEmail) -> EmailMultiAlternatives | None:
    """None when the fall is over before the email goes out (the credit came back, or the
    reminder was stopped or set again): the customer has acted already."""
    reminder = email.topup_reminder
    company = reminder.company
    available = company_available(company)
    if (
        reminder.below_since != email.below_since
        or email.recipient not in reminder.recipients
        or available is None
        or available >= reminder.threshold
    ):
        return None
    context = {
        "email": email,
        "company": company,
        "available": available,
        "threshold": reminder.threshold,
        "operator": operator_details(),
        "credits_url": _portal_url("portal:credits"),
        "reminder_url": _portal_url("portal:topup_reminder"),
    }
    template = "invoicing/email/topup_reminder"
    with translation.override(email.language):
        subject = _("The credit of your account %(account)s is below %(threshold)s") % {
            "account": company.account_code,
            "threshold": str(reminder.threshold),  # in the language in force
        }
    return _rendered(email, subject, template, context)


def _expiring_message(email: BillingEmail) -> EmailMultiAlternatives | None:
    """None when the lot has nothing left to lose by the time the email goes out (spent, or
    expired already: the expiry itself is on the next statement)."""
    lot = email.lot
    company = lot.company
    if lot.remaining.amount <= 0 or lot.expires_at <= timezone.now():
        return None
    context = {
        "email": email,
        "company": company,
        "lot": lot,
        "expires": _company_time(lot.expires_at, company),
        "operator": operator_details(),
        "credits_url": _portal_url("portal:credits"),
    }
    with translation.override(email.language):
        subject = _("%(amount)s of credit of your account %(account)s expires on %(date)s") % {
            "amount": str(lot.remaining),
            "account": company.account_code,
            "date": f"{lot.expires_at.astimezone(company.tzinfo):%Y-%m-%d}",
        }
    return _rendered(email, subject, "invoicing/email/credit_expiring", context)


def _company_time(at: datetime, company: Company) -> str:
    """When, in the company's own time and zone, spelt the same in every language."""
    return f"{at.astimezone(company.tzinfo):%Y-%m-%d %H:%M} ({company.billing_timezone})"


def _rendered(
    email: BillingEmail, subject: str, template: str, context: dict
) -> EmailMultiAlternatives:
    """The message of ``email``: ``template``'s text and HTML in the email's language, under
    ``subject`` (which the caller has put in that language)."""
    with translation.override(email.language):
        # Template tags leave blank lines where a part is left out: at most one in a row.
        text = BLANK_LINES.sub("\n\n", render_to_string(f"{template}.txt", context)).strip()
        html = render_to_string(f"{template}.html", context)
    message = EmailMultiAlternatives(
        subject=subject, body=text, from_email=settings.DEFAULT_FROM_EMAIL, to=[email.recipient]
    )
    message.attach_alternative(html, "text/html")
    return message


def _context(email: BillingEmail, **extra) -> dict:
    statement = email.statement
    context = {
        "email": email,
        "statement": statement,
        "company": statement.company,
        "operator": operator_details(),
        "period": statement.period_first_day,
        "bank_details": settings.TOLLGATE_BANK_TRANSFER_DETAILS,
        "statement_url": _portal_url("portal:statement", statement.pk),
        **extra,
    }
    if email.kind == Kind.REMINDER:
        # From this many days after the due date the company is blocked (invoicing.dunning),
        # in the same run that queues a reminder for that day or later.
        block_after = settings.TOLLGATE_OVERDUE_BLOCK_AFTER_DAYS
        context["suspended"] = email.reminder_days >= block_after
        context["block_on"] = statement.due_date + timedelta(days=block_after)
    return context


def _portal_url(name: str, *args) -> str:
    """The absolute address of a portal page, or "" where the site's address is not set."""
    if not settings.TOLLGATE_SITE_URL:
        return ""
    return settings.TOLLGATE_SITE_URL + reverse(name, args=args)
