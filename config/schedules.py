"""Periodic work, declared here and synced into django-celery-beat.

``manage.py setup_periodic_tasks`` creates or updates one PeriodicTask per entry, so
operators see and can pause every schedule in the admin. Crontabs are in UTC; a task that
works on billing periods derives each company's period in the company's own time zone.
"""

PERIODIC_TASKS: dict[str, dict] = {
    "Recurring charges": {
        "task": "billing.tasks.recurring_charge_due",
        "crontab": {"minute": "*/10"},
    },
    "Expire credits": {
        "task": "billing.tasks.credits_expire_all",
        "crontab": {"minute": "*/15"},
    },
    # Hourly, because a month ends at a different UTC hour in each billing time zone.
    "Close ended months (statements)": {
        "task": "invoicing.tasks.statements_close_due",
        "crontab": {"minute": "5"},
    },
    # Hourly, because a day starts at a different UTC hour in each billing time zone.
    "Overdue invoices (reminders, blocks)": {
        "task": "invoicing.tasks.dunning_run_due",
        "crontab": {"minute": "35"},
    },
    # Each minute: a top-up reminder should reach the customer before the credit is gone.
    "Top-up reminders": {
        "task": "invoicing.tasks.topup_reminders_check",
        "crontab": {"minute": "*"},
    },
    "Credit expiring soon (notices)": {
        "task": "invoicing.tasks.expiry_notices_due",
        "crontab": {"minute": "45"},
    },
    "Send billing emails whose task was lost": {
        "task": "invoicing.tasks.billing_emails_wake",
        "crontab": {"minute": "*/15"},
    },
    "Clear expired portal sessions": {
        "task": "accounts.tasks.sessions_clear_expired",
        "crontab": {"minute": "15", "hour": "3"},
    },
}
