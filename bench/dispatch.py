"""Dispatcher throughput: queue N personalized messages, drain them, print messages per second.

    python -m bench.dispatch --messages 100000 [--with-policy] [--workers 2] [--batch-size 1000]

``--with-policy`` turns the fatigue policy on: three frequency rules (3 marketing
messages per local calendar day, 1 SMS per rolling 24 h, a 4 h gap between
marketing messages), quiet hours 21:00-08:00 in each customer's own time zone,
and a tenth of the customers already at their cap from earlier today. The figure
is then messages *decided* per second (sent, deferred, dropped, suppressed), and
the share of dispatcher time spent in the policy stage is printed.

Works on a scratch database of its own (``bench_dispatch`` on the embedded server,
or on the ``DATABASE_URL`` server), dropped and recreated on every run, never the
dev database. Data is inserted set-based (``INSERT ... SELECT generate_series``):
customers across time zones and locales, marketing topics with subscriptions
(some unsubscribed, some suppressed addresses, one opt-in topic) and a
transactional topic, Liquid templates with conditionals, filters and loops.
Every channel uses the ``NullAdapter``, so the figure is the dispatcher's own
cost: claim, consent, render, hand-off and record. The workers run the same code
the ``delivery.dispatch`` Celery task runs (``dispatcher.dispatch_due``).

In the same run (before ours, unless ``--no-peers``) it runs the reference peers of
/work/shared/peers at the same size: the raw ceiling (psycopg ``COPY`` + ``SKIP
LOCKED``, ``str.format``, one bulk ``UPDATE`` per batch) and django-post-office tuned.
The last line printed is the result and its ratio to the ceiling measured minutes
apart, e.g. ``decided 100000 messages in 12.3 s: 8130 messages/s; raw ceiling 41200/s
in the same run: 0.20x``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import multiprocessing
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.api import PEERS_DIR, PEERS_VENV

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")

BENCH_DATABASE = "bench_dispatch"
NULL = "channels.adapters.null.NullAdapter"
#: Fastest of 250/500/1000 on the recorded machine (see RESULTS.md).
TUNED_BATCH_SIZE = 1000

TIMEZONES = [
    "Asia/Tokyo",
    "America/New_York",
    "Europe/London",
    "America/Los_Angeles",
    "Europe/Berlin",
    "Australia/Sydney",
    "Asia/Kolkata",
    "America/Sao_Paulo",
]
LOCALES = ["en", "ja", "en-GB", "es", "ja-JP", "en-US", "de", "fr"]

# Topic key -> (kind, default_opt_in). "promos" needs an explicit opt-in.
TOPICS = {
    "orders": ("transactional", False),
    "newsletter": ("marketing", True),
    "promos": ("marketing", False),
    "replenishment": ("marketing", True),
}

EN = {
    "subject": "{{ customer.first_name | capitalize }}, {{ data.headline }}",
    "body": (
        "Hi {{ customer.first_name | default: 'there' }},\n"
        "{% if customer.tier == 'gold' %}As a Gold member you get free shipping.{% else %}"
        "Free shipping over {{ data.threshold }}.{% endif %}\n"
        "{% for item in data.items %}- {{ item.name }}: {{ item.price | times: 1.1 | round: 2 }}\n"
        "{% endfor %}Total {{ data.total }} · {{ brand.name }}\n"
        "Unsubscribe: {{ unsubscribe_url }}"
    ),
    "html": (
        "<h1>Hi {{ customer.first_name }}</h1><p>{{ data.headline }}</p><ul>"
        "{% for item in data.items %}<li>{{ item.name }} - {{ item.price }}</li>{% endfor %}</ul>"
        "<p>{{ customer.points }} points in {{ customer.city }}</p>"
        '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
    ),
}
JA = {
    "subject": "{{ customer.first_name }}様、{{ data.headline }}",
    "body": (
        "{{ customer.first_name }}様\n{% if customer.tier == 'gold' %}ゴールド会員は送料無料です。"
        "{% endif %}{% for item in data.items %}・{{ item.name }} {{ item.price }}円\n{% endfor %}"
        "合計 {{ data.total }}円 {{ brand.name }}\n配信停止:{{ unsubscribe_url }}"
    ),
    "html": "<h1>{{ customer.first_name }}様</h1><p>{{ data.headline }}</p>"
    '<p><a href="{{ unsubscribe_url }}">配信停止</a></p>',
}
SHORT = {
    "en": "Hi {{ customer.first_name }}: {{ data.headline }} ({{ data.items | size }} items, "
    "{{ data.total }}). Reply STOP to opt out or see {{ preferences_url }}",
    "ja": "{{ customer.first_name }}様: {{ data.headline }} 合計{{ data.total }}円 "
    "配信設定 {{ preferences_url }}",
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def setup_django(database: str) -> None:
    import django
    from django.conf import settings

    django.setup()
    db = settings.DATABASES["default"]
    if db["NAME"] == database:
        raise SystemExit("refusing to run: the bench database is the configured database")
    _recreate_database(db, database)
    # Nothing has connected yet, so pointing the alias elsewhere is enough.
    db["NAME"] = database
    settings.CHANNEL_ADAPTERS = {
        channel: {"BACKEND": NULL, "OPTIONS": {}}
        for channel in ("email", "sms", "whatsapp", "line")
    }


def _maintenance_connection(db: dict):
    import psycopg

    return psycopg.connect(
        host=db.get("HOST") or None,
        port=db.get("PORT") or None,
        user=db.get("USER") or None,
        password=db.get("PASSWORD") or None,
        dbname="postgres",
        autocommit=True,
    )


def _recreate_database(db: dict, name: str) -> None:
    with _maintenance_connection(db) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(name: str) -> None:
    from django.conf import settings
    from django.db import connections

    connections.close_all()
    with _maintenance_connection(settings.DATABASES["default"]) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def peers_available() -> str | None:
    """Why the peers cannot run here, or None when they can."""
    if not (PEERS_DIR / "bench_c_raw.py").exists():
        return f"no peers at {PEERS_DIR}"
    if not (PEERS_VENV / "bin" / "python").exists():
        return f"peers not set up ({PEERS_DIR}/run.sh setup)"
    return None


def run_peers(messages: int) -> dict[str, float]:
    """The raw ceiling and django-post-office (tuned) at ``messages``: deliveries per second.

    Run from a writable copy of the peers' directory (the shared one is read-only and
    post-office writes its command logs under ``results/``), with none of our settings.
    """
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH", "DATABASE_URL", "SECRET_KEY")
    }
    python = str(PEERS_VENV / "bin" / "python")
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="peers-") as work:
        shutil.copytree(PEERS_DIR, work, dirs_exist_ok=True)
        for path in Path(work).rglob("*"):
            path.chmod(path.stat().st_mode | 0o200)
        (Path(work) / "results").mkdir(exist_ok=True)
        for name, script, extra in (
            ("raw ceiling", "bench_c_raw.py", {}),
            ("django-post-office", "bench_a_post_office.py", {"PO_BATCH_SIZE": "1000"}),
        ):
            done = subprocess.run(
                [python, script, "--n", str(messages), "--reps", "1"],
                cwd=work,
                env={**env, **extra},
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                log(f"{name} failed: {done.stderr.strip().splitlines()[-1:]}")
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            figures[name] = float(row["deliver_msgs_per_s"])
            log(f"{name}: {row['deliver_msgs_per_s']:.0f} messages/s ({row['deliver_s']:.1f} s)")
    return figures


def seed_policy(customers: int) -> None:
    """Three rules, and a tenth of the customers already at their daily cap."""
    import datetime as dt

    from django.db import connection

    from orchestrator.delivery.models import FrequencyRule

    FrequencyRule.objects.create(key="daily-3", name="3 a day", limit=3, calendar="day")
    FrequencyRule.objects.create(
        key="sms-24h",
        name="1 SMS per 24 h",
        limit=1,
        window=dt.timedelta(hours=24),
        scope="channel",
        channel="sms",
    )
    FrequencyRule.objects.create(
        key="gap-4h",
        name="4 h gap",
        kind="gap",
        limit=1,
        window=dt.timedelta(hours=4),
        applies_to="marketing",
    )
    with connection.cursor() as cursor:
        # Three marketing messages each, sent 5-7 hours ago (inside today for most zones).
        cursor.execute(
            """
            INSERT INTO delivery_message (customer_id, topic_id, template_id, channel,
                requested_channel, to_address, locale, status, priority, send_after, data,
                source, provider, provider_message_id, attempts, last_error, explanation,
                created_at, updated_at, sent_at, decided_at, journey, journey_step,
                fallback_channel)
            SELECT c.id, t.topic_id, t.id, 'email', 'email', c.email, 'en', 'sent', 5,
                now() - (5 + k) * interval '1 hour', '{}'::jsonb, 'system', 'null', '', 1, '',
                '[]'::jsonb, now(), now(), now() - (5 + k) * interval '1 hour',
                now() - (5 + k) * interval '1 hour', '', '', ''
            FROM audience_customer c
            CROSS JOIN generate_series(0, 2) AS k
            CROSS JOIN (SELECT id, topic_id FROM delivery_messagetemplate
                        WHERE key = 'newsletter') t
            WHERE c.id %% 10 = 1 AND c.id <= %(customers)s
            """,
            {"customers": customers},
        )


def seed(messages: int, customers: int) -> None:
    from django.core.management import call_command
    from django.db import connection, transaction

    from orchestrator.consent.models import Topic
    from orchestrator.delivery.models import MessageTemplate, TemplateVariant

    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    log(f"migrated in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    with transaction.atomic():
        topic_ids = {}
        for key, (kind, opt_in) in TOPICS.items():
            topic = Topic.objects.create(
                key=key, name=key.title(), kind=kind, default_opt_in=opt_in
            )
            topic_ids[key] = topic.id
        template_ids = []
        for key, topic_id in topic_ids.items():
            template = MessageTemplate.objects.create(key=key, name=key, topic_id=topic_id)
            template_ids.append(template.id)
            for locale, long in (("en", EN), ("ja", JA)):
                TemplateVariant.objects.create(
                    template=template, channel="email", locale=locale, **long
                )
                for channel in ("sms", "whatsapp", "line"):
                    TemplateVariant.objects.create(
                        template=template, channel=channel, locale=locale, body=SHORT[locale]
                    )
        with connection.cursor() as cursor:
            cursor.execute(
                """
                INSERT INTO audience_customer (external_id, email, phone, whatsapp, line_user_id,
                    locale, timezone, attributes, created_at, updated_at)
                SELECT 'bench-' || i, 'customer' || i || '@example.com',
                    '+1415' || lpad(i::text, 7, '0'), '+1628' || lpad(i::text, 7, '0'),
                    'U' || md5(i::text), (%(locales)s::text[])[1 + i %% %(nl)s],
                    (%(tzs)s::text[])[1 + i %% %(ntz)s],
                    jsonb_build_object('first_name', 'name' || i,
                        'tier', CASE WHEN i %% 5 = 0 THEN 'gold' ELSE 'standard' END,
                        'points', i * 7 %% 1000, 'city', 'City ' || i %% 50),
                    now(), now()
                FROM generate_series(1, %(customers)s) AS i
                """,
                {
                    "locales": LOCALES,
                    "nl": len(LOCALES),
                    "tzs": TIMEZONES,
                    "ntz": len(TIMEZONES),
                    "customers": customers,
                },
            )
            # Consent: 10% unsubscribed from the newsletter; 60% opted in to promos (the rest
            # have no opt-in and are suppressed); 1% of email addresses hard-bounced.
            cursor.execute(
                """
                INSERT INTO consent_subscription
                    (customer_id, topic_id, channel, status, updated_at)
                SELECT c.id, %(newsletter)s, ch, 'unsubscribed', now()
                FROM audience_customer c, unnest(ARRAY['email','sms','whatsapp','line']) AS ch
                WHERE c.id %% 10 = 3
                UNION ALL
                SELECT c.id, %(promos)s, ch, 'subscribed', now()
                FROM audience_customer c, unnest(ARRAY['email','sms','whatsapp','line']) AS ch
                WHERE c.id %% 5 < 3
                """,
                {"newsletter": topic_ids["newsletter"], "promos": topic_ids["promos"]},
            )
            cursor.execute(
                """
                INSERT INTO consent_suppression (channel, address_hash, reason, detail, created_at)
                SELECT 'email', encode(sha256(convert_to('email:' || lower(email), 'UTF8')), 'hex'),
                    'bounce', 'bench', now()
                FROM audience_customer WHERE id %% 100 = %(bucket)s
                """,
                {"bucket": 7},
            )
            # Messages: half transactional, the rest spread over the marketing topics; all four
            # channels; priorities 3-7; send times in the last hour; 0.5% already expired.
            cursor.execute(
                """
                INSERT INTO delivery_message (customer_id, topic_id, template_id, channel,
                    requested_channel, to_address, locale, status, priority, send_after,
                    expires_at, data, idempotency_key, source, rendered, provider,
                    provider_message_id, attempts, attempt_id, claimed_at, handed_off_at,
                    sent_at, last_error, explanation, created_at, updated_at, journey,
                    journey_step, fallback_channel)
                SELECT c.id, t.topic_id, t.template_id, ch.channel, ch.channel,
                    CASE ch.channel WHEN 'email' THEN c.email WHEN 'sms' THEN c.phone
                        WHEN 'whatsapp' THEN c.whatsapp ELSE c.line_user_id END,
                    CASE WHEN c.locale LIKE 'ja%%' THEN 'ja' ELSE 'en' END,
                    'queued', 3 + i %% 5, now() - (i %% 3600) * interval '1 second',
                    CASE WHEN i %% 200 = 0 THEN now() - interval '1 minute' END,
                    jsonb_build_object(
                        'headline', 'your picks for week ' || (i %% 52),
                        'threshold', 50, 'total', (i %% 300) + 20,
                        'items', jsonb_build_array(
                            jsonb_build_object('name', 'Trail shoe', 'price', 120 + i %% 30),
                            jsonb_build_object('name', 'Socks', 'price', 12))),
                    NULL, 'system', NULL, '', '', 0, NULL, NULL, NULL, NULL, '',
                    jsonb_build_array(jsonb_build_object('step', 'created', 'decision', 'queued',
                        'reason', 'queued by the benchmark')),
                    now(), now(), '', '', ''
                FROM generate_series(1, %(messages)s) AS i
                JOIN audience_customer c ON c.external_id = 'bench-' || (1 + i %% %(customers)s)
                JOIN (SELECT * FROM unnest(%(topics)s::bigint[], %(templates)s::bigint[])
                      WITH ORDINALITY AS x(topic_id, template_id, n)) t
                    ON t.n = CASE WHEN i %% 2 = 0 THEN 1 ELSE 2 + (i / 2) %% 3 END
                JOIN (SELECT * FROM unnest(ARRAY['email','sms','whatsapp','line'])
                      WITH ORDINALITY AS y(channel, n)) ch ON ch.n = 1 + (i / 7) %% 4
                """,
                {
                    "messages": messages,
                    "customers": customers,
                    "topics": list(topic_ids.values()),
                    "templates": template_ids,
                },
            )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
        cursor.execute("SELECT count(*) FROM delivery_message")
        (count,) = cursor.fetchone()
    elapsed = time.perf_counter() - started
    log(f"seeded {customers} customers and {count} messages in {elapsed:.1f} s")


def _server_cpu() -> float:
    """CPU seconds of this process's database session (its backend process), when the
    server runs on this machine; 0 when it cannot be read (a remote server)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # utime and stime: fields 14 and 15 of stat(5), counted after the ")" from field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _drain(batch_size: int) -> dict[str, float]:
    from orchestrator.delivery.dispatcher import DispatchStats, dispatch_due

    total = DispatchStats()
    started = time.process_time()
    while True:
        stats, _more = dispatch_due(time_budget=3600.0, batch_size=batch_size)
        total.add(stats)
        if stats.claimed == 0:
            return {
                **total.as_dict(),
                "worker_cpu": time.process_time() - started,
                "server_cpu": _server_cpu(),
            }


