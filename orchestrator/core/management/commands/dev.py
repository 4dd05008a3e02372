"""``manage.py dev``: the whole platform on one machine with one command.

Without ``DATABASE_URL`` settings has already attached this process to the
checkout's embedded PostgreSQL; without ``CELERY_BROKER_URL`` an embedded Valkey
is started here. Then: migrate, an ``admin`` superuser (once), the demo data
(once, on an empty database), and the web server, one Celery worker and beat as
child processes that get the database and broker URLs in their environment (so
they do not attach on their own). Ctrl-C or SIGTERM stops everything.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import sys
import time
from pathlib import Path

import psutil
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from orchestrator.celery import app as celery_app
from orchestrator.core import env
from orchestrator.core.devserver import Supervisor

#: One local worker consumes every queue (the lane's included).
WORKER_QUEUES = ",".join(q.name for q in celery_app.conf.task_queues)
ADMIN_USERNAME = "admin"


class Command(BaseCommand):
    help = "Run the whole platform for development: database, broker, web, worker and beat."

    def add_arguments(self, parser):
        parser.add_argument(
            "--port",
            type=int,
            default=None,
            help="Web port (default: $PORT or 8000).",
        )
        parser.add_argument(
            "--no-demo", action="store_true", help="Do not load the demo data into an empty DB."
        )

    def handle(self, *args, **options):
        port = options["port"] or env.get_int("PORT", 8000, minimum=1)
        if _port_in_use(port):
            raise CommandError(f"port {port} is in use; set PORT or pass --port")
        data = Path(settings.ORCHESTRATOR_DATA_DIR)
        # Until the supervisor takes over, SIGTERM interrupts setup like Ctrl-C does, so the
        # cleanup below (and the embedded PostgreSQL's at exit) still runs.
        signal.signal(signal.SIGTERM, _interrupt)
        valkey = None
        supervisor: Supervisor | None = None
        exit_code = 0
        try:
            broker_url = os.environ.get("CELERY_BROKER_URL")
            if not broker_url:
                valkey = self._start_valkey()
                broker_url = valkey.connection_url
                self._use_broker(broker_url)
            self._say(f"database: {self._database_label()}")
            self._say(f"broker:   {broker_url}")

            self._say("applying migrations...")
            call_command("migrate", interactive=False, verbosity=0)
            password = self._ensure_admin(data)
            if not options["no_demo"]:
                self._load_demo_once()
            # Children open their own connections; this process only supervises from here on.
            connections.close_all()

            child_env = self._child_env(broker_url, port)
            supervisor = Supervisor(env=child_env, cwd=str(settings.BASE_DIR))
            supervisor.install_signal_handlers()
            python = sys.executable
            # Beat and the worker log every dispatch sweep (every few seconds) at INFO, which
            # buries the banner; LOG_LEVEL=INFO shows them.
            celery_level = os.environ.get("LOG_LEVEL") or "WARNING"
            manage = str(Path(settings.BASE_DIR) / "manage.py")
            supervisor.start("web", [python, manage, "runserver", f"0.0.0.0:{port}", "--noreload"])
            supervisor.start(
                "worker",
                [python, "-m", "celery", "-A", "orchestrator", "worker", "-Q", WORKER_QUEUES,
                 "--concurrency", "2", "--loglevel", celery_level, "-n", "dev-worker@%h"],
            )  # fmt: skip
            supervisor.start(
                "beat",
                [python, "-m", "celery", "-A", "orchestrator", "beat", "--loglevel", celery_level],
            )
            banner = _Banner(port=port, password=password, supervisor=supervisor)
            exit_code = supervisor.watch(tick=banner.tick)
        except KeyboardInterrupt:
            self._say("interrupted during start-up.")
        finally:
            if supervisor is not None:
                supervisor.stop_all()
            if valkey is not None:
                from orchestrator.core.embedded import stop_valkey

                stop_valkey(valkey)
            connections.close_all()
            # The embedded PostgreSQL stops at interpreter exit when this was its last user.
            self._say("stopped." if exit_code == 0 else "stopped after a failure.")
        if exit_code:
            sys.exit(exit_code)

    # --- steps -------------------------------------------------------------------------
    def _say(self, line: str) -> None:
        self.stdout.write(f"dev   | {line}")
        self.stdout.flush()

    def _database_label(self) -> str:
        if settings.EMBEDDED_DATABASE:
            return f"embedded PostgreSQL in {Path(settings.ORCHESTRATOR_DATA_DIR) / 'pg'}"
        db = settings.DATABASES["default"]
        return f"PostgreSQL {db.get('HOST') or 'localhost'}:{db.get('PORT') or 5432}/{db['NAME']}"

    def _start_valkey(self):
        from orchestrator.core.embedded import running_valkey_url, start_valkey

        if running_valkey_url():
            _clear_stale_valkey(Path(settings.ORCHESTRATOR_DATA_DIR))
        self._say("starting the embedded Valkey broker...")
        return start_valkey()

    def _use_broker(self, url: str) -> None:
        # Settings read the broker before Valkey was up: point this process (the demo's
        # dispatch kicks) at it too.
        from orchestrator.celery import app as celery_app

        os.environ["CELERY_BROKER_URL"] = url
        settings.CELERY_BROKER_URL = url
        celery_app.conf.broker_url = url

    def _ensure_admin(self, data: Path) -> str | None:
        """Create the ``admin`` superuser once; return its password if this checkout knows it."""
        users = get_user_model()
        password_file = data / "admin_password"
        user = users.objects.filter(username=ADMIN_USERNAME).first()
        if user is None:
            password = secrets.token_urlsafe(12)
            users.objects.create_superuser(ADMIN_USERNAME, "admin@example.com", password)
            password_file.write_text(password + "\n")
            password_file.chmod(0o600)
            self._say(f"created the superuser {ADMIN_USERNAME!r}")
            return password
        if password_file.exists():
            password = password_file.read_text().strip()
            if user.check_password(password):
                return password
        return None

    def _load_demo_once(self) -> None:
        # The demo is an app above the domain: it is asked for by name, not imported here.
        call_command("load_demo", "--if-empty", stdout=self.stdout)

    def _child_env(self, broker_url: str, port: int) -> dict[str, str]:
        child = dict(os.environ)
        child["CELERY_BROKER_URL"] = broker_url
        child["PYTHONUNBUFFERED"] = "1"
        child["DJANGO_SETTINGS_MODULE"] = "orchestrator.settings"
        if settings.EMBEDDED_DATABASE:
            # Children use the server this process attached to instead of attaching themselves;
            # with DATABASE_URL set, settings would otherwise demand a SECRET_KEY and drop DEBUG.
            child["DATABASE_URL"] = settings.EMBEDDED_DATABASE_URL
            child["SECRET_KEY"] = settings.SECRET_KEY
            child.setdefault("DEBUG", "true" if settings.DEBUG else "false")
        child.setdefault("PUBLIC_BASE_URL", f"http://localhost:{port}")
        return child


class _Banner:
    """Prints the URLs once the web server accepts connections."""

    def __init__(self, *, port: int, password: str | None, supervisor: Supervisor) -> None:
        self.port = port
        self.password = password
        self.supervisor = supervisor
        self.started = time.monotonic()
        self.done = False

    def tick(self) -> None:
        if self.done or not _port_in_use(self.port):
            return
        self.done = True
        base = f"http://localhost:{self.port}"
        credentials = (
            f"user admin, password {self.password}"
            if self.password
            else "user admin (password set earlier: manage.py changepassword admin)"
        )
        python = Path(sys.executable)
        with contextlib.suppress(ValueError):
            python = python.relative_to(settings.BASE_DIR)
        lines = [
            "",
            f"{settings.BRAND_NAME} messaging platform is up "
            f"({time.monotonic() - self.started:.1f} s after starting the processes):",
            f"  web        {base}/",
            f"  admin      {base}/admin/   ({credentials})",
            f"  API docs   {base}/api/docs/",
            f"  dev inbox  {base}/dev/inbox/",
            f"  health     {base}/healthz",
            "",
            "Try the API:",
            f"  {python} manage.py create_api_key --name demo --scopes send,track,read,admin",
            f"  curl -s {base}/api/v1/messages -H 'Authorization: Bearer <key>' \\",
            "       -H 'Content-Type: application/json' -H 'Idempotency-Key: first-try' \\",
            '       -d \'{"to": {"external_id": "alex"}, "template": "order-confirmation", '
            '"topic": "order-updates", "channel": "preferred", '
            '"data": {"order_id": "A-1001", "product": "Stride Cloudrunner 3", '
            '"total": "$140.00"}}\'',
            "",
            "Ctrl-C stops everything.",
            "",
        ]
        for line in lines:
            self.supervisor.say(line)


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _clear_stale_valkey(data: Path) -> None:
    """A Valkey from an earlier run is still published: refuse if its ``dev`` still runs,
    otherwise (the earlier run was killed) stop the orphan so this run starts clean."""
    import json

    state = json.loads((data / "valkey" / "server.json").read_text())
    try:
        server = psutil.Process(int(state["pid"]))
        owner = server.parent()
    except psutil.Error:
        return
    if owner is not None and owner.pid != 1:
        try:
            cmdline = " ".join(owner.cmdline())
        except psutil.Error:
            cmdline = ""
        if "manage.py" in cmdline and " dev" in cmdline:
            raise CommandError(
                f"another `manage.py dev` (pid {owner.pid}) is already running in this checkout"
            )
    server.terminate()
    try:
        server.wait(5)
    except psutil.TimeoutExpired:
        server.kill()
    (data / "valkey" / "server.json").unlink(missing_ok=True)
