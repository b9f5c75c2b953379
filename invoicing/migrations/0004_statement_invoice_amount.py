"""Each invoice's own amount, which payments are allocated against (``Statement.invoice_amount``).

Statements issued before this migration get their total due as their own amount (what the
payment allocation used until now). Filling the new column is the one UPDATE of issued
statements ever made: on PostgreSQL the finality trigger is switched off for it, inside this
migration's transaction, and on again before it commits.
"""

import djmoney.models.fields
from django.db import migrations
from djmoney.money import Money

CURRENCIES = [
    ("AUD", "AUD"),
    ("EUR", "EUR"),
    ("GBP", "GBP"),
    ("JPY", "JPY"),
    ("SGD", "SGD"),
    ("USD", "USD"),
]


def fill_from_amount_due(apps, schema_editor):
    postgres = schema_editor.connection.vendor == "postgresql"
    if postgres:
        schema_editor.execute(
            "ALTER TABLE invoicing_statement DISABLE TRIGGER invoicing_statement_final"
        )
    schema_editor.execute(
        "UPDATE invoicing_statement SET invoice_amount = amount_due, "
        "invoice_amount_currency = amount_due_currency"
    )
    if postgres:
        schema_editor.execute(
            "ALTER TABLE invoicing_statement ENABLE TRIGGER invoicing_statement_final"
        )


class Migration(migrations.Migration):
    dependencies = [
        ("invoicing", "0003_payment_paymentallocation_payment_payment_company_and_more"),
    ]

    operations = [
        migrations.AddField(
            model_name="statement",
            name="invoice_amount_currency",
            field=djmoney.models.fields.CurrencyField(
                choices=CURRENCIES, default="USD", editable=False, max_length=3
            ),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="statement",
            name="invoice_amount",
            field=djmoney.models.fields.MoneyField(
                decimal_places=4,
                default=Money(0, "USD"),  # replaced below, row by row
                default_currency=None,
                max_digits=19,
                verbose_name="invoice amount",
            ),
            preserve_default=False,
        ),
        migrations.RunPython(fill_from_amount_due, migrations.RunPython.noop, elidable=False),
        # Without a default from now on: every statement is issued with its own amount.
        migrations.AlterField(
            model_name="statement",
            name="invoice_amount",
            field=djmoney.models.fields.MoneyField(
                decimal_places=4, default_currency=None, max_digits=19, verbose_name="invoice amount"
            ),
        ),
        migrations.AlterField(
            model_name="statement",
            name="invoice_amount_currency",
            field=djmoney.models.fields.CurrencyField(
                choices=CURRENCIES, default=None, editable=False, max_length=3
            ),
        ),
    ]
