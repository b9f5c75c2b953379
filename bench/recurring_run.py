"""Recurring charges on PostgreSQL: the daily run over many companies, every item due at once.

How long ``billing.services.recurring`` takes to charge companies whose plan fees, DIDs and
service or seat fees all fall due at the same instant, and to find nothing due afterwards.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/recurring_run.py

The run takes the server named by DATABASE_URL, drops and recreates the database
``tollgate_bench_recurring`` there, migrates it and writes in bulk (setup is not measured)
10,000 postpaid companies (``--companies``), half billed in UTC and half in Asia/Tokyo,
each with five recurring items that start at the run instant: a subscription to a plan with
a monthly fee, three DIDs, and a monthly service fee or a seat fee. The rows hold what the
services would write (``subscription_order``, ``phone_number_assign``, ``service_fee_add``,
``seat_fee_set``): ``next_charge_at`` is the start. It measures:

(1) the daily run: ``companies_with_charges_due`` finds the companies and cuts them into
    batches of ``--batch`` (the beat task's fan-out), and worker processes, each with its
    own connection, charge the batches with ``recurring_charge_companies``, one database
    transaction each, handed out in turn (Celery workers consuming
    ``recurring_charge_batch``): 50,000 charges;
(2) the same run again, now that nothing is due;
(3) for reference, every batch's task delivered again anyway: nothing is charged twice.

Before (1) a sample of other companies, set up the same way, is charged in this process to
count the SQL statements: one company alone (``recurring_charge_company``, as the admin's
"run now"), then the others in batches, as the task charges them. At the end there must
be exactly one ``RecurringCharge`` per item and period, each posted to the ledger, and the
books must reconcile. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import re
import resource
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
from _pgserver import conninfo, postgres_config, server_connection, with_database  # noqa: E402

BENCH_DB = "tollgate_bench_recurring"
CURRENCY = "JPY"
ZONES = ("UTC", "Asia/Tokyo")
ITEMS_PER_COMPANY = 5  # one plan fee, three DIDs, one service or seat fee
PLAN_FEE = Decimal(3000)
DID_PRICES = (Decimal(300), Decimal(300), Decimal(500))
SERVICE_FEE = Decimal(5000)
SEAT_PRICE = Decimal(500)
# From the "Recurring charges" issue: the daily run over 10,000 companies in at most 30 s,
# and a run that finds nothing due in at most 5 s. The first is scaled to --companies.
TARGET_COMPANIES = 10_000
TARGET_RUN_SECONDS = 30.0
TARGET_NOTHING_DUE_SECONDS = 5.0
# New database connections timed to show what Celery's Django fixup costs per task (below).
CONNECTIONS_TIMED = 50


@dataclass(frozen=True)
class Sizes:
    companies: int  # companies charged in the measured run
    workers: int  # worker processes
    sample: int  # other companies charged first, in this process, to count statements
    batch: int  # companies per task and database transaction (TOLLGATE_RECURRING_BATCH)


# sample and batch: 0 means one company plus one batch, and the project's batch setting.
DEFAULT_SIZES = Sizes(companies=10_000, workers=2, sample=0, batch=0)
QUICK_SIZES = Sizes(companies=1_000, workers=2, sample=0, batch=0)


@dataclass(frozen=True)
class WorkerStats:
    companies: int
    charges: int
    started: float  # time.perf_counter(): CLOCK_MONOTONIC, comparable across processes
    finished: float
    commit_seconds: float
    client_cpu: float  # CPU seconds of the worker process (Python, Django, psycopg)
    server_cpu: float | None  # CPU seconds of its PostgreSQL backend, if on this machine


@dataclass(frozen=True)
class Figure:
    name: str
    processes: int
    found: int | None  # companies the fan-out found due; None when all were handed out
    companies: int  # companies handed to the workers
    charges: int
    seconds: float  # from the fan-out's start to the last worker's end
    fanout_seconds: float
    commit_seconds: float  # summed over the processes
    client_cpu: float  # summed over the processes
    server_cpu: float | None  # summed over their backends
    machine_cpu: float | None  # CPU seconds the whole machine used meanwhile (/proc/stat)
    target: float | None = None  # seconds

    @property
    def verdict(self) -> str:
        if self.target is None:
            return ""
        return "PASS" if self.seconds <= self.target else "BELOW"


# --- Entry point ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES
    overrides = {
        name: value
        for name in Sizes.__dataclass_fields__
        if (value := getattr(args, name)) is not None
    }
    sizes = replace(sizes, **overrides)

    url = os.environ.get("DATABASE_URL", "")
    server = postgres_config(url)
    if server is None:
        print("recurring_run: needs PostgreSQL; set DATABASE_URL=postgres://user@host:port/db")
        return 2

    server_info = _recreate_database(server)
    os.environ["DATABASE_URL"] = with_database(url, BENCH_DB)
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.local"
    # Production runs without DEBUG; with it every query is also formatted and kept.
    os.environ.setdefault("DJANGO_DEBUG", "false")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connections
    from django.utils import timezone

    sizes = replace(sizes, batch=sizes.batch or settings.TOLLGATE_RECURRING_BATCH)
    sizes = replace(sizes, sample=sizes.sample or sizes.batch + 2)
    print(
        f"Tollgate recurring bench: {server_info}; Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, DEBUG={settings.DEBUG}; {_load_note()}"
    )
    print(
        f"sizes: {sizes.companies:,} companies x {ITEMS_PER_COMPANY} items = "
        f"{sizes.companies * ITEMS_PER_COMPANY:,} charges, {sizes.workers} processes, "
        f"{sizes.batch} companies per task; {sizes.sample} sample companies for the "
        "statement count"
    )
    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    print(f"database {BENCH_DB} created and migrated in {time.perf_counter() - started:.1f} s")

    # The run instant: every item starts (and is due) exactly then.
    instant = timezone.now().replace(microsecond=0)
    started = time.perf_counter()
    sample_ids, run_ids, summary = _setup(sizes, instant)
    print(f"setup in bulk in {time.perf_counter() - started:.1f} s: {summary}")
    for line in _probe_queries(sample_ids, instant, sizes.batch):
        print(line)
    print(_connection_cost())
    db_conninfo = conninfo(settings.DATABASES["default"])
    server_local = _is_local(db_conninfo)
    connections.close_all()  # the workers are forked: none may inherit an open connection

    run_target = TARGET_RUN_SECONDS * sizes.companies / TARGET_COMPANIES
    figures = [
        _measure("(1) daily run", sizes, instant, server_local, target=run_target),
        _measure(
            "(2) nothing due", sizes, instant, server_local, target=TARGET_NOTHING_DUE_SECONDS
        ),
        _measure("(3) every company again", sizes, instant, server_local, every=run_ids),
    ]
    ok = _verify(figures, sizes, sample_ids, run_ids, instant)
    _print_table(figures, sizes)
    self_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(
        f"peak memory (max RSS): this process {self_kib / 1024:.0f} MiB, "
        f"largest worker process {children_kib / 1024:.0f} MiB"
    )
    if not args.keep:
        connections.close_all()
        _drop_database(server)
    return 0 if ok else 1


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 companies (under a minute)")
    parser.add_argument("--companies", type=int, help="companies charged in the measured run")
    parser.add_argument("--workers", type=int, help="worker processes")
    parser.add_argument(
        "--sample", type=int, help="companies charged to count statements (default: batch + 2)"
    )
    parser.add_argument(
        "--batch",
        type=int,
        help="companies per task and database transaction (default: TOLLGATE_RECURRING_BATCH)",
    )
    parser.add_argument(
        "--keep", action="store_true", help=f"keep the {BENCH_DB} database after the run"
    )
    args = parser.parse_args(argv)
    for name in Sizes.__dataclass_fields__:
        if (value := getattr(args, name)) is not None and value < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def _load_note() -> str:
    """The machine's load: the figures assume nothing else runs on these cores."""
    one, five, _ = os.getloadavg()
    note = f"load average {one:.2f} (1 min), {five:.2f} (5 min)"
    busy = one > 0.5 * (os.cpu_count() or 1)
    return note + (" - other work is running; figures will be low" if busy else "")


