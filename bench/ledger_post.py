"""Ledger throughput on PostgreSQL: charges posted per second by ``billing.services.ledger``,
beside the same rows written by hand-written SQL (the ceiling on this machine).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/ledger_post.py

The run takes the server named by DATABASE_URL, drops and recreates the database
``tollgate_bench`` there, migrates it (so the deferred balance trigger and the deferred foreign
keys are in place, as in production) and measures:

(a) spread: many prepaid companies, one batch of charges per company per call
    (``company_charge_many``), the companies split between worker processes;
(b) hot: one prepaid company, batches of charges (``company_charge_many``);
(c) single: the same hot company, one database transaction per charge (``company_charge``).

Beside each, the same work done with psycopg alone: per batch, lock the company row, read
the account and lock the spendable lots, look the idempotency keys up, COPY the transactions
and postings, update the lot and the balance, commit. The books must reconcile at the end.
See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import platform
import re
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
from _pgserver import conninfo, postgres_config, server_connection, with_database  # noqa: E402

BENCH_DB = "tollgate_bench"
CURRENCY = "JPY"
REVENUE = "voice"
# Charges cost ¥1..¥50; every company holds far more credit than the run can spend, so no
# charge meets a shortfall and no company is blocked (both would change the work measured).
AMOUNTS = [Decimal(1 + n % 50) for n in range(50)]
SPREAD_CREDIT = Decimal(10_000_000)
HOT_CREDIT = Decimal(1_000_000_000)
TARGETS = {"spread": 5000, "hot": 3000}  # charges/s, from the "Money core" issue
TRIGGER_FUNCTION = "billing_check_transaction_balanced"


@dataclass(frozen=True)
class Sizes:
    companies: int  # prepaid companies in (a)
    batch: int  # charges per company per call in (a)
    hot: int  # charges on the hot company in (b)
    hot_batch: int  # charges per call in (b)
    single: int  # one-transaction-per-charge calls in (c)
    workers: int  # processes for (a)


DEFAULT_SIZES = Sizes(companies=1000, batch=100, hot=50_000, hot_batch=1000, single=5000, workers=2)
QUICK_SIZES = Sizes(companies=200, batch=100, hot=10_000, hot_batch=1000, single=500, workers=2)


@dataclass(frozen=True)
class Job:
    """What one worker process posts: ``batches`` calls of ``batch`` charges per company."""

    label: str  # idempotency-key prefix, unique per scenario
    company_ids: tuple[int, ...]
    batches: int
    batch: int
    now: datetime
    db_conninfo: dict
    server_local: bool  # the server runs here, so its backends' CPU time can be read


@dataclass(frozen=True)
class WorkerStats:
    charges: int
    started: float  # time.perf_counter(): CLOCK_MONOTONIC, comparable across processes
    finished: float
    commit_seconds: float
    client_cpu: float  # CPU seconds of the worker process (Python, Django, psycopg)
    server_cpu: float | None  # CPU seconds of its PostgreSQL backend, if on this machine


@dataclass(frozen=True)
class Figure:
    name: str
    way: str  # "service" or "raw SQL"
    processes: int
    charges: int
    seconds: float
    commit_seconds: float  # summed over the processes
    client_cpu: float  # summed over the processes
    server_cpu: float | None  # summed over their backends
    trigger_seconds: float | None  # the balance trigger's own time, summed over the processes
    machine_cpu: float | None  # CPU seconds the whole machine used meanwhile (/proc/stat)
    target: int | None = None

    @property
    def rate(self) -> float:
        return self.charges / self.seconds

    def per_charge_us(self, seconds: float) -> float:
        return seconds / self.charges * 1e6


# --- Entry point ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES
    overrides = {
        name: value
        for name in ("companies", "batch", "hot", "hot_batch", "single", "workers")
        if (value := getattr(args, name)) is not None
    }
    sizes = replace(sizes, **overrides)

    url = os.environ.get("DATABASE_URL", "")
    server = postgres_config(url)
    if server is None:
        print("ledger_post: needs PostgreSQL; set DATABASE_URL=postgres://user@host:port/db")
        return 2

    server_info, trigger_timing = _recreate_database(server)
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

    print(
        f"Tollgate ledger bench: {server_info}; Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, DEBUG={settings.DEBUG}; {_load_note()}"
    )
    print(
        f"sizes: (a) {sizes.companies} companies x {sizes.batch} charges, {sizes.workers} "
        f"processes; (b) {sizes.hot:,} charges in batches of {sizes.hot_batch}; "
        f"(c) {sizes.single:,} single charges"
    )
    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    print(f"database {BENCH_DB} created and migrated in {time.perf_counter() - started:.1f} s")

    now = timezone.now()
    started = time.perf_counter()
    spread_ids, hot_id = _setup_companies(sizes, now)
    print(
        f"setup: {len(spread_ids)} + 1 prepaid companies granted credit through "
        f"credits_grant in {time.perf_counter() - started:.1f} s"
    )
    probe = _probe_queries(hot_id, sizes.hot_batch, now)
    for line in probe:
        print(line)
    db_conninfo = conninfo(settings.DATABASES["default"])
    connections.close_all()  # the workers are forked: none may inherit an open connection

    monitor = _Monitor(db_conninfo, enabled=trigger_timing)
    figures: list[Figure] = []
    spread = f"(a) spread: {sizes.companies} companies, batch {sizes.batch}"
    hot = f"(b) hot company, batch {sizes.hot_batch}"
    single = "(c) hot company, 1 per transaction"
    hot_calls = _rounds(sizes.hot, sizes.hot_batch)
    plan = []
    # (a) in as many processes as asked (the figure held to the target), then in one: what
    # the extra processes add.
    for processes in dict.fromkeys([sizes.workers, 1]):
        parts = _partition(spread_ids, processes)
        target = "spread" if processes == sizes.workers else None
        plan += [
            (spread, "service", _service_batches, parts, 1, sizes.batch, target),
            (spread, "raw SQL", _raw_batches, parts, 1, sizes.batch, None),
        ]
    plan += [
        (hot, "service", _service_batches, [[hot_id]], *hot_calls, "hot"),
        (hot, "raw SQL", _raw_batches, [[hot_id]], *hot_calls, None),
        (single, "service", _service_single, [[hot_id]], sizes.single, 1, None),
        (single, "raw SQL", _raw_single, [[hot_id]], sizes.single, 1, None),
    ]
    for number, (name, way, runner, parts, batches, batch, target) in enumerate(plan):
        jobs = [
            Job(
                label=f"bench{number}",
                company_ids=tuple(part),
                batches=batches,
                batch=batch,
                now=now,
                db_conninfo=db_conninfo,
                server_local=_is_local(db_conninfo),
            )
            for part in parts
        ]
        figure = _measure(name, way, runner, jobs, monitor, TARGETS.get(target))
        figures.append(figure)
        _print_figure(figure)
    monitor.close()

    ok = _verify(figures, now)
    _print_table(figures)
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
    parser.add_argument("--quick", action="store_true", help="smaller counts (under a minute)")
    parser.add_argument("--companies", type=int, help="companies in (a)")
    parser.add_argument("--batch", type=int, help="charges per company per call in (a)")
    parser.add_argument("--hot", type=int, help="charges on the hot company in (b)")
    parser.add_argument("--hot-batch", type=int, help="charges per call in (b)")
    parser.add_argument("--single", type=int, help="one-transaction-per-charge calls in (c)")
    parser.add_argument("--workers", type=int, help="processes for (a)")
    parser.add_argument(
        "--keep", action="store_true", help=f"keep the {BENCH_DB} database after the run"
    )
    return parser.parse_args(argv)


def _load_note() -> str:
    """The machine's load: the figures assume nothing else runs on these cores."""
    one, five, _ = os.getloadavg()
    note = f"load average {one:.2f} (1 min), {five:.2f} (5 min)"
    busy = one > 0.5 * (os.cpu_count() or 1)
    return note + (" - other work is running; figures will be low" if busy else "")


