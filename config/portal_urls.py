"""The customer portal at /portal/: each app contributes its pages to one namespace."""

from django.urls import include, path

app_name = "portal"

urlpatterns = [
    path("", include("accounts.urls")),
    path("", include("billing.urls")),
    path("", include("vouchers.urls")),
    path("", include("invoicing.urls")),
]
