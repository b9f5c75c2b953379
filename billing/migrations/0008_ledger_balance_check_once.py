"""The deferred balance check of migration 0002, once per ledger transaction instead of
once per row.

0002 checked a transaction's postings (at least two, summing to zero in each currency) at
COMMIT once for the transaction row and once more for each of its postings: four or five
identical checks for a transaction of three or four postings, the largest part of the
database's work per usage event (bench/usage_api.py). Now:

- the transaction row's check only requires that it has postings at all (a transaction
  without any has no posting to be checked by);
- each posting still checks its own currency against its account's, and the first of a
  transaction's postings to be checked checks the whole transaction, then notes its id in
  a setting of this database transaction (``billing.balanced_transaction``); the next
  postings of the same transaction find the note and skip the repeat;
- any statement that inserts postings clears the note before its first row (a
  statement-level trigger), so a posting added after a check (after ``SET CONSTRAINTS ALL
  IMMEDIATE``, or with the checks immediate) is checked again with the rest. Deferred
  checks run in the order the rows were written, so a transaction's postings are checked
  one after another.

The rules and their messages are those of 0002.
"""

import importlib

from django.db import migrations

CHECK_ONCE = r"""
CREATE OR REPLACE FUNCTION billing_check_transaction_balanced() RETURNS trigger AS $$
DECLARE
    tx_id bigint;
    n integer;
    unbalanced record;
BEGIN
    IF TG_TABLE_NAME = 'billing_ledgertransaction' THEN
        IF NOT EXISTS (SELECT 1 FROM billing_ledgerposting WHERE transaction_id = NEW.id) THEN
            RAISE EXCEPTION 'ledger transaction % has % posting(s); at least two are required', NEW.id, 0
                USING ERRCODE = 'check_violation';
        END IF;
        RETURN NULL;  -- its postings check the rest
    END IF;
    tx_id := NEW.transaction_id;
    IF NEW.amount_currency <> (SELECT currency FROM billing_ledgeraccount WHERE id = NEW.account_id) THEN
        RAISE EXCEPTION 'ledger posting % is not in the currency of its account', NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    IF current_setting('billing.balanced_transaction', true) = tx_id::text THEN
        RETURN NULL;  -- checked whole since the last posting was written
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
    PERFORM set_config('billing.balanced_transaction', tx_id::text, true);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION billing_forget_balanced_transaction() RETURNS trigger AS $$
BEGIN
    PERFORM set_config('billing.balanced_transaction', '', true);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER billing_ledgerposting_written
    BEFORE INSERT ON billing_ledgerposting
    FOR EACH STATEMENT EXECUTE FUNCTION billing_forget_balanced_transaction();
"""

# Reversed: 0002's function, as it was.
_rules = importlib.import_module("billing.migrations.0002_ledger_database_rules")
CHECK_EACH_ROW = (
    r"""
DROP TRIGGER IF EXISTS billing_ledgerposting_written ON billing_ledgerposting;
DROP FUNCTION IF EXISTS billing_forget_balanced_transaction();
"""
    + _rules.CHECK_FUNCTION
)
_on_postgresql = _rules._on_postgresql


class Migration(migrations.Migration):
    dependencies = [("billing", "0007_usage_unknown_account_index")]

    operations = [
        migrations.RunPython(
            _on_postgresql(CHECK_ONCE), _on_postgresql(CHECK_EACH_ROW), elidable=False
        ),
    ]
