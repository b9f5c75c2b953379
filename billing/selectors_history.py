"""What each line of a company's credit history says, in the reader's language and the
company's billing time zone.

The ledger keeps one description per transaction, written in English when it was posted
(its audit record: it never changes). The portal writes the line again from what the
transaction points at, where it knows the words: a recurring fee from its charge, usage
from its metadata, an expiry from its lot, a payment (or its reversal) from its receipt,
a credit note by its number, tax from its label.
Anything else (a reason staff typed, a voucher's description) is shown as it was written.
A page of lines costs at most four more queries (one per kind that needs one), whatever
its length.
"""

import re
from collections.abc import Sequence
from datetime import datetime

from django.db.models import Q
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from djmoney.money import Money

from accounts.models import Company

from .models import CreditLot, LedgerTransaction, RecurringCharge
from .selectors_usage import service_label
from .services.recurring import DESCRIPTIONS, period_label

Kind = LedgerTransaction.Kind
# The ledger's own English wordings that are read back here (see ``billing.services``).
USAGE_SERVICES = re.compile(r"events \(([^)]*)\)")
TAX_LABEL = re.compile(r"^Tax ([0-9.]+)% on (.+)$")


def history_descriptions(
    transactions: Sequence[LedgerTransaction], company: Company
) -> dict[int, str]:
    """By transaction id, the line to show; transactions left out keep their description."""
    found: dict[int, str] = {}
    by_kind: dict[str, list[LedgerTransaction]] = {}
    for transaction in transactions:
        by_kind.setdefault(transaction.kind, []).append(transaction)
    fees = by_kind.get(Kind.RECURRING_FEE, []) + by_kind.get(Kind.ONE_TIME_FEE, [])
    found.update(_fees(fees, company))
    found.update(_expiries(by_kind.get(Kind.EXPIRY, []), company))
    found.update(_payments(by_kind.get(Kind.PAYMENT, []) + by_kind.get(Kind.REVERSAL, [])))
    found.update(_credit_notes(by_kind.get(Kind.CREDIT_NOTE, [])))
    for transaction in by_kind.get(Kind.USAGE, []):
        found[transaction.pk] = _usage(transaction, company)
    for transaction in by_kind.get(Kind.ADJUSTMENT, []):
        tax = _tax(transaction)
        if tax:
            found[transaction.pk] = tax
    return {pk: text for pk, text in found.items() if text}


def _local(at: str | datetime, company: Company) -> str:
    instant = datetime.fromisoformat(at) if isinstance(at, str) else at
    return f"{instant.astimezone(company.tzinfo):%Y-%m-%d %H:%M}"


def _fees(transactions: list[LedgerTransaction], company: Company) -> dict[int, str]:
    wording = recurring_fee_wording({transaction.pk: company for transaction in transactions})
    return {pk: _(pattern) % values for pk, (pattern, values) in wording.items()}


def recurring_fee_wording(companies: dict[int, Company]) -> dict[int, tuple[str, dict]]:
    """For each recurring or one-time fee transaction (``companies``: its company, by the
    transaction id), the English pattern of its description and the values to fill it
    with, read from its charge (one query): the caller translates the pattern into the
    reader's language (``billing.services.recurring.DESCRIPTIONS``)."""
    if not companies:
        return {}
    charges = RecurringCharge.objects.filter(transaction_id__in=list(companies)).values_list(
        "transaction_id",
        "item",
        "period_start",
        "period_end",
        "quantity",
        "subscription__plan__name",
        "phone_number__number",
        "seat_fee__price_per_seat",
        "seat_fee__price_per_seat_currency",
        "service_fee__name",
    )
    found = {}
    for transaction_id, item, start, end, seats, plan, number, price, currency, fee in charges:
        values = {
            "plan": plan,
            "number": number,
            "name": fee,
            "period": period_label(start, end, companies[transaction_id]),
        }
        if item == RecurringCharge.Item.SEATS:
            values.update(count=int(seats), price=Money(price, currency))
        found[transaction_id] = (DESCRIPTIONS[item], values)
    return found


def _expiries(transactions: list[LedgerTransaction], company: Company) -> dict[int, str]:
    if not transactions:
        return {}
    lot_ids = [transaction.cause_id for transaction in transactions]
    lots = {lot.pk: lot for lot in CreditLot.objects.filter(pk__in=lot_ids)}
    found = {}
    for transaction in transactions:
        lot = lots.get(transaction.cause_id)
        if lot is None:
            continue
        found[transaction.pk] = _(
            "Expired unused: %(source)s credit granted %(granted)s, expired %(expired)s"
        ) % {
            "source": lot.get_source_display(),
            "granted": f"{lot.granted_at.astimezone(company.tzinfo):%Y-%m-%d}",
            "expired": f"{lot.expires_at.astimezone(company.tzinfo):%Y-%m-%d}",
        }
    return found


def _payments(transactions: list[LedgerTransaction]) -> dict[int, str]:
    """Payments and their reversals, by receipt number."""
    if not transactions:
        return {}
    # invoicing builds on billing: it knows its payments and how to name them.
    from invoicing.selectors import payment_descriptions

    return payment_descriptions(transaction.pk for transaction in transactions)


def _credit_notes(transactions: list[LedgerTransaction]) -> dict[int, str]:
    """A credit note's two transactions: its net credit and the tax in it."""
    if not transactions:
        return {}
    from invoicing.models import CreditNote  # invoicing builds on billing

    ids = [transaction.pk for transaction in transactions]
    found = {}
    for net_id, tax_id, number, reason in CreditNote.objects.filter(
        Q(transaction_id__in=ids) | Q(tax_transaction_id__in=ids)
    ).values_list("transaction_id", "tax_transaction_id", "number", "reason"):
        found[net_id] = _("Credit note %(number)s: %(reason)s") % {
            "number": number,
            "reason": reason,
        }
        if tax_id is not None:
            found[tax_id] = _("Tax in credit note %(number)s") % {"number": number}
    return found


def _usage(transaction: LedgerTransaction, company: Company) -> str:
    metadata = transaction.metadata or {}
    if not {"events", "occurred_from", "occurred_until"} <= metadata.keys():
        return ""
    count = int(metadata["events"])
    parts = USAGE_SERVICES.search(transaction.description)
    services = []
    for part in parts.group(1).split(", ") if parts else []:
        service, _space, number = part.rpartition(" ")
        services.append(f"{service_label(service)} {number}")
    values = {
        "count": count,
        "services": ", ".join(services),
        "start": _local(metadata["occurred_from"], company),
        "end": _local(metadata["occurred_until"], company),
    }
    if services:
        return (
            ngettext(
                "Usage: %(count)s event (%(services)s), %(start)s – %(end)s",
                "Usage: %(count)s events (%(services)s), %(start)s – %(end)s",
                count,
            )
            % values
        )
    return (
        ngettext(
            "Usage: %(count)s event, %(start)s – %(end)s",
            "Usage: %(count)s events, %(start)s – %(end)s",
            count,
        )
        % values
    )


def _tax(transaction: LedgerTransaction) -> str:
    """A statement's tax, or the tax a switch to prepaid posted."""
    metadata = transaction.metadata or {}
    label = TAX_LABEL.match(transaction.description)
    if label is None:
        return ""
    values = {"rate": label.group(1), "taxable": label.group(2).split(" of charges")[0]}
    if metadata.get("mode_switch_tax"):
        return (
            _("Tax %(rate)s%% on %(taxable)s of charges not yet invoiced, at the switch to prepaid")
            % values
        )
    if "statement_tax" in metadata:
        return _("Tax %(rate)s%% on %(taxable)s") % values
    return ""
