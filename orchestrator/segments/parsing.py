"""SQL fragments that read customer-supplied text safely: dates, numbers, time zones.

Customer data is whatever an integration sent, so every cast is guarded by a regular
expression *and* ``pg_input_is_valid`` (PostgreSQL 16+): ``2024-02-30`` or ``soon``
yields NULL, never a SQL error that would stop the sweep for every other customer.
"""

from __future__ import annotations

# ISO 8601 as integrations send it: a date, a date-time with or without seconds and
# fractions, with or without an offset. PostgreSQL would also accept "today", "epoch"
# or "May 1" - we do not want those, hence the regular expressions before the cast.
DATE_RE = r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$"
_TIME = r"[T ]([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,6})?)?"
LOCAL_DATETIME_RE = rf"^\d{{4}}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01]){_TIME}$"
ZONED_DATETIME_RE = (
    rf"^\d{{4}}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01]){_TIME}(Z|[+-]([01]\d|2[0-3])(:?[0-5]\d)?)$"
)
# Numbers the way Python's float() reads the usual cases (no "inf", "nan" or "1_000").
NUMBER_RE = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"


def instant(text_sql: str, zone_sql: str) -> str:
    """``text_sql`` (an SQL text expression) as a timestamptz, or NULL when it is not one.

    A bare date is midnight and a date-time without an offset is wall time, both in
    ``zone_sql`` (which must be a valid zone name, see ``ZONES_CTE``).
    """
    t = text_sql
    return (
        f"(CASE WHEN {t} ~ '{DATE_RE}' AND pg_input_is_valid({t}, 'date') "
        f"THEN ({t})::date::timestamp AT TIME ZONE {zone_sql} "
        f"WHEN {t} ~ '{LOCAL_DATETIME_RE}' AND pg_input_is_valid({t}, 'timestamp') "
        f"THEN ({t})::timestamp AT TIME ZONE {zone_sql} "
        f"WHEN {t} ~ '{ZONED_DATETIME_RE}' AND pg_input_is_valid({t}, 'timestamptz') "
        f"THEN ({t})::timestamptz END)"
    )


def json_text(value_sql: str) -> str:
    """A jsonb string's text, NULL for any other JSON type."""
    return f"(CASE WHEN jsonb_typeof({value_sql}) = 'string' THEN {value_sql} #>> '{{}}' END)"


#: The zone names PostgreSQL knows, read once per statement; join customers to it and
#: fall back to UTC, so a bad ``timezone`` value cannot make AT TIME ZONE raise.
ZONES_CTE = "zones AS MATERIALIZED (SELECT name FROM pg_timezone_names)"


def customer_zone(join_alias: str = "z") -> str:
    return f"COALESCE({join_alias}.name, 'UTC')"


def iso_utc(ts_sql: str) -> str:
    """A timestamptz as ``2024-05-01T10:00:00Z`` regardless of the session's zone."""
    return f"to_char(({ts_sql}) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
