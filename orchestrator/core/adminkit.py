"""Small helpers the apps' admin modules share: read-only admins and readable HTML tables."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString


class ReadOnlyAdminMixin:
    """For ledgers and records written only by the platform: view, never add, change or delete."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


def admin_link(obj: Any, label: str | None = None) -> SafeString | str:
    """A link to ``obj``'s admin change page (empty string for None)."""
    if obj is None:
        return ""
    meta = obj._meta
    url = reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, label if label is not None else str(obj))


def html_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> SafeString:
    """A compact table; cells are escaped unless they are already safe HTML."""
    head = format_html_join("", "<th>{}</th>", ((h,) for h in headers))
    body = format_html_join(
        "",
        "<tr>{}</tr>",
        ((format_html_join("", "<td>{}</td>", ((cell,) for cell in row)),) for row in rows),
    )
    if not body:
        return format_html("<em>{}</em>", "none")
    return format_html(
        '<table class="orchestrator-table"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>',
        head,
        body,
    )


def pretty_json(value: Any) -> SafeString:
    """JSON for people: indented, in a <pre>, non-ASCII (Japanese) left readable."""
    if value in (None, {}, []):
        return format_html("<em>{}</em>", "empty")
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
    return format_html('<pre style="margin:0;white-space:pre-wrap">{}</pre>', text)


def preformatted(text: str) -> SafeString:
    """Text (a message body, HTML source) shown as typed, escaped, wrapped."""
    return format_html('<pre style="margin:0;white-space:pre-wrap">{}</pre>', text)


def details_text(details: dict[str, Any] | None) -> str:
    """``key: value`` pairs on one line, for the details column of a decision trail."""
    if not details:
        return ""
    parts = []
    for key, value in details.items():
        shown = value if isinstance(value, str | int | float) else json.dumps(value)
        parts.append(f"{key}: {shown}")
    return "; ".join(parts)
