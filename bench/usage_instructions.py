"""Instructions per usage event: the service's own work, counted, not timed.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python bench/usage_instructions.py [--batches 3]

Sets up the world of ``usage_api.py`` (1,000 companies, its tariff, plan and Zipf traffic)
in a database of its own, then calls ``usage_ingest`` with ``--batches`` batches of 1000
events in one process run under valgrind's callgrind, which counts the instructions of
that process while the batches run (it is switched on just before the first and off after
the last). The database's own work runs in another process and is not counted.

Why: on a shared machine the same code's events per second move by up to 2x from one
minute to the next, and whole runs of ``usage_api.py`` cannot tell two versions apart. The
count does not move with the machine: the same code gives the same figure to about 0.3 %.
It is what to compare before and after a change to the service's Python; the events per
second of ``usage_api.py`` are what the targets are about.

Prints the instructions per event and the ratio to ``BASELINE``, the figure of the code of
2026-12-04 before the model-loading changes (``billing.bulk``).
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _pgserver import postgres_config, server_connection, with_database  # noqa: E402

BENCH_DB = "tollgate_bench_instructions"
# Instructions per event at commit c508b87 (before LoadedWithoutInit, unsaved_instance,
# array_literal and the timestamp loader), measured with this script's defaults: 686,498.
BASELINE = 686_500


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=3, help="batches of 1000 events counted")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # the child run under valgrind
    parser.add_argument("--setup", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    url = os.environ.get("DATABASE_URL", "")
    if args.measure:
        return _measure(Path(args.measure), args.batches, setup=args.setup)
    server = postgres_config(url)
    if server is None:
        print("usage_instructions: needs PostgreSQL; set DATABASE_URL=postgres://...")
        return 2
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("usage_instructions: needs valgrind (Debian package valgrind)")
        return 2
    with server_connection(server, BENCH_DB) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{BENCH_DB}"')
    try:
        with tempfile.TemporaryDirectory(prefix="tollgate-instructions-") as folder:
            world_path = Path(folder) / "world.pickle"
            env = {**os.environ, "DATABASE_URL": with_database(url, BENCH_DB)}
            _run([sys.executable, __file__, "--measure", str(world_path), "--setup"], env)
            started = time.perf_counter()
            output = _run(
                [
                    "valgrind",
                    "--tool=callgrind",
                    "--instr-atstart=no",
                    f"--callgrind-out-file={folder}/callgrind.out",
                    sys.executable,
                    __file__,
                    "--measure",
                    str(world_path),
                    "--batches",
                    str(args.batches),
                ],
                env,
            )
        counted = re.search(r"Collected : (\d+)", output)
        if counted is None:
            print(f"usage_instructions: callgrind printed no count:\n{output[-2000:]}")
            return 1
        events = args.batches * 1000
        per_event = int(counted.group(1)) / events
        print(
            f"usage_ingest: {per_event:,.0f} instructions per event ({events:,} events in "
            f"batches of 1000, counted in {time.perf_counter() - started:.0f} s under "
            f"callgrind); baseline {BASELINE:,}: ratio {per_event / BASELINE:.2f}"
        )
        return 0
    finally:
        with server_connection(server, BENCH_DB) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')


def _run(command: list[str], env: dict) -> str:
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stdout.write(result.stdout + result.stderr)
        raise SystemExit(f"usage_instructions: {command[0]} failed ({result.returncode})")
    return result.stdout + result.stderr


def _measure(world_path: Path, batches: int, *, setup: bool) -> int:
    """In the child: ``--setup`` builds the world; otherwise count ``batches`` batches."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.local"
    os.environ.setdefault("DJANGO_DEBUG", "false")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    import random

    import usage_api

    if setup:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        world = usage_api._setup_world(usage_api.DEFAULT_SIZES)
        world_path.write_bytes(pickle.dumps(world))
        return 0

    from billing.models import ApiKey
    from billing.services.usage import usage_ingest

    world = pickle.loads(world_path.read_bytes())  # noqa: S301 (written by the parent)
    rng = random.Random(usage_api.SEED)
    now = datetime.now(tz=usage_api.JST)
    key = ApiKey.objects.get(pk=world.api_key_id)
    # A batch first, uncounted: imports, the tariff index, the revenue accounts.
    warm = world.traffic.events(rng, "warm", 1000, now)
    usage_ingest(api_key=key, events=usage_api._usage_events(warm))
    calls = [
        usage_api._usage_events(world.traffic.events(rng, f"b{n}", 1000, now))
        for n in range(batches)
    ]
    _callgrind("on")
    for events in calls:
        usage_ingest(api_key=key, events=events)
    _callgrind("off")
    return 0


def _callgrind(state: str) -> None:
    subprocess.run(["callgrind_control", "-i", state, str(os.getpid())], capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
