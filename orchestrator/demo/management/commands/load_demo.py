"""``manage.py load_demo``: the Stride Running demo data, idempotent (see demo.services)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from orchestrator.demo.services import BRAND, database_has_customers, load_demo


class Command(BaseCommand):
    help = "Load the Stride Running demo: customers, topics, consent, templates, orders, messages."

    def add_arguments(self, parser):
        parser.add_argument(
            "--if-empty",
            action="store_true",
            help="Load only into a database without customers (what `manage.py dev` does).",
        )

    def handle(self, *args, **options):
        # Only into an empty database: a developer who deleted demo rows keeps them deleted.
        if options["if_empty"] and database_has_customers():
            return
        if options["if_empty"]:
            self.stdout.write(f"loading the {BRAND} demo data...")
            self.stdout.flush()
        summary = load_demo()
        if summary.total:
            self.stdout.write(self.style.SUCCESS(f"Demo data loaded: {summary}."))
        else:
            self.stdout.write("Demo data already loaded; nothing changed.")
