"""Closing a month on PostgreSQL: statements issued per second, queries per statement, PDFs.

    export DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres
    .venv/bin/python bench/statement_close.py          # 10,000 companies, 1,000,000 records
    .venv/bin/python bench/statement_close.py --quick  # 1,000 companies

The run drops and recreates the database ``tollgate_bench_statements`` on the server that
DATABASE_URL names, migrates it and loads, in bulk, a month (October 2026, Asia/Tokyo) of
postpaid companies, each with ~20 statement lines: a plan fee and DID fees (one line each)
and usage of three services (one line each, with quantities from its detail records), plus
tax. It measures:

(1) ``period_close`` work: the companies handed out in batches to ``--workers`` processes,
    each calling ``run_issue`` (one transaction per batch), as the scheduled task's workers
    do; the target is the whole month in <= 60 s and <= 10 queries per statement;
(2) PDFs: ``statement_pdf_render`` (the rendering, which the first download also keeps)
    for ``--pdfs`` statements in ``--workers`` processes, each
    warmed up first, in English and again in Japanese (the same statements); the pages of
    every PDF are counted with pypdf. The target is >= 15 one-page statements per second.

At the end every company must have exactly one statement and the books must reconcile.
Peak memory (max RSS) of each process is printed; the target is <= 500 MB.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import resource
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from _pgserver import postgres_config, server_connection, with_database  # noqa: E402

# TOLLGATE_BENCH_DB: another name, so that two runs on one server keep out of each other's way.
BENCH_DB = os.environ.get("TOLLGATE_BENCH_DB", "tollgate_bench_statements")
TARGET_SECONDS = 60.0
TARGET_QUERIES = 10
TARGET_PDFS_PER_SECOND = 15.0
PDF_LANGUAGES = ("en", "ja")  # ja: Noto Sans CJK JP, the expensive font
TARGET_MEMORY_MB = 500
YEAR, MONTH = 2026, 10
LOAD_CHUNK = 500  # companies loaded per COPY
DIDS = 14  # DID fees per company: with the plan fee, 15 base-fee lines
SERVICES = (("voice", 60, Decimal("0.5")), ("sms", 1, Decimal(3)), ("data", 1_000_000, Decimal(1)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 companies, 100,000 records")
    parser.add_argument("--companies", type=int)
    parser.add_argument("--records", type=int, help="usage records per company (default 100)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=50, help="companies per transaction")
    parser.add_argument("--pdfs", type=int, help="statements rendered as PDF (default 300)")
    parser.add_argument("--keep", action="store_true", help=f"keep the {BENCH_DB} database")
    args = parser.parse_args(argv)
    companies = args.companies or (1_000 if args.quick else 10_000)
    records = args.records or 100
    pdfs = args.pdfs or (60 if args.quick else 300)

    server = postgres_config(os.environ.get("DATABASE_URL", ""))
    if server is None:
        print("statement_close: needs PostgreSQL; set DATABASE_URL=postgres://user@host:port/db")
        return 2
    with server_connection(server, BENCH_DB) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{BENCH_DB}"')
    os.environ["DATABASE_URL"] = with_database(os.environ["DATABASE_URL"], BENCH_DB)
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.local"
    # Issuing queues the statements' emails after commit (one task per batch): the bench
    # pays for publishing them, to an in-process broker that no worker reads, rather than
    # leaving thousands of tasks for another database in a real broker (var/broker).
    os.environ["CELERY_BROKER_URL"] = "memory://localhost/"  # a host: kombu warns without
    os.environ.setdefault("DJANGO_DEBUG", "false")
    sys.path.insert(0, str(ROOT))
    try:
        return _run(companies, records, pdfs, args)
    finally:
        if not args.keep:
            from django.db import connections

            connections.close_all()
            with server_connection(server, BENCH_DB) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')


def _run(companies: int, records: int, pdfs: int, args) -> int:
    import gc
    import logging

    import django

    django.setup()
    logging.getLogger("weasyprint").setLevel(logging.WARNING)
    logging.getLogger("fontTools").setLevel(logging.WARNING)
    from django.core.management import call_command
    from django.db import connection, connections
    from django.test.utils import CaptureQueriesContext

    from billing.reconcile import reconcile
    from invoicing.models import Statement
    from invoicing.runs import run_issue, run_pending, run_prepare

    one, five, _ = os.getloadavg()
    print(
        f"Tollgate statements bench: {companies:,} postpaid companies x ~20 lines, "
        f"{companies * records:,} usage records, {args.workers} worker(s), batches of "
        f"{args.batch}; load average {one:.2f} / {five:.2f}"
    )
    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    _load(companies, records)
    print(f"loaded in bulk in {time.perf_counter() - started:.1f} s")

    now = datetime.now(tz=UTC)
    run = run_prepare(year=YEAR, month=MONTH, now=now)
    pending = run_pending(run)
    probe, pending = pending[: args.batch], pending[args.batch :]
    with CaptureQueriesContext(connection) as queries:
        run_issue(run=run, company_ids=probe, now=now)
    # COPY statements bypass Django's query log; none are used by the statement run.
    per_statement = len(queries) / len(probe)
    print(
        f"queries for a batch of {len(probe)}: {len(queries)} = {per_statement:.2f} per statement"
    )
    connections.close_all()

    batches = [pending[i : i + args.batch] for i in range(0, len(pending), args.batch)]
    seconds, memory, _ = _in_processes(_issue_worker, batches, args.workers, (run.pk, now))
    issued = len(pending)
    rate = issued / seconds
    month_seconds = companies / rate
    print(
        f"(1) statements: {issued:,} in {seconds:.1f} s = {rate:,.0f}/s; the whole month of "
        f"{companies:,} at this rate: {month_seconds:.1f} s (target <= {TARGET_SECONDS:.0f} s, "
        f"{'PASS' if month_seconds <= TARGET_SECONDS else 'BELOW'}); "
        f"{per_statement:.2f} queries per statement (target <= {TARGET_QUERIES}, "
        f"{'PASS' if per_statement <= TARGET_QUERIES else 'BELOW'})"
    )

    gc.collect()
    ids = list(Statement.objects.order_by("id").values_list("id", flat=True)[:pdfs])
    connections.close_all()
    shares = [ids[i : i + 10] for i in range(0, len(ids), 10)]
    pdf_memory = []
    for language in PDF_LANGUAGES:
        machine = _cpu_seconds()
        pdf_seconds, workers_memory, details = _in_processes(
            _pdf_worker, shares, args.workers, (language,)
        )
        machine = [after - before for before, after in zip(machine, _cpu_seconds(), strict=True)]
        pdf_memory += workers_memory
        pages = Counter()
        for worker_pages, _ in details:
            pages.update(worker_pages)
        cpu = sum(worker_cpu for _, worker_cpu in details)
        pdf_rate = len(ids) / pdf_seconds
        one_page = pages[1] == len(ids)
        print(
            f"(2) PDFs, {language}: {len(ids)} in {pdf_seconds:.1f} s = {pdf_rate:.1f}/s with "
            f"{args.workers} processes; pages per PDF: "
            + ", ".join(f"{n} page(s) x {count}" for n, count in sorted(pages.items()))
            + f" (target >= {TARGET_PDFS_PER_SECOND:.0f} one-page statements/s, "
            f"{_verdict(one_page and pdf_rate >= TARGET_PDFS_PER_SECOND)}"
            + ("" if one_page else "; not all statements fit one page")
            + ")"
        )
        wall, busy, ours = machine
        print(
            f"    worker CPU {1000 * cpu / len(ids):.0f} ms per PDF; other work on the machine "
            f"meanwhile (PostgreSQL included): {max(busy - ours, 0) / (wall * os.cpu_count()):.0%}"
            " of its CPU"
        )

    count = Statement.objects.count()
    distinct = Statement.objects.values("company_id").distinct().count()
    report = reconcile(now=now)
    ok = count == companies == distinct and report.ok
    print(
        f"statements: {count:,} for {companies:,} companies ({distinct:,} distinct); "
        f"books reconcile: {'OK' if report.ok else report.problems[:3]}"
    )
    largest = max(memory) / 1024
    largest_pdf = max(pdf_memory) / 1024
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"peak memory (max RSS): bench process {own:.0f} MiB, largest statement worker "
        f"{largest:.0f} MiB, largest PDF worker {largest_pdf:.0f} MiB (target <= "
        f"{TARGET_MEMORY_MB} MB, {_verdict(max(largest, largest_pdf) <= TARGET_MEMORY_MB)};"
        " a forked worker's figure includes the pages it shares with the bench process)"
    )
    return 0 if ok else 1


def _verdict(passed: bool) -> str:
    return "PASS" if passed else "BELOW"


def _cpu_seconds() -> tuple[float, float, float]:
    """Wall time, CPU time the machine spent busy (``/proc/stat``) and CPU time of this
    process and its finished children: the difference of two readings tells how much
    other work ran meanwhile."""
    with open("/proc/stat") as stat:
        user, nice, system, idle, iowait, *rest = map(int, stat.readline().split()[1:9])
    ticks = os.sysconf("SC_CLK_TCK")
    own = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    children = sum(resource.getrusage(resource.RUSAGE_CHILDREN)[:2])
    return time.perf_counter(), (user + nice + system + sum(rest)) / ticks, own + children


def _in_processes(target, shares: list, workers: int, extra: tuple) -> tuple[float, list, list]:
    """Hand ``shares`` out through a queue to ``workers`` forked processes; returns the wall
    time from the first start to the last end, each worker's peak RSS (KiB) and whatever
    else each worker reported after those three."""
    ctx = multiprocessing.get_context("fork")
    work, results = ctx.Queue(), ctx.Queue()
    for share in shares:
        work.put(share)
    for _ in range(workers):
        work.put(None)
    barrier = ctx.Barrier(workers)
    processes = [
        ctx.Process(target=target, args=(work, results, barrier, *extra)) for _ in range(workers)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get() for _ in processes]
    for process in processes:
        process.join()
    starts, ends, memory = zip(*(outcome[:3] for outcome in outcomes), strict=True)
    return max(ends) - min(starts), list(memory), [outcome[3:] for outcome in outcomes]


def _issue_worker(work, results, barrier, run_id, now) -> None:
    from invoicing.models import StatementRun
    from invoicing.runs import run_issue

    run = StatementRun.objects.get(pk=run_id)
    barrier.wait()
    started = time.perf_counter()
    while (batch := work.get()) is not None:
        run_issue(run=run, company_ids=batch, now=now)
    results.put((started, time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))


def _pdf_worker(work, results, barrier, language) -> None:
    """Renders the statements in ``language`` (set in memory only), after a warm-up as a
    worker process does at start. Counting the pages with pypdf is not part of the figure:
    its time is taken off the worker's end."""
    import io

    from pypdf import PdfReader

    from invoicing.documents import pdf_warm_up, statement_pdf_render
    from invoicing.models import Statement

    # What a Celery worker process does at start (config/celery.py, worker_process_init).
    pdf_warm_up()
    gc.collect()
    gc.freeze()
    first = Statement.objects.select_related("company").order_by("id").first()
    first.language = language
    statement_pdf_render(first)
    pages = Counter()
    counting = counting_cpu = 0.0
    barrier.wait()
    started, cpu_started = time.perf_counter(), time.process_time()
    while (ids := work.get()) is not None:
        for statement in Statement.objects.select_related("company").filter(pk__in=ids):
            statement.language = language
            document = statement_pdf_render(statement)
            counted, counted_cpu = time.perf_counter(), time.process_time()
            pages[len(PdfReader(io.BytesIO(document)).pages)] += 1
            counting += time.perf_counter() - counted
            counting_cpu += time.process_time() - counted_cpu
    ended = time.perf_counter() - counting
    cpu = time.process_time() - cpu_started - counting_cpu
    results.put((started, ended, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, pages, cpu))


