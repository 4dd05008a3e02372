"""Form fields of the journey builder that turn plain inputs into definition JSON.

Shared by the admin forms (``journeys.admin_forms``) and the trigger kinds, which
declare their own builder fields (``journeys.triggers``): durations as an amount and a
unit, typed values, rows of conditions, and ``merge``, which keeps the settings a form
has no field for.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from django import forms
from django.utils.html import format_html, format_html_join

from orchestrator.segments import conditions

UNITS = (("minutes", "minutes"), ("hours", "hours"), ("days", "days"))
UNIT_MINUTES = {"minutes": 1, "hours": 60, "days": 1440}
DIRECTIONS = (("after", "after"), ("before", "before"))
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


# --- small conversions ---------------------------------------------------------------


def split_minutes(minutes: Any) -> tuple[int | None, str]:
    """``2880`` -> ``(2, "days")``: the largest unit that divides evenly, for display."""
    if not isinstance(minutes, int | float) or isinstance(minutes, bool):
        return None, "hours"
    value = abs(int(minutes))
    for unit in ("days", "hours"):
        if value and value % UNIT_MINUTES[unit] == 0:
            return value // UNIT_MINUTES[unit], unit
    return value, "minutes"


def to_minutes(amount: int | None, unit: str) -> int | None:
    return None if amount is None else amount * UNIT_MINUTES.get(unit, 1)


def parse_value(text: str) -> Any:
    """What a marketer types, as JSON would hold it: numbers and true/false are typed."""
    text = text.strip()
    if _NUMBER.match(text):
        return float(text) if "." in text else int(text)
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def show_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(show_value(v) for v in value)
    return "" if value is None else str(value)


def number(value: float | None) -> int | float | None:
    """Whole numbers stay ints, so an untouched form saves the same JSON it loaded."""
    if value is None:
        return None
    return int(value) if float(value).is_integer() else value


def merge(
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any],
    *,
    managed: Sequence[str],
    defaults: Mapping[str, Any],
) -> dict[str, Any]:
    """The form's values over the settings it does not manage.

    A default the old settings did not spell out stays unspelled, so saving an
    unchanged form publishes no new version.
    """
    old = old or {}
    out = {k: v for k, v in old.items() if k not in managed}
    for key, value in new.items():
        if value is None or value == [] or value == "":
            if key in old and old[key] == value:
                out[key] = value  # an explicit empty list stays as it was
            continue
        if key not in old and key in defaults and defaults[key] == value:
            continue
        out[key] = value
    return out


# --- rows of small fields (conditions, exit events) -----------------------------------


class RowsWidget(forms.Widget):
    """A table of rows, each a few selects and text boxes, plus blank rows to fill in.

    Inputs are named ``<name>_<row>_<column>``. Without JavaScript one blank row is
    offered each time the page is shown; the builder script adds more on demand.
    """

    def __init__(self, columns: Sequence[tuple[str, str, Sequence | None]], extra: int = 1):
        super().__init__()
        self.columns = columns
        self.extra = extra

    def value_from_datadict(self, data, files, name):
        pattern = re.compile(rf"^{re.escape(name)}_(\d+)_")
        indexes = sorted({int(m.group(1)) for key in data if (m := pattern.match(key))})
        return [
            {col: (data.get(f"{name}_{i}_{col}") or "").strip() for col, _l, _c in self.columns}
            for i in indexes
        ]

    def value_omitted_from_data(self, data, files, name) -> bool:
        return not any(key.startswith(f"{name}_") for key in data)

    def _cell(self, name: str, i: int, col: str, label: str, choices, value: str):
        field = f"{name}_{i}_{col}"
        if choices is None:
            return format_html(
                '<td><input type="text" name="{}" value="{}" aria-label="{}" size="14"></td>',
                field,
                value,
                label,
            )
        options = format_html_join(
            "",
            '<option value="{}"{}>{}</option>',
            ((v, " selected" if str(v) == value else "", text) for v, text in choices),
        )
        return format_html(
            '<td><select name="{}" aria-label="{}">{}</select></td>', field, label, options
        )

    def render(self, name, value, attrs=None, renderer=None):
        rows = [r for r in (value or []) if isinstance(r, Mapping)]
        rows = rows + [{}] * self.extra
        head = format_html_join("", "<th>{}</th>", ((label,) for _c, label, _ch in self.columns))
        body = format_html_join(
            "",
            '<tr class="journey-row">{}</tr>',
            (
                (
                    format_html_join(
                        "",
                        "{}",
                        (
                            (self._cell(name, i, col, label, choices, str(row.get(col, ""))),)
                            for col, label, choices in self.columns
                        ),
                    ),
                )
                for i, row in enumerate(rows)
            ),
        )
        return format_html(
            '<table class="journey-rows" data-name="{}"><thead><tr>{}</tr></thead>'
            '<tbody>{}</tbody></table><button type="button" class="journey-add-row" '
            'data-name="{}" hidden>Add a row</button>',
            name,
            head,
            body,
            name,
        )


class RowsField(forms.Field):
    """A list of objects edited as rows; subclasses convert rows to objects and back."""

    columns: Sequence[tuple[str, str, Sequence | None]] = ()

    def __init__(self, *, extra: int = 1, **kwargs):
        kwargs.setdefault("required", False)
        super().__init__(widget=RowsWidget(self.columns, extra=extra), **kwargs)

    def row_of(self, item: Mapping[str, Any]) -> dict[str, str]:
        raise NotImplementedError  # abstract: each subclass implements it

    def item_of(self, row: Mapping[str, str]) -> dict[str, Any]:
        raise NotImplementedError  # abstract: each subclass implements it

    def prepare_value(self, value):
        if not isinstance(value, list):
            return []
        return [
            self.row_of(item) if isinstance(item, Mapping) and not self._is_row(item) else item
            for item in value
        ]

    def _is_row(self, item: Mapping[str, Any]) -> bool:
        # Bound data comes back as rows of strings keyed by column; stored items do not.
        return set(item) == {c for c, _l, _ch in self.columns}

    def to_python(self, value) -> list[dict[str, Any]]:
        rows = value if isinstance(value, list) else []
        return [self.item_of(r) for r in rows if any(v for v in r.values())]

    def has_changed(self, initial, data) -> bool:
        return (initial or []) != self.to_python(data)


_OP_CHOICES = [("", "—")] + [
    (op, conditions.OP_LABELS[op])
    for op in dict.fromkeys(op for ops in conditions.OPS_BY_TYPE.values() for op in ops)
]
#: What each condition type asks about, in the builder's words (the form and the canvas).
CONDITION_TYPE_LABELS = conditions.TYPE_LABELS
_TYPE_LABELS = {**CONDITION_TYPE_LABELS, "segment": "in saved segment (name: its key)"}
_LIST_OPS = ("in", "not_in")


class ConditionsField(RowsField):
    """Conditions (``orchestrator.segments.conditions``) as rows: type, name, comparison, value."""

    def __init__(self, *, types: Sequence[str] = conditions.CONDITION_TYPES, **kwargs):
        self.types = tuple(types)
        columns: list[tuple[str, str, Sequence | None]] = []
        if len(self.types) > 1:
            columns.append(("type", "type", [("", "—")] + [(t, _TYPE_LABELS[t]) for t in types]))
        columns += [("name", "name", None), ("op", "comparison", _OP_CHOICES)]
        columns.append(("value", "value (a, b for 'is one of')", None))
        if "event" in self.types:
            columns.append(("within_hours", "event within hours", None))
            columns.append(
                ("since_entry", "event since", [("", "any time"), ("yes", "entering the journey")])
            )
        self.columns = columns
        super().__init__(**kwargs)

    def row_of(self, item):
        row = {c: "" for c, _l, _ch in self.columns}
        row.update(
            {
                "type": str(item.get("type", "")),
                "name": str(item.get("segment" if item.get("type") == "segment" else "name", "")),
                "op": str(item.get("op", "")),
                "value": show_value(item.get("value")),
            }
        )
        if "within_hours" in row:
            row["within_hours"] = show_value(item.get("within_hours"))
            row["since_entry"] = "yes" if item.get("since_entry") else ""
        return {k: v for k, v in row.items() if k in {c for c, _l, _ch in self.columns}}

    def item_of(self, row):
        kind = row.get("type") or (self.types[0] if len(self.types) == 1 else "")
        op = row.get("op", "")
        item: dict[str, Any] = {"type": kind}
        if kind == "segment":
            return {**item, "segment": row.get("name", ""), "op": op or "in"}
        if kind not in ("last_message", "reply"):
            item["name"] = row.get("name", "")
        item["op"] = op
        text = row.get("value", "")
        if kind == "event":
            within = row.get("within_hours", "")
            if within:
                parsed = parse_value(within)
                item["within_hours"] = parsed
            if row.get("since_entry"):
                item["since_entry"] = True
        elif op in _LIST_OPS or kind == "last_message":
            if text:
                item["value"] = [parse_value(v) for v in text.split(",") if v.strip()]
        elif op not in ("exists", "not_exists") and text:
            item["value"] = text.strip() if kind == "reply" else parse_value(text)
        return item
