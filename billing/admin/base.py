"""Shared machinery of the billing back-office (and of the company page in ``accounts.admin``).

``CappedCountPaginator`` and ``ReadOnlyAdmin`` keep big lists cheap and the books
read-only; ``StaffActionMixin`` turns a staff action into a confirmation page that calls
one service; the small helpers format money, instants and tables for those pages.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import transaction
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from djmoney.money import Money

from accounts.exceptions import BlockingError
from accounts.models import Company

from ..exceptions import BillingError
from ..selectors import company_available, company_balance

# The largest id a bigint primary key holds.
LARGEST_ID = 2**63 - 1


def database_id(value) -> int | None:
    """``value`` (from an address, a form or a search box) as a row id, or None if it cannot
    be one. ASCII digits only: ``str.isdigit`` also accepts "²" and "①", which ``int``
    refuses, and ``int`` accepts other scripts' digits, which nobody types as an id."""
    text = str(value or "").strip()
    if not (text.isascii() and text.isdigit()):
        return None
    number = int(text)
    return number if 0 < number <= LARGEST_ID else None


class CappedCountPaginator(Paginator):
    """Counts at most ``cap`` rows.

    The admin counts the filtered list to draw its pages; on a ledger of millions of rows
    an unfiltered COUNT(*) reads the whole table. Counting stops at the cap instead, the
    page links stop there and the list says "more than"; filters and search find the rest.
    """

    cap = 10_000

    @cached_property
    def _counted(self) -> int:
        # No ordering and only the key: the count must not sort or compute annotations.
        return self.object_list.order_by().values("pk")[: self.cap + 1].count()

    @cached_property
    def count(self) -> int:
        return min(self._counted, self.cap)

    @property
    def capped(self) -> bool:
        return self._counted > self.cap


class ReadOnlyAdmin(admin.ModelAdmin):
    """The books are append-only: shown, never added, changed or deleted here."""

    paginator = CappedCountPaginator
    show_full_result_count = False
    actions = None

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@dataclass(frozen=True)
class ActionDone:
    """What a staff action did: the message for staff, and the admin history entry (None
    when nothing changed, e.g. a double submit that found its first result)."""

    message: str
    log: str | None = None
    level: int = messages.SUCCESS


def money_or_unlimited(value: Money | None) -> str:
    return str(value) if value is not None else gettext("Unlimited (no credit limit)")


def company_summary(company: Company, now: datetime) -> list[tuple[str, str]]:
    """What staff see before confirming an action on ``company``'s money or status."""
    status = company.get_status_display()
    if company.is_blocked:
        status = f"{status}: {company.blocked_reason}"
    rows = [
        (_("Company"), str(company)),
        (_("Mode"), company.get_mode_display()),
        (_("Status"), status),
        (_("Balance"), str(company_balance(company))),
        (_("Available"), money_or_unlimited(company_available(company, now))),
    ]
    if company.mode == Company.Mode.POSTPAID:
        rows.append((_("Credit limit"), money_or_unlimited(company.credit_limit)))
    return rows


class StaffActionMixin:
    """Staff actions as confirmation pages, like Django's ``delete_selected``.

    A GET shows the object, its money and a form that needs a reason; a valid POST calls
    one service. A domain error (``BillingError``, ``BlockingError``) becomes a form error
    and nothing changes; success writes a ``LogEntry`` in the same database transaction
    and redirects to the object's page with a message.
    """

    staff_action_template = "admin/billing/staff_action.html"

    def staff_action_object(self, request, object_id: str, permission: str):
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404(
                gettext("%(name)s with ID “%(key)s” doesn’t exist.")
                % {"name": self.opts.verbose_name, "key": object_id}
            )
        if not (self.has_view_permission(request, obj) and request.user.has_perm(permission)):
            raise PermissionDenied
        return obj

    @staticmethod
    def staff_action_data(request):
        return request.POST if request.method == "POST" else None

    def object_url(self, obj) -> str:
        return reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
            args=[obj.pk],
            current_app=self.admin_site.name,
        )

    def staff_action_failed(self, form, error: Exception) -> None:
        """Show a refused action's reason on its form (a hook for errors with details)."""
        form.add_error(None, str(error))

    def staff_action_response(
        self,
        request,
        *,
        obj,
        form,
        perform: Callable[[dict], ActionDone],
        title: str,
        submit_label: str,
        summary: Sequence[tuple[str, str]],
        effect: str = "",
        can_submit: bool = True,
    ):
        if form.is_bound and can_submit and form.is_valid():
            try:
                with transaction.atomic():
                    done = perform(form.cleaned_data)
                    if done.log:
                        self.log_change(request, obj, done.log)
            except (BillingError, BlockingError) as error:
                self.staff_action_failed(form, error)
            else:
                self.message_user(request, done.message, done.level)
                return HttpResponseRedirect(self.object_url(obj))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": obj,
            "title": title,
            "form": form,
            "summary": summary,
            "effect": effect,
            "submit_label": submit_label,
            "can_submit": can_submit,
            "cancel_url": self.object_url(obj),
        }
        return TemplateResponse(request, self.staff_action_template, context)


def replayed(posted_at: datetime, now: datetime) -> bool:
    """A service called with ``now`` stamps what it creates with ``now``; an older stamp is
    the first result of the same idempotency key coming back (a double submit)."""
    return posted_at != now


def when(value) -> str:
    return date_format(timezone.localtime(value), "SHORT_DATETIME_FORMAT")


def html_table(headers, rows, empty: str, more_url: str | None = None, more_label: str = ""):
    """A small read-only table for the company page (every cell escaped by format_html)."""
    if not rows:
        return empty
    head = format_html_join("", "<th>{}</th>", ((header,) for header in headers))
    body = format_html_join(
        "",
        "<tr>{}</tr>",
        ((format_html_join("", "<td>{}</td>", ((cell,) for cell in row)),) for row in rows),
    )
    table = format_html("<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>", head, body)
    if more_url:
        table = format_html('{}<p><a href="{}">{}</a></p>', table, more_url, more_label)
    return table
