"""Statements record who issued them and to whom (``Statement.parties``).

Statements issued before this migration are given the parties as they are when it runs:
what their documents showed until now, and from now on will always show. On PostgreSQL the
trigger that keeps issued statements final (``0002``) is held off for that one update, inside
this migration's transaction, as ``0004`` did.
"""

from django.conf import settings
from django.db import migrations, models


def _operator():
    return {
        "name": settings.OPERATOR_NAME,
        "address": settings.TOLLGATE_OPERATOR_ADDRESS,
        "registration": settings.TOLLGATE_OPERATOR_REGISTRATION,
        "email": settings.DEFAULT_FROM_EMAIL,
    }


def _contact_text(contact):
    # As BillingContact.__str__ gives it (historical models have no methods).
    return f"{contact.name} <{contact.email}>" if contact.name else contact.email


def fill_parties(apps, model_name: str) -> None:
    """Give every row of ``model_name`` its company's parties as they are now."""
    Document = apps.get_model("invoicing", model_name)
    Company = apps.get_model("accounts", "Company")
    BillingContact = apps.get_model("accounts", "BillingContact")
    operator = _operator()
    company_ids = Document.objects.values_list("company_id", flat=True).distinct()
    for company in Company.objects.filter(pk__in=company_ids).order_by("pk").iterator():
        contact = BillingContact.objects.filter(company_id=company.pk).order_by("id").first()
        Document.objects.filter(company_id=company.pk).update(
            parties={
                "operator": operator,
                "company": {
                    "name": company.name,
                    "account_code": company.account_code,
                    "billing_timezone": company.billing_timezone,
                },
                "contact": _contact_text(contact) if contact else "",
            }
        )


def record_parties(apps, schema_editor):
    on_postgresql = schema_editor.connection.vendor == "postgresql"
    if on_postgresql:
        schema_editor.execute(
            "ALTER TABLE invoicing_statement DISABLE TRIGGER invoicing_statement_final"
        )
    fill_parties(apps, "Statement")
    if on_postgresql:
        schema_editor.execute(
            "ALTER TABLE invoicing_statement ENABLE TRIGGER invoicing_statement_final"
        )


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0003_company_tariff"),
        ("invoicing", "0006_receivables_aging"),
    ]

    operations = [
        migrations.AddField(
            model_name="statement",
            name="parties",
            field=models.JSONField(default=dict, verbose_name="parties at issue"),
        ),
        migrations.RunPython(record_parties, migrations.RunPython.noop, elidable=False),
    ]
