from datetime import date

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from billing.periods import add_months, latest_date_anywhere
from billing.selectors_usage import MAX_YEAR, MIN_YEAR, MONTH_PARAM
from invoicing.runs import period_close


class Command(BaseCommand):
    help = (
        "Issue the statements of a month (YYYY-MM) for every company whose month has ended in "
        "its billing time zone. Running it again, or after a crash, issues only what is missing."
    )

    def add_arguments(self, parser):
        parser.add_argument("month", help="the month to close, e.g. 2026-03")

    def handle(self, *args, month, **options):
        match = MONTH_PARAM.fullmatch(month)
        if not match or not 1 <= int(match[2]) <= 12 or not MIN_YEAR <= int(match[1]) <= MAX_YEAR:
            raise CommandError(
                f"{month!r} is not a month like 2026-03 (years {MIN_YEAR} to {MAX_YEAR})."
            )
        year, number = int(match[1]), int(match[2])
        if date(*add_months(year, number, 1), 1) > latest_date_anywhere(timezone.now()):
            # Otherwise a run would be recorded for a month no company can be issued yet.
            raise CommandError(f"{month} has not ended yet in any time zone.")
        result = period_close(year=year, month=number)
        run = result.run
        self.stdout.write(
            f"{run.label}: {result.issued} issued, {result.skipped} already issued, "
            f"{result.failed} failed, {run.companies} companies in the run."
        )
        if result.failed:
            raise CommandError(
                f"{result.failed} statement(s) failed; see the statement run {run.label} in "
                "the admin, then run the command again."
            )
