"""The incremental rollups behind journey analytics and channel health.

Three append-only sources are folded into ``analytics_journeyday`` and
``analytics_channelday`` (see models.py for what each metric means), each read once
in id order by :mod:`orchestrator.core.rollup`:

* ``journeys_enrollment``: journey entries (``enrolled``) by day.
* ``journeys_steprun`` (the step log): step entries, A/B assignments, exits and
  conversions, the latter once for the journey and once for every step the
  converting enrollment had passed.
* ``delivery_messageevent`` (the message history): each message's outcomes, once per
  message and outcome (a second "open" or a double click adds nothing), for channel
  health and, for journey messages, per journey step and A/B arm; delivery latency.
  A hold held by several causes at once (``rule:weekly,quiet_hours``) counts once under
  each cause, and once as ``held`` for its step.

Every statement is set-based: one INSERT ... SELECT ... ON CONFLICT per batch.
"""

from __future__ import annotations

import zoneinfo

from django.conf import settings

from orchestrator.core.rollup import Rollup, rollup_run

#: Rows read per pass; a pass is one transaction.
BATCH = 20_000

#: Upper bounds (seconds) of the delivery latency buckets.
LATENCY_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 21600)

#: Outcomes whose reason code is kept: holds and failures, by why.
REASONED = ("deferred", "suppressed", "failed", "bounced", "undelivered", "expired", "canceled")
#: Outcomes of the fatigue policy and consent, whose code lists every cause (comma-separated).
HOLDS = ("deferred", "suppressed", "expired")

# Step-log outcomes that continue a visit already counted, or are not a visit at all.
_NOT_AN_ENTRY = ("event", "timeout", "converted", "exited")

# A complaint is recorded with the message's status and SendGrid's code.
_OUTCOME = "CASE WHEN {e}.code = 'sendgrid:spamreport' THEN 'complained' ELSE {e}.status END"

# The arms an enrollment took, as (split step key, arm) rows.
_ARMS = (
    "jsonb_each_text(CASE WHEN jsonb_typeof(en.context -> '_arms') = 'object'"
    " THEN en.context -> '_arms' ELSE '{}'::jsonb END)"
)

_JOURNEY_UPSERT = """
    INSERT INTO analytics_journeyday (journey_id, day, step, metric, reason, arm, count)
    SELECT journey_id, day, step, metric, reason, arm, count(*) FROM {facts}
    GROUP BY journey_id, day, step, metric, reason, arm
    ON CONFLICT (journey_id, day, step, metric, reason, arm)
    DO UPDATE SET count = analytics_journeyday.count + EXCLUDED.count
"""

ENROLLMENTS_SQL = f"""
    WITH batch AS (
        SELECT id, journey_id, (entered_at AT TIME ZONE %(tz)s)::date AS day
        FROM journeys_enrollment
        WHERE id > %(last)s AND id <= %(horizon)s
        ORDER BY id
        LIMIT %(batch)s
    ), facts AS (
        SELECT journey_id, day, '' AS step, 'enrolled' AS metric, '' AS reason, '' AS arm
        FROM batch
    ), counted AS ({_JOURNEY_UPSERT.format(facts="facts")})
    SELECT count(*), max(id) FROM batch
"""  # noqa: S608 - built only from this module's constants

STEPRUNS_SQL = f"""
    WITH batch AS (
        SELECT id, journey_id, enrollment_id, step, kind, outcome, detail,
               (at AT TIME ZONE %(tz)s)::date AS day
        FROM journeys_steprun
        WHERE id > %(last)s AND id <= %(horizon)s
        ORDER BY id
        LIMIT %(batch)s
    ), facts AS (
        SELECT journey_id, day, step, 'entered' AS metric, '' AS reason, '' AS arm
        FROM batch WHERE outcome NOT IN {_NOT_AN_ENTRY!r}
        UNION ALL
        SELECT journey_id, day, step, 'arm_entered', '', left(detail ->> 'arm', 50)
        FROM batch WHERE kind = 'split' AND detail ->> 'arm' IS NOT NULL
        UNION ALL
        SELECT journey_id, day, step, 'exited', left(coalesce(detail ->> 'reason', ''), 64), ''
        FROM batch WHERE outcome = 'exited'
        UNION ALL
        SELECT journey_id, day, step, 'exited', 'exit step', '' FROM batch WHERE outcome = 'exit'
        UNION ALL
        SELECT journey_id, day, '', 'converted', '', '' FROM batch WHERE outcome = 'converted'
        UNION ALL
        SELECT b.journey_id, b.day, passed.step, 'converted', '', ''
        FROM batch b
        CROSS JOIN LATERAL (
            SELECT DISTINCT p.step FROM journeys_steprun p
            WHERE p.enrollment_id = b.enrollment_id AND p.id < b.id
              AND p.outcome NOT IN {_NOT_AN_ENTRY!r}
        ) AS passed
        WHERE b.outcome = 'converted'
        UNION ALL
        SELECT b.journey_id, b.day, arms.key, 'arm_converted', '', left(arms.value, 50)
        FROM batch b
        JOIN journeys_enrollment en ON en.id = b.enrollment_id
        CROSS JOIN LATERAL {_ARMS} AS arms
        WHERE b.outcome = 'converted'
    ), counted AS ({_JOURNEY_UPSERT.format(facts="facts")})
    SELECT count(*), max(id) FROM batch
"""  # noqa: S608 - built only from this module's constants

