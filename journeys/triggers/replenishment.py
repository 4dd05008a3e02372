"""Replenishment: remind a customer shortly before they are predicted to run out.

Config (``Journey.trigger``)::

    {"event": "order.completed", "product_property": "sku", "default_cycle_days": 90,
     "product_cycles": {"gel-24": 30}, "min_purchases": 3, "remind_days_before": 10,
     "grace_days": 3}

Per customer and product the predicted re-purchase is the last purchase plus a cycle:
the customer's own median interval between purchases once they have bought it
``min_purchases`` times (the median, so one odd gap - a holiday, a gift - does not move
it much), else the product's cycle from ``product_cycles``, else ``default_cycle_days``.
Purchases less than a day apart count as one (a re-sent event, a split order).
The forecast reads today's predictions straight from the events.

``ReplenishmentState`` keeps that per (customer, product), so the daily sweep is a range
scan on ``predicted_at``. ``refresh`` keeps it current incrementally: it reads purchase
events newer than a ``JourneyCursor`` (by id) and recomputes only the pairs they touch,
from their whole history, in one set-based statement. Event ids are allocated before a
transaction commits, so a slow transaction can commit an id below one already read: the
cursor therefore never passes an event received in the last ``COMMIT_LAG``, and those
are read again next time (recomputing a pair is idempotent). The cursor's name carries
a digest of the prediction settings, so changing them recomputes everyone.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from django import forms
from django.db import connection, transaction
from django.utils import timezone

from journeys.enrollment import enroll_select
from journeys.forecasting import Forecast, Window, apply_entry_rule, spread
from journeys.form_fields import number
from journeys.models import Journey, JourneyCursor
from journeys.problems import Problem, is_int, is_name, positive
from orchestrator.segments.parsing import iso_utc

KIND = "replenishment"
LABEL = "A product is predicted to run out"
#: The beat task whose sweep enrolls this kind (run at once when a journey starts).
SWEEP_TASK = "sweeps.replenishment"
CONTEXT_FROM_EVENT = True
EXAMPLE: dict[str, Any] = {
    "event": "order.completed",
    "product_property": "sku",
    "default_cycle_days": 30,
}
#: Settings a builder form leaves unspelled when they have these values.
DEFAULTS: dict[str, Any] = {"min_purchases": 3, "remind_days_before": 0, "grace_days": 3}
#: Trigger setting -> the builder's form field for it.
FORM_PLACES = {
    "event": "rep_event",
    "product_property": "rep_product_property",
    "default_cycle_days": "rep_default_cycle_days",
    "min_purchases": "rep_min_purchases",
    "remind_days_before": "rep_remind_days_before",
    "product_cycles": "rep_product_cycles",
    "grace_days": "rep_grace_days",
}
FIELDSETS = (
    (
        "Trigger: replenishment",
        (
            ("rep_event", "rep_product_property"),
            "rep_default_cycle_days",
            "rep_product_cycles",
            "rep_min_purchases",
            ("rep_remind_days_before", "rep_grace_days"),
        ),
    ),
)

#: Longest a transaction recording events may take to commit.
COMMIT_LAG = dt.timedelta(minutes=10)
#: Lock namespace for pg_advisory_xact_lock(namespace, journey id): one refresh at a time
#: per journey (two would upsert the same rows in different orders and deadlock).
REFRESH_LOCK = 7_302
#: ReplenishmentState.product holds at most this many characters; longer values skip.
PRODUCT_CHARS = 200
#: Products longer than this appear hashed in the occurrence (at most 200 characters).
OCCURRENCE_PRODUCT_CHARS = 180


def _settings(journey: Journey) -> dict[str, Any]:
    config = journey.trigger or {}
    return {
        "event": config["event"],
        "product_property": config["product_property"],
        "default_cycle_days": float(config["default_cycle_days"]),
        "product_cycles": {
            str(k): float(v) for k, v in (config.get("product_cycles") or {}).items()
        },
        "min_purchases": int(config.get("min_purchases", 3)),
    }


def _cursor_name(settings: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    return f"replenishment:{digest}"


def _summary_sql(
    settings: dict[str, Any], *, changed_between: tuple[int, int] | None = None
) -> tuple[str, list[Any]]:
    """SELECT customer_id, product, purchases, last_purchase_at, median_days, cycle_days,
    basis, predicted_at - for every pair, or only for the pairs with a purchase event
    whose id is in ``changed_between`` (exclusive, inclusive)."""
    prop, event = settings["product_property"], settings["event"]
    product = "(e.properties ->> %s)"
    valid = (
        "jsonb_typeof(e.properties -> %s) IN ('string', 'number') "
        f"AND length({product}) BETWEEN 1 AND {PRODUCT_CHARS}"
    )
    if changed_between is None:
        purchases = f"""
            SELECT e.customer_id, {product} AS product, e.occurred_at
            FROM audience_event e
            WHERE e.name = %s AND {valid}
        """  # noqa: S608 - fixed fragments; values are parameters
        params: list[Any] = [prop, event, prop, prop]
    else:
        # LATERAL: for each touched pair, an index scan of that customer's purchases
        # (customer, name, occurred_at), never a pass over every purchase ever made.
        purchases = f"""
            SELECT p.customer_id, p.product, h.occurred_at
            FROM (
                SELECT DISTINCT e.customer_id, {product} AS product
                FROM audience_event e
                WHERE e.id > %s AND e.id <= %s AND e.name = %s AND {valid}
            ) p
            CROSS JOIN LATERAL (
                SELECT e.occurred_at FROM audience_event e
                WHERE e.customer_id = p.customer_id AND e.name = %s AND {product} = p.product
                OFFSET 0  -- keeps the planner from flattening this into a hash join
            ) h
        """  # noqa: S608 - fixed fragments; values are parameters
        params = [prop, *changed_between, event, prop, prop, event, prop]
    sql = f"""
        WITH purchases AS ({purchases}),
        gaps AS (
            SELECT customer_id, product, occurred_at,
                   (extract(epoch FROM occurred_at - lag(occurred_at) OVER w) / 86400.0)::float8
                       AS gap_days
            FROM purchases
            WINDOW w AS (PARTITION BY customer_id, product ORDER BY occurred_at)
        ),
        summary AS (
            SELECT customer_id, product,
                   count(*) FILTER (WHERE gap_days IS NULL OR gap_days >= 1) AS purchases,
                   max(occurred_at) AS last_purchase_at,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY gap_days)
                       FILTER (WHERE gap_days >= 1) AS median_days
            FROM gaps
            GROUP BY customer_id, product
        )
        SELECT s.customer_id, s.product, s.purchases, s.last_purchase_at, s.median_days,
               k.cycle_days, k.basis,
               s.last_purchase_at + k.cycle_days * interval '1 day' AS predicted_at
        FROM summary s
        CROSS JOIN LATERAL (
            SELECT CASE WHEN s.purchases >= %s AND s.median_days IS NOT NULL
                        THEN s.median_days
                        ELSE COALESCE((%s::jsonb ->> s.product)::float8, %s) END AS cycle_days,
                   CASE WHEN s.purchases >= %s AND s.median_days IS NOT NULL THEN 'own'
                        WHEN %s::jsonb ? s.product THEN 'product'
                        ELSE 'default' END AS basis
        ) k
    """  # noqa: S608 - fixed fragments; values are parameters
    cycles = json.dumps(settings["product_cycles"])
    minimum = settings["min_purchases"]
    params += [minimum, cycles, settings["default_cycle_days"], minimum, cycles]
    return sql, params


def predictions_sql(journey: Journey) -> tuple[str, list[Any]]:
    """A read-only SELECT of (customer_id, product, predicted_at, basis) from the events.

    Computed from the whole purchase history, so it needs no refreshed state (the
    simulation previews a journey before it is active).
    """
    summary, params = _summary_sql(_settings(journey))
    sql = f"SELECT customer_id, product, predicted_at, basis FROM ({summary}) AS predictions"  # noqa: S608
    return sql, params


def refresh(journey: Journey, now: dt.datetime | None = None) -> int:
    """Bring the journey's ReplenishmentState up to date; returns the rows written.

    Idempotent and safe to run concurrently (runs for one journey take turns).
    """
    now = now or timezone.now()
    settings = _settings(journey)
    name = _cursor_name(settings)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [REFRESH_LOCK, journey.id])
        state, _created = JourneyCursor.objects.get_or_create(journey=journey, name=name)
        cursor.execute(
            "SELECT max(id), min(id) FILTER (WHERE received_at > %s) FROM audience_event "
            "WHERE id > %s",
            [now - COMMIT_LAG, state.last_id],
        )
        high, recent = cursor.fetchone()
        if high is None:
            return 0
        if state.last_at is None:
            # First run, or new settings: start over from the whole history.
            cursor.execute(
                "DELETE FROM journeys_replenishmentstate WHERE journey_id = %s", [journey.id]
            )
            summary, params = _summary_sql(settings)
        else:
            summary, params = _summary_sql(settings, changed_between=(state.last_id, high))
        cursor.execute(
            f"""
            INSERT INTO journeys_replenishmentstate AS r
                (journey_id, customer_id, product, purchases, last_purchase_at,
                 median_interval_days, cycle_days, basis, predicted_at)
            SELECT %s, customer_id, product, purchases, last_purchase_at, median_days,
                   cycle_days, basis, predicted_at
            FROM ({summary}) AS x
            ON CONFLICT (journey_id, customer_id, product) DO UPDATE SET
                purchases = EXCLUDED.purchases,
                last_purchase_at = EXCLUDED.last_purchase_at,
                median_interval_days = EXCLUDED.median_interval_days,
                cycle_days = EXCLUDED.cycle_days,
                basis = EXCLUDED.basis,
                predicted_at = EXCLUDED.predicted_at
            WHERE (r.purchases, r.last_purchase_at, r.median_interval_days, r.cycle_days,
                   r.basis, r.predicted_at)
                IS DISTINCT FROM (EXCLUDED.purchases, EXCLUDED.last_purchase_at,
                   EXCLUDED.median_interval_days, EXCLUDED.cycle_days, EXCLUDED.basis,
                   EXCLUDED.predicted_at)
            """,  # noqa: S608 - fixed fragments; values are parameters
            [journey.id, *params],
        )
        written = cursor.rowcount
        state.last_id = max(state.last_id, recent - 1 if recent is not None else high)
        state.last_at = now
        state.save(update_fields=["last_id", "last_at"])
        # Cursors of earlier settings are dead weight.
        JourneyCursor.objects.filter(journey=journey, name__startswith="replenishment:").exclude(
            name=name
        ).delete()
    return written


def due_sql(journey: Journey, *, now: dt.datetime) -> tuple[str, list[Any]]:
    """The SELECT of (customer_id, occurrence, context, due_at) to remind at ``now``."""
    config = journey.trigger or {}
    remind = dt.timedelta(days=int(config.get("remind_days_before", 0)))
    grace = dt.timedelta(days=float(config.get("grace_days", 3)))
    prop = config["product_property"]
    product_key = (
        f"CASE WHEN length(s.product) > {OCCURRENCE_PRODUCT_CHARS} THEN md5(s.product) "
        "ELSE s.product END"
    )
    # remind_at = predicted_at - remind in (now - grace, now]: a range on predicted_at.
    sql = f"""
        SELECT s.customer_id,
               {product_key} || ':' || to_char(s.predicted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')
                   AS occurrence,
               jsonb_build_object(
                   %s::text, s.product,
                   'last_purchase_at', {iso_utc("s.last_purchase_at")},
                   'predicted_at', {iso_utc("s.predicted_at")},
                   'cycle_days', round(s.cycle_days::numeric, 1),
                   'basis', s.basis) AS context,
               s.predicted_at - %s::interval AS due_at
        FROM journeys_replenishmentstate s
        WHERE s.journey_id = %s AND s.predicted_at > %s AND s.predicted_at <= %s
    """  # noqa: S608 - fixed fragments; values are parameters
    return sql, [prop, remind, journey.id, now - grace + remind, now + remind]


def sweep(journey: Journey, now: dt.datetime | None = None) -> int:
    """Refresh, then enroll whoever is due a reminder; returns how many were enrolled."""
    now = now or timezone.now()
    refresh(journey, now=now)
    select, params = due_sql(journey, now=now)
    return len(enroll_select(journey, select, params, now=now))


# --- definition, builder and forecast ------------------------------------------------


def validate(trigger: Mapping[str, Any]) -> list[Problem]:
    p: list[Problem] = []
    if not is_name(trigger.get("event")):
        p.append(Problem("trigger.event", "Name the purchase event, e.g. order.completed."))
    if not is_name(trigger.get("product_property")):
        p.append(Problem("trigger.product_property", "Name the product property, e.g. sku."))
    if not positive(trigger.get("default_cycle_days")):
        p.append(Problem("trigger.default_cycle_days", "Give the product's usual cycle."))
    before = trigger.get("remind_days_before", 0)
    if not is_int(before) or before < 0:
        p.append(Problem("trigger.remind_days_before", "A whole number of days, 0 or more."))
    minimum = trigger.get("min_purchases", 3)
    if not is_int(minimum) or minimum < 2:
        p.append(Problem("trigger.min_purchases", "At least 2 purchases are needed for a median."))
    cycles = trigger.get("product_cycles", {})
    if not isinstance(cycles, Mapping) or not all(positive(v) for v in cycles.values()):
        p.append(Problem("trigger.product_cycles", "Each product's cycle is a day count."))
    grace = trigger.get("grace_days", 3)
    if isinstance(grace, bool) or not isinstance(grace, int | float) or grace < 0:
        p.append(Problem("trigger.grace_days", "A number of days, 0 or more."))
    return p


def form_fields() -> dict[str, forms.Field]:
    return {
        "rep_event": forms.CharField(required=False, label="Purchase event"),
        "rep_product_property": forms.CharField(
            required=False, label="Product property", help_text="e.g. sku"
        ),
        "rep_default_cycle_days": forms.FloatField(
            required=False, min_value=0, label="Usual cycle (days)"
        ),
        "rep_min_purchases": forms.IntegerField(
            required=False,
            min_value=2,
            label="Purchases before using the customer's own cycle",
            help_text="Default 3.",
        ),
        "rep_remind_days_before": forms.IntegerField(
            required=False, min_value=0, label="Remind this many days before"
        ),
        "rep_product_cycles": forms.JSONField(
            required=False,
            label="Usual cycle of particular products (days)",
            help_text='Products that last longer or shorter than usual, e.g. {"gel-24": 30}.',
        ),
        "rep_grace_days": forms.FloatField(
            required=False,
            min_value=0,
            label="Still remind up to this many days late",
            help_text="A reminder missed (the journey paused, say) still goes this long "
            "after its day. Default 3.",
        ),
    }


def form_initial(trigger: Mapping[str, Any]) -> dict[str, Any]:
    return {name: trigger[key] for key, name in FORM_PLACES.items() if key in trigger}


def form_values(cleaned: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "event": cleaned.get("rep_event"),
        "product_property": cleaned.get("rep_product_property"),
        "default_cycle_days": number(cleaned.get("rep_default_cycle_days")),
        "min_purchases": cleaned.get("rep_min_purchases"),
        "remind_days_before": cleaned.get("rep_remind_days_before"),
        "product_cycles": cleaned.get("rep_product_cycles") or None,
        "grace_days": number(cleaned.get("rep_grace_days")),
    }


def forecast(journey: Journey, trigger: Mapping[str, Any], window: Window, sample: int) -> Forecast:
    sql, params = predictions_sql(journey)
    before = dt.timedelta(days=int(trigger.get("remind_days_before", 0)))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT p.customer_id, p.product, p.predicted_at FROM ({sql}) p"  # noqa: S608
            " WHERE p.predicted_at >= %s AND p.predicted_at < %s",
            [*params, window.now + before, window.end + before],
        )
        found = cursor.fetchall()
    product_property = trigger.get("product_property") or "product"
    rows = [
        (customer_id, predicted_at - before, {product_property: product})
        for customer_id, product, predicted_at in found
    ]
    result = spread(apply_entry_rule(journey, rows), window, sample)
    result.notes.append(
        f"Entries are today's re-purchase predictions, {before.days} days before each "
        "predicted date; purchases made from now on would move them."
    )
    return result
