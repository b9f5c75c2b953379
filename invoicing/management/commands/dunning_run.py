import datetime

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from billing.periods import latest_date_anywhere
from invoicing.dunning import dunning_run
from invoicing.selectors import companies_with_overdue_invoices


class Command(BaseCommand):
    help = (
        "Remind billing contacts of overdue invoices and block companies whose invoice is "
        "still open past the grace period (what the hourly task does). Idempotent: each "
        "reminder is sent once and each block set once."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--date",
            help="act as if this day (YYYY-MM-DD) were today in every company's billing time "
            "zone; default: today in each zone",
        )

    def handle(self, *args, date=None, **options):
        today = None
        if date:
            try:
                today = datetime.date.fromisoformat(date)
            except ValueError as error:
                raise CommandError(f"--date {date!r} is not a date like 2026-11-30.") from error
        now = timezone.now()
        latest_today = latest_date_anywhere(now)
        if today is not None and today > latest_today:
            # Reminding or blocking as of a later day would act on invoices not yet overdue.
            raise CommandError(
                f"--date {date} is in the future: it is {latest_today} at the latest anywhere."
            )
        company_ids = companies_with_overdue_invoices(now, today)
        size = settings.TOLLGATE_DUNNING_BATCH
        reminders = blocked = 0
        for index in range(0, len(company_ids), size):
            result = dunning_run(
                company_ids=company_ids[index : index + size], now=now, today=today
            )
            reminders += len(result.reminders)
            blocked += len(result.blocked)
        self.stdout.write(
            f"Checked {len(company_ids)} company(ies) with open invoices: {reminders} "
            f"reminder email(s) queued, {blocked} company(ies) blocked."
        )