def _worker(batch_size: int) -> dict[str, float]:
    from django.db import connection

    try:
        return _drain(batch_size)
    finally:
        connection.close()


def run(workers: int, batch_size: int, profile: bool) -> tuple[dict[str, float], float]:
    from django.db import connections

    connections.close_all()  # forked workers must open their own connections
    started = time.perf_counter()
    if workers == 1:
        profiler = cProfile.Profile() if profile else None
        if profiler:
            profiler.enable()
        totals = _drain(batch_size)
        if profiler:
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats(
                os.environ.get("BENCH_PROFILE_SORT", "cumulative")
            ).print_stats(45)
            log(out.getvalue())
    else:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            results = pool.map(_worker, [batch_size] * workers)
        totals = {key: sum(r[key] for r in results) for key in results[0]}
    return totals, time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=None, help="default: messages / 10")
    parser.add_argument(
        "--workers", type=int, default=min(2, os.cpu_count() or 1), help="dispatcher processes"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=TUNED_BATCH_SIZE,
        help=f"messages per claim (default {TUNED_BATCH_SIZE}, the best measured here; "
        "the DISPATCH_BATCH_SIZE setting defaults to 500)",
    )
    parser.add_argument("--database", default=BENCH_DATABASE)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--profile", action="store_true", help="cProfile (single worker)")
    parser.add_argument(
        "--no-peers", action="store_true", help="skip the raw ceiling and django-post-office"
    )
    parser.add_argument(
        "--with-policy",
        action="store_true",
        help="three caps, quiet hours in each customer's time zone, some customers over caps",
    )
    args = parser.parse_args(argv)
    customers = args.customers or max(args.messages // 10, 1)

    peers: dict[str, float] = {}
    if not args.no_peers:
        why_not = peers_available()
        if why_not:
            log(f"peers not measured: {why_not}")
        else:
            peers = run_peers(args.messages)
    setup_django(args.database)
    from django.db import connection

    batch_size = args.batch_size
    from django.conf import settings

    settings.QUIET_HOURS_DEFAULT = None
    seed(args.messages, customers)
    if args.with_policy:
        import datetime as dt

        seed_policy(customers)
        settings.QUIET_HOURS_DEFAULT = (dt.time(21), dt.time(8))
        log("policy: 3 rules, quiet hours 21:00-08:00 local, 10% of customers at their cap")
    log(f"dispatching with {args.workers} worker(s), batch size {batch_size}")
    totals, elapsed = run(args.workers, batch_size, args.profile)

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT status, count(*) FROM delivery_message GROUP BY status ORDER BY status"
        )
        by_status = cursor.fetchall()
        cursor.execute("SELECT count(*) FROM delivery_messageevent")
        (events,) = cursor.fetchone()
    if not args.keep:
        drop_database(args.database)

    decided = (
        totals["sent"]
        + totals["suppressed"]
        + totals["failed"]
        + totals["expired"]
        + totals["deferred"]
    )
    print(f"workers={args.workers} batch_size={batch_size} batches={totals['batches']}")
    print("by status: " + ", ".join(f"{status}={count}" for status, count in by_status))
    print(
        f"sent={totals['sent']} suppressed={totals['suppressed']} failed={totals['failed']} "
        f"expired={totals['expired']} deferred={totals['deferred']} "
        f"retrying={totals['retrying']} lost={totals['lost']} "
        f"left for a later batch (customer busy)={totals['busy']} "
        f"history rows={events}"
    )
    print(f"sent {totals['sent'] / elapsed:.0f} messages/s to the adapters")
    share = totals["policy_seconds"] / (elapsed * args.workers)
    print(f"policy stage: {totals['policy_seconds']:.1f} s of worker time ({share:.0%})")
    # CPU per message, not wall time: what the code costs, whatever else the machine runs.
    per_1000 = 1000 / max(decided, 1)
    cpu = f"worker CPU {totals['worker_cpu'] * per_1000 * 1000:.0f} ms per 1,000 messages"
    if totals["server_cpu"]:
        cpu += f", their database sessions {totals['server_cpu'] * per_1000 * 1000:.0f} ms"
    print(cpu + (" (under cProfile)" if args.profile else ""))
    verb = "decided" if args.with_policy else "dispatched"
    rate = decided / elapsed
    if "django-post-office" in peers:
        print(
            f"django-post-office (tuned) in the same run: {peers['django-post-office']:.0f}/s; "
            f"ours {rate / peers['django-post-office']:.2f}x"
        )
    line = f"{verb} {decided} messages in {elapsed:.1f} s: {rate:.0f} messages/s"
    if "raw ceiling" in peers:
        ceiling = peers["raw ceiling"]
        line += f"; raw ceiling {ceiling:.0f}/s in the same run: {rate / ceiling:.2f}x"
    print(line)


if __name__ == "__main__":
    main()
