import io

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from billing.exceptions import TariffImportError
from billing.models import Tariff
from billing.services.tariffs import HEADER, tariff_create, tariff_import


class Command(BaseCommand):
    help = (
        "Replace the rates of tariff NAME with the rates of FILE.csv (created, in --currency, "
        "if there is no tariff of that name). The CSV's first line is exactly: "
        f"{','.join(HEADER)}. A file with any bad line is refused whole: every bad line is "
        "listed and nothing changes."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="the tariff's name")
        parser.add_argument("file", help="the CSV file of its rates")
        parser.add_argument(
            "--currency",
            choices=settings.CURRENCIES,
            help=f"currency of a new tariff (default {settings.DEFAULT_CURRENCY}); an existing "
            "tariff keeps its own",
        )

    def handle(self, *args, name, file, currency=None, **options):
        name = name.strip()
        if not name:
            raise CommandError("The tariff needs a name.")
        longest = Tariff._meta.get_field("name").max_length
        if len(name) > longest:
            raise CommandError(f"A tariff's name has at most {longest} characters.")
        try:
            with open(file, "rb") as stream:
                content = stream.read()
        except OSError as error:
            raise CommandError(f"Cannot read {file}: {error.strerror}.") from None
        existing = Tariff.objects.filter(name=name).first()
        if existing is not None and currency and currency != existing.currency:
            raise CommandError(
                f"Tariff “{name}” exists in {existing.currency}; --currency {currency} applies "
                "only to a new tariff."
            )
        try:
            # A new tariff is created with its rates or not at all.
            with transaction.atomic():
                tariff = existing or tariff_create(
                    name=name, currency=currency or settings.DEFAULT_CURRENCY
                )
                result = tariff_import(tariff=tariff, file=io.BytesIO(content))
        except TariffImportError as error:
            for line in error.lines():
                self.stderr.write(f"{file}: {line}")
            raise CommandError(f"{file}: {error}") from None
        self.stdout.write(
            f"{'Created' if existing is None else 'Updated'} tariff “{tariff.name}” "
            f"({tariff.currency}): {result.imported} rates imported, {result.replaced} "
            f"replaced, {result.in_force} in force now; version {result.version}."
        )
