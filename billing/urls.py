"""Portal URLs of the billing app (mounted in the ``portal`` namespace)."""

from django.urls import path

from . import views

urlpatterns = [
    path("credits/", views.credits, name="credits"),
    path("usage/", views.usage, name="usage"),
    path("subscriptions/", views.subscriptions, name="subscriptions"),
]
