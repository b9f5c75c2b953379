"""The machine API: report usage, authorise spend, read an account (``/api/v1/``).

Authenticated by ``Authorization: Bearer <key>``; keys are created by staff and stored as
a SHA-256 hash. Views only translate JSON to the services and back.
"""

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404
from django.utils import timezone
from djmoney.money import Money
from ninja import Field, Router, Schema, Status
from ninja.errors import AuthenticationError
from ninja.security import HttpBearer
from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator

from accounts.models import Company

from .authorization import ApiKeyRefused, usage_authorize
from .models import ApiKey, api_key_hash
from .money import quantize_amount
from .periods import FIRST_YEAR, LAST_YEAR, utc_within_years
from .selectors import company_available, company_balance
from .services.usage import UsageEvent, usage_ingest


@dataclass(frozen=True, slots=True)
class PresentedKey:
    """An API key presented with the request and not checked yet: the view checks it."""

    key_hash: str


class ApiKeyAuth(HttpBearer):
    """The active API key presented as ``Authorization: Bearer <key>``, else a 401.

    ``ApiKeyAuth(deferred_for=Schema)`` leaves the check to the view, which makes it in its
    own read (authorize: one SQL statement in all) and is handed a ``PresentedKey``. Only
    for a body valid for ``Schema``, though: django-ninja refuses any other before the view
    runs, so its key is checked here, and a bad key stays a 401 ahead of the body's 400.
    """

    def __init__(self, *, deferred_for: type[Schema] | None = None):
        super().__init__()
        self.deferred_for = deferred_for

    def authenticate(self, request, token: str) -> ApiKey | PresentedKey | None:
        key_hash = api_key_hash(token)
        if self.deferred_for is not None and _valid_body(request, self.deferred_for):
            return PresentedKey(key_hash)
        key = ApiKey.objects.filter(key_hash=key_hash, revoked_at=None).first()
        if key is None or self.deferred_for is None:
            return key
        return PresentedKey(key_hash)


def _valid_body(request, schema: type[Schema]) -> bool:
    """Whether django-ninja will accept the JSON body for ``schema``, read as it reads it."""
    try:
        schema.model_validate(json.loads(request.body))
    except Exception:  # as django-ninja: whatever fails to parse is a 400
        return False
    return True


router = Router(auth=ApiKeyAuth(), tags=["billing"])


