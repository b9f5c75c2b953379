"""Payments record the parties their receipts show (``Payment.parties``).

Payments recorded before this migration are given the parties as they are when it runs, the
way ``0007`` gave them to statements (whose helpers it uses).
"""

import importlib

from django.db import migrations, models

statements_0007 = importlib.import_module("invoicing.migrations.0007_statement_parties_at_issue")


def record_parties(apps, schema_editor):
    statements_0007.fill_parties(apps, "Payment")


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