# --- The database ---------------------------------------------------------------------------


def _recreate_database(server: dict) -> str:
    """Drop and create the bench database; returns a line about the server."""
    with server_connection(server, BENCH_DB) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{BENCH_DB}"')
        version = conn.execute("SHOW server_version").fetchone()[0]
        sync = conn.execute("SHOW synchronous_commit").fetchone()[0]
        fsync = conn.execute("SHOW fsync").fetchone()[0]
    return f"PostgreSQL {version.split()[0]} (synchronous_commit={sync}, fsync={fsync})"


def _drop_database(server: dict) -> None:
    with server_connection(server, BENCH_DB) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')


def _is_local(db_conninfo: dict) -> bool:
    host = str(db_conninfo.get("host", ""))
    return host in ("", "localhost", "127.0.0.1", "::1") or host.startswith("/")


# --- Setup (in bulk, not measured) ----------------------------------------------------------


def _setup(sizes: Sizes, instant: datetime) -> tuple[list[int], list[int], str]:
    """The sample companies, then the run's; returns their ids and a summary line.

    Rows are written with ``bulk_create`` for speed, holding what the services write: a
    company as ``company_create`` leaves it (no ledger account yet: the first charge opens
    it), and each item as ``subscription_order``, ``phone_number_assign``,
    ``service_fee_add`` or ``seat_fee_set`` leaves it, starting at ``instant``. Then the
    tables written are analysed, as a live database's would be.
    """
    from django.db import connection
    from djmoney.money import Money

    from accounts.models import Company, Subaccount
    from billing.models import PhoneNumber, Plan, SeatFee, ServiceFee, Subscription

    def money(value: Decimal) -> Money:
        return Money(value, CURRENCY)

    plan = Plan.objects.create(
        name="Bench Business", currency=CURRENCY, monthly_fee=money(PLAN_FEE)
    )
    codes = [f"sample-{n:04d}" for n in range(sizes.sample)]
    codes += [f"bench-{n:05d}" for n in range(sizes.companies)]
    companies = Company.objects.bulk_create(
        [
            Company(
                account_code=code,
                name=f"{code} KK",
                mode=Company.Mode.POSTPAID,
                currency=CURRENCY,
                billing_timezone=ZONES[n % len(ZONES)],
            )
            for n, code in enumerate(codes)
        ],
        batch_size=2000,
    )
    subscriptions, numbers, service_fees, seat_fees, seats = [], [], [], [], []
    for n, company in enumerate(companies):
        subscriptions.append(
            Subscription(
                company=company,
                plan=plan,
                started_at=instant,
                fee_anchor_at=instant,
                next_charge_at=instant,
            )
        )
        for k, price in enumerate(DID_PRICES):
            numbers.append(
                PhoneNumber(
                    company=company,
                    number=f"+81 50 {n:05d} {k + 1:03d}",
                    monthly_price=money(price),
                    assigned_at=instant,
                    next_charge_at=instant,
                )
            )
        # Alternating by pairs, so that both fees meet both time zones.
        if n // 2 % 2 == 0:
            service_fees.append(
                ServiceFee(
                    company=company,
                    name="Support",
                    amount=money(SERVICE_FEE),
                    period=ServiceFee.Period.MONTHLY,
                    started_at=instant,
                    next_charge_at=instant,
                )
            )
        else:
            seat_fees.append(
                SeatFee(
                    company=company,
                    price_per_seat=money(SEAT_PRICE),
                    started_at=instant,
                    next_charge_at=instant,
                )
            )
            # One to three seats, there before the fee starts, so every seat fee is owed.
            seats += [
                Subaccount(
                    company=company,
                    code=f"seat-{s}",
                    name=f"Seat {s}",
                    created_at=instant - timedelta(days=30),
                )
                for s in range(1 + n % 3)
            ]
    written = [
        (Company, companies),
        (Plan, [plan]),
        (Subscription, subscriptions),
        (PhoneNumber, numbers),
        (ServiceFee, service_fees),
        (SeatFee, seat_fees),
        (Subaccount, seats),
    ]
    for model, rows in written[2:]:
        model.objects.bulk_create(rows, batch_size=2000)
    # A live database has planner statistics. Without them, each company's item queries
    # would also scan the next_charge_at index over every due row until autovacuum analyses
    # the new rows, partway through the run. Only the tables written here: with statistics
    # of the still empty ledger tables, the balance trigger keeps plans made for empty
    # tables, and COMMIT gets slower as they grow (2 ms to 26 ms within 1,000 companies).
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {', '.join(model._meta.db_table for model, _ in written)}")
    ids = [company.pk for company in companies]
    summary = (
        f"{len(companies):,} postpaid companies without a credit limit ({', '.join(ZONES)} "
        f"alternating), each with a plan fee of ¥{PLAN_FEE:,}, 3 DIDs and a service fee "
        f"({len(service_fees):,}) or a seat fee ({len(seat_fees):,}, {len(seats):,} seats); "
        f"{len(subscriptions) + len(numbers) + len(service_fees) + len(seat_fees):,} items, "
        f"all due at {instant:%Y-%m-%d %H:%M:%S} UTC"
    )
    return ids[: sizes.sample], ids[sizes.sample :], summary


