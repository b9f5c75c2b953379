"""Portal URLs of the vouchers app (mounted in the ``portal`` namespace)."""

from django.urls import path

from . import views

urlpatterns = [
    path("credits/redeem/", views.redeem, name="voucher_redeem"),
]
