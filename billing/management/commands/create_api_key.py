from django.core.management.base import BaseCommand, CommandError

from billing.models import ApiKey
from billing.services.api_keys import api_key_create

NAME_MAX = ApiKey._meta.get_field("name").max_length


class Command(BaseCommand):
    help = (
        "Create an API key for the usage API and print it once, alone on standard output. "
        "Only its hash is stored: it cannot be shown again."
    )

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True, help="what uses the key")

    def handle(self, *args, name, **options):
        name = name.strip()
        if not name or len(name) > NAME_MAX:
            raise CommandError(f"--name must be 1 to {NAME_MAX} characters.")
        key, raw = api_key_create(name=name)
        # The key alone on stdout (for a script to capture); the rest on stderr.
        self.stdout.write(raw)
        self.stderr.write(
            f"Created API key “{key.name}” ({key.prefix}…). Store it now: only its hash is "
            "kept, so it cannot be shown again."
        )
