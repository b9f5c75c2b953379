"""The statement invariants, checked by ``manage.py reconcile`` (``billing.reconcile``).

Each check is one aggregate query over all issued statements:

- a statement's closing balance is its balance forward plus the sum of its lines, and its
  totals are the sums of their groups' lines;
- its closing balance equals the ledger: minus the company's customer postings of the
  transactions it and earlier statements covered (``effective_at`` before the period end,
  id up to its last covered id);
- each itemised line (a base fee, an adjustment, a credit, a payment, tax) equals its ledger
  transaction's effect on the company's balance.
"""

from decimal import Decimal

from django.db.models import DecimalField, F, OuterRef, Q, Subquery, Sum, Value
from django.db.models.functions import Coalesce

from billing.models import LedgerAccount, LedgerPosting

from .models import Statement, StatementLine

ZERO = Decimal(0)
AMOUNT = DecimalField(max_digits=19, decimal_places=4)
HALF_UNIT = Decimal("0.00005")


def _sum(queryset, field="amount"):
    return Coalesce(
        Subquery(queryset.annotate(total=Sum(field)).values("total"), output_field=AMOUNT),
        Value(ZERO),
    )


def _differs(left, right) -> Q:
    return Q(**{f"{left}__gt": right + HALF_UNIT}) | Q(**{f"{left}__lt": right - HALF_UNIT})


def statement_problems() -> list[tuple[str, str]]:
    """(account label, message) for every statement that breaks an invariant."""
    problems: list[tuple[str, str]] = []
    lines = StatementLine.objects.filter(statement=OuterRef("pk")).values("statement")

    def of_group(*groups):
        return lines.filter(group__in=groups)

    ledger = LedgerPosting.objects.filter(
        account__kind=LedgerAccount.Kind.CUSTOMER,
        account__company=OuterRef("company"),
        transaction__effective_at__lt=OuterRef("period_end"),
        transaction_id__lte=OuterRef("last_transaction_id"),
    ).values("account")
    G = StatementLine.Group
    statements = Statement.objects.annotate(
        lines_total=_sum(lines),
        charges=_sum(of_group(G.BASE_FEE, G.USAGE)),
        tax_lines=_sum(of_group(G.TAX)),
        ledger_balance=_sum(ledger),
    ).select_related("company")
    checks = [
        (
            _differs("closing_balance", F("balance_forward") + F("lines_total")),
            "closing balance {s.closing_balance.amount} is not the balance forward plus its "
            "lines ({total})",
            lambda s: s.balance_forward.amount + s.lines_total,
        ),
        (
            _differs("closing_balance", -F("ledger_balance")),
            "closing balance {s.closing_balance.amount} but the ledger says {total} at the "
            "period end",
            lambda s: -s.ledger_balance,
        ),
        (
            _differs("new_charges", F("charges")) | _differs("tax", F("tax_lines")),
            "totals (new charges {s.new_charges.amount}, tax {s.tax.amount}) are not the sums "
            "of their lines ({total})",
            lambda s: (s.charges, s.tax_lines),
        ),
    ]
    for condition, message, total in checks:
        for statement in statements.filter(condition):
            problems.append(
                (
                    f"company {statement.company.account_code}",
                    f"statement {statement.number}: "
                    + message.format(s=statement, total=total(statement)),
                )
            )
    net = (
        LedgerPosting.objects.filter(
            transaction=OuterRef("transaction"), account__kind=LedgerAccount.Kind.CUSTOMER
        )
        .values("transaction")
        .annotate(total=Sum("amount"))
        .values("total")
    )
    for line in (
        StatementLine.objects.filter(transaction__isnull=False)
        .annotate(ledger_net=Coalesce(Subquery(net, output_field=AMOUNT), Value(ZERO)))
        .filter(_differs("amount", -F("ledger_net")))
        .select_related("statement__company")
    ):
        problems.append(
            (
                f"company {line.statement.company.account_code}",
                f"statement {line.statement.number}: line “{line.description}” is "
                f"{line.amount.amount} but transaction #{line.transaction_id} is "
                f"{-line.ledger_net}",
            )
        )
    return problems