# --- Statement count and connection cost (in this process) ----------------------------------


def _charge_one(company_id: int, instant: datetime) -> int:
    """One company alone, at ``instant``: what the admin's "run now" does."""
    from accounts.models import Company
    from billing.services.recurring import recurring_charge_company

    company = Company.objects.filter(pk=company_id).first()
    if company is None:
        return 0
    return len(recurring_charge_company(company=company, as_of=instant, now=instant))


def _charge_batch(company_ids: list[int], instant: datetime) -> int:
    """What the ``recurring_charge_batch`` task does with the ids it is given, at ``instant``."""
    from billing.services.recurring import recurring_charge_companies

    return recurring_charge_companies(company_ids=company_ids, as_of=instant, now=instant)


def _probe_queries(sample_ids: list[int], instant: datetime, batch: int) -> list[str]:
    """SQL statements: for the first two sample companies charged alone (the first also
    creates the system revenue accounts, which every later company finds), then for the
    others in batches as the task charges them; then for a batch again (nothing due), and
    for the fan-out query.

    Each sample company opens its customer ledger account, as every company of the run
    does."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from billing.services.recurring import companies_with_charges_due, in_batches

    alone = []
    copies_logged(connection)
    for company_id in sample_ids[:2]:
        with CaptureQueriesContext(connection) as queries:
            charged = _charge_one(company_id, instant)
        if charged != ITEMS_PER_COMPANY:
            raise SystemExit(f"recurring_run: sample company {company_id} got {charged} charges")
        alone.append(queries)
    batches = []
    for ids in in_batches(sample_ids[2:], batch):
        with CaptureQueriesContext(connection) as queries:
            charged = _charge_batch(ids, instant)
        if charged != ITEMS_PER_COMPANY * len(ids):
            raise SystemExit(f"recurring_run: a sample batch got {charged} charges")
        batches.append((ids, queries))
    ids, queries = max(batches, key=lambda pair: len(pair[0]))
    with CaptureQueriesContext(connection) as again:
        if _charge_batch(ids, instant):
            raise SystemExit("recurring_run: a sample company was charged twice")
    with CaptureQueriesContext(connection) as fanout:
        companies_with_charges_due(instant)
    return [
        f"SQL statements per batch (recurring_charge_batch: recurring_charge_companies, "
        f"BEGIN and COMMIT included), {len(ids)} companies x {ITEMS_PER_COMPANY} charges: "
        f"{len(queries)} = {len(queries) / len(ids):.2f} per company",
        f"    {_shapes(queries)}",
        f"one company alone (recurring_charge_company, as the admin's run now): "
        f"{len(alone[1])} statements (the first sample company, which also creates the "
        f"revenue accounts: {len(alone[0])})",
        f"    {_shapes(alone[1])}",
        f"the same batch again, nothing due: {len(again)} statements; "
        f"companies_with_charges_due: {len(fanout)} statements",
    ]


def copies_logged(connection) -> None:
    """Log each COPY in Django's query log too. ``billing.bulk.insert_rows`` writes many
    rows with COPY through the psycopg cursor, around Django's log, and the statement
    counts would miss it."""
    import psycopg

    copy = psycopg.Cursor.copy
    if getattr(copy, "logged", False):
        return

    def logged_copy(self, statement, *args, **kwargs):
        if connection.queries_logged:
            connection.queries_log.append({"sql": str(statement), "time": "0.000"})
        return copy(self, statement, *args, **kwargs)

    logged_copy.logged = True
    psycopg.Cursor.copy = logged_copy


def _shapes(queries) -> str:
    shapes = Counter(_statement_shape(query["sql"]) for query in queries)
    return ", ".join(f"{n} x {shape}" if n > 1 else shape for shape, n in shapes.most_common())


def _statement_shape(sql: str) -> str:
    verb = sql.split(None, 1)[0].upper()
    match = re.search(r'(?:FROM|INTO|UPDATE|COPY)\s+"(\w+)"', sql)
    table = match.group(1) if match else ""
    lock = " FOR UPDATE" if "FOR UPDATE" in sql else ""
    return f"{verb} {table}{lock}".strip()


def _connection_cost() -> str:
    """How long Django takes to open a database connection and run a first query. Celery's
    Django fixup closes every connection before and after each task unless
    ``CELERY_DB_REUSE_MAX`` is set (as it is in the settings), so a task would pay this on
    top of what the workers here measure."""
    from django.db import connection

    from accounts.models import Company

    connection.close()
    started = time.perf_counter()
    for _ in range(CONNECTIONS_TIMED):
        Company.objects.only("pk").first()
        connection.close()
    each = (time.perf_counter() - started) / CONNECTIONS_TIMED
    return (
        f"a new database connection and its first query: {each * 1000:.1f} ms "
        f"(mean of {CONNECTIONS_TIMED}; not part of the figures below)"
    )


# --- Running a measured run in worker processes ---------------------------------------------


def _measure(
    name: str,
    sizes: Sizes,
    instant: datetime,
    server_local: bool,
    *,
    every: list[int] | None = None,
    target: float | None = None,
) -> Figure:
    """Fork the workers; once all are connected, find the companies due (or take ``every``),
    cut them into batches and queue them; each worker takes the next batch when it is done
    with one (as Celery workers with a prefetch of one do). Wait for them."""
    from django.db import connection, connections

    from billing.services.recurring import companies_with_charges_due, in_batches

    workers = sizes.workers
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(workers + 1)
    queue = ctx.SimpleQueue()
    results = ctx.SimpleQueue()
    processes = [
        ctx.Process(
            target=_worker,
            args=(index, instant, server_local, barrier, queue, results),
            daemon=True,
        )
        for index in range(workers)
    ]
    for process in processes:
        process.start()
    connection.ensure_connection()
    try:
        barrier.wait(timeout=300)
    except threading.BrokenBarrierError:
        raise SystemExit(f"recurring_run: a worker failed to start:\n{results.get()}") from None
    machine = _machine_cpu()
    started = time.perf_counter()
    ids = companies_with_charges_due(instant) if every is None else list(every)
    batches = in_batches(ids, sizes.batch)
    fanout = time.perf_counter() - started
    for batch in batches:
        queue.put(batch)
    for _ in processes:
        queue.put(None)
    stats = [results.get() for _ in processes]
    machine = None if machine is None else _machine_cpu() - machine
    for process in processes:
        process.join(timeout=60)
    connections.close_all()
    failures = [item for item in stats if isinstance(item, str)]
    if failures:
        raise SystemExit(f"recurring_run: a worker failed:\n{failures[0]}")
    servers = [item.server_cpu for item in stats]
    figure = Figure(
        name=name,
        processes=workers,
        found=len(ids) if every is None else None,
        companies=sum(item.companies for item in stats),
        charges=sum(item.charges for item in stats),
        seconds=max([item.finished for item in stats] + [started + fanout]) - started,
        fanout_seconds=fanout,
        commit_seconds=sum(item.commit_seconds for item in stats),
        client_cpu=sum(item.client_cpu for item in stats),
        server_cpu=None if None in servers else sum(servers),
        machine_cpu=machine,
        target=target,
    )
    _print_figure(figure)
    return figure


def _worker(index: int, instant: datetime, server_local: bool, barrier, queue, results) -> None:
    import traceback

    from django.db import connection, connections

    try:
        connection.ensure_connection()
        timer = _CommitTimer(connection)
        backend_pid = connection.connection.info.backend_pid if server_local else None
        barrier.wait(timeout=300)
        clock = _Clock(backend_pid)
        companies = charges = 0
        while (batch := queue.get()) is not None:
            companies += len(batch)
            charges += _charge_batch(batch, instant)
        stats = clock.stop(companies, charges, timer.seconds)
        connections.close_all()
        results.put(stats)
    except BaseException:
        barrier.abort()
        results.put(f"worker {index}: {traceback.format_exc()}")


class _CommitTimer:
    """Adds up the time Django spends in COMMIT, where PostgreSQL runs the deferred checks
    (the balance trigger, the foreign keys) and flushes the WAL."""

    def __init__(self, connection):
        self.seconds = 0.0
        inner = connection._commit

        def timed_commit():
            started = time.perf_counter()
            try:
                return inner()
            finally:
                self.seconds += time.perf_counter() - started

        connection._commit = timed_commit


class _Clock:
    """Wall and CPU time of one worker from the moment it gets its companies, and the CPU
    time of its PostgreSQL backend when the server runs on this machine (from /proc)."""

    def __init__(self, backend_pid: int | None):
        self.backend_pid = backend_pid
        self.started = time.perf_counter()
        self.cpu = time.process_time()
        self.server = self._server_cpu()

    def _server_cpu(self) -> float | None:
        if self.backend_pid is None:
            return None
        try:
            stat = Path(f"/proc/{self.backend_pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()  # utime and stime are fields 14 and 15
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, companies: int, charges: int, commit_seconds: float) -> WorkerStats:
        finished = time.perf_counter()
        cpu = time.process_time() - self.cpu
        server = self._server_cpu()
        server = server - self.server if server is not None and self.server is not None else None
        return WorkerStats(companies, charges, self.started, finished, commit_seconds, cpu, server)


def _machine_cpu() -> float | None:
    """CPU seconds all processes of this machine have used since it booted."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields)
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


