"""Notification hooks, sent after the change has committed.

Receivers (emails, outbound webhooks) only tell people; no business rule lives in them.
"""

from django.dispatch import Signal

# kwargs: company, block (the CompanyBlock that was set or lifted)
company_blocked = Signal()
company_unblocked = Signal()
