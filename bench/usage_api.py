"""Usage API on PostgreSQL: usage events charged per second, and authorize latency.

Events rated and charged per second through ``POST /api/v1/usage`` end to end (gunicorn,
HTTP, JSON) and through ``usage_ingest`` directly, and the latency of
``POST /api/v1/authorize``.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/usage_api.py

The run takes the server named by DATABASE_URL, drops and recreates the database
``tollgate_bench_usage`` there, migrates it and sets up 1,000 companies (prepaid with ample
credit and postpaid without a limit), a tariff of a few thousand voice prefixes plus SMS and
data by country, a plan with bundles that some companies subscribe to, and one API key.
Traffic is Zipf-skewed over the companies (a few get most events) and mixes the services.
It measures:

(1) end to end: gunicorn on a loopback port, batches of 1000 events posted by concurrent
    client processes over keep-alive connections; every result must be ``charged``;
(2) the service: ``usage_ingest`` called directly, in 2 processes and in 1;
(2r) the ceiling: the same kind of batches written with hand-written SQL (psycopg, no
    Django, no rating) in 2 processes: the rows, locks and checks of (2), and the ratio of
    (2) to it;
(3) authorize: latency of sequential ``POST /api/v1/authorize`` calls, and of
    ``usage_authorize`` called directly.

At the end the books must reconcile and there must be one charged usage record per event
sent. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import http.client
import itertools
import json
import math
import multiprocessing
import os
import platform
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
from _pgserver import conninfo, postgres_config, server_connection, with_database  # noqa: E402

BENCH_DB = "tollgate_bench_usage"
CURRENCY = "JPY"
LOOPBACK = "127.0.0.1"
SEED = 20261120
# Targets from the "Rating and the usage API" issue.
TARGET_HTTP = 10_000  # events/s end to end
TARGET_SERVICE = 20_000  # events/s through usage_ingest
TARGET_AUTHORIZE_P99_MS = 10.0
# Far more than any run can spend: no prepaid charge meets a shortfall, no company is
# blocked (either would change the work measured and fail the "all charged" check).
PREPAID_CREDIT = Decimal(10**12)
ZERO, ONE = Decimal(0), Decimal(1)
JST = timezone(timedelta(hours=9))
SERVICE_MIX = (("voice", 60), ("sms", 25), ("data", 15))
# Calling codes the tariff prices, Japan first. Each also gets sub-prefixes (area and
# mobile codes) until the tariff holds --prefixes voice destinations.
CALLING_CODES = (
    "81", "1", "44", "33", "49", "39", "34", "7", "86", "82", "852", "853", "886", "65",
    "60", "66", "84", "62", "63", "91", "92", "880", "94", "61", "64", "55", "52", "54",
    "56", "57", "51", "58", "27", "20", "234", "254", "212", "971", "966", "972", "90",
    "30", "31", "32", "41", "43", "45", "46", "47", "48", "351", "353", "358", "380",
    "420", "36", "40", "359", "385", "370",
)  # fmt: skip
# Attempts per batch. A failed call is sent again, as the platform would: the API charges
# an event once per key and answers a repeat "duplicate" with the first result.
ATTEMPTS = 3
# (2) and (2r) run in this many alternating rounds, each with a share of the events.
ROUNDS = 3
# Numbers under a code no rate names (+999 is unassigned) fall to the default voice rate.
UNPRICED_CODE = "999"


@dataclass(frozen=True)
class Sizes:
    companies: int
    prefixes: int  # voice destinations in the tariff
    batch: int  # events per call
    http_events: int  # events posted over HTTP, per server configuration
    clients: int  # client processes posting over HTTP
    server_workers: int  # gunicorn worker processes for (1) and (3)
    service_events: int  # events through usage_ingest, per process count
    workers: int  # processes for the service figure held to the target
    authorize: int  # sequential authorize calls, per way
    zipf: float  # exponent s of the weight 1/rank^s
    seconds: float  # time limit of each measured phase


DEFAULT_SIZES = Sizes(
    companies=1000,
    prefixes=3000,
    batch=1000,
    http_events=50_000,
    clients=4,
    server_workers=2,
    service_events=30_000,
    workers=2,
    authorize=2000,
    zipf=1.1,
    seconds=60,
)
QUICK_SIZES = replace(
    DEFAULT_SIZES, http_events=6_000, service_events=4_000, authorize=500, seconds=10
)
SERVER_MODES = ("sync", "gthread")


@dataclass(frozen=True)
class WorkerStats:
    events: int
    charged: int
    started: float  # time.perf_counter(): CLOCK_MONOTONIC, comparable across processes
    finished: float
    client_cpu: float  # CPU seconds of the worker process
    backend_cpu: float | None  # CPU seconds of its PostgreSQL backend (service runs)
    commit_seconds: float  # wall time in COMMIT (service runs)
    max_rss_kib: int
    cut_short: bool  # stopped by the time limit before sending everything
    problem: str | None = None  # the first unexpected answer, if any
    warm_events: int = 0  # sent before the clock started (not in ``events``)
    failed_calls: int = 0  # calls that failed and were sent again


@dataclass(frozen=True)
class Figure:
    name: str
    way: str  # "HTTP" or "service"
    processes: int
    events: int
    seconds: float
    cpu: dict[str, float]  # CPU seconds by where they were spent, summed over processes
    idle: float | None  # CPU seconds the machine left unused meanwhile
    target: int | None
    cut_short: bool
    failed_calls: int = 0
    commit_seconds: float | None = None  # wall time in COMMIT, summed (service runs)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class Latency:
    name: str
    samples_ms: list[float]
    refused: int
    target_ms: float | None = None

    def percentile(self, share: float) -> float:
        ordered = sorted(self.samples_ms)
        return ordered[max(math.ceil(share * len(ordered)) - 1, 0)]


@dataclass
class Tally:
    """Events sent, so the count of usage records can be checked at the end."""

    sent: int = 0
    problems: list[str] = field(default_factory=list)
    memory: dict[str, int] = field(default_factory=dict)  # peak RSS (KiB) by process kind
    failed_calls: Counter = field(default_factory=Counter)  # by phase


# --- Entry point ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    global BENCH_DB
    args = _parse_args(argv)
    if args.database:
        BENCH_DB = args.database
    sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES
    overrides = {
        name: value for name in Sizes.__dataclass_fields__ if (value := getattr(args, name, None))
    }
    sizes = replace(sizes, **overrides)
    modes = SERVER_MODES if args.server == "both" else (args.server,)

    url = os.environ.get("DATABASE_URL", "")
    server = postgres_config(url)
    if server is None:
        print("usage_api: needs PostgreSQL; set DATABASE_URL=postgres://user@host:port/db")
        return 2

    server_info = _recreate_database(server)
    try:
        return _run(args, sizes, modes, server_info, with_database(url, BENCH_DB))
    finally:
        if not args.keep:  # also after a failure: the database is the bench's own
            if "django" in sys.modules:
                from django.db import connections

                connections.close_all()
            _drop_database(server)


def _run(args, sizes: Sizes, modes: tuple[str, ...], server_info: str, bench_url: str) -> int:
    os.environ["DATABASE_URL"] = bench_url
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

    print(
        f"Tollgate usage API bench: {server_info}; Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, DEBUG={settings.DEBUG}; {_load_note()}"
    )
    print(
        f"sizes: {sizes.companies} companies, {sizes.prefixes} voice prefixes; (1) "
        f"{sizes.http_events:,} events over HTTP per server, {sizes.clients} clients; (2) "
        f"{sizes.service_events:,} events per process count; batches of {sizes.batch}; (3) "
        f"{sizes.authorize:,} authorize calls per way; at most {sizes.seconds:.0f} s a phase"
    )
    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    print(f"database {BENCH_DB} created and migrated in {time.perf_counter() - started:.1f} s")

    started = time.perf_counter()
    world = _setup_world(sizes)
    print(f"setup in {time.perf_counter() - started:.1f} s: {world.summary}")
    traffic = world.traffic
    print(traffic.describe(sizes.batch))

    tally = Tally()
    for line in _probe_queries(world, sizes.batch, tally):
        print(line)
    db_conninfo = conninfo(settings.DATABASES["default"])
    connections.close_all()  # the workers are forked: none may inherit an open connection

    figures: list[Figure] = []
    latencies: list[Latency] = []
    memory: dict[str, int] = {}
    for number, mode in enumerate(modes):
        label = f"h{number}"
        figure, latency, server_memory = _http_phase(
            mode, label, sizes, world, bench_url, args.conn_max_age, tally
        )
        figures.append(figure)
        latencies.append(latency)
        for name, kib in server_memory.items():
            memory[f"{name} ({mode})"] = kib

    # (2) and (2r) in alternating rounds, so that both meet the machine alike: the speed of
    # a shared machine can drift within a minute, and the ratio is the figure that should
    # not depend on it.
    rounds = max(min(ROUNDS, sizes.service_events // sizes.batch), 1)
    share = replace(sizes, service_events=sizes.service_events // rounds)
    services, raws = [], []
    for round_ in range(rounds):
        services.append(
            _service_phase(sizes.workers, share, world, db_conninfo, TARGET_SERVICE, tally, round_)
        )
        raws.append(_raw_phase(sizes.workers, share, world, db_conninfo, tally, round_))
    service, raw = _combined(services), _combined(raws)
    _print_figure(service)
    _print_figure(raw)
    if raw.rate:
        by_round = ", ".join(
            f"{one.rate / other.rate:.2f} ({one.rate:,.0f}/{other.rate:,.0f})"
            for one, other in zip(services, raws, strict=True)
        )
        print(
            f"service / raw SQL ({sizes.workers} processes): {service.rate / raw.rate:.2f} "
            f"({service.rate:,.0f}/s against {raw.rate:,.0f}/s; by round {by_round})"
        )
    figures.append(service)
    if sizes.workers != 1:
        figures.append(_service_phase(1, sizes, world, db_conninfo, None, tally))
        _print_figure(figures[-1])
    figures.append(raw)

    latencies.append(_authorize_direct(world, sizes))
    _print_latency(latencies[-1])

    ok = _verify(tally)
    _print_tables(figures, latencies)
    memory["bench process"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for name, kib in tally.memory.items():
        memory[name] = kib
    print(
        "peak memory (max RSS): "
        + ", ".join(f"{name} {kib / 1024:.0f} MiB" for name, kib in memory.items())
    )
    return 0 if ok else 1


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts (under 90 s)")
    parser.add_argument("--companies", type=int, help="companies set up")
    parser.add_argument("--prefixes", type=int, help="voice destinations in the tariff")
    parser.add_argument("--batch", type=int, help="events per call (at most 1000)")
    parser.add_argument("--http-events", type=int, help="events over HTTP per server")
    parser.add_argument("--clients", type=int, help="HTTP client processes")
    parser.add_argument(
        "--server-workers", type=int, help="gunicorn worker processes for (1) and (3)"
    )
    parser.add_argument("--service-events", type=int, help="events through the service")
    parser.add_argument("--workers", type=int, help="processes for the service target")
    parser.add_argument("--authorize", type=int, help="authorize calls per way")
    parser.add_argument("--zipf", type=float, help="Zipf exponent s of the traffic")
    parser.add_argument("--seconds", type=float, help="time limit of each measured phase")
    parser.add_argument(
        "--server",
        choices=[*SERVER_MODES, "both"],
        help="gunicorn worker class (default: both; sync with --quick)",
    )
    parser.add_argument(
        "--conn-max-age",
        type=int,
        help="give the server persistent database connections (CONN_MAX_AGE, seconds); "
        "default: as the settings have it (0, a new connection per request)",
    )
    parser.add_argument(
        "--keep", action="store_true", help=f"keep the {BENCH_DB} database after the run"
    )
    parser.add_argument(
        "--database",
        help=f"name of the database the bench drops, creates and uses (default {BENCH_DB})",
    )
    args = parser.parse_args(argv)
    if args.server is None:
        args.server = "sync" if args.quick else "both"
    if args.batch is not None and not 1 <= args.batch <= 1000:
        parser.error("--batch must be between 1 and 1000 (the API's limit)")
    return args


def _load_note() -> str:
    """The machine's load: the figures assume nothing else runs on these cores."""
    one, five, _ = os.getloadavg()
    note = f"load average {one:.2f} (1 min), {five:.2f} (5 min)"
    busy = one > 0.5 * (os.cpu_count() or 1)
    return note + (" - other work is running; figures will be low" if busy else "")


