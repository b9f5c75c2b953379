"""No 500 on an odd query string, on any admin list or portal page.

Addresses are user input: a pasted link, a hand-edited page number, a filter with letters
where an id goes. Every admin changelist and every portal page without arguments is asked
with each parameter the views read (and the admin's own) set to values that have broken
parsers before: digits ``str.isdigit`` accepts and ``int`` refuses, a NUL (PostgreSQL text
cannot hold it), an id past a bigint, quotes and LIKE wildcards, a very long value.
"""

import pytest
from django.contrib import admin
from django.urls import NoReverseMatch, get_resolver, reverse

from accounts.models import Membership
from tests.factories import MembershipFactory

pytestmark = pytest.mark.django_db

ODD_VALUES = [
    "²", "①", "١٢", "\x00", "99999999999999999999", "'%_", "a" * 300, "-1", "0", "2026-13"
]  # fmt: skip
ADMIN_PARAMETERS = ["q", "p", "o", "e", "company__id__exact", "id__exact"]
PORTAL_PARAMETERS = ["page", "month", "service", "subaccount", "kind", "notes", "next"]


def _server_errors(client, urls, parameters) -> list[str]:
    errors = []
    for url in urls:
        for parameter in parameters:
            for value in ODD_VALUES:
                response = client.get(url, {parameter: value})
                if response.status_code >= 500:
                    errors.append(f"{url}?{parameter}={value!r}: {response.status_code}")
    return errors


def test_admin_lists(admin_client):
    urls = [
        reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        for model in admin.site._registry
    ]
    assert len(urls) > 20
    assert _server_errors(admin_client, urls, ADMIN_PARAMETERS) == []


def test_portal_pages(client):
    membership = MembershipFactory(role=Membership.Role.ADMIN)
    client.force_login(membership.user)
    urls = []
    for name in get_resolver().namespace_dict["portal"][1].reverse_dict:
        if not isinstance(name, str) or name == "logout":  # logout answers a POST only
            continue
        try:
            urls.append(reverse(f"portal:{name}"))
        except NoReverseMatch:  # a page of one object: its ids are tested with the object
            continue
    assert "/portal/usage/" in urls and "/portal/statements/" in urls
    assert _server_errors(client, urls, PORTAL_PARAMETERS) == []
