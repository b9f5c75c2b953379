# The ledger transaction's company and cause type each lead a composite index
# (ledger_tx_company_posted, ledger_tx_cause), which serves their lookups and foreign-key
# checks; their single-column indexes only cost every transaction written two more index
# entries. Dropped by name alone: an AlterField would also drop and re-add both foreign
# keys, re-checking every row of the ledger under a lock.

import django.db.models.deletion
from django.db import migrations, models

INDEXES = {
    "billing_ledgertransaction_company_id_7a3a923f": "company_id",
    "billing_ledgertransaction_cause_type_id_5a17925f": "cause_type_id",
}


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0003_company_tariff"),
        ("billing", "0008_ledger_balance_check_once"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="ledgertransaction",
                    name="cause_type",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="contenttypes.contenttype",
                    ),
                ),
                migrations.AlterField(
                    model_name="ledgertransaction",
                    name="company",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="ledger_transactions",
                        to="accounts.company",
                        verbose_name="company",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    sql=f'DROP INDEX IF EXISTS "{name}"',
                    reverse_sql=f'CREATE INDEX "{name}" ON "billing_ledgertransaction" ("{column}")',
                )
                for name, column in INDEXES.items()
            ],
        ),
    ]