# --- The database ---------------------------------------------------------------------------


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


def _is_local(db_conninfo: dict) -> bool:
    host = str(db_conninfo.get("host", ""))
    return host in ("", "localhost", "127.0.0.1", "::1") or host.startswith("/")


# --- The world: tariff, plan, companies, key ------------------------------------------------


@dataclass(frozen=True)
class Customer:
    code: str
    subaccounts: tuple[str, ...]


class Traffic:
    """Usage events as the platform would report them: companies drawn with weight
    1/rank^s (rank 1 the busiest), services mixed, numbers under the tariff's prefixes."""

    def __init__(
        self,
        customers: list[Customer],
        zipf: float,
        voice_prefixes: list[str],
        countries: list[str],
    ):
        self.customers = customers  # in rank order
        weights = [1 / rank**zipf for rank in range(1, len(customers) + 1)]
        self.total_weight = sum(weights)
        self.shares = [weight / self.total_weight for weight in weights]
        self.cum_weights = list(itertools.accumulate(weights))
        self.zipf = zipf
        self.japan = [prefix for prefix in voice_prefixes if prefix.startswith("81")]
        self.abroad = [prefix for prefix in voice_prefixes if not prefix.startswith("81")]
        self.countries = [country for country in countries if country != "JP"]
        self.services = [service for service, _ in SERVICE_MIX]
        self.service_weights = list(itertools.accumulate(weight for _, weight in SERVICE_MIX))

    def describe(self, batch: int) -> str:
        def top(n: int) -> str:
            return f"top {n} {sum(self.shares[:n]):.0%}"

        # Expected distinct companies in a batch: each company is absent with (1-p)^batch.
        distinct = sum(1 - (1 - share) ** batch for share in self.shares)
        mix = ", ".join(f"{service} {weight}%" for service, weight in SERVICE_MIX)
        return (
            f"traffic: Zipf s={self.zipf} over {len(self.customers)} companies "
            f"({top(1)}, {top(10)}, {top(100)} of events); a batch of {batch} touches "
            f"~{distinct:.0f} companies, so ~{distinct:.0f} company transactions; {mix}"
        )

    def _number(self, rng, prefix: str) -> str:
        length = rng.randint(max(len(prefix) + 4, 10), 13)
        return "+" + prefix + "".join(rng.choices("0123456789", k=length - len(prefix)))

    def _destination(self, rng, service: str) -> str:
        if service == "data":
            return "JP" if rng.random() < 0.7 else rng.choice(self.countries)
        roll = rng.random()
        if roll < 0.03:
            prefix = UNPRICED_CODE
        elif roll < 0.55:
            prefix = rng.choice(self.japan)
        else:
            prefix = rng.choice(self.abroad)
        return self._number(rng, prefix)

    @staticmethod
    def _quantity(rng, service: str) -> int:
        if service == "voice":  # seconds; some calls are not answered
            return 0 if rng.random() < 0.05 else min(int(rng.expovariate(1 / 120)) + 1, 3600)
        if service == "sms":  # messages; long texts are sent in parts
            return 1 if rng.random() < 0.9 else rng.randint(2, 4)
        return rng.randint(10_000, 20_000_000)  # data: bytes

    def events(self, rng, label: str, count: int, now: datetime) -> list[dict]:
        """``count`` events as JSON-ready dicts, ids ``<label>-<n>``, occurred in the hour
        before ``now``."""
        customers = rng.choices(self.customers, cum_weights=self.cum_weights, k=count)
        services = rng.choices(self.services, cum_weights=self.service_weights, k=count)
        events = []
        for n, (customer, service) in enumerate(zip(customers, services, strict=True)):
            occurred = now - timedelta(seconds=rng.uniform(60, 3600))
            events.append(
                {
                    "id": f"{label}-{n:07d}",
                    "account": customer.code,
                    "subaccount": rng.choice(customer.subaccounts)
                    if customer.subaccounts
                    else None,
                    "service": service,
                    "destination": self._destination(rng, service),
                    "quantity": self._quantity(rng, service),
                    "occurred_at": occurred.astimezone(JST).isoformat(timespec="seconds"),
                }
            )
        return events

    def authorize_requests(self, rng, count: int) -> list[dict]:
        requests = []
        for event in self.events(rng, "authorize", count, datetime.now(tz=JST)):
            requests.append(
                {key: event[key] for key in ("account", "subaccount", "service", "destination")}
            )
        return requests


