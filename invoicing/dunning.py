"""Overdue invoices: reminders to the billing contacts at set days after the due date, and
an ``overdue`` block on a company whose invoice stays open past the grace period.

An invoice is overdue from the day after its due date, both dates in the company's billing
time zone: "today" is the calendar date there at ``now``, so a company in Tokyo is a day
overdue while one in New York still has a few hours. With ``reminder_days = [1, 7, 14]`` the
contacts hear on the 1st, 7th and 14th day after the due date, once each per invoice; with
``block_after_days = 21`` the company is blocked from the 21st day. Paying lifts the block
(``invoicing.payments``).

A run that missed days (the worker was down) sends only the latest reminder due, not a
burst of the older ones it missed.

Exactly once: the companies of a batch are locked first (id order), so a payment recorded
at the same moment either comes before (the invoice is no longer open) or after (and lifts
the block); reminders are unique per invoice, recipient and day count; an active overdue
block is not set twice. Running a batch twice, or twice at once, changes nothing more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import CompanyBlock
from accounts.services import company_block, lock_companies

from .emails import reminder_emails_queue
from .models import Statement
from .selectors import OverdueInvoice, companies_owing, overdue_invoices


@dataclass(frozen=True)
class DunningResult:
    companies: int  # companies checked
    reminders: list[int]  # ids of the reminder emails queued (new, or still unsent)
    blocked: list[int]  # ids of the companies blocked by this run


def reminder_due(days_overdue: int, reminder_days: Sequence[int]) -> int | None:
    """The latest reminder day reached after ``days_overdue`` days, if any."""
    reached = [day for day in reminder_days if day <= days_overdue]
    return max(reached) if reached else None


@transaction.atomic
def dunning_run(
    *,
    company_ids: Sequence[int],
    now: datetime | None = None,
    today: date | None = None,
    reminder_days: Sequence[int] | None = None,
    block_after_days: int | None = None,
) -> DunningResult:
    """Remind and block for these companies' overdue invoices, in one database transaction
    and a fixed number of queries plus a few per company blocked.

    ``today`` (a date) replaces each company's local date at ``now``: "as if it were that
    day everywhere". Days default to the ``TOLLGATE_OVERDUE_*`` settings. Idempotent and
    safe to run at once in many workers (see the module docstring). Locks the company rows,
    in id order, until commit.
    """
    now = now or timezone.now()
    if reminder_days is None:
        reminder_days = settings.TOLLGATE_OVERDUE_REMINDER_DAYS
    if block_after_days is None:
        block_after_days = settings.TOLLGATE_OVERDUE_BLOCK_AFTER_DAYS
    companies = {company.pk: company for company in lock_companies(company_ids)}
    today_by_company = {
        company.pk: today or now.astimezone(company.tzinfo).date() for company in companies.values()
    }
    overdue = overdue_invoices(today_by_company)
    # An invoice can look open while the company owes nothing overall: a payment recorded
    # without being allocated to it, or a credit posted since. Such a company is neither
    # reminded nor blocked; the invoice is settled when staff allocate the payment.
    owing = companies_owing({item.invoice.company_id for item in overdue})
    overdue = [item for item in overdue if item.invoice.company_id in owing]

    reminders = []
    to_block: dict[int, OverdueInvoice] = {}
    for item in overdue:
        day = reminder_due(item.days_overdue, reminder_days)
        if day is not None:
            reminders.append((item.invoice, day))
        if item.days_overdue >= block_after_days:
            # Oldest due first: the block names the invoice that has waited longest.
            to_block.setdefault(item.invoice.company_id, item)
    queued = reminder_emails_queue(reminders=reminders, now=now)

    already_blocked = set(
        CompanyBlock.objects.filter(
            company_id__in=list(to_block), reason=CompanyBlock.Reason.OVERDUE, lifted_at=None
        ).values_list("company_id", flat=True)
    )
    blocked = []
    for company_id, item in to_block.items():
        if company_id in already_blocked:
            continue
        company_block(
            company=companies[company_id],
            reason=CompanyBlock.Reason.OVERDUE,
            note=_block_note(item.invoice),
            now=now,
        )
        blocked.append(company_id)
    return DunningResult(companies=len(companies), reminders=queued, blocked=blocked)


def _block_note(invoice: Statement) -> str:
    # Kept in English; the portal reads it back to say it in the reader's language
    # (``accounts.selectors.OVERDUE_NOTE``).
    return f"Invoice {invoice.number} due {invoice.due_date:%Y-%m-%d} is unpaid"