# --- Checking and printing ------------------------------------------------------------------


def _verify(
    figures: list[Figure],
    sizes: Sizes,
    sample_ids: list[int],
    run_ids: list[int],
    instant: datetime,
) -> bool:
    """One charge per item and period, each posted; every item moved on; the books
    reconcile; the fan-out found exactly the run's companies, then none."""
    from django.db.models import Count

    from billing.models import LedgerTransaction, RecurringCharge
    from billing.reconcile import reconcile
    from billing.services.recurring import companies_with_charges_due

    problems = []
    run, nothing, again = figures
    expected = len(run_ids) * ITEMS_PER_COMPANY
    if run.found != len(run_ids) or run.charges != expected:
        problems.append(
            f"the daily run found {run.found:,} of {len(run_ids):,} companies due and made "
            f"{run.charges:,} of {expected:,} charges"
        )
    if nothing.found or nothing.charges or again.charges or again.companies != len(run_ids):
        problems.append(
            f"after the run: {nothing.found} companies found due, {nothing.charges} charges; "
            f"{again.charges} charges when every company was run again"
        )
    if still_due := len(companies_with_charges_due(instant)):
        problems.append(f"{still_due} companies still have an item due")
    charges = RecurringCharge.objects.filter(company_id__in=run_ids)
    made = charges.count()
    sample_made = RecurringCharge.objects.filter(company_id__in=sample_ids).count()
    total = RecurringCharge.objects.count()
    print(
        f"RecurringCharge rows: {made:,} for the {len(run_ids):,} companies of the run "
        f"(expected {expected:,}), {sample_made:,} for the {len(sample_ids)} sample companies, "
        f"{total:,} in all"
    )
    if made != expected or sample_made != len(sample_ids) * ITEMS_PER_COMPANY:
        problems.append("RecurringCharge rows: not one per item")
    if total != made + sample_made:
        problems.append(f"{total - made - sample_made} RecurringCharge rows of no bench company")
    uneven = (
        charges.values("company_id").annotate(n=Count("id")).exclude(n=ITEMS_PER_COMPANY).count()
    )
    if uneven:
        problems.append(f"{uneven} companies have other than {ITEMS_PER_COMPANY} charges")
    duplicates = (
        RecurringCharge.objects.values("item_key", "period_index")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count()
    )
    unposted = RecurringCharge.objects.filter(transaction__isnull=True).count()
    posted = LedgerTransaction.objects.filter(idempotency_key__startswith="recurring:").count()
    print(
        f"duplicate (item_key, period_index): {duplicates}; charges without a ledger "
        f"transaction: {unposted}; ledger transactions of recurring charges: {posted:,}"
    )
    if duplicates or unposted or posted != total:
        problems.append("charges and ledger transactions do not match one to one")
    report = reconcile(now=instant)
    counts = f"{report.transactions:,} transactions, {report.companies:,} companies"
    if report.ok:
        print(f"books reconcile: OK ({counts})")
    else:
        print(f"books reconcile: FAILED, {len(report.problems)} problem(s) ({counts})")
        for problem in report.problems[:10]:
            print(f"  {problem}")
    for problem in problems:
        print(f"FAILED: {problem}")
    return report.ok and not problems