@dataclass(frozen=True)
class World:
    traffic: Traffic
    api_key_id: int
    raw_key: str
    summary: str


def _tariff_csv(sizes: Sizes, now: datetime, rng) -> tuple[str, list[str], list[str]]:
    """A realistic price list in the import format (``billing.services.tariffs``): voice by
    prefix (some repriced last month, the old price still on file), SMS by calling code,
    data by country, and a default per service. Returns the CSV, the voice prefixes and
    the data countries."""
    from billing.services.rating import COUNTRIES
    from billing.services.tariffs import HEADER

    epoch = (now - timedelta(days=400)).isoformat()
    repriced = (now - timedelta(days=30)).isoformat()
    prefixes = set(CALLING_CODES)
    for _ in range(sizes.prefixes * 20):  # bounded: stops long before on any sane size
        if len(prefixes) >= sizes.prefixes:
            break
        code = "81" if rng.random() < 0.3 else rng.choice(CALLING_CODES)
        tail = str(rng.randint(1, 9)) + "".join(rng.choices("0123456789", k=rng.randint(0, 2)))
        prefixes.add(code + tail)
    voice_prefixes = sorted(prefixes)
    increments = [(60, 60)] * 5 + [(30, 6)] * 3 + [(1, 1)] * 2 + [(6, 6)]
    # service, destination, price, connection_fee, minimum, first, next, from, until
    rows = [
        ("voice", "", 60, 0, 0, 60, 60, epoch, ""),
        ("sms", "", 12, 0, 0, 1, 1, epoch, ""),
        ("data", "", 5, 0, 0, 1, 1, epoch, ""),
    ]
    for prefix in voice_prefixes:
        first, step = rng.choice(increments)
        price = rng.choice([8, 12, 15, 20, 25, 30, 45, 60, 90, 120, 180])
        fee = rng.choice([1, 2, 5, 10]) if rng.random() < 0.2 else 0
        if rng.random() < 0.1:  # repriced: rating must pick the price in force
            rows.append(("voice", prefix, price * 2, fee, 0, first, step, epoch, repriced))
            rows.append(("voice", prefix, price, fee, 0, first, step, repriced, ""))
        else:
            rows.append(("voice", prefix, price, fee, 0, first, step, epoch, ""))
    for code in CALLING_CODES:
        rows.append(("sms", code, rng.choice([3, 5, 8, 15, 25]), 0, 0, 1, 1, epoch, ""))
    countries = sorted(COUNTRIES)
    for country in countries:
        price = "0.5" if country == "JP" else rng.choice(["1.2", "2.5", "4", "8", "15"])
        rows.append(("data", country, price, 0, 0, 1, 1, epoch, ""))
    lines = [",".join(HEADER)] + [",".join(str(value) for value in row) for row in rows]
    return "\n".join(lines) + "\n", voice_prefixes, countries


def _setup_world(sizes: Sizes) -> World:
    """Everything through the services (companies, subaccounts, credit, tariff import,
    subscriptions, the API key); the plan and its bundles as the admin writes them.

    In one database transaction: the services nest as savepoints, so thousands of setup
    commits (each waiting for the WAL to reach the disk) become one."""
    from django.db import transaction

    with transaction.atomic():
        return _setup_world_atomic(sizes)


def _setup_world_atomic(sizes: Sizes) -> World:
    import random

    from django.utils import timezone as django_timezone
    from djmoney.money import Money

    from accounts.services import company_create, subaccount_create
    from billing.models import Bundle, Plan, Rate
    from billing.services.api_keys import api_key_create
    from billing.services.ledger import credits_grant
    from billing.services.recurring import subscription_order
    from billing.services.tariffs import tariff_create, tariff_import

    rng = random.Random(SEED)
    now = django_timezone.now()
    tariff = tariff_create(name="Bench tariff", currency=CURRENCY)
    csv_text, voice_prefixes, countries = _tariff_csv(sizes, now, rng)
    imported = tariff_import(tariff=tariff, text=csv_text, now=now)
    plan = Plan.objects.create(
        name="Bench Business", currency=CURRENCY, monthly_fee=Money(3000, CURRENCY)
    )
    Bundle.objects.bulk_create(
        [
            Bundle(
                plan=plan,
                name="Japan minutes",
                service="voice",
                destinations="81",
                included_quantity=Decimal(6000),
            ),
            Bundle(plan=plan, name="SMS", service="sms", included_quantity=Decimal(500)),
            Bundle(
                plan=plan,
                name="Data in Japan",
                service="data",
                destinations="JP",
                included_quantity=Decimal(10**9),
            ),
        ]
    )

    # Ranks are dealt to companies at random, so hot companies are not the first ids.
    ranks = list(range(1, sizes.companies + 1))
    rng.shuffle(ranks)
    by_rank: dict[int, Customer] = {}
    prepaid = subscribed = seated = 0
    for n, rank in enumerate(ranks):
        code = f"co-{n:04d}"
        mode = "prepaid" if rank % 5 in (1, 2, 3) else "postpaid"
        company = company_create(
            account_code=code, name=f"Bench {n:04d} KK", mode=mode, tariff=tariff
        )
        if mode == "prepaid":
            prepaid += 1
            credits_grant(
                company=company,
                amount=Money(PREPAID_CREDIT, CURRENCY),
                source="grant",
                idempotency_key=f"bench-setup:{code}",
                description="Bench credit",
                lifetime=timedelta(days=365),
                now=now,
            )
        # Rank 1 (the busiest) and rank 4 among them: bundles run out, then overage.
        if rank % 5 == 1 or rank % 10 == 4:
            subscribed += 1
            subscription_order(company=company, plan=plan, at=now - timedelta(days=10))
        seats: tuple[str, ...] = ()
        if rank % 3 == 0:
            seated += 1
            seats = ("ops", "sales")
            for seat in seats:
                subaccount_create(company=company, code=seat, name=seat.title())
        by_rank[rank] = Customer(code, seats)

    key, raw_key = api_key_create(name="bench", now=now)
    traffic = Traffic(
        [by_rank[rank] for rank in sorted(by_rank)], sizes.zipf, voice_prefixes, countries
    )
    services = Counter(Rate.objects.filter(tariff=tariff).values_list("service", flat=True))
    summary = (
        f"{sizes.companies} companies ({prepaid} prepaid with credit, "
        f"{sizes.companies - prepaid} postpaid without a limit; {subscribed} on a plan with 3 "
        f"bundles; {seated} with 2 subaccounts); tariff of {imported.imported:,} rates (voice "
        f"{services['voice']:,} over {len(voice_prefixes):,} prefixes, sms {services['sms']}, "
        f"data {services['data']}); 1 API key"
    )
    return World(traffic=traffic, api_key_id=key.pk, raw_key=raw_key, summary=summary)


