"""The Django project and the orchestration core (audience, consent, delivery, api)."""

from orchestrator.celery import app as celery_app

__all__ = ["celery_app"]
