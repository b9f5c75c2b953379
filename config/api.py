"""The machine API at /api/v1/ (django-ninja): schema at openapi.json, docs at docs."""

from ninja import NinjaAPI

api = NinjaAPI(
    title="Tollgate API",
    version="1",
    description="Usage reporting and spend authorisation for the operator's platform.",
    urls_namespace="api",
    openapi_url="/openapi.json",
    docs_url="/docs",
)