def _rounds(charges: int, batch: int) -> tuple[int, int]:
    """(calls, charges per call) for ``charges`` posted in batches of ``batch``."""
    if charges % batch:
        raise SystemExit(f"ledger_post: {charges} charges do not split into batches of {batch}")
    return charges // batch, batch


def _partition(ids: list[int], parts: int) -> list[list[int]]:
    return [ids[n::parts] for n in range(parts)]


# --- The database ---------------------------------------------------------------------------


def _recreate_database(server: dict) -> tuple[str, bool]:
    """Drop and create the bench database; returns a line about the server and whether the
    balance trigger's time can be measured (``track_functions`` needs a superuser)."""
    import psycopg

    with server_connection(server, BENCH_DB) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{BENCH_DB}"')
        try:
            conn.execute(f"ALTER DATABASE \"{BENCH_DB}\" SET track_functions = 'pl'")
            trigger_timing = True
        except psycopg.errors.InsufficientPrivilege:
            trigger_timing = False
        version = conn.execute("SHOW server_version").fetchone()[0]
        sync = conn.execute("SHOW synchronous_commit").fetchone()[0]
        fsync = conn.execute("SHOW fsync").fetchone()[0]
    info = f"PostgreSQL {version.split()[0]} (synchronous_commit={sync}, fsync={fsync})"
    return info, trigger_timing


