import time

from django.core.management.base import BaseCommand, CommandError

from invoicing.fonts import pdf_fonts_build


class Command(BaseCommand):
    help = (
        "Build the Japanese font of the PDFs (a subset of the system's Noto Sans CJK JP) into "
        "VAR_DIR/fonts. Skips a file newer than the system font; 10-20 s per weight otherwise."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--optional",
            action="store_true",
            help="Without the system font, say so and succeed: PDFs then use the full font.",
        )

    def handle(self, *args, **options):
        started = time.monotonic()
        try:
            done = pdf_fonts_build()
        except FileNotFoundError as error:
            if options["optional"]:
                self.stdout.write(f"Skipped: {error} Japanese PDFs use the full system font.")
                return
            raise CommandError(str(error)) from error
        for path, built in done.items():
            size = path.stat().st_size / 1_000_000
            self.stdout.write(f"{'Built' if built else 'Up to date'}: {path} ({size:.1f} MB)")
        if any(done.values()):
            self.stdout.write(f"in {time.monotonic() - started:.0f} s.")