def _usage_events(raw: list[dict]) -> list:
    """What the API view hands the service, built from the JSON-ready dicts."""
    from billing.services.usage import UsageEvent

    return [
        UsageEvent(
            id=event["id"],
            account=event["account"],
            subaccount=event["subaccount"],
            service=event["service"],
            destination=event["destination"],
            quantity=Decimal(event["quantity"]),
            occurred_at=datetime.fromisoformat(event["occurred_at"]),
        )
        for event in raw
    ]


def _probe_queries(world: World, batch: int, tally: Tally) -> list[str]:
    """SQL statements one ``usage_ingest`` call of a full batch costs, after a small batch
    that builds this process's tariff index (the steady state)."""
    import random

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from billing.models import ApiKey
    from billing.services.usage import usage_ingest

    rng = random.Random(SEED + 1)
    key = ApiKey.objects.get(pk=world.api_key_id)
    now = datetime.now(tz=JST)
    warm = world.traffic.events(rng, "probe-warm", 10, now)
    _count(tally, "probe warm-up", len(warm), usage_ingest(api_key=key, events=_usage_events(warm)))
    raw = world.traffic.events(rng, "probe", batch, now)
    events = _usage_events(raw)
    with CaptureQueriesContext(connection) as queries:
        outcomes = usage_ingest(api_key=key, events=events)
    _count(tally, "probe", len(raw), outcomes)
    shapes = Counter(_statement_shape(query["sql"]) for query in queries)
    companies = len({event["account"] for event in raw})
    listed = ", ".join(f"{n} x {shape}" if n > 1 else shape for shape, n in shapes.most_common())
    return [
        f"service SQL statements for one batch of {batch} events over {companies} companies: "
        f"{shapes.total():,} ({shapes.total() / companies:.1f} per company)",
        f"    {listed}",
    ]


def _statement_shape(sql: str) -> str:
    verb = sql.split(None, 1)[0].upper()
    match = re.search(r'(?:FROM|INTO|UPDATE)\s+"(\w+)"', sql)
    table = match.group(1) if match else ""
    lock = " FOR UPDATE" if "FOR UPDATE" in sql else ""
    return f"{verb} {table}{lock}".strip()


def _count(tally: Tally, where: str, sent: int, outcomes) -> None:
    tally.sent += sent
    wrong = [outcome for outcome in outcomes if outcome.status != "charged"]
    if wrong or len(outcomes) != sent:
        tally.problems.append(
            f"{where}: {len(wrong)} of {sent} not charged, e.g. {wrong[:1]}"
            if wrong
            else f"{where}: {len(outcomes)} outcomes for {sent} events"
        )


# --- Running workers in processes -----------------------------------------------------------


Runner = Callable[[int, Callable[[], None]], WorkerStats]


def _run_processes(runners: list[Runner], on_start=None) -> tuple[list[WorkerStats], dict]:
    """Fork one process per runner; all (and this process) wait at a barrier once their
    preparation is done, so the clock starts when the work does. Returns each worker's
    stats and the machine's CPU time across the work (``on_start`` and the returned dict
    let the caller sample more, e.g. the server's processes)."""
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(len(runners) + 1)
    results = ctx.SimpleQueue()
    processes = [
        ctx.Process(target=_worker, args=(runner, index, barrier, results), daemon=True)
        for index, runner in enumerate(runners)
    ]
    for process in processes:
        process.start()
    try:
        barrier.wait(timeout=600)  # preparation (building the events) is bounded by this
    except threading.BrokenBarrierError:
        for process in processes:
            process.kill()
        raise SystemExit("usage_api: a worker failed while preparing") from None
    sample = {"machine": _machine_cpu(), **(on_start() if on_start else {})}
    stats = [results.get() for _ in processes]
    sample = {"machine": _machine_cpu(), "before": sample}
    for process in processes:
        process.join(timeout=60)
    failures = [item for item in stats if isinstance(item, str)]
    if failures:
        raise SystemExit(f"usage_api: a worker failed:\n{failures[0]}")
    return stats, sample


def _worker(runner: Runner, index: int, barrier, results) -> None:
    def start() -> None:
        barrier.wait(timeout=600)

    try:
        results.put(runner(index, start))
    except BaseException:
        import traceback

        barrier.abort()
        results.put(traceback.format_exc())


