"""The Celery app: queues, routing, and the few periodic sweeps beat runs.

Tasks carry ids or nothing. Beat runs sweepers defined here in code; there are
no per-customer schedules and no long countdowns (a Redis broker re-delivers an
ETA task once its visibility timeout passes).
"""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")

app = Celery("orchestrator")
app.config_from_object("django.conf:settings", namespace="CELERY")

app.conf.task_queues = [
    Queue("dispatch"),
    Queue("lane"),
    Queue("journeys"),
    Queue("webhooks"),
    Queue("sweeps"),
    Queue("default"),
]
app.conf.task_routes = {
    # The first matching pattern wins: the lane's task before the rest of delivery.
    "delivery.dispatch_lane": {"queue": "lane"},
    "delivery.*": {"queue": "dispatch"},
    "journeys.*": {"queue": "journeys"},
    "webhooks.*": {"queue": "webhooks"},
    "sweeps.*": {"queue": "sweeps"},
}


app.autodiscover_tasks()
