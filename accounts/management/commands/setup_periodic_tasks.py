import json

from django.core.management.base import BaseCommand
from django.db import transaction
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from config.schedules import PERIODIC_TASKS

MANAGED_MARKER = "Declared in config/schedules.py; synced by manage.py setup_periodic_tasks."


class Command(BaseCommand):
    help = (
        "Sync the periodic schedules declared in config/schedules.py into django-celery-beat. "
        "Idempotent; keeps a schedule paused if an operator paused it."
    )

    @transaction.atomic
    def handle(self, *args, **options):
        created = updated = 0
        for name, spec in PERIODIC_TASKS.items():
            crontab, _ = CrontabSchedule.objects.get_or_create(
                minute=spec["crontab"].get("minute", "*"),
                hour=spec["crontab"].get("hour", "*"),
                day_of_week=spec["crontab"].get("day_of_week", "*"),
                day_of_month=spec["crontab"].get("day_of_month", "*"),
                month_of_year=spec["crontab"].get("month_of_year", "*"),
                timezone="UTC",
            )
            fields = {
                "task": spec["task"],
                "crontab": crontab,
                "kwargs": json.dumps(spec.get("kwargs", {})),
                "description": MANAGED_MARKER,
            }
            task = PeriodicTask.objects.filter(name=name).first()
            if task is None:
                PeriodicTask.objects.create(name=name, enabled=True, **fields)
                created += 1
            elif any(getattr(task, key) != value for key, value in fields.items()):
                for key, value in fields.items():
                    setattr(task, key, value)
                task.save()
                updated += 1
        removed, _ = (
            PeriodicTask.objects.filter(description=MANAGED_MARKER)
            .exclude(name__in=PERIODIC_TASKS)
            .delete()
        )
        self.stdout.write(
            f"Periodic tasks: {len(PERIODIC_TASKS)} declared, {created} created, "
            f"{updated} updated, {removed} removed."
        )
