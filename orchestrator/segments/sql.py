"""Segments in SQL: attribute and event conditions compiled to one boolean expression.

``segment_sql(conditions)`` gives a WHERE fragment over ``audience_customer c`` with the
same meaning as ``orchestrator.segments.conditions`` has in Python, so a sweep selects in one
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
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from orchestrator.segments import conditions
from orchestrator.segments.parsing import DATE_RE, LOCAL_DATETIME_RE, NUMBER_RE, ZONED_DATETIME_RE

#: The characters ``str.strip()`` removes that NFKC keeps, as an SQL string constant.
WHITESPACE = "E' \\t\\n\\u000b\\f\\r\\u001c\\u001d\\u001e\\u001f\\u0085\\u1680\\u2028\\u2029'"
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


def _value(name: str, column: str = "c.attributes") -> Fragment:
    """The key of ``column`` (jsonb; SQL NULL when missing), following dots like ``lookup``."""
    parts = name.split(".")
    if len(parts) == 1:
        return f"({column} -> %s)", [name]
    # A literal key with dots wins; otherwise every step must be an object, as in Python
    # (``#>`` would also index into arrays, which ``lookup`` does not).
    guards = " AND ".join(
        f"jsonb_typeof({column} #> %s::text[]) = 'object'" for _ in range(len(parts) - 1)
    )
    sql = (
        f"(CASE WHEN {column} ? %s THEN {column} -> %s "
        f"WHEN {guards} THEN {column} #> %s::text[] END)"
    )
    return sql, [name, name, *[parts[:i] for i in range(1, len(parts))], parts]


def _nfkc(text: str, params: list[Any]) -> Fragment:
    """NFKC of ``text``, skipped for ASCII (its own NFKC): a byte per character costs a
    length check, where normalizing a million attributes costs half a second."""
    return (
        f"(CASE WHEN octet_length({text}) = length({text}) THEN {text} "
        f"ELSE normalize({text}, NFKC) END)",
        [*params, *params, *params, *params],
    )


class _Left:
    """SQL views of one jsonb value ``v`` (each use repeats it with its parameters)."""

    def __init__(self, value: Fragment) -> None:
        self.v, self.p = value

    def typeof(self, json_type: str) -> Fragment:
        return f"jsonb_typeof({self.v}) = '{json_type}'", [*self.p]

    def text(self) -> Fragment:
        # A plain key: ->> reads the text directly (#>> '{}' on -> would copy it first).
        if self.v.endswith(" -> %s)") and self.v.count("->") == 1 and len(self.p) == 1:
            return self.v.replace(" -> %s)", " ->> %s)"), [*self.p]
        return f"({self.v} #>> '{{}}')", [*self.p]

    def folded(self) -> Fragment:
        # btrim of Python's whitespace left after NFKC (which makes the other spaces,
        # U+00A0, U+2000-U+200A, U+3000..., a plain space): str.strip() exactly, and far
        # cheaper per row than a regular expression.
        text, p = _nfkc(*self.text())
        return f"lower(btrim({text}, {WHITESPACE}))", p

    def numeric_text(self) -> Fragment:
        # Python's float() reads any Unicode digits (full-width "12" too); NFKC makes
        # them ASCII.
        return _nfkc(*self.text())

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


def _attribute(condition: Mapping[str, Any], column: str = "c.attributes") -> Fragment:
    """An attribute (or, with ``column="e.properties"``, an event property) comparison."""
    op = condition["op"]
    right = condition.get("value")
    left = _Left(_value(condition["name"], column))
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


# --- saved segments: the condition tree (``orchestrator.segments.tree``) -----------------

#: Message statuses that mean the provider took the message (it was received).
RECEIVED_STATUSES = ("sent", "delivered", "opened", "clicked", "replied")
#: Journeys keep predicted run-out dates here (``journeys.triggers.replenishment``). It is
#: read by name, not through the model: journeys sit above segments in the layers.
REPLENISHMENT_TABLE = "journeys_replenishmentstate"
#: Customer column holding the address of each channel (``audience.models.ADDRESS_FIELDS``).
ADDRESS_COLUMNS = {"email": "email", "sms": "phone", "whatsapp": "whatsapp", "line": "line_user_id"}


def tree_sql(
    node: Any,
    *,
    now: dt.datetime,
    resolve: Callable[[str], Any],
    senders: Mapping[str, str] | None = None,
    _seen: tuple[str, ...] = (),
) -> Fragment:
    """A condition tree as one SQL boolean over ``audience_customer c``.

    ``resolve(key)`` gives a saved segment's tree; a segment is inlined, so the whole
    audience is one statement. ``senders``: channel -> the number we send from, for
    consent conditions. The tree must be valid (``tree.tree_problems``); a cycle raises
    ValueError here too, as a last guard.
    """
    senders = senders or {}
    if isinstance(node, list):
        node = {"all": node}
    if "all" in node or "any" in node:
        joiner, items = (" AND ", node["all"]) if "all" in node else (" OR ", node["any"])
        parts = [tree_sql(n, now=now, resolve=resolve, senders=senders, _seen=_seen) for n in items]
        if not parts:
            return ("TRUE" if "all" in node else "FALSE"), []
        return "(" + joiner.join(p[0] for p in parts) + ")", [x for p in parts for x in p[1]]
    if "not" in node:
        sql, params = tree_sql(node["not"], now=now, resolve=resolve, senders=senders, _seen=_seen)
        return f"(NOT COALESCE({sql}, FALSE))", params
    kind = node.get("type", "segment" if "segment" in node else None)
    if kind == "segment":
        key = node["segment"]
        if key in _seen:
            raise ValueError(f"segment {key!r} includes itself")
        sql, params = tree_sql(
            resolve(key), now=now, resolve=resolve, senders=senders, _seen=(*_seen, key)
        )
        if node.get("op") == "not_in":
            return f"(NOT COALESCE({sql}, FALSE))", params
        return sql, params
    if kind == "attribute":
        return _attribute(node)
    if kind == "event":
        return _event_history(node, now)
    if kind == "consent":
        sql, params = consent_sql(
            node["topic"], node["channel"], sender=senders.get(node["channel"], "")
        )
        if node.get("op") == "not_subscribed":
            return f"(NOT {sql})", params
        return sql, params
    if kind == "message":
        return _message_history(node, now)
    if kind == "replenishment":
        return _replenishment(node, now)
    raise ValueError(f"unknown condition {kind!r}")


def _since(node: Mapping[str, Any], now: dt.datetime) -> dt.datetime | None:
    if node.get("within_days"):
        return now - dt.timedelta(days=float(node["within_days"]))
    if node.get("within_hours"):
        return now - dt.timedelta(hours=float(node["within_hours"]))
    return None


def _event_history(node: Mapping[str, Any], now: dt.datetime) -> Fragment:
    # ``c.id IN (uncorrelated subquery)``: a semi-join at the top of the statement and a
    # hashed subplan inside OR/NOT, where a correlated EXISTS would probe once per customer.
    sql = "SELECT e.customer_id FROM audience_event e WHERE e.name = %s"
    params: list[Any] = [node["name"]]
    since = _since(node, now)
    if since is not None:
        sql += " AND e.occurred_at >= %s"
        params.append(since)
    for condition in node.get("where") or []:
        test, p = _attribute(condition, "e.properties")
        sql += f" AND {test}"
        params += p
    at_least = int(node.get("at_least") or 1)
    if at_least > 1:
        sql += " GROUP BY e.customer_id HAVING count(*) >= %s"
        params.append(at_least)
    negate = "NOT " if node.get("op") == "not_happened" else ""
    return f"({negate}c.id IN ({sql}))", params


def _message_history(node: Mapping[str, Any], now: dt.datetime) -> Fragment:
    op = node.get("op", "received")
    sql = "SELECT m.customer_id FROM delivery_message m"
    where = ["m.status = ANY(%s)"]
    params: list[Any] = [list(RECEIVED_STATUSES)]
    if node.get("template"):
        sql += " JOIN delivery_messagetemplate t ON t.id = m.template_id"
        where.append("t.key = %s")
        params.append(node["template"])
    if node.get("topic"):
        sql += " JOIN consent_topic tp ON tp.id = m.topic_id"
        where.append("tp.key = %s")
        params.append(node["topic"])
    since = _since(node, now)
    if since is not None:
        where.append("m.sent_at >= %s")
        params.append(since)
    engaged = {"opened": ("opened", "clicked", "replied"), "clicked": ("clicked",)}
    wanted = engaged.get("opened" if op == "not_opened" else op)
    if wanted:
        where.append(
            "EXISTS (SELECT 1 FROM delivery_messageevent h"
            " WHERE h.message_id = m.id AND h.status = ANY(%s))"
        )
        params.append(list(wanted))
    inner = f"{sql} WHERE {' AND '.join(where)}"
    if op == "not_received":
        return f"(NOT c.id IN ({inner}))", params
    if op == "not_opened":
        # Received one (in the window, of that template/topic) and opened none of them.
        received, rp = _message_history({**node, "op": "received"}, now)
        return f"({received} AND NOT c.id IN ({inner}))", [*rp, *params]
    return f"(c.id IN ({inner}))", params


def _replenishment(node: Mapping[str, Any], now: dt.datetime) -> Fragment:
    sql = (
        f"SELECT r.customer_id FROM {REPLENISHMENT_TABLE} r"  # noqa: S608 - a constant
        " WHERE r.predicted_at >= %s AND r.predicted_at < %s"
    )
    params: list[Any] = [now, now + dt.timedelta(days=float(node["within_days"]))]
    if node.get("product"):
        sql += " AND r.product = %s"
        params.append(str(node["product"]))
    return f"(c.id IN ({sql}))", params


def consent_sql(topic: str, channel: str, *, sender: str = "") -> Fragment:
    """Whether a marketing or transactional send of ``topic`` on ``channel`` to ``c`` would
    pass consent (``orchestrator.consent.selectors``'s rules, in SQL): an address, no
    suppression for every sender, a channel the topic allows, and for marketing no
    channel opt-out and a subscription (or the topic's default opt-in)."""
    reach, params = reach_sql(channel, marketing=False, sender=sender)
    sql = f"""({reach} AND EXISTS (
        SELECT 1 FROM consent_topic t WHERE t.key = %s AND %s = ANY(t.channels) AND (
            t.kind = 'transactional' OR (
                NOT EXISTS (SELECT 1 FROM consent_channeloptout o
                            WHERE o.customer_id = c.id AND o.channel = %s)
                AND COALESCE(
                    (SELECT s.status = 'subscribed' FROM consent_subscription s
                     WHERE s.customer_id = c.id AND s.topic_id = t.id AND s.channel = %s),
                    t.default_opt_in)))))"""  # noqa: S608 - fixed fragments
    return sql, [*params, topic, channel, channel, channel]


def reach_sql(channel: str, *, marketing: bool = True, sender: str = "") -> Fragment:
    """Whether ``c`` can be reached on ``channel``: an address and no suppression of it
    that holds for our ``sender`` (``consent.selectors`` rules 1-2, with
    ``consent.senders.sender_applies``), and for marketing no channel-wide opt-out (rule 5).

    Both are uncorrelated subqueries (hashed once per statement): the suppressed
    customers are found from the suppressions through the address-hash index
    (migration 0003), so no member's address is hashed.
    """
    column = ADDRESS_COLUMNS[channel]
    sql = (
        # From each suppression to its customers: a correlated ARRAY(...) per suppression
        # is one index probe each (a join would be planned as hashing every customer's
        # address). The channel is written out, not a parameter: the index is on this
        # expression.
        f"(btrim(c.{column}) <> '' AND NOT c.id IN (SELECT unnest(ARRAY("  # noqa: S608 - names from constants
        f"SELECT h.id FROM audience_customer h WHERE h.{column} <> ''"
        f" AND segments_address_hash('{channel}', h.{column}) = x.address_hash))"
        " FROM consent_suppression x"
        " WHERE x.channel = %s AND (x.sender = '' OR %s = '' OR x.sender = %s))"
    )
    params: list[Any] = [channel, sender, sender]
    if marketing:
        sql += (
            " AND NOT c.id IN (SELECT o.customer_id FROM consent_channeloptout o"
            " WHERE o.channel = %s)"
        )
        params.append(channel)
    return sql + ")", params
