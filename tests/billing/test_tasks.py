from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from accounts.models import Company
from billing.models import LedgerTransaction
from billing.tasks import credits_expire_all, credits_expire_company
from tests.factories import CompanyFactory
from tests.factories.billing import grant

pytestmark = pytest.mark.django_db


def test_expiry_task_fans_out_per_company_and_is_safe_to_run_twice():
    now = timezone.now()
    companies = CompanyFactory.create_batch(3, mode=Company.Mode.PREPAID)
    for company in companies:
        grant(company, 100, now=now - timedelta(days=10), days=5)
    grant(companies[0], 100, now=now, days=30)  # still live: untouched
    with time_machine.travel(now, tick=False):
        assert credits_expire_all.delay().get() == 3
        assert credits_expire_all.delay().get() == 0
    assert LedgerTransaction.objects.filter(kind="expiry").count() == 3


def test_company_expiry_task_for_a_deleted_company_does_nothing():
    assert credits_expire_company.delay(987654).get() == 0
