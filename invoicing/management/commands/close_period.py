import re

from django.core.management.base import BaseCommand, CommandError

from invoicing.runs import period_close

MONTH = re.compile(r"^(\d{4})-(\d{2})$")


class Command(BaseCommand):
    help = (
        "Issue the statements of a month (YYYY-MM) for every company whose month has ended in "
        "its billing time zone. Running it again, or after a crash, issues only what is missing."
    )

    def add_arguments(self, parser):
        parser.add_argument("month", help="the month to close, e.g. 2026-03")

    def handle(self, *args, month, **options):
        match = MONTH.match(month)
        if not match or not 1 <= int(match[2]) <= 12:
            raise CommandError(f"{month!r} is not a month like 2026-03.")
        result = period_close(year=int(match[1]), month=int(match[2]))
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
