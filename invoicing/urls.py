"""Portal URLs of invoicing (mounted in the ``portal`` namespace)."""

from django.urls import path

from . import views

urlpatterns = [
    path("statements/", views.statements, name="statements"),
    path("statements/<int:pk>/", views.statement_detail, name="statement"),
    path("statements/<int:pk>/pdf/", views.statement_pdf_download, name="statement_pdf"),
    path("statements/<int:pk>/csv/", views.statement_csv_download, name="statement_csv"),
    path("payments/", views.payment_history, name="payments"),
    path("payments/<int:pk>/receipt/", views.payment_receipt_download, name="payment_receipt"),
    path("credit-notes/<int:pk>/pdf/", views.credit_note_pdf_download, name="credit_note_pdf"),
    path("credits/top-up-reminder/", views.topup_reminder, name="topup_reminder"),
]
