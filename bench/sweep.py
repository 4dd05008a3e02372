"""Replenishment sweep at scale: initial refresh, then the daily sweep, timed and sized.

    python -m bench.sweep --customers 1000000

Works on a scratch database of its own (``bench_sweep``, dropped and recreated on every
run, dropped at the end unless ``--keep``), like ``bench.dispatch``. It loads, with
COPY, N customers in eight time zones and about five ``order.completed`` events each
over the past two years (one or two products per customer out of 50, each customer
with a personal cycle of 20-120 days and +-20% jitter), and an active replenishment
journey (90-day default, three products with their own cycle, remind 10 days before,
3 days' grace). Then it measures, each in a fresh process so the peaks are its own:

(a) the initial full refresh of ``ReplenishmentState`` (every pair from all events);
(b) the daily sweep after one day's new purchases (about 1.4% of customers buy):
    refresh of the new events + the due range scan + enrolling, as
    ``sweeps.replenishment`` runs it; then the same sweep 15 minutes later (it enrolls only
    the pairs whose reminder date entered the window in those 15 minutes).

For each: wall time (for the sweep split into the refresh and finding the due pairs +
enrolling them), the Python process's peak RSS, and the peak RSS of the PostgreSQL
backend that served it (VmHWM: includes the shared buffers it touched, so it
overstates the backend's private memory).

The seeded history is "received" when it occurred, but COPY gives it ids in customer
order, not in order of arrival as live ingestion would. ``refresh`` never moves its
cursor past an event received within ``COMMIT_LAG`` (it might sit below a slow
transaction's), so a refresh at the very moment the load ends would stop at the first
customer whose last purchase is minutes old and leave nearly all history to be read
again by the daily sweep. The initial refresh therefore runs ``SETTLE`` after the load,
as it would in production; the log says how many events the daily refresh reads.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import random
import resource
import sys
import time

from bench.dispatch import TIMEZONES

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")

BENCH_DATABASE = "bench_sweep"
PRODUCTS = [f"sku-{i:03d}" for i in range(50)]
PURCHASES_PER_CUSTOMER = 5
#: Share of customers with a purchase on the "new day".
DAILY_BUYERS = 0.014
#: The initial refresh runs this long after the last seeded event was received, so
#: none of them is within refresh's commit lag (see the module docstring).
SETTLE = dt.timedelta(minutes=20)
EVENT_INDEXES = {
    "event_customer_name_idx": "(customer_id, name, occurred_at DESC)",
    "event_name_time_idx": "(name, occurred_at DESC)",
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _copy(sql: str, rows) -> None:
    from django.db import connection

    with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
        for row in rows:
            copy.write_row(row)


def seed(customers: int, now: dt.datetime) -> tuple[int, int]:
    from django.core.management import call_command
    from django.db import connection

    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    log(f"migrated in {time.perf_counter() - started:.1f} s")

    started = time.perf_counter()
    stamp = now.isoformat()
    _copy(
        "COPY audience_customer (external_id, email, phone, whatsapp, line_user_id, locale, "
        "timezone, attributes, created_at, updated_at) FROM STDIN",
        (
            (
                f"bench-{i}",
                f"customer{i}@example.com",
                "",
                "",
                "",
                "en",
                TIMEZONES[i % len(TIMEZONES)],
                json.dumps({"first_name": f"name{i}"}),
                stamp,
                stamp,
            )
            for i in range(customers)
        ),
    )
    log(f"{customers} customers copied in {time.perf_counter() - started:.1f} s")

    with connection.cursor() as cursor:
        cursor.execute("SELECT min(id) FROM audience_customer")
        (first_id,) = cursor.fetchone()
        for name in EVENT_INDEXES:
            cursor.execute(f"DROP INDEX {name}")
    rng = random.Random(42)
    started = time.perf_counter()

    def history():
        for i in range(customers):
            customer_id = first_id + i
            products = rng.sample(PRODUCTS, 2 if i % 3 == 0 else 1)
            cycle = rng.uniform(20, 120)
            # The last purchase is somewhere within the last cycle: predictions spread out.
            at = now - dt.timedelta(days=rng.uniform(0, cycle) + cycle * PURCHASES_PER_CUSTOMER)
            for _ in range(PURCHASES_PER_CUSTOMER):
                at += dt.timedelta(days=cycle * rng.uniform(0.8, 1.2))
                if at > now:
                    at = now - dt.timedelta(hours=rng.uniform(25, 48))
                sku = rng.choice(products)
                yield (customer_id, "order.completed", f'{{"sku": "{sku}"}}', at, at, "bench")

    _copy(
        "COPY audience_event (customer_id, name, properties, occurred_at, received_at, source) "
        "FROM STDIN",
        history(),
    )
    log(
        f"{customers * PURCHASES_PER_CUSTOMER} events copied "
        f"in {time.perf_counter() - started:.1f} s"
    )
    started = time.perf_counter()
    with connection.cursor() as cursor:
        for name, columns in EVENT_INDEXES.items():
            cursor.execute(f"CREATE INDEX {name} ON audience_event {columns}")
        cursor.execute("ANALYZE audience_customer")
        cursor.execute("ANALYZE audience_event")
    log(f"indexes built and analyzed in {time.perf_counter() - started:.1f} s")
    return first_id, customers


def new_day(first_id: int, customers: int, now: dt.datetime) -> int:
    """One day's purchases, received well before the sweep (past the commit lag)."""
    rng = random.Random(7)
    buyers = rng.sample(range(customers), int(customers * DAILY_BUYERS))
    received = now - dt.timedelta(minutes=30)
    _copy(
        "COPY audience_event (customer_id, name, properties, occurred_at, received_at, source) "
        "FROM STDIN",
        (
            (
                first_id + i,
                "order.completed",
                f'{{"sku": "{rng.choice(PRODUCTS)}"}}',
                now - dt.timedelta(hours=rng.uniform(1, 24)),
                received,
                "bench",
            )
            for i in buyers
        ),
    )
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE audience_event")
    return len(buyers)


