"""The company switcher's ``next`` must never send the user to another site."""

import pytest
from django.urls import reverse

from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "next_url",
    [
        "http://testserver//evil.example/12/",
        "http://testserver/\\evil.example/12/",
    ],
)
def test_switch_next_cannot_redirect_off_site(client, next_url):
    user = UserFactory()
    MembershipFactory(user=user)
    other = MembershipFactory(user=user)
    client.force_login(user)
    response = client.post(
        reverse("portal:company_switch"), {"company": other.company_id, "next": next_url}
    )
    assert response.status_code == 302
    location = response["Location"]
    assert not location.startswith("//") and not location.startswith("/\\"), location
