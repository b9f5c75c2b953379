"""Celery tasks of invoicing: thin wrappers, safe to run twice or at once."""

from celery import shared_task
from django.conf import settings
from django.db import OperationalError, transaction
from django.utils import timezone

from accounts.models import Company

from .models import StatementRun
from .services import previous_month_of, run_issue, run_pending, run_prepare, run_refresh


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


@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=5,
)
def statements_issue_batch(run_id: int, company_ids: list[int]) -> int:
    """Issue these companies' statements of the run's month; one that exists is skipped, a
    failing company is recorded on its run item (and retried by the next hourly pass)."""
    run = StatementRun.objects.filter(pk=run_id).first()
    if run is None:
        return 0
    issued, _failed = run_issue(run=run, company_ids=company_ids)
    run_refresh(run)
    return issued