def _no_nul(value: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL; such a value is malformed input, not a server error.
    if value is not None and "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _plausible_instant(value: datetime) -> datetime:
    # Also keeps every later comparison and the database away from the calendar's ends.
    if utc_within_years(value) is None:
        raise ValueError(f"must be between {FIRST_YEAR} and {LAST_YEAR}")
    return value


def _iso_text(value):
    # pydantic would take a JSON number as Unix time; the contract asks for ISO 8601 text.
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 date and time with an offset, as text")
    return value


Instant = Annotated[AwareDatetime, BeforeValidator(_iso_text), AfterValidator(_plausible_instant)]
Text = Annotated[str, AfterValidator(_no_nul)]
OptionalText = Annotated[str | None, AfterValidator(_no_nul)]


class MoneyOut(Schema):
    amount: str = Field(description='Decimal string, e.g. "120" (JPY) or "1.25" (USD)')
    currency: str


class ErrorOut(Schema):
    code: str
    message: str


# The events of a usage call are plain pydantic models, not ninja ``Schema``s: a Schema
# wraps each object it validates to read ORM attributes, ~5 % of a thousand-event call.
class EventIn(BaseModel):
    id: Text = Field(
        min_length=1, max_length=64, description="Unique per API key: retries are harmless"
    )
    account: Text = Field(min_length=1, max_length=64, description="The company's account code")
    subaccount: OptionalText = Field(None, max_length=64)
    service: Text = Field(
        max_length=16,
        description="voice, sms, fax, api, data or disk; another value is rejected per event",
    )
    destination: OptionalText = Field(
        None, max_length=32, description="E.164 number (voice, sms, fax) or ISO 3166 alpha-2 (data)"
    )
    quantity: Decimal = Field(
        max_digits=24,
        decimal_places=6,
        le=Decimal(10) ** 15,
        description=(
            "voice: seconds (a fraction is billed by the increments); sms, fax, api: a whole "
            "count; data, disk: whole bytes"
        ),
    )
    occurred_at: Instant


class UsageIn(BaseModel):
    events: list[EventIn] = Field(min_length=1, max_length=1000)


class UsageResultOut(Schema):
    id: str
    status: Literal["charged", "duplicate", "rejected"]
    charge: MoneyOut | None
    bundle_quantity: int | float
    balance: MoneyOut | None
    error: ErrorOut | None


class UsageOut(Schema):
    results: list[UsageResultOut]


class AuthorizeIn(Schema):
    account: Text = Field(min_length=1, max_length=64)
    subaccount: OptionalText = Field(None, max_length=64)
    service: Text = Field(max_length=16)
    destination: OptionalText = Field(None, max_length=32)


class AuthorizeOut(Schema):
    allowed: bool
    max_quantity: int | float | None = Field(
        description="What the company can still afford; null = unlimited"
    )
    reason: str | None


class AccountOut(Schema):
    account: str
    name: str
    mode: Literal["prepaid", "postpaid"]
    status: Literal["active", "blocked"]
    blocked_reason: str | None
    balance: MoneyOut
    available: MoneyOut | None = Field(description="null = unlimited (postpaid without a limit)")
    credit_limit: MoneyOut | None
    currency: str


class NotFoundOut(Schema):
    detail: str


def money_out(value: Money | None) -> dict | None:
    if value is None:
        return None
    return _amount_out(value.amount, str(value.currency))


def _amount_out(amount: Decimal | None, currency: str | None) -> dict | None:
    if amount is None:
        return None
    return {"amount": str(quantize_amount(amount, currency)), "currency": currency}


def _number(value: Decimal | None) -> float | int | None:
    """Quantities (not money) as JSON numbers: integers stay integers."""
    if value is None:
        return None
    return int(value) if value == value.to_integral_value() else float(value)


@router.post("/usage", response=UsageOut, summary="Report chargeable usage events")
def report_usage(request, body: UsageIn):
    """Rate and charge 1 to 1000 events, once each: one result per event, in order."""
    events = [
        UsageEvent(
            id=event.id,
            account=event.account,
            subaccount=event.subaccount,
            service=event.service,
            destination=event.destination,
            quantity=event.quantity,
            occurred_at=event.occurred_at,
        )
        for event in body.events
    ]
    outcomes = usage_ingest(api_key=request.auth, events=events)
    # Written out here rather than validated again against UsageOut (which documents it):
    # a thousand results through the schema cost more than rating them.
    return HttpResponse(
        json.dumps({"results": [_usage_result(outcome) for outcome in outcomes]}),
        content_type="application/json",
    )


def _usage_result(outcome) -> dict:
    return {
        "id": outcome.id,
        "status": outcome.status,
        "charge": _amount_out(outcome.charge_amount, outcome.currency),
        "bundle_quantity": _number(outcome.bundle_quantity),
        "balance": _amount_out(outcome.balance_amount, outcome.currency),
        "error": (
            {"code": outcome.error_code, "message": outcome.error_message}
            if outcome.error_code
            else None
        ),
    }


@router.post(
    "/authorize",
    response=AuthorizeOut,
    auth=ApiKeyAuth(deferred_for=AuthorizeIn),
    summary="May the company start this usage now?",
)
def authorize(request, body: AuthorizeIn):
    # One SQL statement, the key's check included (ApiKeyAuth(deferred_for=...)). The answer
    # is written out here rather than validated again against AuthorizeOut (which documents
    # it): the platform asks before every call.
    try:
        decision = usage_authorize(
            account=body.account,
            subaccount=body.subaccount,
            service=body.service,
            destination=body.destination,
            now=timezone.now(),
            api_key_hash=request.auth.key_hash,
        )
    except ApiKeyRefused:
        raise AuthenticationError from None
    return HttpResponse(
        json.dumps(
            {
                "allowed": decision.allowed,
                "max_quantity": _number(decision.max_quantity),
                "reason": decision.reason,
            }
        ),
        content_type="application/json; charset=utf-8",
    )


@router.get(
    "/accounts/{account}",
    response={200: AccountOut, 404: NotFoundOut},
    summary="An account's state",
)
def account_detail(request, account: str):
    if "\x00" in account:  # cannot name any account (and PostgreSQL refuses NUL)
        raise Http404
    company = get_object_or_404(Company, account_code=account)
    return Status(
        200,
        {
            "account": company.account_code,
            "name": company.name,
            "mode": company.mode,
            "status": company.status,
            "blocked_reason": company.blocked_reason or None,
            "balance": money_out(company_balance(company)),
            "available": money_out(company_available(company, timezone.now())),
            "credit_limit": money_out(company.credit_limit),
            "currency": company.currency,
        },
    )
