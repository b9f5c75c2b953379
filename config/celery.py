"""The Celery application: configured from Django settings (CELERY_* names)."""

import gc
import logging
import os

from celery import Celery
from celery.signals import (
    task_postrun,
    task_prerun,
    worker_process_init,
    worker_process_shutdown,
)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("tollgate")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def _close_old_connections(sender=None, **kwargs):
    """Around each task, close the database connections Django would close around a request:
    broken ones, those in error, those older than CONN_MAX_AGE. Celery keeps them otherwise
    (CELERY_DB_REUSE_MAX), so a task does not pay for a new connection each time. Not for
    eager tasks, which run inside the caller's transaction."""
    if sender is not None and getattr(sender.request, "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()


@worker_process_init.connect
def _warm_up_pdf_rendering(**kwargs):
    """Load WeasyPrint, the PDF stylesheet and fonts when a worker process starts, so the
    first statement it emails or renders is not several times slower than the next
    (``TOLLGATE_PDF_WARM_UP=false`` skips it). A failure here must not stop the worker."""
    from django.conf import settings

    if not getattr(settings, "TOLLGATE_PDF_WARM_UP", True):
        return
    try:
        from invoicing.documents import pdf_warm_up

        pdf_warm_up()
    except Exception:
        logging.getLogger(__name__).exception("PDF warm-up failed; PDFs will still render")


@worker_process_init.connect
def _freeze_loaded_objects(**kwargs):
    """Move every object loaded so far (Django, the app, WeasyPrint and its fonts, warmed
    up above) out of the garbage collector's view. A forked worker process shares them with
    its parent; each full collection would otherwise walk them all, and by touching their
    headers copy their pages into the child: measured, ~40 ms of a ~165 ms statement PDF
    (bench/statement_close.py). Frozen objects are still freed by reference counting; only
    cycles among them are kept."""
    gc.collect()
    gc.freeze()


@worker_process_shutdown.connect
def _free_pdf_fonts(**kwargs):
    """WeasyPrint keeps a temporary copy of the PDF fonts for as long as their configuration
    lives; a worker process that is recycled exits without the interpreter's clean-up, so
    free it here or the copy stays behind in the temporary directory."""
    from invoicing.documents import pdf_fonts_free

    pdf_fonts_free()
