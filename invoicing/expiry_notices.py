"""Credit expiring soon: ``TOLLGATE_EXPIRY_NOTICE_DAYS`` before a credit lot expires with
credit left, each billing contact of its company gets one email saying how much and when
(what is left at expiry is lost: ``billing.services.ledger.credits_expire``).

``expiry_notices_queue`` runs every hour (``config.schedules``). A lot is noticed once per
contact, ever (``BillingEmail``'s unique constraint; queued with ``ignore_conflicts``), so a
run twice, or twice at once, queues one email each, and a run after an outage catches up
with every lot still in the window. Lots whose whole life is shorter than the window (a
seven-day trial) are not noticed: their expiry was known when they were granted. A notice
whose lot is spent or expired before it goes out is not sent.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef
from django.utils import timezone

from billing.models import CreditLot

from .emails import expiry_emails_queue
from .models import BillingEmail


def lots_to_notice(now: datetime, days: int | None = None) -> list[CreditLot]:
    """The lots with credit left that expire within ``days`` of ``now``, lived longer than
    that, and have no expiry notice yet (one query)."""
    window = timedelta(days=settings.TOLLGATE_EXPIRY_NOTICE_DAYS if days is None else days)
    noticed = BillingEmail.objects.filter(kind=BillingEmail.Kind.EXPIRING, lot=OuterRef("pk"))
    return list(
        CreditLot.objects.filter(
            remaining__gt=0,
            expires_at__gt=now,
            expires_at__lte=now + window,
            granted_at__lt=F("expires_at") - window,
        )
        .exclude(Exists(noticed))
        .select_related("company")
        .order_by("expires_at", "id")
    )


@transaction.atomic
def expiry_notices_queue(*, now: datetime | None = None) -> list[int]:
    """Queue the expiry notices now due; returns the ids of the emails queued (sent once
    this transaction commits)."""
    now = now or timezone.now()
    lots = lots_to_notice(now)
    return expiry_emails_queue(lots=lots, now=now) if lots else []
