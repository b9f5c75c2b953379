"""The scheduled reminder checks on PostgreSQL: how long the top-up check (every minute) and
the expiry notices (every hour) take with many companies, and how many queries.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python bench/reminders_check.py [--companies 10000]

The run takes the server named by DATABASE_URL, drops and recreates the database
``tollgate_bench_reminders`` there, migrates it, and sets up ``--companies`` prepaid
companies, each with one billing contact, a credit lot granted through the ledger and a
top-up reminder. One company in ten has spent below its reminder's threshold, and one in
ten has a lot that expires within the notice window. Then, each measured twice (the first
run finds the falls and lots to notice, the second is the steady state of every later
run):

(a) ``invoicing.topup.topup_reminders_check``; target: the steady run <= 1 s for 10,000
    reminders, a sixtieth of its one-minute period;
(b) ``invoicing.expiry_notices.expiry_notices_queue``; same target (its period is an hour).

Emails are queued as in production: their send tasks go to Celery's in-memory broker and
are not run. The books must reconcile at the end. See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
from _pgserver import postgres_config, server_connection, with_database  # noqa: E402

BENCH_DB = "tollgate_bench_reminders"
TARGET_SECONDS = 1.0  # the steady run, for 10,000 companies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--companies", type=int, default=10_000, help="companies set up")
    parser.add_argument("--keep", action="store_true", help=f"keep the {BENCH_DB} database")
    args = parser.parse_args(argv)
    url = os.environ.get("DATABASE_URL", "")
    server = postgres_config(url)
    if server is None:
        print("reminders_check: needs PostgreSQL; set DATABASE_URL=postgres://user@host:port/db")
        return 2
    with server_connection(server, BENCH_DB) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{BENCH_DB}"')
        version = conn.execute("SHOW server_version").fetchone()[0].split()[0]
    os.environ["DATABASE_URL"] = with_database(url, BENCH_DB)
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.local"
    os.environ.setdefault("DJANGO_DEBUG", "false")
    os.environ["CELERY_BROKER_URL"] = "memory://"  # queued, never run: only the check counts
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connections

    one, five, _ = os.getloadavg()
    print(
        f"Tollgate reminders bench: PostgreSQL {version}; Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; load average {one:.2f} (1 min), {five:.2f} (5 min)"
    )
    try:
        started = time.perf_counter()
        call_command("migrate", verbosity=0)
        now = _setup(args.companies)
        print(f"set up {args.companies:,} companies in {time.perf_counter() - started:.1f} s")
        ok = _measure(args.companies, now)
    finally:
        connections.close_all()
        if not args.keep:
            with server_connection(server, BENCH_DB) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    return 0 if ok else 1


def _setup(count: int):
    from django.utils import timezone
    from djmoney.money import Money

    from accounts.models import BillingContact, Company
    from billing.services import ledger
    from invoicing.models import TopUpReminder

    now = timezone.now()
    companies = Company.objects.bulk_create(
        [
            Company(
                account_code=f"bench-{n:05d}",
                name=f"Bench {n:05d}",
                mode=Company.Mode.PREPAID,
                currency="JPY",
                billing_timezone="Asia/Tokyo",
            )
            for n in range(count)
        ]
    )
    BillingContact.objects.bulk_create(
        [BillingContact(company=c, email=f"ap@{c.account_code}.example") for c in companies]
    )
    for n, company in enumerate(companies):
        # One in ten: a lot that expires within the notice window.
        expires = now + (timedelta(days=3) if n % 10 == 5 else timedelta(days=60))
        ledger.credits_grant(
            company=company,
            amount=Money(10000, "JPY"),
            source="purchase",
            idempotency_key=f"bench-grant-{n}",
            description="Credits",
            expires_at=expires,
            now=now - timedelta(days=30),
        )
    # One in ten below its threshold (¥10,000 of credit against ¥20,000), the rest above it.
    TopUpReminder.objects.bulk_create(
        [
            TopUpReminder(
                company=company,
                threshold=Money(20000 if n % 10 == 0 else 5000, "JPY"),
                recipients=[f"ops@{company.account_code}.example"],
                updated_at=now,
            )
            for n, company in enumerate(companies)
        ]
    )
    return now


def _timed(call):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        result = call()
        seconds = time.perf_counter() - started
    return result, seconds, len(queries)


def _measure(count: int, now) -> bool:
    from billing.reconcile import reconcile
    from invoicing.expiry_notices import expiry_notices_queue
    from invoicing.models import BillingEmail
    from invoicing.topup import topup_reminders_check

    rows = []
    for label in ("first", "steady"):
        result, seconds, queries = _timed(lambda: topup_reminders_check(now=now))
        rows.append(("(a) top-up check", label, seconds, queries, len(result.fallen)))
    for label in ("first", "steady"):
        queued, seconds, queries = _timed(lambda: expiry_notices_queue(now=now))
        rows.append(("(b) expiry notices", label, seconds, queries, len(queued)))

    target = TARGET_SECONDS * count / 10_000
    print()
    print(f"{'check':<20} {'run':<7} {'seconds':>8} {'queries':>8} {'queued':>7}  target")
    for name, label, seconds, queries, queued in rows:
        verdict = ""
        if label == "steady":
            verdict = f"<= {target:.2f} s: {'PASS' if seconds <= target else 'BELOW'}"
            verdict += f" (ratio {seconds / target:.2f})"
        print(f"{name:<20} {label:<7} {seconds:>8.3f} {queries:>8} {queued:>7}  {verdict}")

    emails = BillingEmail.objects.filter(kind__in=["topup", "expiring"]).count()
    # The companies below their threshold (n % 10 == 0) and those whose lot expires (5).
    expected = sum(1 for n in range(count) if n % 10 in (0, 5))
    books = reconcile()
    print()
    print(
        f"emails queued: {emails:,} (expected {expected:,}); books reconcile: "
        f"{'OK' if books.ok else 'PROBLEMS'}"
    )
    return books.ok and emails == expected


if __name__ == "__main__":
    sys.exit(main())
