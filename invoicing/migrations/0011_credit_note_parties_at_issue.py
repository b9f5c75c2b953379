"""Credit notes record the parties their PDF shows (``CreditNote.parties``).

Credit notes issued before this migration are given the parties as they are when it runs,
the way ``0007`` gave them to statements (whose helpers it uses); the table's trigger
(``0002``), which keeps issued notes final, is held off meanwhile.
"""

import importlib

from django.db import migrations, models

statements_0007 = importlib.import_module("invoicing.migrations.0007_statement_parties_at_issue")


def record_parties(apps, schema_editor):
    on_postgresql = schema_editor.connection.vendor == "postgresql"
    if on_postgresql:
        schema_editor.execute(
            "ALTER TABLE invoicing_creditnote DISABLE TRIGGER invoicing_creditnote_final"
        )
    statements_0007.fill_parties(apps, "CreditNote")
    if on_postgresql:
        schema_editor.execute(
            "ALTER TABLE invoicing_creditnote ENABLE TRIGGER invoicing_creditnote_final"
        )


class Migration(migrations.Migration):
    dependencies = [("invoicing", "0010_credit_notes_settle_invoices")]

    operations = [
        migrations.AddField(
            model_name="creditnote",
            name="parties",
            field=models.JSONField(default=dict, verbose_name="parties at issue"),
        ),
        migrations.RunPython(record_parties, migrations.RunPython.noop, elidable=False),
    ]
