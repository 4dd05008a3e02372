"""Analytics and metrics at scale: a journey's analytics page and ``/metrics``, timed.

    python -m bench.analytics --messages 10000000 --events 2000000

Works on a scratch database of its own (``bench_analytics`` on the configured server,
dropped and recreated on every run, dropped at the end unless ``--keep``). It loads,
with set-based INSERT ... SELECT in the database:

* customers (messages / 50), and ``--events`` customer events over 90 days;
* an active journey "bench-cart" (an A/B split, a send per arm, a two-day wait, a
  reminder) with messages / 10 enrollments over 90 days: their step log (split, send,
  wait, reminder; 5% still waiting; 1 in 12 converted) and their two messages each;
* the rest of ``--messages`` as API sends over 90 days on four channels (email by
  SendGrid, SMS and WhatsApp by Twilio, LINE), with their history as providers report
  it: sent, delivered (85%), opened (20% of email), clicked (4%), bounced (1% of
  email), spam complaints (0.05% of email), quiet-hours deferrals (3%);
* a waiting backlog of 50,000 due messages for the metrics.

Then it times, in this order: the analytics rollups catching up with all that history
(what the beat sweep does after a long outage, or on upgrade), the ``/metrics`` status
rollup catching up, and then, with the rollups current (as the 30-second sweep keeps
them), each page ``--repeat`` times through Django's test client with a logged-in
admin: the journey analytics page (the default 30 days, and 90 days), its API, the
journey's admin page (diagram and totals), channel health, and ``/metrics``.
Reported: median, p95 and max per page. The target: the analytics page under 300 ms
and ``/metrics`` under 100 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from bench.dispatch import drop_database, setup_django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")

BENCH_DATABASE = "bench_analytics"
BACKLOG = 50_000


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _exec(sql: str, params: dict | None = None) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql, params or {})
        return cursor.rowcount


def _timed(label: str, sql: str, params: dict | None = None) -> None:
    started = time.perf_counter()
    rows = _exec(sql, params)
    log(f"{label}: {rows:,} rows in {time.perf_counter() - started:.1f} s")


def make_journey():
    from journeys import engine
    from journeys.services import journey_activate, journey_save
    from orchestrator.consent.models import Topic
    from orchestrator.delivery.models import MessageTemplate, TemplateVariant

    engine.kick_engine = lambda: None  # no broker here: the engine is not measured
    topic = Topic.objects.create(key="cart", name="Cart reminders", kind="marketing")
    template = MessageTemplate.objects.create(key="cart", name="cart", topic=topic)
    TemplateVariant.objects.create(
        template=template,
        channel="email",
        locale="en",
        subject="Your cart",
        body="Still thinking? {{ unsubscribe_url }}",
    )

    def send(key: str, next_: str = "") -> dict:
        return {"key": key, "kind": "send", "next": next_, "config": {"template": "cart"}}

    journey = journey_save(
        {
            "key": "bench-cart",
            "name": "Abandoned cart",
            "topic": "cart",
            "trigger": {"kind": "event", "event": "cart.abandoned"},
            "goal": {"event": "order.completed", "within_hours": 72},
            "steps": [
                {
                    "key": "ab",
                    "kind": "split",
                    "next": "a",
                    "alt_next": "b",
                    "config": {"percent": 50},
                },
                send("a", "wait"),
                send("b", "wait"),
                {
                    "key": "wait",
                    "kind": "wait",
                    "next": "reminder",
                    "config": {"mode": "duration", "minutes": 2880},
                },
                send("reminder"),
            ],
        }
    )
    journey_activate(journey=journey)
    journey.refresh_from_db()
    return journey, topic, template


def seed(messages: int, events: int) -> dict:
    from django.core.management import call_command

    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    log(f"migrated in {time.perf_counter() - started:.1f} s")
    journey, topic, template = make_journey()
    customers = max(messages // 50, 1000)
    enrollments = messages // 10
    api_messages = messages - 2 * enrollments + enrollments // 20  # waiting ones: one each
    p = {
        "customers": customers,
        "enrollments": enrollments,
        "api": api_messages,
        "events": events,
        "journey": journey.id,
        "version": journey.current_version_id,
        "topic": topic.id,
        "template": template.id,
        "backlog": BACKLOG,
    }
    _exec("SELECT setseed(0.42)")
    _timed(
        "customers",
        """
        INSERT INTO audience_customer (external_id, email, phone, whatsapp, line_user_id,
            locale, timezone, attributes, created_at, updated_at)
        SELECT 'bench-' || g, 'customer' || g || '@example.com', '', '', '', 'en',
               'Asia/Tokyo', '{}'::jsonb, now(), now()
        FROM generate_series(1, %(customers)s) g
        """,
        p,
    )
    (p["c0"],) = _one("SELECT min(id) FROM audience_customer")
    _timed(
        "customer events",
        """
        INSERT INTO audience_event (customer_id, name, properties, occurred_at, received_at,
            source)
        SELECT %(c0)s + mod(g, %(customers)s),
               (ARRAY['page.viewed', 'cart.abandoned', 'order.completed', 'app.opened'])
                   [1 + mod(g, 4)],
               '{}'::jsonb, t, t, 'bench'
        FROM generate_series(1, %(events)s) g,
             LATERAL (SELECT now() - random() * interval '90 days' + g * interval '0') x(t)
        """,
        p,
    )
    _timed(
        "enrollments",
        """
        INSERT INTO journeys_enrollment (journey_id, version_id, customer_id, occurrence,
            status, step, waiting, waiting_for, context, arm, entered_at, exit_reason,
            due_at, finished_at, converted_at)
        SELECT %(journey)s, %(version)s, %(c0)s + mod(g, %(customers)s), 'bench:' || g,
               CASE WHEN mod(g, 20) = 0 THEN 'active' ELSE 'completed' END,
               CASE WHEN mod(g, 20) = 0 THEN 'wait' ELSE 'reminder' END,
               mod(g, 20) = 0, '', jsonb_build_object('_arms', jsonb_build_object('ab', arm)),
               arm, t, '',
               CASE WHEN mod(g, 20) = 0 THEN now() + interval '1 day' END,
               CASE WHEN mod(g, 20) <> 0 THEN t + interval '2 days' END,
               CASE WHEN mod(g, 12) = 0 THEN t + interval '1 day' END
        FROM generate_series(1, %(enrollments)s) g,
             LATERAL (SELECT CASE WHEN random() + g * 0 < 0.5 THEN 'A' ELSE 'B' END,
                             now() - interval '2 days' - random() * interval '88 days'
                                 + g * interval '0') x(arm, t)
        """,
        p,
    )
    _timed(
        "step log",
        """
        INSERT INTO journeys_steprun (enrollment_id, journey_id, step, kind, outcome, detail,
            message_id, at)
        SELECT e.id, e.journey_id, r.step, r.kind, r.outcome, r.detail, NULL, r.at
        FROM journeys_enrollment e,
        LATERAL (VALUES
            ('ab', 'split', 'arm ' || e.arm, jsonb_build_object('arm', e.arm), e.entered_at),
            (lower(e.arm), 'send', 'queued', '{}'::jsonb, e.entered_at),
            ('wait', 'wait', 'waiting', '{}'::jsonb, e.entered_at),
            (CASE WHEN e.status = 'completed' THEN 'reminder' END, 'send', 'queued',
             '{}'::jsonb, e.entered_at + interval '2 days'),
            (CASE WHEN e.converted_at IS NOT NULL THEN e.step END, 'goal', 'converted',
             '{}'::jsonb, e.converted_at)
        ) AS r(step, kind, outcome, detail, at)
        WHERE r.step IS NOT NULL
        ORDER BY r.at
        """,
        p,
    )
    common = """
        INSERT INTO delivery_message (customer_id, topic_id, template_id, channel,
            requested_channel, to_address, locale, status, priority, send_after, data,
            journey, journey_step, enrollment_id, fallback_channel, source, provider,
            provider_message_id, attempts, last_error, explanation, created_at, updated_at,
            decided_at, sent_at)
    """
    _timed(
        "journey messages",
        common
        + """
        SELECT e.customer_id, %(topic)s, %(template)s, 'email', 'preferred', '', 'en',
               'delivered', 5, m.at, '{}'::jsonb, 'bench-cart', m.step, e.id, '', 'journey',
               'sendgrid', 'jm-' || e.id || m.step, 1, '', '[]'::jsonb, m.at, m.at, m.at,
               m.at + interval '1 second'
        FROM journeys_enrollment e,
        LATERAL (VALUES (lower(e.arm), e.entered_at),
                        (CASE WHEN e.status = 'completed' THEN 'reminder' END,
                         e.entered_at + interval '2 days')) AS m(step, at)
        WHERE m.step IS NOT NULL
        ORDER BY m.at
        """,
        p,
    )
    _timed(
        "API messages",
        common
        + """
        SELECT %(c0)s + mod(g, %(customers)s), %(topic)s, %(template)s, ch.channel,
               'preferred', '', 'en', 'delivered', 5, t, '{}'::jsonb, '', '', NULL, '', 'api',
               ch.provider, 'pm-' || g, 1, '', '[]'::jsonb, t, t, t, t + interval '1 second'
        FROM generate_series(1, %(api)s) g,
        LATERAL (SELECT now() - random() * interval '90 days' + g * interval '0') x(t),
        LATERAL (SELECT CASE WHEN mod(g, 10) < 5 THEN 'email' WHEN mod(g, 10) < 7 THEN 'sms'
                             WHEN mod(g, 10) = 7 THEN 'whatsapp' ELSE 'line' END,
                        CASE WHEN mod(g, 10) < 5 THEN 'sendgrid' WHEN mod(g, 10) < 8
                             THEN 'twilio' ELSE 'line' END) ch(channel, provider)
        ORDER BY t
        """,
        p,
    )
    # The history, in the order it would have been written: by time.
    _timed(
        "message history",
        """
        INSERT INTO delivery_messageevent (message_id, status, occurred_at, reason, code)
        SELECT h.message_id, h.status, h.at, '', h.code FROM (
            SELECT m.id AS message_id, x.status, x.at, x.code
            FROM delivery_message m,
            LATERAL (SELECT random() AS r1, random() AS r2, random() AS r3) r,
            LATERAL (VALUES
                (CASE WHEN r.r3 < 0.03 THEN 'deferred' END, m.created_at, 'quiet_hours'),
                ('sent', m.sent_at, ''),
                (CASE WHEN m.channel = 'email' AND r.r1 < 0.01 THEN 'bounced'
                      WHEN r.r1 < 0.86 THEN 'delivered' END,
                 m.sent_at + (r.r2 * 20) * interval '1 second',
                 CASE WHEN r.r1 < 0.01 AND m.channel = 'email' THEN 'sendgrid:bounce'
                      ELSE '' END),
                (CASE WHEN m.channel = 'email' AND r.r2 < 0.2 THEN 'opened' END,
                 m.sent_at + interval '1 hour', 'sendgrid:open'),
                (CASE WHEN r.r2 < 0.04 THEN 'clicked' END,
                 m.sent_at + interval '2 hours', 'click'),
                (CASE WHEN m.channel = 'email' AND r.r3 > 0.9995 THEN 'delivered' END,
                 m.sent_at + interval '3 hours', 'sendgrid:spamreport')
            ) AS x(status, at, code)
            WHERE x.status IS NOT NULL
        ) h
        ORDER BY h.at
        """,
        p,
    )
    _timed(
        "waiting backlog",
        """
        INSERT INTO delivery_message (customer_id, topic_id, template_id, channel,
            requested_channel, to_address, locale, status, priority, send_after, data,
            journey, journey_step, fallback_channel, source, provider, provider_message_id,
            attempts, last_error, explanation, created_at, updated_at)
        SELECT %(c0)s + mod(g, %(customers)s), %(topic)s, %(template)s, 'email', 'preferred',
               '', 'en', 'queued', 5, now() - g * interval '1 millisecond', '{}'::jsonb, '',
               '', '', 'api', '', '', 0, '', '[]'::jsonb, now(), now()
        FROM generate_series(1, %(backlog)s) g
        """,
        p,
    )
    started = time.perf_counter()
    for table in (
        "audience_customer",
        "audience_event",
        "journeys_enrollment",
        "journeys_steprun",
        "delivery_message",
        "delivery_messageevent",
    ):
        _exec(f"VACUUM ANALYZE {table}")
    log(f"vacuum analyze in {time.perf_counter() - started:.1f} s")
    return {"journey": journey}


def _one(sql: str):
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchone()


def catch_up() -> dict:
    from orchestrator.analytics.rollups import analytics_rollup
    from orchestrator.core.metrics import rollup_status_counts

    started = time.perf_counter()
    total: dict[str, int] = {}
    while True:
        done = analytics_rollup(budget_seconds=3600)
        for name, n in done.items():
            total[name] = total.get(name, 0) + n
        if not any(done.values()):
            break
    analytics_seconds = time.perf_counter() - started
    log(f"analytics rollups caught up: {total} in {analytics_seconds:.1f} s")
    started = time.perf_counter()
    folded = 0
    while n := rollup_status_counts(batch=50_000):
        folded += n
    status_seconds = time.perf_counter() - started
    log(f"metrics status rollup caught up: {folded:,} rows in {status_seconds:.1f} s")
    for table in ("analytics_journeyday", "analytics_channelday", "core_statuscount"):
        _exec(f"VACUUM ANALYZE {table}")
    return {
        "analytics_rows": sum(total.values()),
        "analytics_seconds": analytics_seconds,
        "status_rows": folded,
        "status_seconds": status_seconds,
    }


def time_pages(journey, repeat: int) -> dict[str, list[float]]:
    from django.contrib.auth import get_user_model
    from django.test import Client

    from orchestrator.api.auth import api_key_create

    user = get_user_model().objects.create_superuser("bench", "bench@example.com", "x")
    admin = Client()
    admin.force_login(user)
    _key, secret = api_key_create(name="bench", scopes=["read"])
    api = Client(HTTP_AUTHORIZATION=f"Bearer {secret}")
    today_minus_89 = _one("SELECT (now() - interval '89 days')::date")[0].isoformat()
    pages = {
        "journey analytics page, 30 days": (
            admin,
            f"/admin/journeys/journey/{journey.pk}/analytics/",
        ),
        "journey analytics page, 90 days": (
            admin,
            f"/admin/journeys/journey/{journey.pk}/analytics/?from={today_minus_89}",
        ),
        "journey analytics API, 30 days": (api, f"/api/v1/journeys/{journey.key}/analytics"),
        "journey admin page (diagram, totals)": (
            admin,
            f"/admin/journeys/journey/{journey.pk}/change/",
        ),
        "channel health page, 30 days": (admin, "/admin/analytics/channelday/"),
        "/metrics": (Client(), "/metrics"),
    }
    results: dict[str, list[float]] = {}
    for name, (client, url) in pages.items():
        response = client.get(url)  # warm: templates compiled, connections open
        if response.status_code != 200:
            raise SystemExit(f"{name}: {url} answered {response.status_code}")
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200
        results[name] = times
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000_000)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--database", default=BENCH_DATABASE)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument(
        "--reuse", action="store_true", help="time the pages on a kept database, no seeding"
    )
    args = parser.parse_args(argv)

    if args.reuse:
        import django
        from django.conf import settings

        django.setup()
        settings.DATABASES["default"]["NAME"] = args.database
        from journeys.models import Journey

        journey = Journey.objects.get(key="bench-cart")
        catch = catch_up()
    else:
        setup_django(args.database)
        started = time.perf_counter()
        journey = seed(args.messages, args.events)["journey"]
        log(f"seeded in {time.perf_counter() - started:.1f} s")
        catch = catch_up()
    from django.conf import settings

    settings.ALLOWED_HOSTS = ["testserver"]
    sizes = {
        table: _one(f"SELECT count(*) FROM {table}")[0]
        for table in (
            "delivery_message",
            "delivery_messageevent",
            "audience_event",
            "journeys_enrollment",
            "journeys_steprun",
            "analytics_journeyday",
            "analytics_channelday",
        )
    }
    results = time_pages(journey, args.repeat)
    if not args.keep:
        drop_database(args.database)

    print("table sizes: " + ", ".join(f"{t} {n:,}" for t, n in sizes.items()))
    print(
        f"rollup catch-up: analytics {catch['analytics_rows']:,} rows in "
        f"{catch['analytics_seconds']:.1f} s "
        f"({catch['analytics_rows'] / max(catch['analytics_seconds'], 1e-9):,.0f} rows/s); "
        f"metrics status {catch['status_rows']:,} rows in {catch['status_seconds']:.1f} s"
    )
    print(f"{'page':40} {'median':>9} {'p95':>9} {'max':>9}  (ms, {args.repeat} requests)")
    for name, times in results.items():
        ordered = sorted(times)
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        print(f"{name:40} {statistics.median(times):9.1f} {p95:9.1f} {max(times):9.1f}")


if __name__ == "__main__":
    main()