def _drop_database(server: dict) -> None:
    with server_connection(server, BENCH_DB) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')


class _Monitor:
    """Reads how long the balance trigger ran (``pg_stat_user_functions``, self time).

    Backends report function statistics when they end, so the figure is read after the
    workers have closed their connections, waiting briefly for the last reports."""

    def __init__(self, db_conninfo: dict, *, enabled: bool):
        import psycopg

        self.enabled = enabled
        self.conn = psycopg.connect(**db_conninfo, autocommit=True) if enabled else None

    def read(self) -> tuple[int, float]:
        row = self.conn.execute(
            "SELECT calls, self_time FROM pg_stat_user_functions WHERE funcname = %s",
            (TRIGGER_FUNCTION,),
        ).fetchone()
        return (row[0], row[1] / 1000) if row else (0, 0.0)

    def trigger_seconds(self, before: tuple[int, float], calls: int) -> float | None:
        """Seconds the trigger spent over at least ``calls`` calls since ``before``."""
        if not self.enabled:
            return None
        deadline = time.monotonic() + 5
        while True:
            count, seconds = self.read()
            if count - before[0] >= calls or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        return seconds - before[1] if count - before[0] >= calls else None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


# --- Setup and the query probe (in this process, through the services) ----------------------


def _setup_companies(sizes: Sizes, now: datetime) -> tuple[list[int], int]:
    from djmoney.money import Money

    from accounts.services import company_create
    from billing.services.ledger import credits_grant

    def prepaid(code: str, credit: Decimal) -> int:
        company = company_create(account_code=code, name=f"{code} KK", mode="prepaid")
        credits_grant(
            company=company,
            amount=Money(credit, CURRENCY),
            source="purchase",
            idempotency_key=f"setup:{code}",
            description="Bench credit",
            lifetime=timedelta(days=365),
            now=now,
        )
        return company.pk

    spread = [prepaid(f"bench-{n:04d}", SPREAD_CREDIT) for n in range(sizes.companies)]
    return spread, prepaid("bench-hot", HOT_CREDIT)


