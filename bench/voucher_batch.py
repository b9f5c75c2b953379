"""Vouchers on PostgreSQL: how long a 100,000-code batch takes to generate and how much
memory it needs, and how many codes 8 concurrent clients register per second.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/voucher_batch.py

The run takes the server named by DATABASE_URL, drops and recreates the database
``tollgate_bench_vouchers`` there, migrates it, creates the cache table, and measures:

(a) batch: ``vouchers.services.batch_create`` with 100,000 codes (COPY in chunks), a few
    times: wall time and the process's peak memory while it runs (target <= 10 s and
    <= 300 MB); then the CSV export of that batch streamed to nowhere, for reference;
(b) redemptions: ``--clients`` processes register distinct codes, each for its own prepaid
    company, first through ``voucher_redeem`` (the service), then through
    ``voucher_redeem_attempt`` (what the portal calls: the brute-force check in the cache
    first). Redemptions per second and per-call latency.

The books must reconcile and every code must be redeemed once at the end. See
bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import resource
import sys
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
from _pgserver import postgres_config, server_connection, with_database  # noqa: E402

BENCH_DB = "tollgate_bench_vouchers"
TARGET_BATCH_SECONDS = 10.0
TARGET_BATCH_MB = 300.0
BATCH_SIZE = 100_000


@dataclass(frozen=True)
class BatchFigure:
    seconds: float
    peak_mb: float  # the process's peak RSS while generating (VmHWM after a reset)
    growth_mb: float  # that peak less the RSS just before
    statements: int


@dataclass(frozen=True)
class RedeemFigure:
    name: str
    clients: int
    redemptions: int
    seconds: float
    latencies_ms: list[float]
    client_cpu: float

    @property
    def rate(self) -> float:
        return self.redemptions / self.seconds


# --- Entry point ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    url = os.environ.get("DATABASE_URL", "")
    server = postgres_config(url)
    if server is None:
        print("voucher_batch: needs PostgreSQL; set DATABASE_URL=postgres://user@host:port/db")
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

    cache = settings.CACHES["default"]["BACKEND"].rsplit(".", 1)[-1]
    print(
        f"Tollgate voucher bench: {server_info}; Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, DEBUG={settings.DEBUG}, cache {cache}; {_load_note()}"
    )
    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    call_command("createcachetable", verbosity=0)
    print(f"database {BENCH_DB} created and migrated in {time.perf_counter() - started:.1f} s")

    ok = True
    try:
        batches = [_measure_batch(run) for run in range(1, args.batches + 1)]
        _measure_export()
        figures = _measure_redemptions(args.clients, args.redemptions)
        ok = _check(args.redemptions * len(figures) + 1)
        _print_table(batches, figures)
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            _drop_database(server)
    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"peak memory: bench process {self_mb:.0f} MB (ru_maxrss), largest client process "
        f"{children_mb:.0f} MB"
    )
    return 0 if ok else 1


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=3, help="100,000-code batches in (a)")
    parser.add_argument("--clients", type=int, default=8, help="client processes in (b)")
    parser.add_argument(
        "--redemptions", type=int, default=2000, help="codes registered per way in (b)"
    )
    parser.add_argument("--keep", action="store_true", help=f"keep the {BENCH_DB} database")
    return parser.parse_args(argv)


def _load_note() -> str:
    """The machine's load: the figures assume nothing else runs on these cores."""
    one, five, _ = os.getloadavg()
    note = f"load average {one:.2f} (1 min), {five:.2f} (5 min)"
    busy = one > 0.5 * (os.cpu_count() or 1)
    return note + (" - other work is running; figures will be low" if busy else "")


def _recreate_database(server: dict) -> str:
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


# --- (a) Generating a batch -----------------------------------------------------------------


