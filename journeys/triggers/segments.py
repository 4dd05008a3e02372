"""Segments in SQL: attribute and event conditions compiled to one boolean expression.

``segment_sql(conditions)`` gives a WHERE fragment over ``audience_customer c`` with the
same meaning as ``journeys.conditions`` has in Python, so a sweep selects in one
statement the customers a branch would let through one by one:

- text compares case-insensitively after NFKC folding (full-width digits and letters
  equal their ASCII), numbers and numeric text compare as numbers, ISO date-times as
  instants, and other text in code point order;
- a missing (or JSON null) attribute satisfies only ``ne`` and ``not_exists``;
- nothing in a customer's data can make the statement fail: every cast is guarded.

The right-hand value is known when compiling, so each comparison is specialised to
its type here instead of testing it per row. Known differences from Python, all on
data nobody sends: PostgreSQL's ``lower`` is not Unicode case folding (``ß`` does not
equal ``ss``); ``inf``, ``nan`` and ``1_000`` are text, not numbers; ISO week dates and
hour-only times are text, not instants.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

from journeys import conditions
from journeys.triggers.parsing import DATE_RE, LOCAL_DATETIME_RE, NUMBER_RE, ZONED_DATETIME_RE

#: SQL operator for each ordering op.
ORDER_OPS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}

Fragment = tuple[str, list[Any]]


def segment_sql(
    conditions_: Sequence[Mapping[str, Any]], *, now: dt.datetime | None = None
) -> Fragment:
    """All ``conditions_`` (attribute and event) as one SQL boolean over ``c``.

    ``now`` anchors ``within_hours`` of event conditions (the statement's time if None).
    An empty list matches every customer.
    """
    parts: list[str] = []
    params: list[Any] = []
    for condition in conditions_ or []:
        sql, p = condition_sql(condition, now=now)
        parts.append(sql)
        params += p
    if not parts:
        return "TRUE", []
    return "(" + " AND ".join(parts) + ")", params


def segment_where(segment: Any, *, now: dt.datetime) -> Fragment:
    """A parenthesized WHERE condition on ``audience_customer c`` (TRUE for no segment)."""
    if not segment:
        return "TRUE", []
    sql, params = segment_sql(segment, now=now)
    return f"({sql})", list(params)


def condition_sql(condition: Mapping[str, Any], *, now: dt.datetime | None = None) -> Fragment:
    kind = condition.get("type")
    if kind == "attribute":
        return _attribute(condition)
    if kind == "event":
        return _event(condition, now)
    raise ValueError(f"a segment takes attribute and event conditions, not {kind!r}")


# --- event history ----------------------------------------------------------------------


def _event(condition: Mapping[str, Any], now: dt.datetime | None) -> Fragment:
    sql = "SELECT 1 FROM audience_event e WHERE e.customer_id = c.id AND e.name = %s"
    params: list[Any] = [condition["name"]]
    within = condition.get("within_hours")
    if within:
        if now is None:
            sql += " AND e.occurred_at >= statement_timestamp() - %s * interval '1 hour'"
            params.append(float(within))
        else:
            sql += " AND e.occurred_at >= %s"
            params.append(now - dt.timedelta(hours=float(within)))
    negate = "NOT " if condition["op"] == "not_happened" else ""
    return f"{negate}EXISTS ({sql})", params


# --- attributes ----------------------------------------------------------------------------


def _value(name: str) -> Fragment:
    """The attribute as jsonb (SQL NULL when missing), following dots like ``lookup``."""
    parts = name.split(".")
    if len(parts) == 1:
        return "(c.attributes -> %s)", [name]
    # A literal key with dots wins; otherwise every step must be an object, as in Python
    # (``#>`` would also index into arrays, which ``lookup`` does not).
    guards = " AND ".join(
        "jsonb_typeof(c.attributes #> %s::text[]) = 'object'" for _ in range(len(parts) - 1)
    )
    sql = (
        "(CASE WHEN c.attributes ? %s THEN c.attributes -> %s "
        f"WHEN {guards} THEN c.attributes #> %s::text[] END)"
    )
    return sql, [name, name, *[parts[:i] for i in range(1, len(parts))], parts]


class _Left:
    """SQL views of one jsonb value ``v`` (each use repeats it with its parameters)."""

    def __init__(self, value: Fragment) -> None:
        self.v, self.p = value

    def typeof(self, json_type: str) -> Fragment:
        return f"jsonb_typeof({self.v}) = '{json_type}'", [*self.p]

    def text(self) -> Fragment:
        return f"({self.v} #>> '{{}}')", [*self.p]

    def folded(self) -> Fragment:
        text, p = self.text()
        return f"lower(regexp_replace(normalize({text}, NFKC), '^\\s+|\\s+$', '', 'g'))", p

    def numeric_text(self) -> Fragment:
        # Python's float() reads any Unicode digits (full-width "12" too); NFKC makes
        # them ASCII.
        text, p = self.text()
        return f"normalize({text}, NFKC)", p

    def is_number(self) -> Fragment:
        text, p = self.numeric_text()
        typeof_n, pn = self.typeof("number")
        typeof_s, ps = self.typeof("string")
        return (
            f"(({typeof_n}) OR ({typeof_s} AND {text} ~ '{NUMBER_RE}')) "
            f"AND pg_input_is_valid({text}, 'float8')",
            [*pn, *ps, *p, *p],
        )

    def number(self) -> Fragment:
        text, p = self.numeric_text()
        return f"({text})::float8", p

    def is_instant(self) -> Fragment:
        text, p = self.text()
        typeof_s, ps = self.typeof("string")
        return (
            f"{typeof_s} AND ((({text} ~ '{DATE_RE}' OR {text} ~ '{LOCAL_DATETIME_RE}') "
            f"AND pg_input_is_valid({text}, 'timestamp')) OR ({text} ~ '{ZONED_DATETIME_RE}' "
            f"AND pg_input_is_valid({text}, 'timestamptz')))",
            [*ps, *p, *p, *p, *p, *p],
        )

    def instant(self) -> Fragment:
        # Python reads an ISO date-time without an offset as UTC (conditions._instant).
        text, p = self.text()
        return (
            f"(CASE WHEN ({text}) ~ '{ZONED_DATETIME_RE}' THEN ({text})::timestamptz "
            f"ELSE ({text})::timestamp AT TIME ZONE 'UTC' END)",
            [*p, *p, *p],
        )


def _case(branches: list[tuple[Fragment, Fragment]]) -> Fragment:
    """CASE WHEN cond THEN result ... ELSE FALSE END: first matching branch decides, as
    the order of checks in ``conditions._ordered`` does; a guarded cast is only reached
    when its guard holds."""
    if not branches:
        return "FALSE", []
    sql = "(CASE"
    params: list[Any] = []
    for (cond, cp), (result, rp) in branches:
        sql += f" WHEN {cond} THEN {result}"
        params += cp + rp
    return sql + " ELSE FALSE END)", params


def _equal(left: _Left, right: Any) -> Fragment:
    """``conditions._equal(left, right)`` for a right side known now."""
    if isinstance(right, str):
        branches = [(left.typeof("string"), _eq_text(left, right))]
        number = conditions._number(right)
        if number is not None:
            branches.append((left.typeof("number"), _cmp_number(left, "=", number)))
        return _case(branches)
    if isinstance(right, bool):
        # Python: True == 1 and False == 0, so a JSON number 1 equals true.
        return _case(
            [
                (left.typeof("boolean"), (f"{left.v} = %s::jsonb", [*left.p, json.dumps(right)])),
                (left.typeof("number"), _cmp_number(left, "=", float(right))),
            ]
        )
    if isinstance(right, int | float):
        value = float(right)
        branches = [(left.is_number(), _cmp_number(left, "=", value))]
        if value in (0.0, 1.0):
            same = (f"{left.v} = %s::jsonb", [*left.p, json.dumps(value == 1.0)])
            branches.append((left.typeof("boolean"), same))
        return _case(branches)
    if right is None:
        return "FALSE", []
    # Lists and objects: plain JSON equality (numbers compare by value in jsonb too).
    return f"COALESCE({left.v} = %s::jsonb, FALSE)", [*left.p, json.dumps(right)]


def _eq_text(left: _Left, right: str) -> Fragment:
    folded, p = left.folded()
    return f"{folded} = %s", [*p, conditions._fold(right)]


def _cmp_number(left: _Left, operator: str, value: float) -> Fragment:
    number, p = left.number()
    return f"{number} {operator} %s::float8", [*p, value]


def _ordered(left: _Left, op: str, right: Any) -> Fragment:
    """gt/gte/lt/lte as ``conditions._ordered``: numbers, else instants, else text."""
    operator = ORDER_OPS[op]
    branches = []
    number = conditions._number(right)
    if number is not None:
        branches.append((left.is_number(), _cmp_number(left, operator, number)))
    moment = conditions._instant(right)
    if moment is not None:
        instant, p = left.instant()
        branches.append((left.is_instant(), (f"{instant} {operator} %s", [*p, moment])))
    if isinstance(right, str):
        folded, p = left.folded()
        # Python compares folded text by code point: the "C" collation's order.
        text = (f'{folded} COLLATE "C" {operator} %s', [*p, conditions._fold(right)])
        branches.append((left.typeof("string"), text))
    return _case(branches)


def _contains(left: _Left, right: Any) -> Fragment:
    item = _Left(("i.x", []))
    inner, inner_params = _equal(item, right)
    folded, fp = left.folded()
    return _case(
        [
            (
                left.typeof("array"),
                (
                    f"EXISTS (SELECT 1 FROM jsonb_array_elements({left.v}) AS i(x) "  # noqa: S608
                    f"WHERE {inner})",
                    [*left.p, *inner_params],
                ),
            ),
            (
                left.typeof("string"),
                (f"strpos({folded}, %s) > 0", [*fp, conditions._fold(str(right))]),
            ),
        ]
    )


def _attribute(condition: Mapping[str, Any]) -> Fragment:
    op = condition["op"]
    right = condition.get("value")
    left = _Left(_value(condition["name"]))
    v, p = left.v, left.p
    # Python: present and not in (None, ""); jsonb 'null' is None, '""' is "".
    exists = f"({v} IS NOT NULL AND {v} NOT IN ('null'::jsonb, '\"\"'::jsonb))"
    if op == "exists":
        return exists, [*p, *p]
    if op == "not_exists":
        return f"NOT COALESCE({exists}, FALSE)", [*p, *p]
    if op == "eq":
        test = _equal(left, right)
    elif op == "ne":
        sql, tp = _equal(left, right)
        test = f"NOT {sql}", tp
    elif op == "in":
        tests = [_equal(left, r) for r in (right or [])]
        test = (
            "(" + " OR ".join(t[0] for t in tests) + ")" if tests else "FALSE",
            [x for t in tests for x in t[1]],
        )
    elif op == "contains":
        test = _contains(left, right)
    elif op in ORDER_OPS:
        test = _ordered(left, op, right)
    else:
        raise ValueError(f"unknown attribute comparison {op!r}")
    missing = "TRUE" if op == "ne" else "FALSE"
    sql = (
        f"(CASE WHEN {v} IS NULL OR {v} = 'null'::jsonb THEN {missing} "
        f"ELSE COALESCE({test[0]}, FALSE) END)"
    )
    return sql, [*p, *p, *test[1]]
