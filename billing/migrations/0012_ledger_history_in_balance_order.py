# A company's credit history is listed in the order its balance changed, which is the order
# of the transactions' ids (taken under the company's lock), not of their posting times
# (read before the lock is waited for): see ``billing.selectors.company_transactions``.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0011_usage_records_by_company_and_receipt"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="ledgertransaction",
            index=models.Index(fields=["company", "id"], name="ledger_tx_company_id"),
        ),
    ]