def _machine_cpu() -> float | None:
    """CPU seconds all processes of this machine have used since it booted."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields)
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) of process ``pid``, from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _figure(name, way, stats: list[WorkerStats], sample: dict, cpu: dict, target) -> Figure:
    seconds = max(item.finished for item in stats) - min(item.started for item in stats)
    machine = None
    if sample["machine"] is not None and sample["before"]["machine"] is not None:
        machine = sample["machine"] - sample["before"]["machine"]
    idle = None
    if machine is not None:
        cpu = {**cpu, "rest of the machine": max(machine - sum(cpu.values()), 0.0)}
        idle = max((os.cpu_count() or 1) * seconds - machine, 0.0)
    return Figure(
        name=name,
        way=way,
        processes=len(stats),
        events=sum(item.events for item in stats),
        seconds=seconds,
        cpu=cpu,
        idle=idle,
        target=target,
        cut_short=any(item.cut_short for item in stats),
        failed_calls=sum(item.failed_calls for item in stats),
    )


# --- (1) End to end over HTTP ---------------------------------------------------------------


class _Server:
    """gunicorn serving config.wsgi on a free loopback port, started and stopped by pid."""

    def __init__(self, mode: str, workers: int, database_url: str, log_path: Path):
        self.mode = mode
        self.workers = workers
        self.port = _free_port()
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "DJANGO_SETTINGS_MODULE": "config.settings.local",
            "DJANGO_DEBUG": "false",
        }
        command = [
            str(ROOT / ".venv" / "bin" / "gunicorn"),
            "config.wsgi",
            "--workers",
            str(workers),
            "--bind",
            f"{LOOPBACK}:{self.port}",
            "--worker-class",
            mode,
            # A batch that waits on busy company rows can exceed the default 30 s; the
            # bench would rather see it slow than have the worker killed.
            "--timeout",
            "120",
        ]
        if mode == "gthread":
            command += ["--threads", "2"]
        self.command = " ".join(command[1:])
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, seconds: float = 60) -> None:
        """The workers are up and one answers (each builds Django on its first request)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"usage_api: gunicorn exited:\n{self.log_path.read_text()}")
            if len(self.worker_pids()) >= self.workers:
                try:
                    connection = http.client.HTTPConnection(LOOPBACK, self.port, timeout=5)
                    connection.request("GET", "/api/v1/openapi.json")
                    if connection.getresponse().status == 200:
                        connection.close()
                        return
                except OSError:
                    pass
            time.sleep(0.2)
        self.stop()
        raise SystemExit(f"usage_api: gunicorn did not answer in {seconds:.0f} s")

    def worker_pids(self) -> list[int]:
        """The master's children, from /proc."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == self.process.pid:
                pids.append(int(entry.name))
        return sorted(pids)

    def workers_cpu(self) -> float:
        return sum(_process_cpu(pid) or 0.0 for pid in self.worker_pids())

    def peak_memory(self) -> dict[str, int]:
        """VmHWM (peak RSS, KiB) of the master and of the largest worker."""

        def hwm(pid: int) -> int:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                return 0
            match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
            return int(match.group(1)) if match else 0

        workers = [hwm(pid) for pid in self.worker_pids()]
        return {
            "gunicorn master": hwm(self.process.pid),
            "largest gunicorn worker": max(workers, default=0),
        }

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # graceful: the workers finish and exit
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()


def _print_server_errors(log_path: Path, lines: int = 8) -> None:
    """How many errors the server logged (Django logs each 500 with its traceback) and the
    end of the last one: the exception and PostgreSQL's detail."""
    text = log_path.read_text(errors="replace")
    if "Traceback" not in text:
        return
    last = text[text.rindex("Traceback") :].splitlines()
    last = [line for line in last if not line.startswith("[")]  # gunicorn's own lines
    # Django logs each 500 once, with a chained traceback (psycopg's error, then Django's).
    errors = text.count("Internal Server Error")
    print(f"    the server logged {errors} error(s); the end of the last traceback:")
    for line in last[-lines:]:
        print(f"    | {line}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def _post(connection: http.client.HTTPConnection, path: str, body: bytes, raw_key: str):
    """POST and read the answer. A sync gunicorn worker closes the connection after each
    answer; http.client then opens a new one for the next request by itself."""
    connection.request(
        "POST",
        path,
        body=body,
        headers={"Authorization": f"Bearer {raw_key}", "Content-Type": "application/json"},
    )
    response = connection.getresponse()
    return response.status, response.read()


def _http_phase(mode, label, sizes, world, bench_url, conn_max_age, tally):
    """Start the server, warm its workers, post the events from the client processes,
    then time sequential authorize calls; returns the figure, the latency and memory."""
    database_url = bench_url
    if conn_max_age is not None:
        database_url = with_database(bench_url, BENCH_DB, conn_max_age=conn_max_age)
    with tempfile.TemporaryDirectory(prefix="tollgate-bench-") as folder:
        server = _Server(mode, sizes.server_workers, database_url, Path(folder) / "gunicorn.log")
        try:
            server.wait_ready()
            print(f"(1) server: gunicorn {server.command} (pid {server.process.pid})")
            _warm_up(server, world, sizes, label, tally)
            figure = _http_usage(server, label, sizes, world, tally)
            _print_figure(figure)
            latency = _authorize_http(server, world, sizes)
            _print_latency(latency)
            memory = server.peak_memory()
        finally:
            server.stop()
            _print_server_errors(server.log_path)
    return figure, latency, memory


def _warm_up(server: _Server, world: World, sizes: Sizes, label: str, tally: Tally) -> None:
    """A few small batches from a thread per worker, so every worker has imported everything
    and built the tariff index before the clock starts. Their events count as sent."""
    import random

    now = datetime.now(tz=JST)

    def warm(thread: int) -> None:
        rng = random.Random(f"{SEED}:{label}:warm:{thread}")
        connection = http.client.HTTPConnection(LOOPBACK, server.port, timeout=120)
        for round_ in range(4):
            events = world.traffic.events(rng, f"{label}w{thread}r{round_}", 50, now)
            status, body = _post(
                connection, "/api/v1/usage", json.dumps({"events": events}).encode(), world.raw_key
            )
            results = json.loads(body).get("results", []) if status == 200 else []
            charged = sum(result["status"] == "charged" for result in results)
            with lock:
                tally.sent += len(events)
                if charged != len(events):
                    tally.problems.append(
                        f"warm-up: HTTP {status}, {charged} charged: {body[:300]}"
                    )
        connection.close()

    lock = threading.Lock()
    threads = [threading.Thread(target=warm, args=(n,)) for n in range(server.workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)


def _http_usage(server: _Server, label: str, sizes: Sizes, world: World, tally: Tally) -> Figure:
    calls = _calls(sizes.http_events, sizes.batch)
    shares = [calls[n :: sizes.clients] for n in range(sizes.clients)]

    def client(index: int, start: Callable[[], None]) -> WorkerStats:
        import random

        rng = random.Random(f"{SEED}:{label}:client:{index}")
        now = datetime.now(tz=JST)
        bodies = [
            (
                size,
                json.dumps(
                    {"events": world.traffic.events(rng, f"{label}c{index}b{n}", size, now)}
                ).encode(),
            )
            for n, size in enumerate(shares[index])
        ]
        connection = http.client.HTTPConnection(LOOPBACK, server.port, timeout=300)
        start()
        started, cpu = time.perf_counter(), time.process_time()
        deadline = started + sizes.seconds
        events = charged = failed = 0
        problem = None
        cut_short = False
        last_call = 0.0
        for size, body in bodies:
            if _past(deadline, last_call):
                cut_short = True
                break
            call_started = time.perf_counter()
            for attempt in range(ATTEMPTS):
                status, answer = _post(connection, "/api/v1/usage", body, world.raw_key)
                if status == 200:
                    statuses = [result["status"] for result in json.loads(answer)["results"]]
                    charged += _accepted(statuses, size, retried=attempt > 0)
                    break
                failed += 1
                problem = problem or f"HTTP {status} (see the server's traceback)"
            # Sent is sent: a failed call may have charged some of its companies' events.
            events += size
            last_call = time.perf_counter() - call_started
        finished = time.perf_counter()
        connection.close()
        return WorkerStats(
            events=events,
            charged=charged,
            started=started,
            finished=finished,
            client_cpu=time.process_time() - cpu,
            backend_cpu=None,
            commit_seconds=0.0,
            max_rss_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            cut_short=cut_short,
            problem=problem,
            failed_calls=failed,
        )

    def on_start() -> dict:
        return {"server": server.workers_cpu()}

    stats, sample = _run_processes([client] * sizes.clients, on_start)
    server_cpu = server.workers_cpu() - sample["before"]["server"]
    _absorb(tally, f"HTTP {server.mode}", stats, "largest HTTP client")
    threads = ", 2 threads each" if server.mode == "gthread" else ""
    return _figure(
        f"(1) end to end, gunicorn {server.mode} {server.workers} workers{threads}",
        "HTTP",
        stats,
        sample,
        {
            "gunicorn workers CPU": server_cpu,
            "HTTP clients CPU": sum(item.client_cpu for item in stats),
        },
        TARGET_HTTP,
    )


def _past(deadline: float, last_call: float) -> bool:
    """True when the next call, if it takes as long as the last one (queueing included),
    would end after ``deadline``: the phase then stops close to its time limit."""
    return time.perf_counter() + last_call > deadline


def _accepted(statuses: list[str], size: int, *, retried: bool) -> int:
    """Events of a batch that were charged: "charged", or on a retry also "duplicate" (the
    failed attempt had charged it). Anything else is a miss."""
    if len(statuses) != size:
        return 0
    accepted = ("charged", "duplicate") if retried else ("charged",)
    return sum(status in accepted for status in statuses)


def _calls(events: int, batch: int) -> list[int]:
    """Batch sizes that add up to ``events``: full batches and one remainder."""
    calls = [batch] * (events // batch)
    if events % batch:
        calls.append(events % batch)
    return calls


def _absorb(tally: Tally, where: str, stats: list[WorkerStats], memory_name: str) -> None:
    tally.sent += sum(item.events + item.warm_events for item in stats)
    for item in stats:
        if item.failed_calls:
            tally.failed_calls[where] += item.failed_calls
            tally.problems.append(
                f"{where}: {item.failed_calls} call(s) failed and were sent again; "
                f"first: {item.problem}"
            )
        if item.charged != item.events:
            tally.problems.append(f"{where}: {item.events - item.charged} events not charged")
    peak = max(item.max_rss_kib for item in stats)
    tally.memory[memory_name] = max(tally.memory.get(memory_name, 0), peak)


# --- (2) The service without HTTP -----------------------------------------------------------


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


def _share(sizes, world, processes: int, label: str, index: int):
    """Process ``index``'s share of a phase's ``sizes.service_events`` events, in batches of
    JSON-ready dicts whose ids start with ``label``; and its random generator, for more."""
    import random

    calls = _calls(sizes.service_events, sizes.batch)
    rng = random.Random(f"{SEED}:{label}:{index}")
    now = datetime.now(tz=JST)
    batches = [
        world.traffic.events(rng, f"{label}p{index}b{n}", size, now)
        for n, size in enumerate(calls[index::processes])
    ]
    return batches, rng


def _service_phase(processes, sizes, world, db_conninfo, target, tally, round_=0) -> Figure:
    label = f"s{processes}x{round_}"
    local = _is_local(db_conninfo)

    def service(index: int, start: Callable[[], None]) -> WorkerStats:
        from django.db import DatabaseError, connections

        from billing.models import ApiKey
        from billing.services.usage import usage_ingest

        raw_batches, rng = _share(sizes, world, processes, label, index)
        batches = [_usage_events(batch) for batch in raw_batches]
        now = datetime.now(tz=JST)
        connection = connections["default"]
        key = ApiKey.objects.get(pk=world.api_key_id)
        backend_pid = connection.connection.info.backend_pid
        # One event first, untimed: it builds this process's tariff index.
        warm = _usage_events(world.traffic.events(rng, f"{label}p{index}warm", 1, now))
        warm_charged = sum(o.status == "charged" for o in usage_ingest(api_key=key, events=warm))
        # As a server process does once loaded (config/wsgi.py): what is loaded so far, the
        # parent's objects included, is kept out of full garbage collections.
        gc.collect()
        gc.freeze()
        timer = _CommitTimer(connection)
        charged, failed, problem = warm_charged - len(warm), 0, None

        def send(batch) -> None:
            nonlocal charged, failed, problem
            for attempt in range(ATTEMPTS):
                try:
                    outcomes = usage_ingest(api_key=key, events=batch)
                except DatabaseError as error:  # e.g. a deadlock: sent again, as over HTTP
                    failed += 1
                    problem = problem or f"{type(error).__name__}: {error}".splitlines()[0]
                    continue
                statuses = [outcome.status for outcome in outcomes]
                charged += _accepted(statuses, len(batch), retried=attempt > 0)
                break

        start()
        stats = _timed_batches(batches, send, sizes.seconds, backend_pid if local else None)
        connections.close_all()
        return replace(
            stats,
            charged=charged,
            commit_seconds=timer.seconds,
            problem=problem,
            warm_events=len(warm),
            failed_calls=failed,
        )

    name = f"(2) usage_ingest, {processes} process(es)"
    return _database_phase(service, processes, name, "service", tally, target)


def _database_phase(runner: Runner, processes, name, way, tally, target=None) -> Figure:
    """``runner`` in ``processes`` processes: the figure, with the CPU of the processes and
    of their PostgreSQL backends, and the time in COMMIT."""
    stats, sample = _run_processes([runner] * processes)
    _absorb(tally, f"{way} x{processes}", stats, f"largest {way} process")
    cpu = {f"{way} processes CPU": sum(item.client_cpu for item in stats)}
    backends = [item.backend_cpu for item in stats]
    if None not in backends:
        cpu["PostgreSQL backends CPU"] = sum(backends)
    figure = _figure(name, way, stats, sample, cpu, target)
    return replace(figure, commit_seconds=sum(item.commit_seconds for item in stats))


def _combined(figures: list[Figure]) -> Figure:
    """Rounds of one scenario as one figure: their events, seconds and CPU added up."""
    cpu: dict[str, float] = {}
    for figure in figures:
        for name, value in figure.cpu.items():
            cpu[name] = cpu.get(name, 0.0) + value
    idles = [figure.idle for figure in figures]
    commits = [figure.commit_seconds for figure in figures]
    return replace(
        figures[0],
        events=sum(figure.events for figure in figures),
        seconds=sum(figure.seconds for figure in figures),
        cpu=cpu,
        idle=None if None in idles else sum(idles),
        cut_short=any(figure.cut_short for figure in figures),
        failed_calls=sum(figure.failed_calls for figure in figures),
        commit_seconds=None if None in commits else sum(commits),
    )


def _timed_batches(batches, send, seconds: float, backend_pid: int | None) -> WorkerStats:
    """``send`` each batch in turn until ``seconds`` have passed (no batch is begun that the
    last one's time says would end past the limit); what it took, with the CPU of this
    process and of its PostgreSQL backend (``backend_pid``, when on this machine)."""
    started, cpu = time.perf_counter(), time.process_time()
    backend = _process_cpu(backend_pid) if backend_pid else None
    deadline = started + seconds
    events, cut_short, last_call = 0, False, 0.0
    for batch in batches:
        if _past(deadline, last_call):
            cut_short = True
            break
        call_started = time.perf_counter()
        send(batch)
        events += len(batch)
        last_call = time.perf_counter() - call_started
    finished = time.perf_counter()
    backend_after = _process_cpu(backend_pid) if backend_pid else None
    return WorkerStats(
        events=events,
        charged=0,
        started=started,
        finished=finished,
        client_cpu=time.process_time() - cpu,
        backend_cpu=backend_after - backend
        if backend is not None and backend_after is not None
        else None,
        commit_seconds=0.0,
        max_rss_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        cut_short=cut_short,
    )


# --- (2r) The same rows with hand-written SQL: the ceiling -----------------------------------

# Every event the raw writer charges costs this much (it does not rate: see _RawUsage).
RAW_PRICE = Decimal(3)


class _RawUsage:
    """One psycopg connection that writes what ``usage_ingest`` writes for a batch, with no
    Django and no rating: the ceiling this database and schema put on the service.

    Per batch, as the service: the companies by account code and the ids already recorded
    (one index probe per id), before any lock; then per group of companies (the service's
    group limits), in one database transaction: the company rows locked in id order, their
    customer accounts and spendable lots read, ids taken for one ledger transaction per
    company, the transactions, postings (by lot, plain balance and service) and usage
    records written with COPY, lots and balances updated, COMMIT, which runs the same
    deferred balance trigger and foreign-key checks. Left out: rating (every event costs
    ``RAW_PRICE``), bundle counters and subaccounts (their columns stay empty).
    """

    def __init__(self, db_conninfo: dict, api_key_id: int):
        import psycopg

        from billing.services.ledger import POSTING_COLUMNS, TRANSACTION_COLUMNS
        from billing.services.usage import (
            COMPANIES_PER_TRANSACTION,
            EVENTS_PER_TRANSACTION,
            RECORD_COLUMNS,
        )

        self.conn = psycopg.connect(**db_conninfo)
        self.cur = self.conn.cursor()
        self.api_key_id = api_key_id
        self.group_companies, self.group_events = COMPANIES_PER_TRANSACTION, EVENTS_PER_TRANSACTION
        self.copy_transactions = (
            f"COPY billing_ledgertransaction ({', '.join(TRANSACTION_COLUMNS)}) FROM STDIN"
        )
        self.copy_postings = f"COPY billing_ledgerposting ({', '.join(POSTING_COLUMNS)}) FROM STDIN"
        self.copy_records = f"COPY billing_usagerecord ({', '.join(RECORD_COLUMNS)}) FROM STDIN"
        self.revenue = dict(
            self.cur.execute(
                "SELECT code, id FROM billing_ledgeraccount "
                "WHERE company_id IS NULL AND kind = 'revenue' AND currency = %s",
                (CURRENCY,),
            ).fetchall()
        )
        # A customer account is opened by the company's first charge (the service does it
        # under the company lock, once a company); here before the clock, for all at once.
        self.cur.execute(
            "INSERT INTO billing_ledgeraccount (kind, code, currency, balance_currency, "
            "balance, company_id) SELECT 'customer', 'customer', currency, currency, 0, id "
            "FROM accounts_company ON CONFLICT (company_id) WHERE kind = 'customer' DO NOTHING"
        )
        self.conn.commit()
        self.commit_seconds = 0.0

    def post(self, events: list[dict], now: datetime) -> None:
        cur = self.cur
        companies = dict(
            cur.execute(
                "SELECT account_code, id FROM accounts_company WHERE account_code = ANY(%s)",
                (list({event["account"] for event in events}),),
            ).fetchall()
        )
        recorded = cur.execute(
            "SELECT found.event_id FROM unnest(%s::varchar[]) AS wanted(value) "
            "CROSS JOIN LATERAL (SELECT event_id FROM billing_usagerecord AS found "
            "WHERE found.event_id = wanted.value AND found.api_key_id = %s LIMIT 1) AS found",
            (sorted(event["id"] for event in events), self.api_key_id),
        ).fetchall()
        if recorded:
            raise RuntimeError(f"event ids already recorded: {recorded[:3]}")
        by_company: dict[int, list[dict]] = {}
        for event in events:
            by_company.setdefault(companies[event["account"]], []).append(event)
        group: list[int] = []
        size = 0
        for company_id in sorted(by_company):
            count = len(by_company[company_id])
            if group and (len(group) == self.group_companies or size + count > self.group_events):
                self._group(group, by_company, now)
                group, size = [], 0
            group.append(company_id)
            size += count
        if group:
            self._group(group, by_company, now)

    def _group(self, company_ids: list[int], by_company: dict, now: datetime):
        cur = self.cur
        modes = dict(
            cur.execute(
                "SELECT id, mode FROM accounts_company WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
                (company_ids,),
            ).fetchall()
        )
        accounts = {
            company_id: [account_id, balance]
            for company_id, account_id, balance in cur.execute(
                "SELECT company_id, id, balance FROM billing_ledgeraccount "
                "WHERE kind = 'customer' AND company_id = ANY(%s)",
                (company_ids,),
            )
        }
        lots: dict[int, list[list]] = {}
        for company_id, lot_id, remaining in cur.execute(
            "SELECT company_id, id, remaining FROM billing_creditlot WHERE company_id = ANY(%s) "
            "AND remaining > 0 AND expires_at > %s ORDER BY company_id, expires_at, id",
            (company_ids, now),
        ):
            lots.setdefault(company_id, []).append([lot_id, remaining])
        ids = [
            row[0]
            for row in cur.execute(
                "SELECT nextval(pg_get_serial_sequence('billing_ledgertransaction', 'id')) "
                "FROM generate_series(1, %s)",
                (len(company_ids),),
            )
        ]
        transactions, postings, records, dirty_lots, balances = [], [], [], {}, {}
        for company_id, tx_id in zip(company_ids, ids, strict=True):
            account_id, balance = accounts[company_id]
            company_lots = lots.get(company_id, [])
            taken: dict[int | None, Decimal] = {}
            revenue: dict[str, Decimal] = {}
            for event in by_company[company_id]:
                left = RAW_PRICE
                for lot in company_lots:
                    take = min(lot[1], left)
                    if take > 0:
                        lot[1] -= take
                        dirty_lots[lot[0]] = lot[1]
                        taken[lot[0]] = taken.get(lot[0], ZERO) + take
                        left -= take
                    if left <= 0:
                        break
                if left > 0:
                    if modes[company_id] == "prepaid":
                        raise RuntimeError("the bench gives every company enough credit")
                    taken[None] = taken.get(None, ZERO) + left
                balance -= RAW_PRICE
                service = event["service"]
                revenue[service] = revenue.get(service, ZERO) + RAW_PRICE
                records.append(
                    (
                        self.api_key_id, event["id"], event["account"], company_id, None,
                        service, event["destination"] or "", event["quantity"],
                        event["occurred_at"], now, "charged", "", "", "", None, RAW_PRICE,
                        ZERO, "", ONE, ZERO, None, CURRENCY, RAW_PRICE, None, None,
                        CURRENCY, balance, tx_id,
                    )
                )  # fmt: skip
            balances[account_id] = balance
            postings += [
                (tx_id, account_id, CURRENCY, -value, lot_id) for lot_id, value in taken.items()
            ]
            postings += [
                (tx_id, self.revenue[f"revenue:{service}"], CURRENCY, value, None)
                for service, value in sorted(revenue.items())
            ]
            # Named after the company's first event id, which no other batch has.
            events = by_company[company_id]
            key, count = f"usage-raw:{events[0]['id']}:{company_id}", len(events)
            transactions.append(
                (
                    tx_id, key, hashlib.sha256(key.encode()).hexdigest(), "usage", company_id,
                    f"Usage: {count} events", now, now, None, None, None, None, None, None,
                    CURRENCY, balance, json.dumps({"events": count}),
                )
            )  # fmt: skip
        for sql, rows in (
            (self.copy_transactions, transactions),
            (self.copy_postings, postings),
            (self.copy_records, sorted(records, key=lambda record: record[1])),
        ):
            with cur.copy(sql) as copy:
                for row in rows:
                    copy.write_row(row)
        for table, column, values in (
            ("billing_creditlot", "remaining", dirty_lots),
            ("billing_ledgeraccount", "balance", balances),
        ):
            if values:
                ordered = sorted(values)
                cur.execute(
                    f"UPDATE {table} AS t SET {column} = v.value FROM "  # noqa: S608
                    "unnest(%s::bigint[], %s::numeric[]) AS v(id, value) WHERE t.id = v.id",
                    (ordered, [values[pk] for pk in ordered]),
                )
        started = time.perf_counter()
        self.conn.commit()
        self.commit_seconds += time.perf_counter() - started

    def close(self) -> None:
        self.conn.close()


def _raw_phase(processes, sizes, world, db_conninfo, tally, round_=0) -> Figure:
    """(2r): the batches of (2), as many processes, written by ``_RawUsage``."""
    label = f"r{processes}x{round_}"
    local = _is_local(db_conninfo)

    def raw(index: int, start: Callable[[], None]) -> WorkerStats:
        batches, _ = _share(sizes, world, processes, label, index)
        for event in itertools.chain.from_iterable(batches):  # parsed, as the API would
            event["quantity"] = Decimal(event["quantity"])
            event["occurred_at"] = datetime.fromisoformat(event["occurred_at"])
        writer = _RawUsage(db_conninfo, world.api_key_id)
        backend_pid = writer.conn.info.backend_pid if local else None

        def send(batch) -> None:
            writer.post(batch, datetime.now(tz=JST))

        start()
        stats = _timed_batches(batches, send, sizes.seconds, backend_pid)
        writer.close()
        return replace(stats, charged=stats.events, commit_seconds=writer.commit_seconds)

    return _database_phase(
        raw, processes, f"(2r) raw SQL, {processes} process(es)", "raw SQL", tally
    )


# --- (3) Authorize --------------------------------------------------------------------------


def _authorize_http(server: _Server, world: World, sizes: Sizes) -> Latency:
    import random

    requests = world.traffic.authorize_requests(random.Random(f"{SEED}:authorize"), sizes.authorize)
    bodies = [json.dumps(request).encode() for request in requests]
    connection = http.client.HTTPConnection(LOOPBACK, server.port, timeout=60)
    for body in bodies[:20]:  # warm: the first call of each worker pays for imports
        _post(connection, "/api/v1/authorize", body, world.raw_key)
    samples, refused = [], 0
    deadline = time.perf_counter() + sizes.seconds
    for body in bodies:
        if time.perf_counter() > deadline:
            break
        started = time.perf_counter()
        status, answer = _post(connection, "/api/v1/authorize", body, world.raw_key)
        samples.append((time.perf_counter() - started) * 1000)
        if status != 200 or not json.loads(answer)["allowed"]:
            refused += 1
    connection.close()
    return Latency(
        f"(3) authorize over HTTP, gunicorn {server.mode}",
        samples,
        refused,
        TARGET_AUTHORIZE_P99_MS,
    )


def _authorize_direct(world: World, sizes: Sizes) -> Latency:
    import random

    from django.utils import timezone as django_timezone

    from billing.authorization import usage_authorize

    requests = world.traffic.authorize_requests(random.Random(f"{SEED}:authorize"), sizes.authorize)
    for request in requests[:20]:
        usage_authorize(**request, now=django_timezone.now())
    samples, refused = [], 0
    deadline = time.perf_counter() + sizes.seconds
    for request in requests:
        if time.perf_counter() > deadline:
            break
        started = time.perf_counter()
        decision = usage_authorize(**request, now=django_timezone.now())
        samples.append((time.perf_counter() - started) * 1000)
        refused += not decision.allowed
    return Latency("(3) usage_authorize, direct", samples, refused)


# --- Checking and printing ------------------------------------------------------------------


def _verify(tally: Tally) -> bool:
    """The books reconcile, every event sent was charged once, and nothing fell short."""
    from billing.models import LedgerTransaction, UsageRecord
    from billing.reconcile import reconcile

    report = reconcile()
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
    records = UsageRecord.objects.count()
    charged = UsageRecord.objects.filter(status=UsageRecord.Status.CHARGED).count()
    short = LedgerTransaction.objects.filter(shortfall__isnull=False).count()
    good = records == charged == tally.sent and not short and not tally.problems
    print(
        f"usage records: {records:,} ({charged:,} charged) for {tally.sent:,} events sent; "
        f"{short} transactions with a shortfall: {'OK' if good else 'FAILED'}"
    )
    for problem in tally.problems[:10]:
        print(f"  {problem}")
    return report.ok and good


def _print_figure(figure: Figure) -> None:
    """The figure, then where an event's time went (microseconds per event)."""
    note = " (stopped by the time limit)" if figure.cut_short else ""
    if figure.failed_calls:
        note += f"; {figure.failed_calls} call(s) failed and were sent again"
    print(
        f"{figure.name} | {figure.way}, {figure.processes} process(es): {figure.events:,} "
        f"events in {figure.seconds:.2f} s = {figure.rate:,.0f}/s{note}"
    )
    if not figure.events:
        return
    parts = [f"wall x processes {figure.seconds * figure.processes / figure.events * 1e6:.0f}"]
    parts += [f"{name} {value / figure.events * 1e6:.0f}" for name, value in figure.cpu.items()]
    if figure.idle is not None:
        parts.append(f"machine idle {figure.idle / figure.events * 1e6:.0f}")
    if figure.commit_seconds is not None:
        parts.append(f"waiting for COMMIT {figure.commit_seconds / figure.events * 1e6:.0f}")
    print(f"    us per event: {', '.join(parts)}")


def _print_latency(latency: Latency) -> None:
    if not latency.samples_ms:
        print(f"{latency.name}: no calls")
        return
    print(
        f"{latency.name}: {len(latency.samples_ms):,} calls, p50 {latency.percentile(0.5):.2f} "
        f"ms, p95 {latency.percentile(0.95):.2f} ms, p99 {latency.percentile(0.99):.2f} ms, "
        f"max {max(latency.samples_ms):.2f} ms; {latency.refused} refused"
    )


def _print_tables(figures: list[Figure], latencies: list[Latency]) -> None:
    width = max(len(figure.name) for figure in figures)
    header = (
        f"{'scenario':<{width}}  {'way':<7}  {'procs':>5}  {'events':>8}  {'seconds':>7}  "
        f"{'events/s':>8}  {'target':>8}  verdict"
    )
    print()
    print(header)
    print("-" * len(header))
    for figure in figures:
        target = verdict = ""
        if figure.target is not None:
            target = f">={figure.target:,}"
            verdict = "PASS" if figure.rate >= figure.target else "BELOW"
        print(
            f"{figure.name:<{width}}  {figure.way:<7}  {figure.processes:>5}  "
            f"{figure.events:>8,}  {figure.seconds:>7.2f}  {figure.rate:>8,.0f}  "
            f"{target:>8}  {verdict}"
        )
    width = max(len(latency.name) for latency in latencies)
    header = (
        f"{'latency':<{width}}  {'calls':>5}  {'p50 ms':>6}  {'p95 ms':>6}  {'p99 ms':>6}  "
        f"{'target':>8}  verdict"
    )
    print()
    print(header)
    print("-" * len(header))
    for latency in latencies:
        if not latency.samples_ms:
            continue
        target = verdict = ""
        p99 = latency.percentile(0.99)
        if latency.target_ms is not None:
            target = f"p99<={latency.target_ms:g}"
            verdict = "PASS" if p99 <= latency.target_ms else "BELOW"
        print(
            f"{latency.name:<{width}}  {len(latency.samples_ms):>5}  "
            f"{latency.percentile(0.5):>6.2f}  {latency.percentile(0.95):>6.2f}  {p99:>6.2f}  "
            f"{target:>8}  {verdict}"
        )


if __name__ == "__main__":
    sys.exit(main())
