"""Payments record the parties their receipts show (``Payment.parties``).

Payments recorded before this migration are given the parties as they are when it runs, the
way ``0007`` gave them to statements (whose helpers it uses).
"""

import importlib

from django.db import migrations, models

statements_0007 = importlib.import_module("invoicing.migrations.0007_statement_parties_at_issue")


def record_parties(apps, schema_editor):
    Payment = apps.get_model("invoicing", "Payment")
    Company = apps.get_model("accounts", "Company")
    BillingContact = apps.get_model("accounts", "BillingContact")
    operator = statements_0007._operator()
    company_ids = Payment.objects.values_list("company_id", flat=True).distinct()
    for company in Company.objects.filter(pk__in=company_ids).order_by("pk").iterator():
        contact = BillingContact.objects.filter(company_id=company.pk).order_by("id").first()
        Payment.objects.filter(company_id=company.pk).update(
            parties={
                "operator": operator,
                "company": {
                    "name": company.name,
                    "account_code": company.account_code,
                    "billing_timezone": company.billing_timezone,
                },
                "contact": statements_0007._contact_text(contact) if contact else "",
            }
        )


class Migration(migrations.Migration):
    dependencies = [("invoicing", "0007_statement_parties_at_issue")]

    operations = [
        migrations.AddField(
            model_name="payment",
            name="parties",
            field=models.JSONField(default=dict, verbose_name="parties at issue"),
        ),
        migrations.RunPython(record_parties, migrations.RunPython.noop, elidable=False),
    ]
