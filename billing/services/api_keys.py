"""API keys of the operator's platform: created with a secret shown once, revoked for good."""

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from ..models import ApiKey, api_key_generate, api_key_hash

# Enough of the key to recognise it in a list ("tg_" and 7 random characters), far too
# little to guess the rest (256 bits).
PREFIX_LENGTH = 10


@transaction.atomic
def api_key_create(*, name: str, actor=None, now: datetime | None = None) -> tuple[ApiKey, str]:
    """A new key named ``name``: returns the row and the raw key. Only the key's SHA-256 and
    its first characters are stored, so the raw key must be shown to the caller now; it
    cannot be recovered later (a lost key is revoked and replaced)."""
    raw = api_key_generate()
    key = ApiKey.objects.create(
        name=name,
        prefix=raw[:PREFIX_LENGTH],
        key_hash=api_key_hash(raw),
        created_by=actor,
        created_at=now or timezone.now(),
    )
    return key, raw


def api_key_revoke(*, api_key: ApiKey, now: datetime | None = None) -> bool:
    """Revoke ``api_key``: the usage API refuses it from its next request. Idempotent and
    safe under concurrency (one conditional UPDATE): returns False, changing nothing, if
    it was already revoked."""
    now = now or timezone.now()
    revoked = ApiKey.objects.filter(pk=api_key.pk, revoked_at=None).update(revoked_at=now)
    api_key.refresh_from_db(fields=["revoked_at"])
    return bool(revoked)
