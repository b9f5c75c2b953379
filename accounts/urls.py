"""Portal URLs of the accounts app (mounted in the ``portal`` namespace)."""

from django.contrib.auth import views as auth_views
from django.urls import path, reverse_lazy

from . import views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("switch/", views.company_switch, name="company_switch"),
    path("subaccounts/", views.subaccount_list, name="subaccounts"),
    path("subaccounts/new/", views.subaccount_create, name="subaccount_create"),
    path("subaccounts/<int:pk>/", views.subaccount_detail, name="subaccount"),
    path("subaccounts/<int:pk>/toggle/", views.subaccount_toggle, name="subaccount_toggle"),
    path("billing-contacts/", views.billing_contacts, name="billing_contacts"),
    path("billing-contacts/<int:pk>/", views.billing_contact_detail, name="billing_contact"),
    path(
        "billing-contacts/<int:pk>/delete/",
        views.billing_contact_delete,
        name="billing_contact_delete",
    ),
    # Sign-in, sign-out and password reset: Django's own views with portal templates.
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="portal/auth/login.html", redirect_authenticated_user=True
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path(
        "password-reset/",
        auth_views.PasswordResetView.as_view(
            template_name="portal/auth/password_reset_form.html",
            email_template_name="portal/auth/password_reset_email.txt",
            subject_template_name="portal/auth/password_reset_subject.txt",
            success_url=reverse_lazy("portal:password_reset_done"),
        ),
        name="password_reset",
    ),
    path(
        "password-reset/sent/",
        auth_views.PasswordResetDoneView.as_view(
            template_name="portal/auth/password_reset_done.html"
        ),
        name="password_reset_done",
    ),
    path(
        "password-reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(
            template_name="portal/auth/password_reset_confirm.html",
            success_url=reverse_lazy("portal:password_reset_complete"),
        ),
        name="password_reset_confirm",
    ),
    path(
        "password-reset/complete/",
        auth_views.PasswordResetCompleteView.as_view(
            template_name="portal/auth/password_reset_complete.html"
        ),
        name="password_reset_complete",
    ),
]