# --- Loading a month in bulk (not measured) -------------------------------------------------


def _load(companies: int, records: int) -> None:
    """Companies, accounts, ledger transactions with balanced postings and usage records,
    written with COPY in one transaction with triggers off for the load (the bench's own
    rows; ``reconcile`` checks every invariant at the end instead)."""
    from zoneinfo import ZoneInfo

    from django.db import connection, transaction
    from djmoney.money import Money

    from accounts.models import Company
    from billing.models import ApiKey, LedgerAccount

    tokyo = ZoneInfo("Asia/Tokyo")
    created = datetime(2026, 1, 1, tzinfo=UTC)
    day = datetime(YEAR, MONTH, 1, 12, tzinfo=tokyo)
    zero = Money(0, "JPY")
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL session_replication_role = replica")
        rows = Company.objects.bulk_create(
            [
                Company(
                    account_code=f"st-{n:05d}",
                    name=f"Statement {n:05d} KK",
                    mode=Company.Mode.POSTPAID,
                    currency="JPY",
                    billing_timezone="Asia/Tokyo",
                    tax_rate=Decimal("0.10"),
                    created_at=created,
                )
                for n in range(companies)
            ],
            batch_size=2000,
        )
        codes = ["revenue:plan_fee", "revenue:did"] + [f"revenue:{s}" for s, *_ in SERVICES]
        revenue = {
            code: LedgerAccount.objects.create(
                kind=LedgerAccount.Kind.REVENUE, code=code, currency="JPY", balance=zero
            )
            for code in codes
        }
        customers = LedgerAccount.objects.bulk_create(
            [
                LedgerAccount(
                    kind=LedgerAccount.Kind.CUSTOMER,
                    company=company,
                    code="customer",
                    currency="JPY",
                    balance=zero,
                )
                for company in rows
            ],
            batch_size=2000,
        )
        key = ApiKey.objects.create(name="bench", prefix="bench", key_hash="0" * 64)
        balances: dict[int, Decimal] = {}
        revenue_totals = dict.fromkeys(codes, Decimal(0))
        pairs = list(zip(rows, customers, strict=True))
        # In chunks of companies, so the load's memory stays small whatever the size.
        for start in range(0, len(pairs), LOAD_CHUNK):
            _load_chunk(
                pairs[start : start + LOAD_CHUNK], records, revenue, key, day, balances,
                revenue_totals,
            )  # fmt: skip
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE billing_ledgeraccount AS a SET balance = v.balance "
                "FROM unnest(%s::bigint[], %s::numeric[]) AS v(id, balance) WHERE a.id = v.id",
                [list(balances), list(balances.values())],
            )
            for code, amount in revenue_totals.items():
                cursor.execute(
                    "UPDATE billing_ledgeraccount SET balance = %s WHERE id = %s",
                    [amount, revenue[code].pk],
                )
            cursor.execute("SET LOCAL session_replication_role = origin")
    # A live database has statistics (autovacuum analyses a table soon after it grows);
    # without them, the planner takes a freshly loaded table for empty and scans it whole.
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def _load_chunk(pairs, records, revenue, key, day, balances, revenue_totals) -> None:
    from billing.bulk import insert_rows, reserve_ids
    from billing.models import LedgerPosting, LedgerTransaction, UsageRecord
    from billing.services.ledger import POSTING_COLUMNS, TRANSACTION_COLUMNS
    from billing.services.usage import RECORD_COLUMNS

    per_company = 1 + DIDS + len(SERVICES)
    ids = iter(reserve_ids(LedgerTransaction, len(pairs) * per_company))
    transactions, postings, usage = [], [], []
    for company, customer in pairs:
        total = Decimal(0)
        fees = [("plan_fee", "Plan Business, October", Decimal(3000))] + [
            ("did", f"DID +81 50 1234 {n:04d}, October", Decimal(300)) for n in range(DIDS)
        ]
        for offset, (revenue_code, description, amount) in enumerate(fees):
            tx = next(ids)
            total += amount
            transactions.append(
                _transaction(tx, company.pk, "recurring_fee", description, day, offset, -total)
            )
            postings += [
                (tx, customer.pk, "JPY", -amount, None),
                (tx, revenue[f"revenue:{revenue_code}"].pk, "JPY", amount, None),
            ]
            revenue_totals[f"revenue:{revenue_code}"] += amount
        share = records // len(SERVICES)
        for index, (service, quantity, price) in enumerate(SERVICES):
            tx = next(ids)
            count = share + (records - share * len(SERVICES) if index == 0 else 0)
            amount = price * quantity * count if service != "data" else price * count
            total += amount
            transactions.append(
                _transaction(tx, company.pk, "usage", f"Usage: {service}", day, 100 + index, -total)
            )
            postings += [
                (tx, customer.pk, "JPY", -amount, None),
                (tx, revenue[f"revenue:{service}"].pk, "JPY", amount, None),
            ]
            revenue_totals[f"revenue:{service}"] += amount
            unit_amount = amount / count
            for n in range(count):
                at = day.replace(day=1 + n % 28, hour=n % 24)
                usage.append(
                    (key.pk, f"{company.pk}-{service}-{n}", company.account_code, company.pk,
                     None, service, "", Decimal(quantity), at, at, "charged", "", "", "", None,
                     None, None, "", Decimal(quantity), Decimal(0), None, "JPY",
                     unit_amount, None, None, "JPY", Decimal(0), tx)
                )  # fmt: skip
        balances[customer.pk] = -total
    insert_rows(LedgerTransaction, TRANSACTION_COLUMNS, transactions)
    insert_rows(LedgerPosting, POSTING_COLUMNS, postings)
    insert_rows(UsageRecord, RECORD_COLUMNS, usage)


def _transaction(pk, company_id, kind, description, day, offset, balance_after) -> tuple:
    from datetime import timedelta

    at = day + timedelta(minutes=offset)
    key = f"bench:{pk}"
    return (pk, key, key, kind, company_id, description, at, at, None, None, None, None,
            None, None, "JPY", balance_after, "{}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
