"""/metrics: the exposition format, every family, and counts that follow real sends."""

from __future__ import annotations

import datetime as dt
import socket
import time
from collections import Counter

import pytest
from django.utils import timezone

from orchestrator.core import metrics
from orchestrator.delivery.dispatcher import dispatch_due
from orchestrator.delivery.models import Message, MessageEvent
from tests.delivery.factories import locmem_adapters, make_customer, make_template, make_topic
from tests.delivery.factories import queue as queue_message
from tests.ops.promtext import FormatError, parse

pytestmark = pytest.mark.django_db

FAMILIES = {
    "orchestrator_messages_waiting": "gauge",
    "orchestrator_messages_due": "gauge",
    "orchestrator_messages_sending": "gauge",
    "orchestrator_messages_awaiting_reconciliation": "gauge",
    "orchestrator_backlog_oldest_due_seconds": "gauge",
    "orchestrator_messages_total": "counter",
    "orchestrator_journey_enrollments_active": "gauge",
    "orchestrator_provider_requests_total": "counter",
    "orchestrator_provider_latency_seconds": "histogram",
    "orchestrator_webhook_rejected_total": "counter",
    "orchestrator_metrics_broker_up": "gauge",
    "orchestrator_metrics_scrape_seconds": "gauge",
}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _history_counts() -> Counter:
    """What the counters must say: history rows by their message's channel and status."""
    return Counter(
        (channel, status)
        for channel, status in MessageEvent.objects.values_list("message__channel", "status")
    )


def _totals(exposition) -> Counter:
    return Counter(
        {
            (labels["channel"], labels["status"]): value
            for _name, labels, value in exposition["orchestrator_messages_total"].samples
        }
    )


# --- the parser itself must be able to say no ------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "x 1\n",  # no HELP/TYPE
        "# HELP x h\n# TYPE x gauge\nx 1",  # no final newline
        '# HELP x h\n# TYPE x gauge\nx{a="1} 1\n',  # broken quoting
        '# HELP x h\n# TYPE x gauge\nx{a="1"} 1\nx{a="1"} 2\n',  # duplicate series
        "# HELP x h\n# TYPE x gauge\nx one\n",  # not a number
        "# HELP x h\n# TYPE x gauge\nx 1 1700000000\n",  # a timestamp
        "# HELP x h\n# TYPE x counter\nx -1\n",  # negative counter
        "# HELP x h\n# TYPE x gauge\ny 1\n",  # sample of another family
        "# HELP x h\n# TYPE x gauge\n# a comment\nx 1\n",  # other comments
        "# HELP h h\n# TYPE h histogram\n"
        'h_bucket{le="1.0"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',  # not cumulative
        "# HELP h h\n# TYPE h histogram\n"
        'h_bucket{le="1.0"} 1\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 2\n',  # count differs
    ],
)
def test_the_strict_parser_refuses_malformed_expositions(text):
    with pytest.raises(FormatError):
        parse(text)


def test_the_strict_parser_reads_labels_and_escapes():
    exposition = parse(
        "# HELP x h\n# TYPE x gauge\n"
        'x{a="q\\"uote",b="back\\\\slash\\nnl"} 2.5\n'
        "# HELP h h\n# TYPE h histogram\n"
        'h_bucket{le="0.5"} 0\nh_bucket{le="+Inf"} 3\nh_sum 4.5\nh_count 3\n'
    )
    assert exposition.value("x", a='q"uote', b="back\\slash\nnl") == 2.5
    assert exposition.value("h", "h_count") == 3


# --- the endpoint ----------------------------------------------------------------------


def test_metrics_on_an_empty_database_has_every_family_in_valid_text_format(scrape):
    exposition = scrape()

    assert {name: f.type for name, f in exposition.families.items()} == FAMILIES
    assert exposition["orchestrator_messages_waiting"].samples == []
    assert exposition.value("orchestrator_backlog_oldest_due_seconds") == 0
    assert exposition.value("orchestrator_journey_enrollments_active") == 0
    assert exposition.value("orchestrator_metrics_broker_up") == 1
    assert exposition["orchestrator_provider_requests_total"].samples == []


