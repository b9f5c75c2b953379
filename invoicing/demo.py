"""Demo statements: every month of the demo's usage that has ended is closed, so the
portal's Statements page has invoices (postpaid) and account statements (prepaid) to show.

The demo companies are created when the seed runs, but their usage and fees go back
``billing.demo.DAYS`` days; they are dated as customers since then, or no month before
today would be theirs to close. Closing is idempotent, so running the seed again adds
nothing.
"""

from datetime import datetime, timedelta

from accounts.models import Company
from billing.demo import DAYS

from .services import period_close

DEMO_COMPANIES = ("acme-prepaid", "kumo-postpaid", "globex-usd")


def seed_statements(now: datetime) -> int:
    """Close the demo's ended months, oldest first; returns the statements issued now."""
    start = (now - timedelta(days=DAYS)).replace(hour=0, minute=0, second=0, microsecond=0)
    Company.objects.filter(account_code__in=DEMO_COMPANIES, created_at__gt=start).update(
        created_at=start
    )
    issued = 0
    year, month = start.year, start.month
    while (year, month) < (now.year, now.month):
        issued += period_close(year=year, month=month, now=now).issued
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return issued
