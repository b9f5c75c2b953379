from django.core.management.base import BaseCommand, CommandError

from billing.models import Tariff
from billing.services.tariffs import tariff_export


class Command(BaseCommand):
    help = (
        "Write the rates of tariff NAME to standard output as CSV, in the format that "
        "import_tariff and the admin's import read."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="the tariff's name")

    def handle(self, *args, name, **options):
        tariff = Tariff.objects.filter(name=name).first()
        if tariff is None:
            known = ", ".join(Tariff.objects.order_by("name").values_list("name", flat=True)[:20])
            raise CommandError(
                f"No tariff named “{name}”." + (f" Tariffs: {known}." if known else "")
            )
        self.stdout.write(tariff_export(tariff=tariff), ending="")