def _probe_queries(company_id: int, batch: int, now: datetime) -> list[str]:
    """The SQL statements one service call costs, for a full batch, a batch of one and
    ``company_charge``. A first charge creates the revenue account (which the raw SQL then
    looks up), so the count is taken after it: the steady state."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from accounts.models import Company

    company = Company.objects.get(pk=company_id)
    _post_service_batch(company, Job("probe", (company_id,), 1, 1, now, {}, False), 1, 0)
    counted: dict[str, Counter] = {}
    for name, size in [(f"{batch} charges", batch), ("1 charge", 1), ("company_charge", None)]:
        job = Job(f"probe-{name}", (company_id,), 1, size or 1, now, {}, False)
        with CaptureQueriesContext(connection) as queries:
            if size is None:
                _post_service_single(company, job, 0)
            else:
                _post_service_batch(company, job, size, 0)
        counted[name] = Counter(_statement_shape(query["sql"]) for query in queries)
    many, one, single = counted.values()
    extra = ", ".join((single - many).elements())
    listed = ", ".join(f"{n} x {shape}" if n > 1 else shape for shape, n in many.items())
    return [
        f"service SQL statements per call: company_charge_many {many.total()} for {batch} "
        f"charges, {one.total()} for 1; company_charge {single.total()} (adds {extra})",
        f"    {listed}",
    ]


def _statement_shape(sql: str) -> str:
    verb = sql.split(None, 1)[0].upper()
    match = re.search(r'(?:FROM|INTO|UPDATE)\s+"(\w+)"', sql)
    table = match.group(1) if match else ""
    lock = " FOR UPDATE" if "FOR UPDATE" in sql else ""
    return f"{verb} {table}{lock}".strip()


# --- Running a scenario in worker processes -------------------------------------------------


Runner = Callable[[Job, Callable[[int], "_Clock"]], WorkerStats]


def _measure(name, way, runner: Runner, jobs: list[Job], monitor: _Monitor, target) -> Figure:
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(len(jobs))
    results = ctx.SimpleQueue()
    before = monitor.read() if monitor.enabled else (0, 0.0)
    machine = _machine_cpu()
    processes = [
        ctx.Process(target=_worker, args=(runner, job, barrier, results), daemon=True)
        for job in jobs
    ]
    for process in processes:
        process.start()
    stats = [results.get() for _ in processes]
    machine = None if machine is None else _machine_cpu() - machine
    for process in processes:
        process.join()
    failures = [item for item in stats if isinstance(item, str)]
    if failures:
        raise SystemExit(f"ledger_post: a worker failed:\n{failures[0]}")
    charges = sum(item.charges for item in stats)
    servers = [item.server_cpu for item in stats]
    # One balance-trigger call per transaction and per posting; each bench charge posts a
    # transaction with two postings (one lot, one revenue account).
    trigger = monitor.trigger_seconds(before, charges * 3)
    return Figure(
        name=name,
        way=way,
        processes=len(jobs),
        charges=charges,
        seconds=max(item.finished for item in stats) - min(item.started for item in stats),
        commit_seconds=sum(item.commit_seconds for item in stats),
        client_cpu=sum(item.client_cpu for item in stats),
        server_cpu=None if None in servers else sum(servers),
        trigger_seconds=trigger,
        machine_cpu=machine,
        target=target if way == "service" else None,
    )


def _worker(runner: Runner, job: Job, barrier, results) -> None:
    def start(backend_pid: int) -> _Clock:
        barrier.wait(timeout=300)
        return _Clock(backend_pid if job.server_local else None)

    try:
        results.put(runner(job, start))
    except BaseException:
        import traceback

        results.put(traceback.format_exc())


class _Clock:
    """Wall and CPU time of one worker from the common start, and the CPU time of its
    PostgreSQL backend when the server runs on this machine (read from /proc)."""

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

    def stop(self, charges: int, commit_seconds: float) -> WorkerStats:
        finished = time.perf_counter()
        cpu = time.process_time() - self.cpu
        server = self._server_cpu()
        if server is not None and self.server is not None:
            server -= self.server
        else:
            server = None
        return WorkerStats(charges, self.started, finished, commit_seconds, cpu, server)


def _machine_cpu() -> float | None:
    """CPU seconds all processes of this machine have used since it booted."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields)
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _is_local(db_conninfo: dict) -> bool:
    host = str(db_conninfo.get("host", ""))
    return host in ("", "localhost", "127.0.0.1", "::1") or host.startswith("/")


# --- The service ----------------------------------------------------------------------------


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


def _post_service_batch(company, job: Job, size: int, round_: int) -> None:
    from djmoney.money import Money

    from billing.services.ledger import ChargeRequest, company_charge_many

    prefix = f"{job.label}:{company.pk}:{round_}"
    requests = [
        ChargeRequest(
            amount=Money(AMOUNTS[n % 50], CURRENCY),
            revenue=REVENUE,
            idempotency_key=f"{prefix}:{n}",
            description=f"Voice usage {n}",
        )
        for n in range(size)
    ]
    company_charge_many(company=company, charges=requests, now=job.now)


def _post_service_single(company, job: Job, n: int) -> None:
    from djmoney.money import Money

    from billing.services.ledger import company_charge

    company_charge(
        company=company,
        amount=Money(AMOUNTS[n % 50], CURRENCY),
        revenue=REVENUE,
        idempotency_key=f"{job.label}:{company.pk}:{n}",
        description=f"Voice usage {n}",
        now=job.now,
    )


