from django.core.management.base import BaseCommand

from accounts.services import staff_groups_sync


class Command(BaseCommand):
    help = (
        "Create or update the operator staff groups (Billing admin, Support, Finance). Idempotent."
    )

    def handle(self, *args, **options):
        for group, count in staff_groups_sync().items():
            self.stdout.write(f"{group}: {count} permissions")
