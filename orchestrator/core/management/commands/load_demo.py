"""``manage.py load_demo``: the Stride Running demo data, idempotent (orchestrator.core.demo)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from orchestrator.core.demo import load_demo


class Command(BaseCommand):
    help = "Load the Stride Running demo: customers, topics, consent, templates, orders, messages."

    def handle(self, *args, **options):
        summary = load_demo()
        if summary.total:
            self.stdout.write(self.style.SUCCESS(f"Demo data loaded: {summary}."))
        else:
            self.stdout.write("Demo data already loaded; nothing changed.")
