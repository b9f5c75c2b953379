"""The PDF of an issued statement or credit note, kept as first rendered (``KeptPdf``). On
PostgreSQL the database keeps it final too, with the trigger function of ``0002``: UPDATE
and DELETE are refused."""

import django.db.models.deletion
from django.db import migrations, models

CREATE = r"""
CREATE TRIGGER invoicing_keptpdf_final
    BEFORE UPDATE OR DELETE ON invoicing_keptpdf
    FOR EACH ROW EXECUTE FUNCTION invoicing_document_final();
"""

DROP = r"""
DROP TRIGGER IF EXISTS invoicing_keptpdf_final ON invoicing_keptpdf;
"""


def _on_postgresql(sql):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql, params=None)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("invoicing", "0012_block_emails"),
    ]

    operations = [
        migrations.CreateModel(
            name="KeptPdf",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("content", models.BinaryField(verbose_name="PDF")),
                ("rendered_at", models.DateTimeField(verbose_name="rendered at")),
                (
                    "credit_note",
                    models.OneToOneField(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="invoicing.creditnote",
                    ),
                ),
                (
                    "statement",
                    models.OneToOneField(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="invoicing.statement",
                    ),
                ),
            ],
            options={
                "verbose_name": "kept PDF",
                "verbose_name_plural": "kept PDFs",
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(("credit_note__isnull", True), ("statement__isnull", False)),
                            models.Q(("credit_note__isnull", False), ("statement__isnull", True)),
                            _connector="OR",
                        ),
                        name="kept_pdf_of_one_document",
                    )
                ],
            },
        ),
        migrations.RunPython(_on_postgresql(CREATE), _on_postgresql(DROP), elidable=False),
    ]
