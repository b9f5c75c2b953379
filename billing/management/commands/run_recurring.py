import datetime

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from billing.exceptions import RecurringChargesFailed
from billing.periods import latest_date_anywhere
from billing.services.recurring import recurring_charge_all


class Command(BaseCommand):
    help = (
        "Charge every recurring fee whose period has started (plan fees, activation, DIDs, "
        "seats, service fees), catching up missed periods in order. Idempotent."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--date",
            help="charge as of the end of this day (YYYY-MM-DD) in each company's billing "
            "time zone; default: now",
        )

    def handle(self, *args, date=None, **options):
        day = None
        if date:
            try:
                day = datetime.date.fromisoformat(date)
            except ValueError as error:
                raise CommandError(f"--date {date!r} is not a date like 2026-11-30.") from error
            # Fees are charged for periods that have started, not ahead of time.
            latest_today = latest_date_anywhere(timezone.now())
            if day > latest_today:
                raise CommandError(
                    f"--date {date} is in the future: it is {latest_today} at the latest "
                    "anywhere, and fees are charged only for periods that have started."
                )
        try:
            count = recurring_charge_all(day=day)
        except RecurringChargesFailed as failed:
            raise CommandError(
                f"Recurring charges refused, the others recorded: {failed}"
            ) from None
        self.stdout.write(f"Recorded {count} recurring charge(s).")
