from django.core.management.base import BaseCommand, CommandError
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
            now = parse_datetime(at)
            if now is None or now.tzinfo is None:
                raise CommandError(f"--at {at!r} is not an ISO 8601 instant with a UTC offset.")
        summary = credits_expire_due(now=now)
        self.stdout.write(
            f"Expired {summary.lots} credit lot(s) of {summary.companies} company(ies)."
        )
