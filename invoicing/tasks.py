"""Celery tasks of invoicing: thin wrappers, safe to run twice or at once."""

from celery import shared_task
from django.conf import settings
from django.db import OperationalError, transaction
from django.utils import timezone

from accounts.models import Company

from . import emails, expiry_notices, topup
from .dunning import dunning_run
from .models import StatementRun
from .runs import run_issue, run_pending, run_prepare, run_refresh
from .selectors import (
    billing_emails_stalled,
    blocks_not_emailed,
    companies_with_overdue_invoices,
    statements_not_emailed,
)
from .services import previous_month_of

# A batch task: redelivered if its worker dies, retried with backoff if the database drops
# the connection (the batch is one transaction, so a retry starts it again from nothing).
RETRY_ON_DATABASE_ERRORS = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": (OperationalError,),
    "retry_backoff": True,
    "max_retries": 5,
}


@shared_task(acks_late=True)
def statements_close_due() -> int:
    """Hourly: for each month that has just ended in some company's billing time zone,
    prepare its run (an item per company whose month has ended) and fan out batches of
    companies still to issue. Idempotent: issued companies are not sent again."""
    now = timezone.now()
    months = {
        previous_month_of(now, Company(billing_timezone=tz_name))
        for tz_name in Company.objects.order_by()
        .values_list("billing_timezone", flat=True)
        .distinct()
    }
    sent = 0
    size = getattr(settings, "TOLLGATE_STATEMENT_BATCH", 50)
    for year, month in sorted(months):
        run = run_prepare(year=year, month=month, now=now)
        pending = run_pending(run)
        for index in range(0, len(pending), size):
            batch = pending[index : index + size]
            transaction.on_commit(
                lambda run_id=run.pk, batch=batch: statements_issue_batch.delay(run_id, batch)
            )
        sent += len(pending)
    return sent


@shared_task(**RETRY_ON_DATABASE_ERRORS)
def statements_issue_batch(run_id: int, company_ids: list[int]) -> int:
    """Issue these companies' statements of the run's month; one that exists is skipped, a
    failing company is recorded on its run item (and retried by the next hourly pass)."""
    run = StatementRun.objects.filter(pk=run_id).first()
    if run is None:
        return 0
    issued, _failed = run_issue(run=run, company_ids=company_ids)
    run_refresh(run)
    return issued


# --- Billing emails and overdue invoices --------------------------------------------------------


@shared_task(**RETRY_ON_DATABASE_ERRORS)
def statement_emails_queue(statement_ids: list[int]) -> int:
    """Queue the issue emails of a batch of statements (one per billing contact) and send
    each by its own task; idempotent (one such email per statement and recipient, ever)."""
    return len(emails.statement_emails_queue(statement_ids=statement_ids))


@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(Exception,),
    retry_backoff=30,
    retry_backoff_max=600,
    max_retries=5,
)
def billing_email_send(email_id: int) -> bool:
    """Send one billing email; safe to run twice (the row is claimed before sending). A
    failure is recorded on the row and retried with backoff, for up to about 15 minutes;
    after the last retry the email stays failed, shown in the admin for staff to resend."""
    return emails.billing_email_send(email_id=email_id)


@shared_task(acks_late=True)
def billing_emails_wake() -> int:
    """Every quarter hour: queue the emails of recent statements, and the notices of recent
    blocks and their lifting, that have none (the task or receiver to queue them was lost),
    and send the emails whose task was lost (queued long ago, or claimed by a worker that
    died). Sending claims each row, so an email that is in fact under way is not sent
    twice."""
    now = timezone.now()
    statement_ids = statements_not_emailed(
        issued_from=now - emails.STATEMENT_EMAIL_CATCH_UP,
        issued_before=now - emails.CLAIM_TIMEOUT,
    )
    queued = emails.statement_emails_queue(statement_ids=statement_ids) if statement_ids else []
    for block_id, kind in blocks_not_emailed(
        changed_from=now - emails.STATEMENT_EMAIL_CATCH_UP,
        changed_before=now - emails.CLAIM_TIMEOUT,
    ):
        queued += emails.block_emails_queue(block_id=block_id, kind=kind)
    email_ids = billing_emails_stalled(now, older_than=emails.CLAIM_TIMEOUT)
    for email_id in email_ids:
        billing_email_send.delay(email_id)
    return len(queued) + len(email_ids)


@shared_task(acks_late=True)
def dunning_run_due() -> int:
    """Hourly, because a day starts at a different UTC hour in each billing time zone: fan
    out batches of the companies with an invoice that may be overdue somewhere. Idempotent:
    a reminder is sent once and a block set once however often this runs."""
    company_ids = companies_with_overdue_invoices(timezone.now())
    size = settings.TOLLGATE_DUNNING_BATCH
    for index in range(0, len(company_ids), size):
        batch = company_ids[index : index + size]
        transaction.on_commit(lambda batch=batch: dunning_run_batch.delay(batch))
    return len(company_ids)


@shared_task(**RETRY_ON_DATABASE_ERRORS)
def dunning_run_batch(company_ids: list[int]) -> int:
    """Remind and block for these companies' overdue invoices (one transaction); returns the
    number of reminder emails queued."""
    return len(dunning_run(company_ids=company_ids).reminders)


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def topup_reminders_check() -> int:
    """Every minute: queue the emails of the top-up reminders whose company's credit fell
    below their threshold, and arm again those whose credit came back. Safe to run twice or
    at once (``invoicing.topup``). Returns the number of falls emailed."""
    return len(topup.topup_reminders_check().fallen)


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def expiry_notices_due() -> int:
    """Every hour: tell the billing contacts of the credit left in lots that expire soon,
    once per lot and contact (``invoicing.expiry_notices``). Returns the emails queued."""
    return len(expiry_notices.expiry_notices_queue())
