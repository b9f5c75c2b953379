"""The machine API at /api/v1/ (django-ninja): schema at openapi.json, docs at docs.

A malformed body is a 400 listing every field error (django-ninja's default is 422), and
nothing of it is processed.
"""

from django.http import Http404
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from billing.api import router as billing_router

api = NinjaAPI(
    title="Tollgate API",
    version="1",
    description=(
        "Usage reporting and spend authorisation for the operator's platform. "
        "Authenticate with `Authorization: Bearer <key>` (keys are created by staff)."
    ),
    urls_namespace="api",
    openapi_url="/openapi.json",
    docs_url="/docs",
)


def _field(location) -> str:
    """``("body", "body", "events", 0, "quantity")`` → ``events.0.quantity``."""
    parts = [str(part) for part in location]
    while parts and parts[0] == "body":
        parts.pop(0)
    return ".".join(parts) or "body"


@api.exception_handler(ValidationError)
def validation_error(request, exc: ValidationError):
    return api.create_response(
        request,
        {
            "detail": "The request body is not valid; nothing was processed.",
            "errors": [
                {"field": _field(error.get("loc", ())), "message": error.get("msg", "")}
                for error in exc.errors
            ],
        },
        status=400,
    )


@api.exception_handler(HttpError)
def http_error(request, exc: HttpError):
    """django-ninja raises HttpError(400) for a body that is not JSON: answer it in the same
    shape as a validation error; other HTTP errors keep their status and message."""
    body = {"detail": str(exc)}
    if exc.status_code == 400:
        body = {
            "detail": "The request body is not valid JSON; nothing was processed.",
            "errors": [{"field": "body", "message": str(exc)}],
        }
    return api.create_response(request, body, status=exc.status_code)


@api.exception_handler(AuthenticationError)
def authentication_error(request, exc):
    return api.create_response(
        request, {"detail": "A valid API key is required: Authorization: Bearer <key>."}, status=401
    )


@api.exception_handler(Http404)
def not_found(request, exc):
    return api.create_response(request, {"detail": "Not found."}, status=404)


api.add_router("/", billing_router)
