"""``manage.py create_api_key --name NAME --scopes send,track,read,admin``: print a new key once."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from orchestrator.api.auth import api_key_create
from orchestrator.api.models import ApiKey


class Command(BaseCommand):
    help = "Create an API key and print it. It is stored hashed and cannot be shown again."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True, help="Who or what uses the key.")
        parser.add_argument(
            "--scopes",
            required=True,
            help=f"Comma-separated, from: {', '.join(ApiKey.Scope.values)}.",
        )

    def handle(self, *args, name: str, scopes: str, **options):
        if not name.strip() or len(name.strip()) > 100:
            raise CommandError("--name must be 1 to 100 characters.")
        wanted = [s.strip() for s in scopes.split(",") if s.strip()]
        try:
            key, raw = api_key_create(name=name.strip(), scopes=wanted)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stderr.write(
            f"Created key {key.prefix}... for {key.name!r} with scopes {', '.join(key.scopes)}. "
            "Store it now; it is not shown again."
        )
        self.stdout.write(raw)
