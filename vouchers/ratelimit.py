"""Brute-force protection for code redemption: refused attempts are counted per user, per
company and per client IP in a cache that every web process shares.

With the default ``settings.VOUCHER_FAILURES_PER_HOUR`` (10), the 10th refused attempt
within an hour of the first, in any one of the three scopes, locks further attempts in
that scope for ``VOUCHER_LOCK_SECONDS`` (an hour); while locked, no code is looked up. The
count starts again after the lock. A successful redemption does not reset anything (one
good code must not buy another ten guesses).

The cache is Django's ``default`` cache (``config.settings.base``): Redis when
``CACHE_URL``/``REDIS_URL`` is set, else the database cache table (``manage.py
createcachetable``), which the web server and the workers share like the database
itself. Counting is ``cache.add`` then ``cache.incr``: atomic on Redis and on the
in-process memory cache; on the database cache ``incr`` is a read then a write (with the
cache's default timeout, which ``record_failure`` corrects), so a burst of simultaneous
failures may count a few fewer than there were. Against 80-bit codes that
is immaterial; what matters is that guessing stays at a handful of tries per hour.

Writes go to the cache outside the redemption's database transaction, so a refused
redemption (which rolls back) still counts, also with the database cache.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.cache import caches

SCOPES = ("user", "company", "ip")
_PREFIX = "vouchers:redeem"


def _limit(scope: str) -> int:
    return settings.VOUCHER_FAILURE_LIMITS[scope]


def client_ip(request) -> str | None:
    """The client's IP address: ``REMOTE_ADDR``, or behind ``TOLLGATE_PROXY_COUNT`` reverse
    proxies the address the outermost of them saw (read from the right of
    ``X-Forwarded-For``: the left part is whatever the client chose to send). None when it
    is not an IP address."""
    proxies = settings.TOLLGATE_PROXY_COUNT
    candidate = request.META.get("REMOTE_ADDR", "")
    if proxies:
        forwarded = [
            part.strip()
            for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
            if part.strip()
        ]
        if len(forwarded) >= proxies:
            candidate = forwarded[-proxies]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return None


def _ip_scope_key(ip: str) -> str:
    """IPv6 clients usually hold a whole /64: count the network, not the address."""
    address = ipaddress.ip_address(ip)
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


@dataclass(frozen=True)
class AttemptLimiter:
    """The three counters that one redemption attempt touches."""

    user_id: int | None
    company_id: int | None
    ip: str | None

    @property
    def scopes(self) -> list[tuple[str, str]]:
        found = []
        if self.user_id is not None:
            found.append(("user", str(self.user_id)))
        if self.company_id is not None:
            found.append(("company", str(self.company_id)))
        if self.ip:
            found.append(("ip", _ip_scope_key(self.ip)))
        return found

    @staticmethod
    def _cache():
        return caches[settings.VOUCHER_RATELIMIT_CACHE]

    @staticmethod
    def _keys(scope: str, ident: str) -> tuple[str, str]:
        return f"{_PREFIX}:failures:{scope}:{ident}", f"{_PREFIX}:locked:{scope}:{ident}"

    @staticmethod
    def _since_key(scope: str, ident: str) -> str:
        return f"{_PREFIX}:since:{scope}:{ident}"

    def locked_until(self, now: datetime) -> datetime | None:
        """When the latest lock on any of the scopes ends; None when none is locked."""
        lock_keys = [self._keys(scope, ident)[1] for scope, ident in self.scopes]
        if not lock_keys:
            return None
        ends = [
            datetime.fromtimestamp(value, tz=UTC)
            for value in self._cache().get_many(lock_keys).values()
        ]
        ends = [end for end in ends if end > now]
        return max(ends) if ends else None

    def record_failure(self, now: datetime) -> datetime | None:
        """Count one refused attempt in every scope; returns the end of the lock that this
        or an earlier failure set, if any scope is now locked."""
        cache = self._cache()
        window = settings.VOUCHER_FAILURE_WINDOW_SECONDS
        lock_seconds = settings.VOUCHER_LOCK_SECONDS
        for scope, ident in self.scopes:
            counter, lock = self._keys(scope, ident)
            since = self._since_key(scope, ident)
            # The window starts at the first failure (add() never moves it) and the counter
            # lives for what is left of it. The database cache's incr() writes the counter
            # again with the cache's default timeout (five minutes), so its expiry is set
            # again after each count: without that, one guess every six minutes never locks.
            cache.add(since, now.timestamp(), timeout=window)
            started = cache.get(since, now.timestamp())
            left = max(1, round(started + window - now.timestamp()))
            cache.add(counter, 0, timeout=left)
            try:
                count = cache.incr(counter)
            except ValueError:  # expired between add and incr: this is the first again
                cache.add(counter, 1, timeout=left)
                count = 1
            cache.touch(counter, timeout=left)
            if count >= _limit(scope):
                until = now + timedelta(seconds=lock_seconds)
                # add(): a lock already set keeps its end (more failures do not extend it).
                cache.add(lock, until.timestamp(), timeout=lock_seconds)
                # The count starts again from zero when the lock ends.
                cache.delete_many([counter, since])
        return self.locked_until(now)