def _print_figure(figure: Figure) -> None:
    """The figure, then where one company's time went (milliseconds per company)."""
    rate = f" = {figure.charges / figure.seconds:,.0f} charges/s" if figure.charges else ""
    if figure.found is None:
        companies = f"all {figure.companies:,} companies handed out"
    else:
        companies = f"{figure.found:,} companies found due in {figure.fanout_seconds * 1000:.1f} ms"
    print(
        f"{figure.name}: {companies}, {figure.charges:,} charges, {figure.processes} "
        f"process(es): {figure.seconds:.2f} s{rate}"
    )
    if not figure.companies:
        return

    def ms(seconds: float) -> str:
        return f"{seconds / figure.companies * 1000:.2f}"

    parts = [
        f"wall x processes {ms(figure.seconds * figure.processes)}",
        f"client CPU {ms(figure.client_cpu)}",
    ]
    if figure.server_cpu is not None:
        parts.append(f"PostgreSQL backend CPU {ms(figure.server_cpu)}")
    parts.append(f"waiting for COMMIT {ms(figure.commit_seconds)}")
    print(f"    ms per company: {', '.join(parts)}")
    if figure.machine_cpu is not None and figure.server_cpu is not None:
        # What the machine used beyond the workers and their backends: other processes,
        # PostgreSQL's WAL writer and checkpointer. Much of it means the figure is low.
        other = max(figure.machine_cpu - figure.client_cpu - figure.server_cpu, 0.0)
        cores = os.cpu_count() or 1
        print(
            f"    other work on the machine meanwhile: {other / figure.seconds / cores:.0%} of it"
        )


def _print_table(figures: list[Figure], sizes: Sizes) -> None:
    width = max(len(figure.name) for figure in figures)
    header = (
        f"{'figure':<{width}}  {'procs':>5}  {'companies':>9}  {'charges':>8}  {'seconds':>7}  "
        f"{'charges/s':>9}  {'target':>8}  verdict"
    )
    print()
    print(header)
    print("-" * len(header))
    for figure in figures:
        rate = f"{figure.charges / figure.seconds:,.0f}" if figure.charges else ""
        target = f"<={figure.target:.1f} s" if figure.target is not None else ""
        print(
            f"{figure.name:<{width}}  {figure.processes:>5}  {figure.companies:>9,}  "
            f"{figure.charges:>8,}  {figure.seconds:>7.2f}  {rate:>9}  {target:>8}  "
            f"{figure.verdict}"
        )
    if sizes.companies != TARGET_COMPANIES:
        print(
            f"(the daily run's target is {TARGET_RUN_SECONDS:.0f} s for "
            f"{TARGET_COMPANIES:,} companies, scaled to {sizes.companies:,})"
        )


if __name__ == "__main__":
    sys.exit(main())
