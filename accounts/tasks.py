"""Celery tasks of the accounts app: thin wrappers, safe to run twice."""

from celery import shared_task
from django.contrib.sessions.models import Session
from django.utils import timezone


@shared_task(acks_late=True)
def sessions_clear_expired() -> int:
    """Delete expired portal sessions (what ``manage.py clearsessions`` does); idempotent."""
    deleted, _ = Session.objects.filter(expire_date__lt=timezone.now()).delete()
    return deleted
