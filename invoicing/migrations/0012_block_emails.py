"""Billing emails also tell a company's billing contacts that its use of the service is
suspended (a block set) or resumed (that block lifted): ``BillingEmail.block``, kinds
``blocked`` and ``unblocked``, one of each per block and recipient.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0004_subaccount_inactivity'),
        ('invoicing', '0011_credit_note_parties_at_issue'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='billingemail',
            name='billing_email_reminder_has_days',
        ),
        migrations.AddField(
            model_name='billingemail',
            name='block',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='emails', to='accounts.companyblock', verbose_name='block'),
        ),
        migrations.AlterField(
            model_name='billingemail',
            name='kind',
            field=models.CharField(choices=[('statement', 'Statement issued'), ('reminder', 'Overdue reminder'), ('blocked', 'Company blocked'), ('unblocked', 'Company unblocked')], max_length=12, verbose_name='kind'),
        ),
        migrations.AlterField(
            model_name='billingemail',
            name='statement',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='emails', to='invoicing.statement', verbose_name='statement'),
        ),
        migrations.AddConstraint(
            model_name='billingemail',
            constraint=models.UniqueConstraint(condition=models.Q(('kind__in', ['blocked', 'unblocked'])), fields=('block', 'recipient', 'kind'), name='billing_email_block_once_per_recipient'),
        ),
        migrations.AddConstraint(
            model_name='billingemail',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('kind', 'reminder'), ('reminder_days__isnull', False)), models.Q(models.Q(('kind', 'reminder'), _negated=True), ('reminder_days__isnull', True)), _connector='OR'), name='billing_email_reminder_has_days'),
        ),
        migrations.AddConstraint(
            model_name='billingemail',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('block__isnull', True), ('kind__in', ['statement', 'reminder']), ('statement__isnull', False)), models.Q(('block__isnull', False), ('kind__in', ['blocked', 'unblocked']), ('statement__isnull', True)), _connector='OR'), name='billing_email_about_a_statement_or_a_block'),
        ),
    ]
