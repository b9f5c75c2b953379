"""Statement runs: closing a month for every company, in batches, resumable.

A run (one per month) has an item per company whose month has ended in its billing time
zone; each batch of items is issued in one transaction by ``statements_issue``, which marks
them issued in that same transaction. A batch that fails is retried company by company, so
one bad company fails alone and is recorded on its item with the error; running again (or
in two workers at once, or after a crash) issues only what is missing.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from django.db import transaction
from django.db.models import Count, F
from django.utils import timezone

from accounts.models import Company
from billing.periods import calendar_month

from .exceptions import InvoicingError
from .models import StatementRun, StatementRunItem
from .services import statements_issue

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    run: StatementRun
    issued: int
    skipped: int  # already issued before this call
    failed: int
    not_due: int


def companies_due(year: int, month: int, now: datetime) -> list[int]:
    """Companies whose ``year``-``month`` has ended in their billing time zone and that
    existed before it ended, in id order."""
    due = []
    # order_by(): Company's default ordering (by name) would make DISTINCT return one row
    # per company, and every company would be listed once per company.
    zones = Company.objects.order_by().values_list("billing_timezone", flat=True).distinct()
    for tz_name in zones:
        _start, end = calendar_month(year, month, ZoneInfo(tz_name))
        if end <= now:
            due.extend(
                Company.objects.filter(billing_timezone=tz_name, created_at__lt=end).values_list(
                    "pk", flat=True
                )
            )
    return sorted(due)


@transaction.atomic
def run_prepare(*, year: int, month: int, now: datetime | None = None) -> StatementRun:
    """The run of ``year``-``month`` (created once) with an item for every company whose
    month has ended. Idempotent: items are unique per run and company."""
    now = now or timezone.now()
    run, _ = StatementRun.objects.get_or_create(
        year=year, month=month, defaults={"started_at": now}
    )
    run = StatementRun.objects.select_for_update().get(pk=run.pk)
    StatementRunItem.objects.bulk_create(
        [
            StatementRunItem(run=run, company_id=company_id, updated_at=now)
            for company_id in companies_due(year, month, now)
        ],
        ignore_conflicts=True,
        batch_size=1000,
    )
    return run


def run_pending(run: StatementRun) -> list[int]:
    """Company ids of the run not issued yet (pending, or failed and to retry)."""
    return list(
        run.items.exclude(state=StatementRunItem.State.ISSUED)
        .order_by("company_id")
        .values_list("company_id", flat=True)
    )


def run_issue(
    *, run: StatementRun, company_ids: Sequence[int], now: datetime | None = None
) -> tuple[int, int]:
    """Issue these companies' statements of the run's month: the batch in one transaction;
    if it fails, each company alone, so one bad company fails alone and is recorded.
    Returns (issued, failed). Safe to run twice or at once (``statements_issue``)."""
    now = now or timezone.now()
    if not company_ids:
        return 0, 0
    try:
        result = statements_issue(
            company_ids=company_ids, year=run.year, month=run.month, run=run, now=now
        )
        return len(result.issued), 0
    except Exception:
        if len(company_ids) == 1:
            _record_failure(run, company_ids[0], now)
            return 0, 1
    issued = failed = 0
    for company_id in company_ids:
        one_issued, one_failed = run_issue(run=run, company_ids=[company_id], now=now)
        issued += one_issued
        failed += one_failed
    return issued, failed


def _record_failure(run: StatementRun, company_id: int, now: datetime) -> None:
    logger.exception("Statement of company %s for %s failed", company_id, run.label)
    StatementRunItem.objects.filter(run=run, company_id=company_id).exclude(
        state=StatementRunItem.State.ISSUED
    ).update(
        state=StatementRunItem.State.FAILED,
        error=traceback.format_exc(limit=3)[-2000:],
        attempts=F("attempts") + 1,
        updated_at=now,
    )


@transaction.atomic
def run_refresh(run: StatementRun, now: datetime | None = None) -> StatementRun:
    """Recount the run's items; finished once none is left to issue."""
    now = now or timezone.now()
    counts = dict(
        run.items.values("state").annotate(n=Count("id")).order_by().values_list("state", "n")
    )
    total = sum(counts.values())
    issued = counts.get(StatementRunItem.State.ISSUED, 0)
    failed = counts.get(StatementRunItem.State.FAILED, 0)
    # A finished run keeps its end when it is run again (it issues nothing more).
    finished = (run.finished_at or now) if total and issued == total else None
    StatementRun.objects.filter(pk=run.pk).update(
        companies=total, issued=issued, failed=failed, finished_at=finished
    )
    run.companies, run.issued, run.failed, run.finished_at = total, issued, failed, finished
    return run


def period_close(
    *, year: int, month: int, now: datetime | None = None, batch_size: int = 50
) -> RunResult:
    """Close ``year``-``month``: a statement for every company whose month has ended in its
    billing time zone. Idempotent and resumable: a second run (or one after a crash)
    issues only what is missing; two at once issue each statement once."""
    now = now or timezone.now()
    if not 1 <= month <= 12:
        raise InvoicingError(f"There is no month {month}.")
    run = run_prepare(year=year, month=month, now=now)
    pending = run_pending(run)
    total_items = run.items.count()
    issued = failed = 0
    for index in range(0, len(pending), batch_size):
        batch_issued, batch_failed = run_issue(
            run=run, company_ids=pending[index : index + batch_size], now=now
        )
        issued += batch_issued
        failed += batch_failed
    run = run_refresh(run, now)
    return RunResult(
        run=run,
        issued=issued,
        skipped=total_items - len(pending),
        failed=failed,
        not_due=0,
    )
