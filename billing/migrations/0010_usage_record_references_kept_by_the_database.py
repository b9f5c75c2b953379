"""Usage records keep their API key, bundle counter and ledger transaction without a foreign
key: each one cost a check per record at COMMIT, while the batch's companies are locked
(measured with ``bench/usage_api.py``: PostgreSQL's CPU per event 62–66 → 52–60 µs, the
wait for COMMIT 32–33 → 22–27 µs).

What the checks protected stays true because the database never deletes those rows:
ledger transactions are append-only (migration 0002), and from here API keys (revoked,
never deleted) and bundle counters refuse DELETE too. ``manage.py reconcile`` proves that
every record points at rows that exist. The company and subaccount keep their keys: staff
can delete a company or subaccount that has no history.

SQLite (the embedded demo default) has no such triggers; there the admin, which offers no
deletion of either, and ``manage.py reconcile`` stand alone.
"""

import importlib

import django.db.models.deletion
from django.db import migrations, models

CREATE = r"""
CREATE OR REPLACE FUNCTION billing_never_deleted() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '% rows are never deleted: usage records point at them', TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER billing_apikey_never_deleted
    BEFORE DELETE ON billing_apikey
    FOR EACH ROW EXECUTE FUNCTION billing_never_deleted();

CREATE TRIGGER billing_bundlecounter_never_deleted
    BEFORE DELETE ON billing_bundlecounter
    FOR EACH ROW EXECUTE FUNCTION billing_never_deleted();
"""

DROP = r"""
DROP TRIGGER IF EXISTS billing_bundlecounter_never_deleted ON billing_bundlecounter;
DROP TRIGGER IF EXISTS billing_apikey_never_deleted ON billing_apikey;
DROP FUNCTION IF EXISTS billing_never_deleted();
"""

# Run on PostgreSQL only, with 0002's helper (as 0008 does): SQLite has no such triggers.
_rules = importlib.import_module("billing.migrations.0002_ledger_database_rules")
_on_postgresql = _rules._on_postgresql


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0009_ledger_transaction_indexes_led_by_composites"),
    ]

    operations = [
        migrations.RunPython(_on_postgresql(CREATE), _on_postgresql(DROP), elidable=False),
        migrations.AlterField(
            model_name="usagerecord",
            name="api_key",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="usage_records",
                to="billing.apikey",
            ),
        ),
        migrations.AlterField(
            model_name="usagerecord",
            name="bundle_counter",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="billing.bundlecounter",
            ),
        ),
        migrations.AlterField(
            model_name="usagerecord",
            name="transaction",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="usage_records",
                to="billing.ledgertransaction",
            ),
        ),
    ]
