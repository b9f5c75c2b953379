"""A real Celery worker on Redis, killed with SIGKILL in the middle of a recurring run and
started again, leaves exactly one charge per period."""

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from celery import Celery
from django.db import connection
from django.utils import timezone
from djmoney.money import Money

from accounts.models import Company
from billing.models import RecurringCharge
from billing.reconcile import reconcile
from billing.services.recurring import companies_with_charges_due, phone_number_assign
from tests.factories import CompanyFactory

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("TOLLGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
COMPANIES = 150  # enough batches that the kill lands mid-run on a fast machine too
PERIODS = 4  # assigned three months ago: this month and three missed ones
BATCH = 3  # companies per task

pytestmark = [pytest.mark.postgres, pytest.mark.integration]


def _redis_available() -> bool:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.RedisError:
        return False
    return True


def _start_worker(log_path: Path) -> subprocess.Popen:
    db = connection.settings_dict
    env = {
        **{k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
        "DJANGO_SETTINGS_MODULE": "config.settings.local",
        "DJANGO_DEBUG": "false",
        # The test database, where this test's rows are committed.
        "DATABASE_URL": (
            f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        ),
        "CELERY_BROKER_URL": REDIS_URL,
        # Redeliver what the killed worker took within seconds, not the production hour.
        "CELERY_VISIBILITY_TIMEOUT": "3",
        "CELERY_UNACKED_RESTORE_INTERVAL": "1",
        "CELERY_UNACKED_RESTORE_THROTTLE": "1",
        # Small batches (one database transaction each), so that the kill falls mid-run
        # with some batches committed, one perhaps half done, and others still queued.
        "TOLLGATE_RECURRING_BATCH": str(BATCH),
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--concurrency",
            "2",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=ROOT,
        env=env,
        stdout=open(log_path, "ab"),
        stderr=subprocess.STDOUT,  # noqa: SIM115
        start_new_session=True,
    )


def _wait(condition, timeout: float, what: str, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.django_db(transaction=True)
def test_worker_killed_mid_run_and_restarted_leaves_one_charge_per_period(tmp_path, monkeypatch):
    # Celery prefers this variable to the URL an app is given: point it at the test's Redis.
    monkeypatch.setenv("CELERY_BROKER_URL", REDIS_URL)
    if not _redis_available():
        if os.environ.get("TOLLGATE_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"Redis is required at {REDIS_URL}")
        pytest.skip(f"no Redis at {REDIS_URL}")
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    assigned = timezone.now() - timedelta(days=92)
    for n in range(COMPANIES):
        company = CompanyFactory(mode=Company.Mode.POSTPAID, billing_timezone="UTC")
        phone_number_assign(
            company=company,
            number=f"+81 50 0000 {n:04d}",
            monthly_price=Money(100, "JPY"),
            at=assigned,
        )
    expected = RecurringCharge.objects.none().count() + COMPANIES * PERIODS
    log = tmp_path / "worker.log"
    sender = Celery(broker=REDIS_URL)
    worker = _start_worker(log)
    try:
        sender.send_task("billing.tasks.recurring_charge_due")
        # Polled often: the kill must land while most batches are still to run.
        _wait(
            lambda: RecurringCharge.objects.count() >= PERIODS * BATCH,
            60,
            "the run to start",
            every=0.01,
        )
        os.killpg(worker.pid, signal.SIGKILL)  # the whole worker, mid-run
        worker.wait(timeout=10)
        done_at_kill = RecurringCharge.objects.count()
        assert done_at_kill < expected, "the run finished before the kill: make it longer"

        worker = _start_worker(log)
        # Beat's next tick, as in production: Redis redelivers what the killed worker had
        # taken, but a message it had popped and not yet recorded as taken is lost (kombu's
        # Redis transport); the rows still say what is due, and the fan-out finds it again,
        # while redelivered batches may be running: that must not charge twice either.
        sender.send_task("billing.tasks.recurring_charge_due")
        _wait(lambda: not companies_with_charges_due(timezone.now()), 120, "the run to finish")
        time.sleep(4)  # let any redelivered message run too: it must change nothing
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
    assert RecurringCharge.objects.count() == expected, log.read_text()[-3000:]
    pairs = list(RecurringCharge.objects.values_list("item_key", "period_index"))
    assert len(pairs) == len(set(pairs))
    assert reconcile().ok
