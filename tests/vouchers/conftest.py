import pytest
from django.core.cache import cache
from django.utils import translation


@pytest.fixture(autouse=True)
def _empty_cache():
    """Brute-force counters live in the cache (memory in tests): each test starts clean."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _english():
    """Messages are translated when raised: a Japanese page requested by an earlier test
    leaves Japanese active in the thread, so each test starts in English."""
    with translation.override("en"):
        yield
