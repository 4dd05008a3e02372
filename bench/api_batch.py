"""Batch send: messages accepted per second through ``POST /api/v1/messages/batch``.

    python -m bench.api_batch [--seconds 15] [--clients 4] [--batch 1000] [--workers 2]

Serves the project as ``bench.api`` does (``gunicorn orchestrator.wsgi -w 2``, DEBUG
off, production settings, a scratch database ``bench_api_batch``, a broker for the
dispatcher kick), seeds ``--customers`` customers, then ``--clients`` keep-alive clients
post batches of ``--batch`` sends for ``--seconds``, each send to one of the customers
with its own fresh ``idempotency_key`` and its own order data. Every item must come
back 202 and every accepted message must be in the database, or the run fails.

No peer is measured: the plain DRF endpoint of the peers has no batch form, and a
batch is not comparable with single requests. The last line is the figure, e.g.
``API batch send: 12,400 messages/s accepted (4 clients x 1000-message batches, ...)``.
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
    SEED_KEY,
    group_cpu_seconds,
    log,
    scratch_stack,
    server_environment,
    serving,
)

BENCH_DATABASE = "bench_api_batch"

SEED_CUSTOMERS = """
Customer.objects.bulk_create(
    Customer(external_id=f"c{n}", email=f"c{n}@example.com") for n in range(%d)
)
"""


def batch_body(prefix: str, size: int, customers: int, start: int) -> bytes:
    items = [
        {
            "idempotency_key": f"{prefix}-{start + i}",
            "to": {"external_id": f"c{(start + i) % customers}"},
            "template": "order",
            "channel": "email",
            "data": {"order_id": str(start + i), "product": "Shoe", "total": "$1"},
        }
        for i in range(size)
    ]
    return json.dumps({"messages": items}).encode()


def client_loop(port, api_key, args, name, deadline, totals, lock, errors) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    sent = 0
    latencies: list[float] = []
    accepted = 0
    while time.monotonic() < deadline:
        body = batch_body(name, args.batch, args.customers, sent)
        started = time.perf_counter()
        connection.request("POST", "/api/v1/messages/batch", body, headers)
        response = connection.getresponse()
        content = response.read()
        latencies.append(time.perf_counter() - started)
        sent += args.batch
        if response.status != 207:
            errors.append(f"{response.status}: {content[:300]!r}")
            break
        answer = json.loads(content)
        accepted += answer["accepted"]
        if answer["refused"]:
            refused = next(r for r in answer["results"] if r["status"] != 202)
            errors.append(f"{answer['refused']} items refused, e.g. {refused}")
            break
    connection.close()
    with lock:
        totals["accepted"] += accepted
        totals["sent"] += sent
        totals["latencies"] += latencies


def run(args, database_url: str, broker_url: str) -> dict:
    env = server_environment(database_url, broker_url)
    with serving(args, env, SEED + SEED_CUSTOMERS % args.customers + SEED_KEY) as (
        port,
        api_key,
        pgid,
    ):
        totals = {"accepted": 0, "sent": 0, "latencies": []}
        lock = threading.Lock()
        errors: list[str] = []
        cpu_before = group_cpu_seconds(pgid)
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
    if errors:
        raise SystemExit(f"the batch endpoint refused work: {errors[0]}")
    latencies = sorted(totals["latencies"])
    return {
        "accepted": totals["accepted"],
        "sent": totals["sent"],
        "seconds": elapsed,
        "batches": len(latencies),
        "server_cpu_ms_per_1000": round(cpu * 1000 * 1000 / max(totals["accepted"], 1), 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1000, help="sends per request (<= 1000)")
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--checkout", type=Path, default=CHECKOUT, help="the checkout to serve")
    parser.add_argument("--database", default=BENCH_DATABASE)
    args = parser.parse_args(argv)

    with scratch_stack(args.database) as (database_url, broker_url, count_stored):
        log(f"serving {args.checkout} with gunicorn -w {args.workers}, {args.clients} clients")
        result = run(args, database_url, broker_url)
        stored = count_stored()
    log(f"result: {json.dumps(result)}; messages stored: {stored}")
    if stored != result["accepted"] or result["accepted"] != result["sent"]:
        raise SystemExit(f"accepted {result['accepted']} of {result['sent']}, stored {stored}")
    rate = result["accepted"] / result["seconds"]
    print(
        "server CPU per 1,000 messages (gunicorn workers, user+system): "
        f"{result['server_cpu_ms_per_1000']} ms"
    )
    print("plain DRF peer: none (it has no batch endpoint)")
    print(
        f"API batch send: {rate:,.0f} messages/s accepted ({args.clients} clients x "
        f"{args.batch}-message batches, {result['batches']} batches, p50 {result['p50_ms']} ms, "
        f"p99 {result['p99_ms']} ms per batch, gunicorn -w {args.workers})"
    )


if __name__ == "__main__":
    main()
