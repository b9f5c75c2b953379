"""Credit notes settle open invoices as payments do (an allocation now comes from a payment or
from a credit note), and a postpaid company's credit note carries its own tax, posted with it
(``invoicing.credit_notes``).

Credit notes issued before this are left unallocated on purpose: the invoices issued since
have already counted them (they lowered the next invoice), and allocating them now would
count them twice.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0011_usage_records_by_company_and_receipt'),
        ('invoicing', '0009_payment_reversed'),
    ]

    operations = [
        migrations.AlterModelOptions(
            name='paymentallocation',
            options={'ordering': ['payment', 'credit_note', 'id'], 'verbose_name': 'allocation', 'verbose_name_plural': 'allocations'},
        ),
        migrations.AddField(
            model_name='creditnote',
            name='tax_transaction',
            field=models.OneToOneField(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='credit_note_tax', to='billing.ledgertransaction', verbose_name='tax transaction'),
        ),
        migrations.AddField(
            model_name='paymentallocation',
            name='credit_note',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='allocations', to='invoicing.creditnote', verbose_name='credit note'),
        ),
        migrations.AlterField(
            model_name='paymentallocation',
            name='payment',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='allocations', to='invoicing.payment'),
        ),
        migrations.AddConstraint(
            model_name='paymentallocation',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('credit_note__isnull', True), ('payment__isnull', False)), models.Q(('credit_note__isnull', False), ('payment__isnull', True)), _connector='OR'), name='allocation_from_a_payment_or_a_credit_note'),
        ),
        migrations.AddConstraint(
            model_name='paymentallocation',
            constraint=models.UniqueConstraint(fields=('credit_note', 'statement'), name='credit_note_allocation_once_per_invoice'),
        ),
    ]
