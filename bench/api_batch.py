"""Batch send: messages accepted per second through ``POST /api/v1/messages/batch``.

    python -m bench.api_batch [--seconds 15] [--clients 4] [--batch 1000] [--workers 2]
    python -m bench.api_batch --kind customers   # POST /api/v1/customers/bulk
    python -m bench.api_batch --kind events      # POST /api/v1/events/bulk

Serves the project as ``bench.api`` does (``gunicorn orchestrator.wsgi -w 2``, DEBUG
off, production settings, a scratch database ``bench_api_batch``, a broker for the
dispatcher kick), seeds ``--customers`` customers, then ``--clients`` keep-alive clients
post batches of ``--batch`` sends for ``--seconds``, each send to one of the customers
with its own fresh ``idempotency_key`` and its own order data. Every item must come
back 202 and every accepted message must be in the database, or the run fails.

With ``--kind customers`` each item upserts a customer (every other one a seeded
customer updated, the rest new ones created) and every item must come back created or
updated; with ``--kind events`` each item is an event with its own ``event_id`` for one
of the seeded customers, and every one must be accepted (none a duplicate). Either way
the rows must be in the database afterwards.

No peer is measured: the plain DRF endpoint of the peers has no batch form, and a
batch is not comparable with single requests. The last line is the figure, e.g.
``API batch send: 12,400 messages/s accepted (4 clients x 1000-message batches, ...)``
(``API bulk customers: ... customers/s upserted``, ``API bulk events: ... events/s
recorded``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import threading
import time
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")

from bench.api import (
    CHECKOUT,
    SEED,
    group_cpu_seconds,
    log,
    scratch_stack,
    server_environment,
    serving,
)

BENCH_DATABASE = "bench_api_batch"
#: The key the load sends with (sends, customers and events), printed last.
SEED_KEY = 'print(api_key_create(name="bench", scopes=["send", "track"])[1])\n'

SEED_CUSTOMERS = """
Customer.objects.bulk_create(
    Customer(external_id=f"c{n}", email=f"c{n}@example.com") for n in range(%d)
)
"""


def message_items(prefix: str, size: int, customers: int, start: int) -> list[dict]:
    return [
        {
            "idempotency_key": f"{prefix}-{start + i}",
            "to": {"external_id": f"c{(start + i) % customers}"},
            "template": "order",
            "channel": "email",
            "data": {"order_id": str(start + i), "product": "Shoe", "total": "$1"},
        }
        for i in range(size)
    ]


def customer_items(prefix: str, size: int, customers: int, start: int) -> list[dict]:
    items = []
    for n in range(start, start + size):
        external_id = f"c{n % customers}" if n % 2 else f"{prefix}-{n}"
        items.append(
            {
                "external_id": external_id,
                "email": f"{external_id}@example.com",
                "locale": "en",
                "attributes": {"plan": "gold" if n % 3 else "free", "seen": n},
            }
        )
    return items


def event_items(prefix: str, size: int, customers: int, start: int) -> list[dict]:
    return [
        {
            "customer": f"c{(start + i) % customers}",
            "name": "order_placed",
            "properties": {"order_id": str(start + i), "total": 12.5},
            "event_id": f"{prefix}-{start + i}",
        }
        for i in range(size)
    ]


#: Per kind: the path, the list's name, its items, the answer expected, the table written,
#: and what the figure counts.
KINDS = {
    "messages": ("/api/v1/messages/batch", "messages", message_items, 207, "delivery_message"),
    "customers": ("/api/v1/customers/bulk", "customers", customer_items, 200, "audience_customer"),
    "events": ("/api/v1/events/bulk", "events", event_items, 202, "audience_event"),
}


def batch_body(prefix: str, size: int, customers: int, start: int, kind: str = "messages") -> bytes:
    _path, name, items, _status, _table = KINDS[kind]
    return json.dumps({name: items(prefix, size, customers, start)}).encode()


def accepted_of(kind: str, answer: dict) -> tuple[int, int, str | None]:
    """How many items the answer accepted, how many rows they add, and what refused one
    (None if none was)."""
    if kind == "messages":
        refused = next((r for r in answer["results"] if r["status"] != 202), None)
        return (
            answer["accepted"],
            answer["accepted"],
            refused and f"{answer['refused']} items refused, e.g. {refused}",
        )
    if kind == "customers":
        refused = next((r for r in answer["results"] if r["status"] == "invalid"), None)
        accepted = answer["created"] + answer["updated"]
        return accepted, answer["created"], refused and f"invalid: {refused}"
    duplicates = answer["duplicates"]
    return answer["accepted"], answer["accepted"], duplicates and f"{duplicates} duplicates"


def client_loop(port, api_key, args, name, deadline, totals, lock, errors) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    sent = 0
    latencies: list[float] = []
    accepted = 0
    added = 0
    path, _name, _items, expected, _table = KINDS[args.kind]
    while time.monotonic() < deadline:
        body = batch_body(name, args.batch, args.customers, sent, args.kind)
        started = time.perf_counter()
        connection.request("POST", path, body, headers)
        response = connection.getresponse()
        content = response.read()
        latencies.append(time.perf_counter() - started)
        sent += args.batch
        if response.status != expected:
            errors.append(f"{response.status}: {content[:300]!r}")
            break
        count, new, refused = accepted_of(args.kind, json.loads(content))
        accepted += count
        added += new
        if refused:
            errors.append(refused)
            break
    connection.close()
    with lock:
        totals["accepted"] += accepted
        totals["added"] += added
        totals["sent"] += sent
        totals["latencies"] += latencies


def run(args, database_url: str, broker_url: str) -> dict:
    env = server_environment(database_url, broker_url)
    with serving(args, env, SEED + SEED_CUSTOMERS % args.customers + SEED_KEY) as (
        port,
        api_key,
        pgid,
    ):
        totals = {"accepted": 0, "added": 0, "sent": 0, "latencies": []}
        rows_before = count_rows(KINDS[args.kind][4])
        lock = threading.Lock()
        errors: list[str] = []
        cpu_before = group_cpu_seconds(pgid)
        database_before = database_cpu_seconds()
        started = time.monotonic()
        deadline = started + args.seconds
        threads = [
            threading.Thread(
                target=client_loop,
                args=(port, api_key, args, f"t{n}", deadline, totals, lock, errors),
            )
            for n in range(args.clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        cpu = group_cpu_seconds(pgid) - cpu_before
        database_cpu = sum(
            seconds - database_before.get(pid, 0.0)
            for pid, seconds in database_cpu_seconds().items()
        )
    if errors:
        raise SystemExit(f"the batch endpoint refused work: {errors[0]}")
    latencies = sorted(totals["latencies"])
    return {
        "accepted": totals["accepted"],
        "rows_added": totals["added"],
        "rows_before": rows_before,
        "sent": totals["sent"],
        "seconds": elapsed,
        "batches": len(latencies),
        "server_cpu_ms_per_1000": round(cpu * 1000 * 1000 / max(totals["accepted"], 1), 1),
        "database_cpu_ms_per_1000": round(
            database_cpu * 1000 * 1000 / max(totals["accepted"], 1), 1
        ),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=sorted(KINDS), default="messages")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1000, help="items per request (<= 1000)")
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--checkout", type=Path, default=CHECKOUT, help="the checkout to serve")
    parser.add_argument("--database", default=BENCH_DATABASE)
    args = parser.parse_args(argv)

    with scratch_stack(args.database) as (database_url, broker_url, _count_messages):
        log(
            f"serving {args.checkout} with gunicorn -w {args.workers}, {args.clients} clients, "
            f"{args.kind}"
        )
        result = run(args, database_url, broker_url)
        stored = count_rows(KINDS[args.kind][4])
    log(f"result: {json.dumps(result)}; rows stored: {stored}")
    if result["accepted"] != result["sent"]:
        raise SystemExit(f"accepted {result['accepted']} of {result['sent']}")
    if stored != result["rows_before"] + result["rows_added"]:
        raise SystemExit(f"accepted {result['accepted']} of {result['sent']}, stored {stored}")
    rate = result["accepted"] / result["seconds"]
    what, done = {
        "messages": ("API batch send", "messages/s accepted"),
        "customers": ("API bulk customers", "customers/s upserted"),
        "events": ("API bulk events", "events/s recorded"),
    }[args.kind]
    print(
        f"server CPU per 1,000 {args.kind} (gunicorn workers, user+system): "
        f"{result['server_cpu_ms_per_1000']} ms; PostgreSQL (the server's connections): "
        f"{result['database_cpu_ms_per_1000']} ms"
    )
    print("plain DRF peer: none (it has no batch endpoint)")
    print(
        f"{what}: {rate:,.0f} {done} ({args.clients} clients x "
        f"{args.batch}-{args.kind.removesuffix('s')} batches, {result['batches']} batches, "
        f"p50 {result['p50_ms']} ms, "
        f"p99 {result['p99_ms']} ms per batch, gunicorn -w {args.workers})"
    )


def database_cpu_seconds() -> dict[int, float]:
    """CPU seconds (user + system) used so far by each PostgreSQL backend of the server's
    connections to the scratch database (persistent: the same ones serve the whole run);
    the database's share of the work, apart from anyone else's on a shared server."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        pids = [row[0] for row in cursor.fetchall()]
    used = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue  # ended meanwhile, or the server runs elsewhere
        used[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return used


def count_rows(table: str) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {connection.ops.quote_name(table)}")
        return cursor.fetchone()[0]


if __name__ == "__main__":
    main()