def unread_events(journey_id: int) -> int:
    """Events past the journey's refresh cursor: what the next refresh reads."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM audience_event WHERE id > "
            "(SELECT max(last_id) FROM journeys_journeycursor WHERE journey_id = %s)",
            [journey_id],
        )
        (count,) = cursor.fetchone()
    return count


def make_journey() -> int:
    from journeys import engine
    from journeys.services import journey_activate, journey_save
    from orchestrator.consent.models import Topic
    from orchestrator.delivery.models import MessageTemplate, TemplateVariant

    # No broker in the bench: the engine is not what is measured here.
    engine.kick_engine = lambda: None
    topic = Topic.objects.create(key="replenishment", name="Replenishment", kind="marketing")
    template = MessageTemplate.objects.create(key="refill", name="refill", topic=topic)
    TemplateVariant.objects.create(
        template=template, channel="email", locale="en", subject="Refill", body="Time to refill"
    )
    journey = journey_save(
        {
            "key": "refill",
            "name": "Refill",
            "topic": "replenishment",
            "trigger": {
                "kind": "replenishment",
                "event": "order.completed",
                "product_property": "sku",
                "default_cycle_days": 90,
                "product_cycles": {"sku-000": 30, "sku-001": 45, "sku-002": 60},
                "min_purchases": 3,
                "remind_days_before": 10,
                "grace_days": 3,
            },
            "exit_events": [{"event": "order.completed", "match": "sku"}],
            "steps": [
                {
                    "key": "send",
                    "kind": "send",
                    "config": {"template": "refill", "channel": "email"},
                }
            ],
        }
    )
    journey_activate(journey=journey)
    return journey.id


def _backend_peak_kb() -> int | None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:  # a remote server (DATABASE_URL): not measurable from here
        return None
    return None


def _phase(kind: str, journey_id: int, now_iso: str, queue) -> None:
    from journeys import engine
    from journeys.enrollment import enroll_select
    from journeys.models import Journey
    from journeys.triggers import replenishment

    engine.kick_engine = lambda: None
    now = dt.datetime.fromisoformat(now_iso)
    journey = Journey.objects.select_related("current_version").get(pk=journey_id)
    _backend_peak_kb()  # connect before the clock starts
    started = time.perf_counter()
    if kind == "refresh":
        written, enrolled = replenishment.refresh(journey, now=now), 0
        refreshed = time.perf_counter()
    else:
        # replenishment.sweep, step by step so the split can be timed.
        written = replenishment.refresh(journey, now=now)
        refreshed = time.perf_counter()
        select, params = replenishment.due_sql(journey, now=now)
        enrolled = len(enroll_select(journey, select, params, now=now))
    elapsed = time.perf_counter() - started
    queue.put(
        {
            "seconds": elapsed,
            "refresh_seconds": refreshed - started,
            "enroll_seconds": elapsed - (refreshed - started),
            "written": written,
            "enrolled": enrolled,
            "python_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "postgres_backend_peak_mb": (_backend_peak_kb() or 0) / 1024,
        }
    )


def run_phase(kind: str, journey_id: int, now: dt.datetime) -> dict:
    from django.db import connections

    connections.close_all()  # the child opens its own
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    process = ctx.Process(target=_phase, args=(kind, journey_id, now.isoformat(), queue))
    process.start()
    result = queue.get()
    process.join()
    if process.exitcode:
        raise SystemExit(f"{kind} failed with exit code {process.exitcode}")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--database", default=BENCH_DATABASE)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args(argv)

    from bench.dispatch import drop_database, setup_django

    setup_django(args.database)
    from django.utils import timezone

    now = timezone.now().replace(microsecond=0)
    first_id, customers = seed(args.customers, now - dt.timedelta(days=1))
    journey_id = make_journey()

    a = run_phase("refresh", journey_id, now - dt.timedelta(days=1) + SETTLE)
    log(f"initial refresh: {a['written']} pairs in {a['seconds']:.1f} s")
    # By the next day autovacuum has analyzed the new state; do not race it here.
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE journeys_replenishmentstate")
    buyers = new_day(first_id, customers, now)
    log(f"new day: {buyers} purchase events, {unread_events(journey_id)} after the cursor")
    b = run_phase("sweep", journey_id, now)
    rerun = run_phase("sweep", journey_id, now + dt.timedelta(minutes=15))
    if not args.keep:
        drop_database(args.database)

    def line(name: str, r: dict, split: bool = False) -> str:
        parts = (
            f" (refresh {r['refresh_seconds']:.2f} s, find due + enroll "
            f"{r['enroll_seconds']:.2f} s)"
            if split
            else ""
        )
        return (
            f"{name}: {r['seconds']:.2f} s{parts}, python peak {r['python_peak_mb']:.0f} MB, "
            f"postgres backend peak {r['postgres_backend_peak_mb']:.0f} MB"
        )

    events = customers * PURCHASES_PER_CUSTOMER + buyers
    print(f"customers={customers} events={events} pairs={a['written']} new_events={buyers}")
    print(line("(a) initial full refresh", a))
    print(line(f"(b) daily sweep, {b['written']} pairs written, {b['enrolled']} enrolled", b, True))
    print(line(f"    rerun 15 min later, {rerun['enrolled']} enrolled", rerun, True))
    print(
        f"daily sweep for {customers} customers: {b['seconds']:.1f} s, "
        f"peak {max(b['python_peak_mb'], 0):.0f} MB python"
    )


if __name__ == "__main__":
    main()