def _service_batches(job: Job, start: Callable[[int], _Clock]) -> WorkerStats:
    from django.db import connections

    from accounts.models import Company

    connection = connections["default"]
    companies = list(Company.objects.filter(pk__in=job.company_ids).order_by("pk"))
    timer = _CommitTimer(connection)
    clock = start(connection.connection.info.backend_pid)
    for round_ in range(job.batches):
        for company in companies:
            _post_service_batch(company, job, job.batch, round_)
    stats = clock.stop(len(companies) * job.batches * job.batch, timer.seconds)
    connections.close_all()
    return stats


def _service_single(job: Job, start: Callable[[int], _Clock]) -> WorkerStats:
    from django.db import connections

    from accounts.models import Company

    connection = connections["default"]
    (company,) = Company.objects.filter(pk__in=job.company_ids)
    timer = _CommitTimer(connection)
    clock = start(connection.connection.info.backend_pid)
    for n in range(job.batches):
        _post_service_single(company, job, n)
    stats = clock.stop(job.batches, timer.seconds)
    connections.close_all()
    return stats


# --- Raw SQL: the ceiling -------------------------------------------------------------------


TRANSACTION_COLUMNS = (
    "id, idempotency_key, fingerprint, kind, company_id, description, posted_at, effective_at, "
    "balance_after, balance_after_currency, metadata"
)
POSTING_COLUMNS = "transaction_id, account_id, amount, amount_currency, lot_id"