def _proc_status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> None:
    """Make VmHWM start again from the current RSS (Linux: "5" to clear_refs)."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def _measure_batch(run: int) -> BatchFigure:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone
    from djmoney.money import Money

    from vouchers.models import Voucher
    from vouchers.services import batch_create

    connection.ensure_connection()
    before = _proc_status_mb("VmRSS")
    _reset_peak_rss()
    started = time.perf_counter()
    with CaptureQueriesContext(connection) as queries:
        batch = batch_create(
            amount=Money(Decimal(1000), "JPY"),
            count=BATCH_SIZE,
            lifetime_days=90,
            label=f"Bench batch {run}",
            now=timezone.now(),
        )
    seconds = time.perf_counter() - started
    peak = _proc_status_mb("VmHWM")
    written = Voucher.objects.filter(batch=batch).count()
    assert written == BATCH_SIZE, f"{written} codes written, not {BATCH_SIZE}"
    figure = BatchFigure(seconds, peak, peak - before, len(queries.captured_queries))
    print(
        f"(a) batch {run}: {BATCH_SIZE:,} codes in {seconds:.2f} s "
        f"({BATCH_SIZE / seconds:,.0f} codes/s), {figure.statements} SQL statements; "
        f"peak RSS {peak:.0f} MB (+{figure.growth_mb:.0f} MB over the {before:.0f} MB before)"
    )
    return figure


def _measure_export() -> None:
    import csv

    from django.utils import timezone

    from vouchers.models import VoucherBatch
    from vouchers.selectors import batch_export_rows

    class Sink:
        size = 0

        def write(self, text):
            self.size += len(text)

    batch = VoucherBatch.objects.order_by("id").first()
    sink = Sink()
    writer = csv.writer(sink)
    started = time.perf_counter()
    for row in batch_export_rows(batch, timezone.now()):
        writer.writerow(row)
    seconds = time.perf_counter() - started
    print(
        f"    export of batch 1 as CSV: {seconds:.2f} s, {sink.size / 1e6:.1f} MB of text "
        f"(reference, no target)"
    )


# --- (b) Redemptions ------------------------------------------------------------------------


def _measure_redemptions(clients: int, redemptions: int) -> list[RedeemFigure]:
    from django.db import connections
    from django.utils import timezone
    from djmoney.money import Money

    from accounts.models import Company
    from vouchers.models import Voucher
    from vouchers.services import batch_create

    now = timezone.now()
    ways = ["service", "portal"]
    started = time.perf_counter()
    jobs: dict[str, list[list[tuple[int, str]]]] = {}
    for way in ways:
        batch = batch_create(
            amount=Money(Decimal(500), "JPY"),
            count=redemptions,
            lifetime_days=30,
            label=f"Bench redemptions ({way})",
            now=now,
        )
        codes = list(
            Voucher.objects.filter(batch=batch).order_by("id").values_list("code", flat=True)
        )
        # Setup is not measured: the rows company_create would write, in one statement.
        companies = Company.objects.bulk_create(
            Company(
                account_code=f"bench-{way}-{n}",
                name=f"Bench {way} {n}",
                mode=Company.Mode.PREPAID,
                currency="JPY",
                created_at=now,
            )
            for n in range(redemptions)
        )
        company_ids = [company.pk for company in companies]
        pairs = list(zip(company_ids, codes, strict=True))
        jobs[way] = [pairs[index::clients] for index in range(clients)]
    print(
        f"setup (b): {redemptions:,} prepaid companies and codes per way in "
        f"{time.perf_counter() - started:.1f} s"
    )
    _probe_queries(now)
    connections.close_all()  # the clients are forked: none may inherit an open connection

    figures = []
    for way in ways:
        name = (
            "(b1) service voucher_redeem"
            if way == "service"
            else "(b2) portal path voucher_redeem_attempt"
        )
        figures.append(_run_clients(name, way, jobs[way]))
    return figures


def _probe_queries(now) -> None:
    """The SQL statements of one redemption (an extra company and code, not measured)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from djmoney.money import Money

    from accounts.models import Company
    from vouchers.models import Voucher
    from vouchers.services import batch_create, voucher_redeem

    batch = batch_create(
        amount=Money(Decimal(500), "JPY"), count=1, lifetime_days=30, label="Probe", now=now
    )
    company = Company.objects.create(account_code="bench-probe", name="Probe", created_at=now)
    code = Voucher.objects.get(batch=batch).code
    with CaptureQueriesContext(connection) as queries:
        voucher_redeem(company=company, code=code)
    kinds = {}
    for query in queries.captured_queries:
        word = query["sql"].split(None, 1)[0].upper()
        kinds[word] = kinds.get(word, 0) + 1
    shape = ", ".join(f"{count} {word}" for word, count in sorted(kinds.items()))
    print(f"one redemption (prepaid): {len(queries.captured_queries)} SQL statements ({shape})")


def _run_clients(name: str, way: str, parts: list[list[tuple[int, str]]]) -> RedeemFigure:
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(len(parts) + 1)
    results = ctx.SimpleQueue()
    processes = [
        ctx.Process(target=_client, args=(way, part, barrier, results), daemon=True)
        for part in parts
    ]
    for process in processes:
        process.start()
    try:
        barrier.wait(timeout=300)
    except threading.BrokenBarrierError:
        raise SystemExit(f"voucher_batch: a client failed to start:\n{results.get()}") from None
    started = time.perf_counter()
    stats = [results.get() for _ in processes]
    for process in processes:
        process.join(timeout=60)
    failures = [item for item in stats if isinstance(item, str)]
    if failures:
        raise SystemExit(f"voucher_batch: a client failed:\n{failures[0]}")
    latencies = sorted(ms for item in stats for ms in item["latencies"])
    figure = RedeemFigure(
        name=name,
        clients=len(parts),
        redemptions=sum(item["count"] for item in stats),
        seconds=max(item["finished"] for item in stats) - started,
        latencies_ms=latencies,
        client_cpu=sum(item["cpu"] for item in stats),
    )
    print(
        f"{name}: {figure.redemptions:,} codes, {figure.clients} clients: "
        f"{figure.seconds:.2f} s = {figure.rate:,.0f} redemptions/s; latency ms "
        f"p50 {_pct(latencies, 50):.1f}, p95 {_pct(latencies, 95):.1f}, "
        f"p99 {_pct(latencies, 99):.1f}, max {latencies[-1]:.1f}; client CPU "
        f"{figure.client_cpu / figure.redemptions * 1000:.2f} ms per redemption"
    )
    return figure