def test_backlog_and_history_counts_follow_queuing_and_sending(scrape, outbox):
    template = make_template(topic=make_topic())
    now = timezone.now()
    queue_message(make_customer(), template)
    queue_message(make_customer(), template)
    queue_message(make_customer(), template, send_at=now + dt.timedelta(days=1))
    queue_message(make_customer(), template, channel="sms")
    late = queue_message(make_customer(), template, channel="sms")
    Message.objects.filter(pk=late.pk).update(send_after=now - dt.timedelta(minutes=10))

    before = scrape()

    waiting = before["orchestrator_messages_waiting"]
    due = before["orchestrator_messages_due"]
    assert waiting.value(channel="email", status="queued") == 2
    assert due.value(channel="email", status="queued") == 2
    assert waiting.value(channel="email", status="scheduled") == 1
    assert due.value(channel="email", status="scheduled") == 0
    assert waiting.value(channel="sms", status="queued") == 2
    assert due.value(channel="sms", status="queued") == 2
    assert len(waiting.samples) == 3
    assert 600 <= before.value("orchestrator_backlog_oldest_due_seconds") < 700
    assert _totals(before) == Counter(
        {("email", "queued"): 2, ("email", "scheduled"): 1, ("sms", "queued"): 2}
    )

    stats, _more = dispatch_due()
    assert stats.sent == 4
    after = scrape()

    waiting = after["orchestrator_messages_waiting"]
    assert waiting.samples == [
        ("orchestrator_messages_waiting", {"channel": "email", "status": "scheduled"}, 1)
    ]
    assert after.value("orchestrator_messages_due", channel="email", status="scheduled") == 0
    # The only waiting message is not due yet: no due backlog, so no age.
    assert after.value("orchestrator_backlog_oldest_due_seconds") == 0
    totals = _totals(after)
    assert totals[("email", "sent")] == 2
    assert totals[("sms", "sent")] == 2
    assert totals[("email", "queued")] == 2  # a counter: queued messages that moved on stay
    assert totals == _history_counts()

    # A third scrape with nothing new changes no counter (nothing is counted twice).
    assert _totals(scrape()) == totals


def test_sending_messages_are_counted_per_channel(scrape):
    template = make_template(topic=make_topic())
    claimed = [queue_message(make_customer(), template) for _ in range(3)]
    sms = queue_message(make_customer(), template, channel="sms")
    Message.objects.filter(pk__in=[claimed[0].pk, claimed[1].pk, sms.pk]).update(status="sending")

    exposition = scrape()

    sending = exposition["orchestrator_messages_sending"]
    assert sending.value(channel="email") == 2
    assert sending.value(channel="sms") == 1
    assert exposition.value("orchestrator_messages_waiting", channel="email", status="queued") == 1


def test_active_journey_enrollments_are_counted(scrape):
    from journeys.enrollment import Candidate, enroll
    from journeys.models import Enrollment
    from tests.journeys.conftest import make_journey, send

    make_template("journey-hello", topic=make_topic("journey-news"))
    journey = make_journey([send()])
    customers = [make_customer() for _ in range(3)]
    ids = enroll(journey, [Candidate(c.id, "t", {}) for c in customers])
    assert len(ids) == 3
    Enrollment.objects.filter(pk=ids[0]).update(status="completed")

    assert scrape().value("orchestrator_journey_enrollments_active") == 2


def test_provider_requests_and_latency_are_counted_per_adapter_call(scrape, settings, outbox):
    bad, unknown = "+15005550001", "+15005550002"
    settings.CHANNEL_ADAPTERS = locmem_adapters(
        sms={"fail": {bad: "permanent", unknown: "unknown"}}
    )
    template = make_template(topic=make_topic())
    queue_message(make_customer(), template)
    queue_message(make_customer(), template)
    for phone in (bad, unknown, "+15005550003"):
        queue_message(make_customer(phone=phone), template, channel="sms")

    dispatch_due()
    exposition = scrape()

    requests = exposition["orchestrator_provider_requests_total"]
    assert requests.value(provider="locmem", outcome="accepted") == 3
    assert requests.value(provider="locmem", outcome="rejected") == 1
    assert requests.value(provider="locmem", outcome="unknown") == 1
    latency = exposition["orchestrator_provider_latency_seconds"]
    # One call per channel: email and sms.
    assert latency.value("orchestrator_provider_latency_seconds_count", provider="locmem") == 2
    assert (
        latency.value("orchestrator_provider_latency_seconds_bucket", provider="locmem", le="+Inf")
        == 2
    )
    assert latency.value("orchestrator_provider_latency_seconds_sum", provider="locmem") > 0


def test_latency_lands_in_the_right_bucket(scrape, settings, outbox):
    settings.CHANNEL_ADAPTERS = {
        "email": {"BACKEND": "tests.ops.adapters.SlowAdapter", "OPTIONS": {"delay": 0.3}}
    }
    queue_message(make_customer(), make_template(topic=make_topic()))

    dispatch_due()
    latency = scrape()["orchestrator_provider_latency_seconds"]

    def bucket(le: str) -> float | None:
        return latency.value("orchestrator_provider_latency_seconds_bucket", provider="slow", le=le)

    assert bucket("0.25") == 0
    assert bucket("0.5") == 1
    assert bucket("+Inf") == 1
    assert 0.3 <= latency.value("orchestrator_provider_latency_seconds_sum", provider="slow") < 0.5


