"""No 500 on any admin page a staff member can open, whatever their group.

A read-only member (Support, Finance outside invoicing) gets the admin's read-only rendering
of a change page, whose form lacks every field the member may not change: a form that
reaches for one of them by name fails only for that member. The demo data gives every model
an object to open.
"""

from io import StringIO

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.urls import reverse

from accounts.roles import STAFF_GROUPS
from accounts.services import staff_groups_sync
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_every_change_and_add_page_opens_for_each_staff_group(client):
    call_command("seed_demo", stdout=StringIO())
    staff_groups_sync()
    errors, opened = [], 0
    for group_name in sorted(STAFF_GROUPS):
        user = UserFactory(is_staff=True)
        user.groups.add(Group.objects.get(name=group_name))
        client.force_login(user)
        opened += _open_every_page(client, errors)
    assert opened > 60
    assert errors == []


def _open_every_page(client, errors: list[str]) -> int:
    opened = 0
    for model in admin.site._registry:
        info = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        urls = [reverse(f"{info}_add")]
        first = model._default_manager.order_by("pk").first()
        if first is not None:
            urls.append(reverse(f"{info}_change", args=[first.pk]))
        for url in urls:
            status = client.get(url).status_code
            opened += status == 200
            if status >= 500:
                errors.append(f"{url}: {status}")
    return opened