def _client(way: str, pairs: list[tuple[int, str]], barrier, results) -> None:
    import traceback

    from django.db import connection

    try:
        from django.contrib.auth import get_user_model

        from accounts.models import Company
        from vouchers.services import voucher_redeem, voucher_redeem_attempt

        connection.ensure_connection()
        companies = Company.objects.in_bulk([company_id for company_id, _ in pairs])
        user = None
        if way == "portal":
            user, _ = get_user_model().objects.get_or_create(username=f"bench-{os.getpid()}")
        barrier.wait(timeout=300)
        cpu = time.process_time()
        latencies = []
        for n, (company_id, code) in enumerate(pairs):
            company = companies[company_id]
            began = time.perf_counter()
            if way == "service":
                voucher_redeem(company=company, code=code)
            else:
                # A distinct address per call: the bench measures the work, not the limit.
                ip = f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"
                voucher_redeem_attempt(company=company, code=code, user=user, ip=ip)
            latencies.append((time.perf_counter() - began) * 1000)
        results.put(
            {
                "count": len(pairs),
                "finished": time.perf_counter(),
                "latencies": latencies,
                "cpu": time.process_time() - cpu,
            }
        )
    except BaseException:
        barrier.abort()
        results.put(traceback.format_exc())
    finally:
        connection.close()


def _pct(values: list[float], pct: int) -> float:
    return values[min(len(values) - 1, round(pct / 100 * (len(values) - 1)))]


# --- Checks and summary ---------------------------------------------------------------------


def _check(expected_redemptions: int) -> bool:
    """Every code registered once, with one lot and one transaction each, and the books
    reconcile. The probe's redemption is counted too."""
    from django.db.models import Count

    from billing.models import CreditLot, LedgerTransaction
    from billing.reconcile import reconcile
    from vouchers.models import Voucher, VoucherRedemption

    problems = []
    redemptions = VoucherRedemption.objects.count()
    if redemptions != expected_redemptions:
        problems.append(f"{redemptions} redemptions, expected {expected_redemptions}")
    lots = CreditLot.objects.filter(source="voucher").count()
    voucher_transactions = LedgerTransaction.objects.filter(kind="voucher").count()
    if not lots == voucher_transactions == redemptions:
        problems.append(f"{lots} voucher lots and {voucher_transactions} transactions")
    redeemed = Voucher.objects.filter(status="redeemed").count()
    if redeemed != redemptions:
        problems.append(f"{redeemed} codes redeemed for {redemptions} redemptions")
    twice = (
        VoucherRedemption.objects.values("company").annotate(n=Count("id")).filter(n__gt=1).count()
    )
    if twice:
        problems.append(f"{twice} companies registered more than one code")
    report = reconcile()
    print(
        f"checks: {redemptions:,} redemptions, {lots:,} voucher lots, {redeemed:,} codes "
        f"redeemed; books reconcile: {'OK' if report.ok else 'FAILED'}"
    )
    for problem in [*problems, *map(str, report.problems[:10])]:
        print(f"FAILED: {problem}")
    return report.ok and not problems


def _print_table(batches: list[BatchFigure], figures: list[RedeemFigure]) -> None:
    best = min(batches, key=lambda figure: figure.seconds)
    worst_peak = max(figure.peak_mb for figure in batches)
    print()
    header = f"{'figure':<42}  {'value':>12}  {'target':>9}  {'ratio':>6}  verdict"
    print(header)
    print("-" * len(header))
    rows = [
        (
            f"(a) {BATCH_SIZE:,}-code batch, best of {len(batches)}",
            best.seconds,
            "s",
            TARGET_BATCH_SECONDS,
        ),
        ("(a) peak memory while generating (worst)", worst_peak, "MB", TARGET_BATCH_MB),
    ]
    for label, value, unit, target in rows:
        ratio = value / target
        verdict = "PASS" if value <= target else "BELOW"
        print(
            f"{label:<42}  {value:>9.2f} {unit:<2}  {f'<={target:g} {unit}':>9}  "
            f"{ratio:>6.2f}  {verdict}"
        )
    for figure in figures:
        print(f"{figure.name:<42}  {figure.rate:>7,.0f} /s    {'':>9}  {'':>6}  (no target)")
    print("(ratio: the figure divided by its target; below 1.00 is within the target)")


if __name__ == "__main__":
    sys.exit(main())
