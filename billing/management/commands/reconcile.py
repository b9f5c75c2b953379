from django.core.management.base import BaseCommand, CommandError

from billing.reconcile import reconcile


class Command(BaseCommand):
    help = (
        "Check every money invariant: balanced transactions, balances equal to their postings, "
        "credit lots equal to theirs, prepaid balances held in lots and never negative, "
        "blocked status matching the active blocks, issued statements equal to their lines "
        "and the ledger, usage records equal to their transactions. Exits 1 naming each "
        "account at fault."
    )

    def handle(self, *args, **options):
        report = reconcile()
        for problem in report.problems:
            self.stderr.write(f"MISMATCH {problem}")
        summary = (
            f"{report.transactions} transactions, {report.accounts} accounts, "
            f"{report.lots} credit lots, {report.companies} companies, "
            f"{report.usage_records} usage records"
        )
        if not report.ok:
            raise CommandError(f"{len(report.problems)} problem(s) found in {summary}.")
        self.stdout.write(f"OK: every invariant holds for {summary}.")