_BUCKET = (
    "CASE "
    + " ".join(f"WHEN latency_s <= {b} THEN '{b}'" for b in LATENCY_BUCKETS)
    + " ELSE 'inf' END"
)

MESSAGE_EVENTS_SQL = f"""
    WITH batch AS (
        SELECT e.id, e.message_id, e.code, e.occurred_at, {_OUTCOME.format(e="e")} AS outcome
        FROM delivery_messageevent e
        WHERE e.id > %(last)s AND e.id <= %(horizon)s
        ORDER BY e.id
        LIMIT %(batch)s
    ), firsts AS (
        SELECT b.outcome, m.channel, m.provider, m.enrollment_id, m.journey_step,
               (b.occurred_at AT TIME ZONE %(tz)s)::date AS day,
               CASE WHEN b.outcome IN {REASONED!r} THEN b.code ELSE '' END AS reason,
               extract(epoch FROM b.occurred_at - coalesce(m.decided_at, m.send_after))
                   AS latency_s
        FROM batch b
        JOIN delivery_message m ON m.id = b.message_id
        WHERE NOT EXISTS (
            SELECT 1 FROM delivery_messageevent p
            WHERE p.message_id = b.message_id AND p.id < b.id
              AND {_OUTCOME.format(e="p")} = b.outcome
        )
    ), causes AS (
        -- One row per cause of a hold; any other outcome keeps its one code.
        SELECT f.*, left(cause, 64) AS cause
        FROM firsts f
        CROSS JOIN LATERAL unnest(
            CASE WHEN f.outcome IN {HOLDS!r} AND f.reason <> ''
                THEN string_to_array(f.reason, ',') ELSE ARRAY[f.reason] END
        ) AS cause
    ), channel_facts AS (
        SELECT day, channel, provider, outcome AS metric, cause AS code, 1::bigint AS n
        FROM causes
        UNION ALL
        SELECT day, channel, provider, 'latency', {_BUCKET}, 1
        FROM firsts WHERE outcome = 'delivered'
        UNION ALL
        SELECT day, channel, provider, 'latency_ms', '', greatest(0, latency_s * 1000)::bigint
        FROM firsts WHERE outcome = 'delivered'
    ), channels_counted AS (
        INSERT INTO analytics_channelday (day, channel, provider, metric, code, count)
        SELECT day, channel, provider, metric, code, sum(n) FROM channel_facts
        GROUP BY day, channel, provider, metric, code
        ON CONFLICT (day, channel, provider, metric, code)
        DO UPDATE SET count = analytics_channelday.count + EXCLUDED.count
    ), journey_facts AS (
        SELECT en.journey_id, f.day, f.journey_step AS step, f.outcome AS metric,
               f.cause AS reason, '' AS arm
        FROM causes f JOIN journeys_enrollment en ON en.id = f.enrollment_id
        UNION ALL
        SELECT en.journey_id, f.day, f.journey_step, 'held', '', ''
        FROM firsts f JOIN journeys_enrollment en ON en.id = f.enrollment_id
        WHERE f.outcome IN ('deferred', 'suppressed')
        UNION ALL
        SELECT en.journey_id, f.day, arms.key, 'arm_' || f.outcome, '', left(arms.value, 50)
        FROM firsts f
        JOIN journeys_enrollment en ON en.id = f.enrollment_id
        CROSS JOIN LATERAL {_ARMS} AS arms
        WHERE f.outcome IN ('sent', 'clicked')
    ), journeys_counted AS ({_JOURNEY_UPSERT.format(facts="journey_facts")})
    SELECT count(*), max(id) FROM batch
"""  # noqa: S608 - built only from this module's constants


def _tz() -> str:
    name = settings.ANALYTICS_TIME_ZONE
    zoneinfo.ZoneInfo(name)  # validated at settings load; this keeps a bad override loud
    return name


def rollups() -> list[Rollup]:
    params = {"tz": _tz()}
    return [
        Rollup("analytics_enrollments", "journeys_enrollment", ENROLLMENTS_SQL, params),
        Rollup("analytics_stepruns", "journeys_steprun", STEPRUNS_SQL, params),
        Rollup("analytics_message_events", "delivery_messageevent", MESSAGE_EVENTS_SQL, params),
    ]


#: What a page or API read spends, at most, folding in history newer than the last sweep.
PAGE_ROLLUP_SECONDS = 0.05


def analytics_catch_up() -> None:
    """Fold the little that arrived since the 30-second sweep, so what a marketer just
    did shows up; bounded, a backlog is left to the sweep."""
    analytics_rollup(batch=2000, budget_seconds=PAGE_ROLLUP_SECONDS)


def analytics_rollup(*, batch: int = BATCH, budget_seconds: float = 20.0) -> dict[str, int]:
    """Fold everything new into the analytics tables; rows read per source."""
    return {
        rollup.name: rollup_run(rollup, batch=batch, budget_seconds=budget_seconds)
        for rollup in rollups()
    }