def test_an_adapter_call_that_raises_counts_its_messages_as_unknown(scrape, settings):
    settings.CHANNEL_ADAPTERS = {"email": {"BACKEND": "tests.ops.adapters.ExplodingAdapter"}}
    template = make_template(topic=make_topic())
    queue_message(make_customer(), template)
    queue_message(make_customer(), template)

    dispatch_due()
    exposition = scrape()

    requests = exposition["orchestrator_provider_requests_total"]
    assert requests.value(provider="exploding", outcome="unknown") == 2
    assert requests.value(provider="exploding", outcome="accepted") is None
    assert (
        exposition.value(
            "orchestrator_provider_latency_seconds",
            "orchestrator_provider_latency_seconds_count",
            provider="exploding",
        )
        == 1
    )


def test_forged_webhooks_are_counted_and_genuine_ones_are_not(scrape, client, settings):
    from tests.webhooks.conftest import TWILIO_TOKEN, line_post, twilio_post

    settings.TWILIO_AUTH_TOKEN = TWILIO_TOKEN
    settings.LINE_CHANNEL_SECRET = "line-secret"
    settings.WEBHOOK_BASE_URL = None
    status = {"MessageSid": "SM1", "MessageStatus": "delivered"}

    assert twilio_post(client, "/webhooks/twilio/status/", status).status_code == 204
    assert scrape()["orchestrator_webhook_rejected_total"].samples == []

    forged = twilio_post(client, "/webhooks/twilio/status/", status, token="not-the-token")
    unsigned = client.post("/webhooks/twilio/inbound/", {"MessageSid": "SM2", "From": "+1"})
    line = line_post(client, [], secret="wrong-secret")
    assert [r.status_code for r in (forged, unsigned, line)] == [403, 403, 403]

    rejected = scrape()["orchestrator_webhook_rejected_total"]
    assert rejected.value(provider="twilio") == 2
    assert rejected.value(provider="line") == 1
    assert rejected.value(provider="sendgrid") is None


# --- METRICS_TOKEN ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer wrong-token",
        "Basic czNjcmV0LXRva2Vu",
        "s3cret-token",  # no scheme
        "Bearer s3cret-tokën",  # non-ASCII: refused, not a server error
    ],
)
def test_metrics_token_refuses_requests_without_the_right_bearer(client, settings, header):
    settings.METRICS_TOKEN = "s3cret-token"
    extra = {} if header is None else {"HTTP_AUTHORIZATION": header}

    response = client.get("/metrics", **extra)

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"orchestrator_" not in response.content


def test_metrics_token_lets_the_right_bearer_in(client, settings, metrics_store):
    settings.METRICS_TOKEN = "s3cret-token"

    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token")

    assert response.status_code == 200
    assert "orchestrator_messages_total" in parse(response.content.decode()).families


# --- the broker ------------------------------------------------------------------------


def test_a_dead_broker_costs_one_timeout_and_the_scrape_still_answers(scrape, settings):
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{_closed_port()}/0"
    metrics._redis.cache_clear()

    started = time.monotonic()
    metrics.provider_call_observe(provider="locmem", seconds=0.1, accepted=1, rejected=0, unknown=0)
    metrics.webhook_rejected("twilio")
    metrics.webhook_rejected("twilio")
    assert time.monotonic() - started < 2  # one refused connection, then skipped

    exposition = scrape()
    assert exposition.value("orchestrator_metrics_broker_up") == 0
    assert "orchestrator_provider_requests_total" not in exposition.families
    assert exposition.value("orchestrator_journey_enrollments_active") == 0


def test_counters_are_skipped_for_a_while_after_a_failure_then_resume(metrics_store, broker_url):
    metrics._skip_writes_until = time.monotonic() + 60

    metrics.webhook_rejected("line")
    assert metrics_store.hget(metrics._REJECTED, "line") is None

    metrics._skip_writes_until = 0.0
    metrics.webhook_rejected("line")
    assert metrics_store.hget(metrics._REJECTED, "line") == b"1"


def test_an_amqp_broker_has_no_counters_but_nothing_fails(scrape, settings):
    settings.CELERY_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"
    metrics._redis.cache_clear()

    metrics.provider_call_observe(provider="locmem", seconds=0.1, accepted=1, rejected=0, unknown=0)
    metrics.webhook_rejected("twilio")

    assert scrape().value("orchestrator_metrics_broker_up") == 0


def test_valkey_scheme_broker_urls_are_read_as_redis(settings, broker_url):
    settings.CELERY_BROKER_URL = broker_url.replace("redis://", "valkey://", 1)
    metrics._redis.cache_clear()
    try:
        assert metrics._redis().ping()
    finally:
        metrics._redis.cache_clear()
