"""Stretches a subaccount was deactivated before being activated again
(``SubaccountInactivity``), so that a per-seat fee charged late counts the seats of its own
period start. Stretches that ended before this migration are not known; none is invented.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0003_company_tariff'),
    ]

    operations = [
        migrations.CreateModel(
            name='SubaccountInactivity',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('started_at', models.DateTimeField(verbose_name='deactivated at')),
                ('ended_at', models.DateTimeField(verbose_name='activated again at')),
                ('subaccount', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='inactivities', to='accounts.subaccount')),
            ],
            options={
                'verbose_name': 'subaccount inactivity',
                'verbose_name_plural': 'subaccount inactivities',
                'ordering': ['subaccount', 'started_at'],
                'constraints': [models.CheckConstraint(condition=models.Q(('ended_at__gte', models.F('started_at'))), name='subaccount_inactivity_ends_after_start')],
            },
        ),
    ]