def _fingerprint(company_id: int, value: Decimal) -> str:
    """What the service stores for a charge (``ledger._charge_fingerprint``), so a retry of
    a raw-posted charge through the service would be recognised."""
    payload = json.dumps(
        {
            "op": "charge",
            "company": company_id,
            "kind": "usage",
            "revenue": REVENUE,
            "amount": value,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


class _RawLedger:
    """One psycopg connection that posts charges the way the service does, in fewest
    statements: the same rows, locks and checks, none of the ORM."""

    def __init__(self, db_conninfo: dict):
        import psycopg

        self.conn = psycopg.connect(**db_conninfo)
        self.cur = self.conn.cursor()
        self.commit_seconds = 0.0
        self.revenue_id = self._one(
            "SELECT id FROM billing_ledgeraccount "
            "WHERE company_id IS NULL AND code = %s AND currency = %s",
            (f"revenue:{REVENUE}", CURRENCY),
        )[0]
        self.sequence = self._one(
            "SELECT pg_get_serial_sequence('billing_ledgertransaction', 'id')", ()
        )[0]
        self.conn.commit()

    def _one(self, sql: str, params: tuple) -> tuple:
        return self.cur.execute(sql, params).fetchone()

    def _open(self, company_id: int, now: datetime, keys: list[str]):
        """Lock the company, then its spendable lots (the service's lock order)."""
        cur = self.cur
        cur.execute("SELECT id FROM accounts_company WHERE id = %s FOR UPDATE", (company_id,))
        account_id, balance = self._one(
            "SELECT id, balance FROM billing_ledgeraccount "
            "WHERE company_id = %s AND kind = 'customer'",
            (company_id,),
        )
        lots = cur.execute(
            "SELECT id, remaining FROM billing_creditlot "
            "WHERE company_id = %s AND remaining > 0 AND expires_at > %s "
            "ORDER BY expires_at, id FOR UPDATE",
            (company_id, now),
        ).fetchall()
        taken = cur.execute(
            "SELECT idempotency_key FROM billing_ledgertransaction WHERE idempotency_key = ANY(%s)",
            (keys,),
        ).fetchall()
        if taken:
            raise RuntimeError(f"idempotency keys already used: {taken[:3]}")
        return account_id, balance, [list(lot) for lot in lots]

    @staticmethod
    def _spend(lots: list[list], value: Decimal, account_id: int, tx_id: int, postings, dirty):
        left = value
        for lot in lots:
            if left <= 0:
                break
            take = min(lot[1], left)
            if take > 0:
                lot[1] -= take
                dirty[lot[0]] = lot[1]
                postings.append((tx_id, account_id, -take, CURRENCY, lot[0]))
                left -= take
        if left > 0:
            raise RuntimeError("the bench gives every company enough credit; it ran out")

    def _close(self, account_id: int, balance: Decimal, dirty: dict) -> None:
        self.cur.executemany(
            "UPDATE billing_creditlot SET remaining = %s WHERE id = %s",
            [(remaining, lot_id) for lot_id, remaining in dirty.items()],
        )
        self.cur.execute(
            "UPDATE billing_ledgeraccount SET balance = %s WHERE id = %s", (balance, account_id)
        )
        started = time.perf_counter()
        self.conn.commit()
        self.commit_seconds += time.perf_counter() - started

    def post_batch(self, company_id: int, now: datetime, charges: list[tuple[str, Decimal, str]]):
        """Post ``charges`` (key, amount, description) in one transaction with COPY."""
        account_id, balance, lots = self._open(company_id, now, [key for key, _, _ in charges])
        ids = [
            row[0]
            for row in self.cur.execute(
                "SELECT nextval(%s) FROM generate_series(1, %s)", (self.sequence, len(charges))
            )
        ]
        transactions, postings, dirty = [], [], {}
        for tx_id, (key, value, description) in zip(ids, charges, strict=True):
            self._spend(lots, value, account_id, tx_id, postings, dirty)
            postings.append((tx_id, self.revenue_id, value, CURRENCY, None))
            balance -= value
            transactions.append(
                (
                    tx_id,
                    key,
                    _fingerprint(company_id, value),
                    "usage",
                    company_id,
                    description,
                    now,
                    now,
                    balance,
                    CURRENCY,
                    "{}",
                )
            )
        copy_tx = f"COPY billing_ledgertransaction ({TRANSACTION_COLUMNS}) FROM STDIN"
        with self.cur.copy(copy_tx) as copy:
            for row in transactions:
                copy.write_row(row)
        with self.cur.copy(f"COPY billing_ledgerposting ({POSTING_COLUMNS}) FROM STDIN") as copy:
            for row in postings:
                copy.write_row(row)
        self._close(account_id, balance, dirty)

    def post_one(self, company_id: int, now: datetime, key: str, value: Decimal, description):
        """Post one charge in its own transaction with plain INSERTs."""
        account_id, balance, lots = self._open(company_id, now, [key])
        balance -= value
        (tx_id,) = self._one(
            f"INSERT INTO billing_ledgertransaction ({TRANSACTION_COLUMNS.removeprefix('id, ')}) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (
                key,
                _fingerprint(company_id, value),
                "usage",
                company_id,
                description,
                now,
                now,
                balance,
                CURRENCY,
                "{}",
            ),
        )
        postings, dirty = [], {}
        self._spend(lots, value, account_id, tx_id, postings, dirty)
        postings.append((tx_id, self.revenue_id, value, CURRENCY, None))
        values = ", ".join(["(%s, %s, %s, %s, %s)"] * len(postings))
        self.cur.execute(
            f"INSERT INTO billing_ledgerposting ({POSTING_COLUMNS}) VALUES {values}",
            [field for posting in postings for field in posting],
        )
        self._close(account_id, balance, dirty)

    def close(self) -> None:
        self.conn.close()


def _raw_batches(job: Job, start: Callable[[int], _Clock]) -> WorkerStats:
    ledger = _RawLedger(job.db_conninfo)
    clock = start(ledger.conn.info.backend_pid)
    for round_ in range(job.batches):
        for company_id in job.company_ids:
            prefix = f"{job.label}:{company_id}:{round_}"
            charges = [
                (f"{prefix}:{n}", AMOUNTS[n % 50], f"Voice usage {n}") for n in range(job.batch)
            ]
            ledger.post_batch(company_id, job.now, charges)
    stats = clock.stop(len(job.company_ids) * job.batches * job.batch, ledger.commit_seconds)
    ledger.close()
    return stats


def _raw_single(job: Job, start: Callable[[int], _Clock]) -> WorkerStats:
    ledger = _RawLedger(job.db_conninfo)
    (company_id,) = job.company_ids
    clock = start(ledger.conn.info.backend_pid)
    for n in range(job.batches):
        key = f"{job.label}:{company_id}:{n}"
        ledger.post_one(company_id, job.now, key, AMOUNTS[n % 50], f"Voice usage {n}")
    stats = clock.stop(job.batches, ledger.commit_seconds)
    ledger.close()
    return stats


# --- Checking and printing ------------------------------------------------------------------


def _verify(figures: list[Figure], now: datetime) -> bool:
    """Every charge posted in full, and the books reconcile."""
    from billing.models import LedgerTransaction
    from billing.reconcile import reconcile

    expected = sum(figure.charges for figure in figures)
    posted = LedgerTransaction.objects.filter(idempotency_key__startswith="bench").count()
    short = LedgerTransaction.objects.filter(shortfall__isnull=False).count()
    report = reconcile(now=now)
    counts = (
        f"{report.transactions:,} transactions, {report.lots:,} lots, "
        f"{report.companies:,} companies"
    )
    if report.ok:
        print(f"books reconcile: OK ({counts})")
    else:
        print(f"books reconcile: FAILED, {len(report.problems)} problem(s) ({counts})")
        for problem in report.problems[:10]:
            print(f"  {problem}")
    if posted != expected or short:
        print(f"charges posted: {posted:,} of {expected:,}, {short} with a shortfall: FAILED")
        return False
    return report.ok


def _print_figure(figure: Figure) -> None:
    """The figure, then where one charge's time went (microseconds per charge)."""
    us = figure.per_charge_us
    print(
        f"{figure.name} | {figure.way}, {figure.processes} process(es): "
        f"{figure.charges:,} charges in {figure.seconds:.2f} s = {figure.rate:,.0f}/s"
    )
    parts = [
        f"wall x processes {us(figure.seconds * figure.processes):.0f}",
        f"client CPU {us(figure.client_cpu):.0f}",
    ]
    if figure.server_cpu is not None:
        parts.append(f"PostgreSQL backend CPU {us(figure.server_cpu):.0f}")
    parts.append(f"waiting for COMMIT {us(figure.commit_seconds):.0f}")
    if figure.trigger_seconds is not None:
        parts.append(f"balance trigger {us(figure.trigger_seconds):.0f}")
    print(f"    us per charge: {', '.join(parts)}")
    if figure.machine_cpu is not None and figure.server_cpu is not None:
        # What the machine used beyond the workers and their backends: other processes,
        # PostgreSQL's WAL writer and checkpointer. Much of it means the figure is low.
        # Clock ticks make it a little uncertain, hence the floor at zero.
        other = max(figure.machine_cpu - figure.client_cpu - figure.server_cpu, 0.0)
        cores = os.cpu_count() or 1
        print(
            f"    other work on the machine meanwhile: {other / figure.seconds / cores:.0%} of it"
        )


def _raw_for(figure: Figure, figures: list[Figure]) -> Figure | None:
    """The raw-SQL figure with the same scenario and number of processes."""
    for other in figures:
        if (
            other.way == "raw SQL"
            and other.name == figure.name
            and other.processes == figure.processes
        ):
            return other
    return None


def _print_table(figures: list[Figure]) -> None:
    width = max(len(figure.name) for figure in figures)
    header = (
        f"{'scenario':<{width}}  {'way':<7}  {'procs':>5}  {'charges':>8}  {'seconds':>7}  "
        f"{'charges/s':>9}  {'target':>8}  {'verdict':<6}  service/raw"
    )
    print()
    print(header)
    print("-" * len(header))
    for figure in figures:
        target = verdict = ratio = ""
        if figure.target is not None:
            target = f">={figure.target:,}"
            verdict = "PASS" if figure.rate >= figure.target else "BELOW"
        if figure.way == "service" and (raw := _raw_for(figure, figures)) is not None:
            ratio = f"{figure.rate / raw.rate:.2f}"
        print(
            f"{figure.name:<{width}}  {figure.way:<7}  {figure.processes:>5}  "
            f"{figure.charges:>8,}  {figure.seconds:>7.2f}  {figure.rate:>9,.0f}  "
            f"{target:>8}  {verdict:<6}  {ratio}"
        )


if __name__ == "__main__":
    sys.exit(main())
