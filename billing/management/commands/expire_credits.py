from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from billing.services.expiry import credits_expire_due


class Command(BaseCommand):
    help = (
        "Post an expiry transaction for every credit lot that has expired with credit left. "
        "Idempotent."
    )

    def add_arguments(self, parser):
        parser.add_argument("--at", help="expire as of this ISO 8601 instant (default: now)")

    def handle(self, *args, at=None, **options):
        now = None
        if at:
            try:
                now = parse_datetime(at)
                in_future = now is not None and now.tzinfo is not None and now > timezone.now()
            except (ValueError, OverflowError):  # 2026-02-30, or beyond year 9999 in UTC
                now = None
            if now is None or now.tzinfo is None:
                raise CommandError(f"--at {at!r} is not an ISO 8601 instant with a UTC offset.")
            if in_future:
                # Expiring as of a later instant would take credit that is still usable.
                raise CommandError(f"--at {at!r} is in the future: only past instants.")
        summary = credits_expire_due(now=now)
        self.stdout.write(
            f"Expired {summary.lots} credit lot(s) of {summary.companies} company(ies)."
        )
