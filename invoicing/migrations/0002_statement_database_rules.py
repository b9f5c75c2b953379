"""PostgreSQL keeps issued documents final by itself, not only the Python models:

- statements: UPDATE is refused unless only ``payment_status`` changes (payments are
  allocated later); DELETE is refused;
- statement lines and credit notes: UPDATE and DELETE are refused.

SQLite (the embedded demo default) has no such triggers here; the models' ``save`` and
``delete`` and the read-only admin stand alone there.
"""

from django.db import migrations

CREATE = r"""
CREATE OR REPLACE FUNCTION invoicing_document_final() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND TG_TABLE_NAME = 'invoicing_statement'
       AND (to_jsonb(NEW) - 'payment_status') = (to_jsonb(OLD) - 'payment_status') THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION '% is final once issued: correct it with a credit note or an adjustment on a later statement', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER invoicing_statement_final
    BEFORE UPDATE OR DELETE ON invoicing_statement
    FOR EACH ROW EXECUTE FUNCTION invoicing_document_final();

CREATE TRIGGER invoicing_statementline_final
    BEFORE UPDATE OR DELETE ON invoicing_statementline
    FOR EACH ROW EXECUTE FUNCTION invoicing_document_final();

CREATE TRIGGER invoicing_creditnote_final
    BEFORE UPDATE OR DELETE ON invoicing_creditnote
    FOR EACH ROW EXECUTE FUNCTION invoicing_document_final();
"""

DROP = r"""
DROP TRIGGER IF EXISTS invoicing_creditnote_final ON invoicing_creditnote;
DROP TRIGGER IF EXISTS invoicing_statementline_final ON invoicing_statementline;
DROP TRIGGER IF EXISTS invoicing_statement_final ON invoicing_statement;
DROP FUNCTION IF EXISTS invoicing_document_final();
"""


def _on_postgresql(sql):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql, params=None)  # no placeholders: keep RAISE % as is

    return run


class Migration(migrations.Migration):
    dependencies = [("invoicing", "0001_initial")]

    operations = [
        migrations.RunPython(_on_postgresql(CREATE), _on_postgresql(DROP), elidable=False),
    ]
