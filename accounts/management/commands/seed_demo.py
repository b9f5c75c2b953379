from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from accounts.demo import seed_accounts
from billing.demo import seed_billing
from invoicing.demo import (
    seed_credit_note,
    seed_payments,
    seed_statements,
    seed_topup_reminder,
)
from vouchers.demo import seed_vouchers


class Command(BaseCommand):
    help = "Create demo companies, users and data. Idempotent: running it again changes nothing."

    def handle(self, *args, **options):
        with transaction.atomic():
            logins = seed_accounts()
            now = timezone.now()
            api_key = seed_billing(now=now, midday=lambda at: seed_statements(now=now, until=at))
            credit_code = seed_vouchers(now=now)
            seed_statements(now=now)
            seed_payments(now=now)
            seed_credit_note(now=now)
            seed_topup_reminder(now=now)
        self.stdout.write(self.style.SUCCESS("Demo data ready. Logins:"))
        for login in logins:
            self.stdout.write(
                f"  {login.where:<9} {login.username:<10} / {login.password:<14} {login.note}"
            )
        self.stdout.write(f"Demo API key (Authorization: Bearer ...): {api_key}")
        if credit_code:
            self.stdout.write(f"Demo credit code (¥5,000, unused; Credits page): {credit_code}")
