"""PostgreSQL enforces the ledger's rules itself, not only the Python service:

- a deferred constraint trigger checks at commit that every transaction touched has at
  least two postings summing to zero in each currency, each in its account's currency;
- ledger transactions and postings are append-only (UPDATE and DELETE raise).

SQLite (the embedded demo default) has no deferred triggers; there the service's own
checks and ``manage.py reconcile`` stand alone.
"""

from django.db import migrations

# The balance check alone: migration 0008 restores it when it is reversed.
CHECK_FUNCTION = r"""
CREATE OR REPLACE FUNCTION billing_check_transaction_balanced() RETURNS trigger AS $$
DECLARE
    tx_id bigint;
    n integer;
    unbalanced record;
BEGIN
    IF TG_TABLE_NAME = 'billing_ledgertransaction' THEN
        tx_id := NEW.id;
    ELSE
        tx_id := NEW.transaction_id;
        IF NEW.amount_currency <> (SELECT currency FROM billing_ledgeraccount WHERE id = NEW.account_id) THEN
            RAISE EXCEPTION 'ledger posting % is not in the currency of its account', NEW.id
                USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    SELECT count(*) INTO n FROM billing_ledgerposting WHERE transaction_id = tx_id;
    IF n < 2 THEN
        RAISE EXCEPTION 'ledger transaction % has % posting(s); at least two are required', tx_id, n
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT amount_currency, sum(amount) AS total INTO unbalanced
        FROM billing_ledgerposting WHERE transaction_id = tx_id
        GROUP BY amount_currency HAVING sum(amount) <> 0 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger transaction % does not balance: its postings sum to % %',
            tx_id, unbalanced.total, unbalanced.amount_currency
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
"""

CREATE = CHECK_FUNCTION + r"""
CREATE CONSTRAINT TRIGGER billing_ledgerposting_balanced
    AFTER INSERT ON billing_ledgerposting
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION billing_check_transaction_balanced();

CREATE CONSTRAINT TRIGGER billing_ledgertransaction_balanced
    AFTER INSERT ON billing_ledgertransaction
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION billing_check_transaction_balanced();

CREATE OR REPLACE FUNCTION billing_ledger_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: correct a mistake with a reversing transaction', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER billing_ledgertransaction_append_only
    BEFORE UPDATE OR DELETE ON billing_ledgertransaction
    FOR EACH ROW EXECUTE FUNCTION billing_ledger_append_only();

CREATE TRIGGER billing_ledgerposting_append_only
    BEFORE UPDATE OR DELETE ON billing_ledgerposting
    FOR EACH ROW EXECUTE FUNCTION billing_ledger_append_only();
"""

DROP = r"""
DROP TRIGGER IF EXISTS billing_ledgerposting_append_only ON billing_ledgerposting;
DROP TRIGGER IF EXISTS billing_ledgertransaction_append_only ON billing_ledgertransaction;
DROP FUNCTION IF EXISTS billing_ledger_append_only();
DROP TRIGGER IF EXISTS billing_ledgertransaction_balanced ON billing_ledgertransaction;
DROP TRIGGER IF EXISTS billing_ledgerposting_balanced ON billing_ledgerposting;
DROP FUNCTION IF EXISTS billing_check_transaction_balanced();
"""


def _on_postgresql(sql):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql, params=None)  # no placeholders: keep RAISE %s as is

    return run


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]

    operations = [
        migrations.RunPython(_on_postgresql(CREATE), _on_postgresql(DROP), elidable=False),
    ]
