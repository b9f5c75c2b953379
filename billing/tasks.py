"""Celery tasks of the billing app: thin wrappers, safe to run twice or at once."""

from celery import shared_task
from django.db import OperationalError, transaction
from django.utils import timezone

from accounts.models import Company

from .services.expiry import companies_with_expired_credit
from .services.ledger import credits_expire
from .services.recurring import (
    companies_with_charges_due,
    in_batches,
    recurring_charge_companies,
    recurring_charge_company,
)


@shared_task(acks_late=True)
def credits_expire_all() -> int:
    """Fan out: one task per company with expired credit left."""
    company_ids = companies_with_expired_credit(timezone.now())
    for company_id in company_ids:
        credits_expire_company.delay(company_id)
    return len(company_ids)


@shared_task(acks_late=True, autoretry_for=(Exception,), retry_backoff=True, max_retries=5)
def credits_expire_company(company_id: int) -> int:
    """Expire one company's expired lots; idempotent (each lot expires once)."""
    company = Company.objects.filter(pk=company_id).first()
    if company is None:
        return 0
    return len(credits_expire(company=company))


@shared_task(acks_late=True)
def recurring_charge_due() -> int:
    """Fan out: one task per batch of companies with a recurring charge due now (each batch
    is one database transaction, ``TOLLGATE_RECURRING_BATCH`` companies)."""
    company_ids = companies_with_charges_due(timezone.now())
    for batch in in_batches(company_ids):
        transaction.on_commit(lambda batch=batch: recurring_charge_batch.delay(batch))
    return len(company_ids)


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def recurring_charge_batch(company_ids: list[int]) -> int:
    """Charge these companies' due periods; idempotent (unique per item and period), and a
    company that no longer exists is skipped."""
    return recurring_charge_companies(company_ids=company_ids)


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def recurring_charge_one(company_id: int) -> int:
    """Charge one company's due periods; idempotent (unique per item and period). (The
    fan-out sends batches now; this one stays for messages queued before.)"""
    company = Company.objects.filter(pk=company_id).first()
    if company is None:
        return 0
    return len(recurring_charge_company(company=company))
