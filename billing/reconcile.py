"""The money invariants, checked against the database by ``manage.py reconcile``.

Each check is one aggregate query over the whole ledger; a problem names the account.
"""

from dataclasses import dataclass
from decimal import Decimal

from django.db import connection
from django.db.models import (
    Count,
    DecimalField,
    Exists,
    F,
    Min,
    OuterRef,
    Q,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import Company, CompanyBlock

from .models import (
    ApiKey,
    BundleCounter,
    CreditLot,
    LedgerAccount,
    LedgerPosting,
    LedgerTransaction,
    UsageRecord,
)

ZERO = Decimal(0)
AMOUNT = DecimalField(max_digits=19, decimal_places=4)
# Amounts have at most four decimal places, so two amounts differ by at least 0.0001 when
# they differ at all. Comparing with half of that is exact on PostgreSQL (numeric) and
# immune to SQLite summing decimals as binary floating point.
HALF_UNIT = Decimal("0.00005")


def _differs(left, right) -> Q:
    """``left`` and ``right`` (field names or expressions) are not the same amount."""
    return Q(**{f"{left}__gt": F(right) + HALF_UNIT}) | Q(**{f"{left}__lt": F(right) - HALF_UNIT})


def _amount(value) -> Decimal:
    return Decimal(value).quantize(Decimal("0.0001"))


@dataclass(frozen=True)
class Problem:
    account: str
    message: str

    def __str__(self) -> str:
        return f"{self.account}: {self.message}"


@dataclass(frozen=True)
class ReconcileReport:
    problems: list[Problem]
    transactions: int
    accounts: int
    lots: int
    companies: int
    usage_records: int

    @property
    def ok(self) -> bool:
        return not self.problems


def _sum_subquery(grouped, field: str = "amount"):
    """The sum of ``field`` over ``grouped`` (a correlated queryset already grouped by one
    value), zero when there are no rows."""
    return Coalesce(
        Subquery(grouped.annotate(total=Sum(field)).values("total"), output_field=AMOUNT),
        Value(ZERO),
    )


def reconcile(now=None) -> ReconcileReport:
    now = now or timezone.now()
    problems: list[Problem] = []

    # 1. Every transaction has two or more postings that sum to zero in each currency.
    for row in (
        LedgerPosting.objects.values("transaction_id", "amount_currency")
        .annotate(total=Sum("amount"))
        .filter(Q(total__gt=HALF_UNIT) | Q(total__lt=-HALF_UNIT))
    ):
        tx = LedgerTransaction.objects.select_related("company").get(pk=row["transaction_id"])
        problems.append(
            Problem(
                _company_label(tx.company),
                f"transaction #{tx.pk} does not balance: {_amount(row['total'])} "
                f"{row['amount_currency']}",
            )
        )
    for tx in (
        LedgerTransaction.objects.annotate(n=Count("postings"))
        .filter(n__lt=2)
        .select_related("company")
    ):
        problems.append(
            Problem(_company_label(tx.company), f"transaction #{tx.pk} has {tx.n} posting(s)")
        )
    for posting in LedgerPosting.objects.exclude(
        amount_currency=F("account__currency")
    ).select_related("account"):
        problems.append(
            Problem(str(posting.account), f"posting #{posting.pk} is in {posting.amount_currency}")
        )

    # 2. Each customer balance equals the sum of its postings.
    posted = LedgerPosting.objects.filter(account=OuterRef("pk")).values("account")
    for account in (
        LedgerAccount.objects.filter(kind=LedgerAccount.Kind.CUSTOMER)
        .annotate(posted=_sum_subquery(posted))
        .filter(_differs("balance", "posted"))
        .select_related("company")
    ):
        problems.append(
            Problem(
                _company_label(account.company),
                f"balance {_amount(account.balance.amount)} but its postings sum to "
                f"{_amount(account.posted)}",
            )
        )

    # 3. Each lot's remaining equals its postings, and lies between zero and its amount.
    lot_posted = LedgerPosting.objects.filter(lot=OuterRef("pk")).values("lot")
    for lot in (
        CreditLot.objects.annotate(posted=_sum_subquery(lot_posted))
        .filter(_differs("remaining", "posted") | Q(remaining__lt=0) | Q(remaining__gt=F("amount")))
        .select_related("company")
    ):
        problems.append(
            Problem(
                _company_label(lot.company),
                f"credit lot #{lot.pk}: remaining {_amount(lot.remaining.amount)} of "
                f"{_amount(lot.amount.amount)}, its postings sum to {_amount(lot.posted)}",
            )
        )

    # 3b. Each lot's amount is what its grant put into it (the amount is what the customer
    #     is shown as granted; ``remaining`` alone could be right with it wrong).
    granted = LedgerPosting.objects.filter(
        lot=OuterRef("pk"), transaction=OuterRef("grant_transaction")
    ).values("lot")
    for lot in (
        CreditLot.objects.annotate(granted=_sum_subquery(granted))
        .filter(_differs("amount", "granted"))
        .select_related("company")
    ):
        problems.append(
            Problem(
                _company_label(lot.company),
                f"credit lot #{lot.pk}: amount {_amount(lot.amount.amount)} but its grant "
                f"(transaction #{lot.grant_transaction_id}) put {_amount(lot.granted)} into it",
            )
        )

    # 4. Prepaid: the balance is held in lots only, is never negative, and what is available
    #    is exactly the credit in lots not yet expired.
    lots_total = CreditLot.objects.filter(company=OuterRef("company")).values("company")
    for account in (
        LedgerAccount.objects.filter(
            kind=LedgerAccount.Kind.CUSTOMER, company__mode=Company.Mode.PREPAID
        )
        .annotate(in_lots=_sum_subquery(lots_total, "remaining"))
        .filter(Q(balance__lt=0) | _differs("balance", "in_lots"))
        .select_related("company")
    ):
        problems.append(
            Problem(
                _company_label(account.company),
                f"prepaid balance {_amount(account.balance.amount)} but its credit lots hold "
                f"{_amount(account.in_lots)}"
                + (" (negative)" if account.balance.amount < 0 else ""),
            )
        )
    # (What is available to a prepaid company is, by definition, its lots unexpired at that
    #  instant, so with the check above it equals the balance less the expired remainders.)
    # No lot was spent after it expired: charges only take from lots unexpired at `now`.
    for posting in (
        LedgerPosting.objects.filter(
            lot__isnull=False, amount__lt=0, transaction__posted_at__gte=F("lot__expires_at")
        )
        .exclude(
            transaction__kind__in=[LedgerTransaction.Kind.EXPIRY, LedgerTransaction.Kind.REVERSAL]
        )
        .select_related("lot__company")
    ):
        problems.append(
            Problem(
                _company_label(posting.lot.company),
                f"credit lot #{posting.lot_id} was spent by transaction #{posting.transaction_id} "
                "after it expired",
            )
        )

    # 5. A company is blocked exactly while it has an active block.
    active = CompanyBlock.objects.filter(company=OuterRef("pk"), lifted_at=None)
    for company in Company.objects.annotate(has_block=Subquery(active.values("pk")[:1])).filter(
        Q(status=Company.Status.BLOCKED, has_block=None)
        | Q(status=Company.Status.ACTIVE, has_block__isnull=False)
    ):
        problems.append(
            Problem(
                _company_label(company),
                f"status is {company.status} but it has "
                f"{'no' if company.has_block is None else 'an'} active block",
            )
        )

    # 6. Issued statements: totals are their lines, closing balances are the ledger's.
    from invoicing.reconcile import statement_problems

    problems.extend(Problem(account, message) for account, message in statement_problems())

    # 7. Usage records agree with the ledger.
    problems.extend(_usage_record_problems())

    return ReconcileReport(
        problems=problems,
        transactions=LedgerTransaction.objects.count(),
        accounts=LedgerAccount.objects.count(),
        lots=CreditLot.objects.count(),
        companies=Company.objects.count(),
        usage_records=UsageRecord.objects.count(),
    )


# What a usage record points at with no foreign key (migration 0010), and what that is called.
UNCHECKED_REFERENCES = (
    ("api_key", ApiKey, "API key"),
    ("bundle_counter", BundleCounter, "bundle counter"),
    ("transaction", LedgerTransaction, "ledger transaction"),
)


# The customer's postings are debits (negative): with the records' charges they net to zero.
# ``p`` is ``selectors.with_customer_amount`` grouped once for all transactions (that one is a
# subquery per transaction, and this reads every usage transaction).
TRANSACTIONS_UNLIKE_THEIR_RECORDS = """
SELECT r.transaction_id, c.account_code, r.charged, r.shortfall, p.taken, t.shortfall
FROM (
    SELECT transaction_id, SUM(amount) AS charged, COALESCE(SUM(shortfall), 0) AS shortfall
    FROM billing_usagerecord
    WHERE transaction_id IS NOT NULL
    GROUP BY transaction_id
) r
JOIN billing_ledgertransaction t ON t.id = r.transaction_id
LEFT JOIN accounts_company c ON c.id = t.company_id
LEFT JOIN (
    SELECT posting.transaction_id, SUM(posting.amount) AS taken
    FROM billing_ledgerposting posting
    JOIN billing_ledgeraccount account ON account.id = posting.account_id
    WHERE account.kind = %s
    GROUP BY posting.transaction_id
) p ON p.transaction_id = r.transaction_id
WHERE ABS(COALESCE(r.charged, 0) + COALESCE(p.taken, 0)) > CAST(%s AS NUMERIC)
   OR ABS(r.shortfall - COALESCE(t.shortfall, 0)) > CAST(%s AS NUMERIC)
ORDER BY r.transaction_id
"""


def _usage_record_problems() -> list[Problem]:
    """Every usage record points at rows that exist; a record that moved money links to a
    transaction of its own company; and each transaction's records add up to what it took
    from the customer's account and to its shortfall. One problem per company and kind,
    naming the first record."""
    problems: list[Problem] = []

    def per_company(records, message: str) -> None:
        for row in (
            records.order_by()
            .values("company__account_code")
            .annotate(count=Count("id"), first=Min("id"))
            .order_by("company__account_code")
        ):
            code = row["company__account_code"]
            problems.append(
                Problem(
                    f"company {code}" if code else "no company",
                    f"{row['count']} usage record(s) {message} (the first #{row['first']})",
                )
            )

    for field, model, name in UNCHECKED_REFERENCES:
        per_company(
            UsageRecord.objects.filter(**{f"{field}__isnull": False}).exclude(
                Exists(model.objects.filter(pk=OuterRef(f"{field}_id")))
            ),
            f"point at a missing {name}",
        )
    per_company(
        UsageRecord.objects.filter(transaction__isnull=False).exclude(
            transaction__company_id=F("company_id")
        ),
        "link to another company's transaction",
    )
    per_company(
        UsageRecord.objects.filter(transaction__isnull=True).filter(
            Q(amount__gt=0) | Q(shortfall__gt=0)
        ),
        "charged money without a transaction",
    )

    # Each transaction's records against its postings: both sides grouped once and joined
    # (nothing indexes records by transaction, so a lookup per transaction would scan them).
    with connection.cursor() as cursor:
        cursor.execute(
            TRANSACTIONS_UNLIKE_THEIR_RECORDS, [LedgerAccount.Kind.CUSTOMER, HALF_UNIT, HALF_UNIT]
        )
        for transaction_id, code, charged, recorded_shortfall, taken, shortfall in cursor:
            problems.append(
                Problem(
                    _code_label(code),
                    f"transaction #{transaction_id} took {_amount(-(taken or 0))} with a "
                    f"shortfall of {_amount(shortfall or 0)}, but its usage records charged "
                    f"{_amount(charged or 0)} with a shortfall of {_amount(recorded_shortfall)}",
                )
            )
    return problems


def _company_label(company: Company | None) -> str:
    return _code_label(company.account_code if company else None)


def _code_label(account_code: str | None) -> str:
    return f"company {account_code}" if account_code else "system"
