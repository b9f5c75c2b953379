"""Top-up reminders: a company sets a threshold and up to ``MAX_RECIPIENTS`` addresses; when
the credit it can still spend (``billing.selectors.company_available``: prepaid, the credit
in unexpired lots; postpaid, the headroom under the credit limit) falls below the threshold,
each address gets one email. The next comes only after the credit has been back at or above
the threshold: the reminder is armed again then.

``topup_reminders_check`` runs every minute (``config.schedules``) and compares every
reminder with its company's credit in a few queries, whatever their number: nothing is added
to the work of a charge. The falls are taken under the reminders' row locks (armed → below
since now) in the transaction that queues their emails, so a check run twice, or twice at
once, queues them once (and each email is unique per fall and recipient). A credit that
falls and comes back between two checks sends nothing: the customer has topped up already.

A reminder set while the credit is already below its threshold starts as fallen: no email
until the credit has come back and falls again (the portal says so).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from djmoney.money import Money

from accounts.models import Company
from billing.money import currency_exponent, quantize_amount
from billing.selectors import companies_available

from .emails import topup_emails_queue
from .models import TopUpReminder
from .selectors import active_topup_reminders

MAX_RECIPIENTS = 5
MAX_THRESHOLD = Decimal(10) ** 12  # the money columns hold 15 digits before the point


class TopUpReminderError(ValueError):
    """A reminder that cannot be set as asked; the message says why, for the customer."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class TopUpCheck:
    reminders: int  # reminders compared with their company's credit
    fallen: list[int]  # companies whose emails this check queued
    armed: list[int]  # companies whose credit came back: their reminder is armed again


def topup_reminder_set(
    *,
    company: Company,
    threshold: Money,
    recipients: list[str],
    actor=None,
    now: datetime | None = None,
) -> TopUpReminder:
    """Create or change the company's reminder. Raises ``TopUpReminderError`` and changes
    nothing when the threshold or an address is not acceptable, or when the company's
    credit cannot run out (postpaid without a credit limit)."""
    now = now or timezone.now()
    addresses = _addresses(recipients)
    _check_threshold(company, threshold)
    with transaction.atomic():
        locked = Company.objects.select_for_update().get(pk=company.pk)
        available = companies_available([locked], now)[locked.pk]
        if available is None:
            raise TopUpReminderError(
                _("Your account has no credit limit: its credit cannot run out.")
            )
        reminder = TopUpReminder.objects.filter(company=locked).first()
        below = available < threshold.amount
        if reminder is None:
            reminder = TopUpReminder(company=locked)
            below_since = now if below else None
        else:
            # Still below: the fall already seen stays; no second email for it.
            below_since = (reminder.below_since or now) if below else None
        reminder.threshold = threshold
        reminder.recipients = addresses
        reminder.below_since = below_since
        reminder.updated_at = now
        reminder.updated_by = actor
        reminder.save()
    return reminder


def topup_reminder_remove(*, company: Company) -> bool:
    """Stop the company's reminder; True if there was one. Emails already sent stay in the
    log, so the reminder row stays too (without recipients, it sends nothing)."""
    return bool(
        active_topup_reminders()
        .filter(company=company)
        .update(recipients=[], below_since=None, updated_at=timezone.now())
    )


def topup_reminders_check(*, now: datetime | None = None) -> TopUpCheck:
    """Compare every active reminder with its company's credit; queue the emails of each new
    fall below the threshold, and arm again the reminders whose credit came back. A fixed
    number of queries, however many reminders fall or come back."""
    now = now or timezone.now()
    reminders = list(active_topup_reminders().select_related("company").order_by("id"))
    available = companies_available([reminder.company for reminder in reminders], now)
    falling, rising = {}, {}
    for reminder in reminders:
        credit = available[reminder.company_id]
        below = credit is not None and credit < reminder.threshold.amount
        if below and reminder.below_since is None:
            falling[reminder.pk] = reminder
        elif not below and reminder.below_since is not None:
            rising[reminder.pk] = reminder
    if not (falling or rising):
        return TopUpCheck(reminders=len(reminders), fallen=[], armed=[])
    with transaction.atomic():
        # Locked, and kept only where unchanged since read: not set again in the portal
        # meanwhile, and not taken by a check running at the same time (which this one
        # waits for, then finds them changed).
        current = {
            pk: (below_since, updated_at)
            for pk, below_since, updated_at in TopUpReminder.objects.select_for_update()
            .filter(pk__in=[*falling, *rising])
            .values_list("pk", "below_since", "updated_at")
        }
        fallen = [
            reminder
            for pk, reminder in falling.items()
            if current.get(pk) == (None, reminder.updated_at)
        ]
        armed = [
            reminder
            for pk, reminder in rising.items()
            if current.get(pk, (None,))[0] == reminder.below_since
        ]
        if fallen:
            TopUpReminder.objects.filter(pk__in=[r.pk for r in fallen]).update(below_since=now)
            for reminder in fallen:
                reminder.below_since = now
            topup_emails_queue(reminders=fallen, now=now)
        if armed:
            TopUpReminder.objects.filter(pk__in=[r.pk for r in armed]).update(below_since=None)
    return TopUpCheck(
        reminders=len(reminders),
        fallen=[reminder.company_id for reminder in fallen],
        armed=[reminder.company_id for reminder in armed],
    )


def _addresses(recipients: list[str]) -> list[str]:
    addresses: list[str] = []
    seen: set[str] = set()  # lower-cased: an address in another case is the same one
    for raw in recipients:
        address = raw.strip()
        if not address:
            continue
        try:
            validate_email(address)
        except ValidationError:
            raise TopUpReminderError(
                _("“%(address)s” is not an email address.") % {"address": address[:100]},
                field="recipients",
            ) from None
        if address.lower() not in seen:
            seen.add(address.lower())
            addresses.append(address)
    if not addresses:
        raise TopUpReminderError(_("Give at least one email address."), field="recipients")
    if len(addresses) > MAX_RECIPIENTS:
        raise TopUpReminderError(
            _("Give at most %(count)d email addresses.") % {"count": MAX_RECIPIENTS},
            field="recipients",
        )
    return addresses


def _check_threshold(company: Company, threshold: Money) -> None:
    if str(threshold.currency) != company.currency:
        raise TopUpReminderError(
            _("The amount must be in your account's currency, %(currency)s.")
            % {"currency": company.currency},
            field="threshold",
        )
    if threshold.amount <= 0:
        raise TopUpReminderError(_("The amount must be more than zero."), field="threshold")
    if threshold.amount >= MAX_THRESHOLD:
        raise TopUpReminderError(_("The amount is too large."), field="threshold")
    if quantize_amount(threshold.amount, company.currency) != threshold.amount:
        places = currency_exponent(company.currency)
        raise TopUpReminderError(
            (
                _("%(currency)s amounts are whole numbers.")
                if places == 0
                else _("%(currency)s amounts have at most %(places)d decimals.")
            )
            % {"currency": company.currency, "places": places},
            field="threshold",
        )
