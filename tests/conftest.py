"""Shared test setup.

Tests marked ``postgres`` prove money safety (row locks, races, deferred constraints) and
only mean something on PostgreSQL: on SQLite they are skipped, unless
``TOLLGATE_REQUIRE_POSTGRES=1`` (set by CI), where running them on anything else stops
the whole run instead of skipping them quietly.
"""

import os

import pytest
from django.db import connection


def pytest_collection_modifyitems(config, items):
    if connection.vendor == "postgresql":
        return
    needs_postgres = [item for item in items if item.get_closest_marker("postgres")]
    if needs_postgres and os.environ.get("TOLLGATE_REQUIRE_POSTGRES") == "1":
        raise pytest.UsageError(
            f"TOLLGATE_REQUIRE_POSTGRES=1 but the database is {connection.vendor}: "
            f"{len(needs_postgres)} money-safety tests would not run."
        )
    for item in needs_postgres:
        item.add_marker(pytest.mark.skip(reason="needs PostgreSQL (set DATABASE_URL)"))


@pytest.fixture(autouse=True)
def _fresh_tariff_cache():
    """Each test rates with its own tariffs: the per-process index cache starts empty (SQLite
    hands a rolled-back test's ids out again, so a stale index could answer for a new
    tariff with the same id)."""
    from billing.services import rating

    rating._cache.clear()
    yield


@pytest.fixture(autouse=True)
def _default_language():
    """Each test starts in the default language: a request with ``Accept-Language: ja``
    activates Japanese for the thread, and it would otherwise outlast the test."""
    from django.utils import translation

    yield
    translation.deactivate()
