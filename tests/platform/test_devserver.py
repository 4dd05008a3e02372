"""``manage.py dev`` on a data directory of its own: starts the whole platform, stops clean.

Runs the real command in a subprocess with ORCHESTRATOR_DATA_DIR pointing at a
temporary directory, so it initializes and starts its own PostgreSQL and Valkey,
apart from the checkout's. Afterwards no process may remain that mentions that
directory in its command line (PostgreSQL, Valkey) or its environment (web,
worker, beat).
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str, opener=None) -> tuple[int, str]:
    opener = opener or urllib.request.build_opener()
    try:
        with opener.open(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def processes_mentioning(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(marker in part for part in proc.info["cmdline"] or ()):
                found.append(proc)
                continue
            if proc.environ().get("ORCHESTRATOR_DATA_DIR") == marker:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def strays(marker: str, *, within: float = 10.0) -> list[psutil.Process]:
    """Processes still mentioning ``marker`` after up to ``within`` seconds.

    A process signalled a moment ago can take a little while to be reaped; one
    that is still there after the grace period is a real stray.
    """
    deadline = time.monotonic() + within
    while True:
        found = [p for p in processes_mentioning(marker) if _alive(p)]
        if not found or time.monotonic() >= deadline:
            return found
        time.sleep(0.2)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class DevServer:
    def __init__(self, data_dir: str, log_path: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {
            k: v
            for k, v in os.environ.items()
            # The test session's broker and database must not leak in: dev starts its own.
            if k not in ("CELERY_BROKER_URL", "DATABASE_URL", "SECRET_KEY", "PORT", "DEBUG")
        }
        env |= {"ORCHESTRATOR_DATA_DIR": data_dir, "PORT": str(self.port)}
        self.log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "dev"],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            # Its own process group, as a shell gives a foreground command: Ctrl-C in a
            # terminal signals the whole group, so the test does the same.
            start_new_session=True,
        )

    def ctrl_c(self) -> None:
        os.killpg(self.process.pid, signal.SIGINT)

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"dev exited early:\n{self.output()[-4000:]}"
            try:
                status, body = get(f"{self.base}/healthz")
                if status == 200:
                    return json.loads(body)
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"no healthy /healthz in {timeout} s:\n{self.output()[-4000:]}")

    def wait_output(self, text: str, timeout: float = 10.0) -> bool:
        """Whether ``text`` shows up in the output within ``timeout`` seconds: the banner
        is printed by the supervisor's next tick after the port opens, which can come
        just after the first healthy answer."""
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.log.close()


def admin_login(base: str, password: str) -> str:
    """Log in through the real login form; return the admin index page."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    status, page = get(f"{base}/admin/login/", opener)
    assert status == 200
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode(
        {"csrfmiddlewaretoken": token, "username": "admin", "password": password, "next": "/admin/"}
    ).encode()
    request = urllib.request.Request(
        f"{base}/admin/login/", data=form, headers={"Referer": f"{base}/admin/login/"}
    )
    with opener.open(request, timeout=10) as response:
        return response.read().decode()


def test_dev_starts_everything_and_stops_clean_on_sigint_or_a_dead_child(tmp_path):
    # A short path: PostgreSQL's socket path must stay under ~100 bytes.
    data_dir = tempfile.mkdtemp(prefix="orch-dev-")
    first = DevServer(data_dir, tmp_path / "dev-1.log")
    try:
        health = first.wait_healthy(timeout=90)
        assert health["status"] == "ok", health
        assert health["checks"]["broker"]["ok"] is True

        password = (Path(data_dir) / "admin_password").read_text().strip()
        assert first.wait_output(password), first.output()[-3000:]  # printed for the developer
        index = admin_login(first.base, password)
        assert "Stride Running" in index and "Customers" in index

        assert get(f"{first.base}/")[0] == 200
        assert get(f"{first.base}/dev/inbox/")[0] == 200

        stopping_from = len(first.output())
        first.ctrl_c()
        assert first.wait_exit(timeout=20) == 0, first.output()[-3000:]
        assert "stopped." in first.output()
        # The broker outlives the worker and beat: nothing complains on the way down.
        assert "Traceback" not in first.output()[stopping_from:], first.output()[-6000:]
        assert "Cannot connect" not in first.output()[stopping_from:], first.output()[-6000:]
        assert strays(data_dir) == []

        # Second start on the same data: no new superuser, same password; then a child dies.
        second = DevServer(data_dir, tmp_path / "dev-2.log")
        try:
            second.wait_healthy(timeout=60)
            assert "created the superuser" not in second.output()
            assert second.wait_output(password), second.output()[-3000:]
            worker = next(
                p
                for p in processes_mentioning(data_dir)
                if "worker" in " ".join(p.cmdline()) and p.ppid() == second.process.pid
            )
            worker.kill()
            assert second.wait_exit(timeout=20) == 1
            assert "worker exited unexpectedly" in second.output()
            assert strays(data_dir) == []
        finally:
            if second.process.poll() is None:
                second.process.kill()
    finally:
        if first.process.poll() is None:
            first.process.kill()
        for proc in processes_mentioning(data_dir):
            proc.kill()
        subprocess.run(["rm", "-rf", data_dir], check=False)


def test_embedded_valkey_ignores_the_terminals_ctrl_c_but_not_its_parents_death(tmp_path):
    script = (
        "import os, sys, time\n"
        "os.environ['ORCHESTRATOR_DATA_DIR'] = sys.argv[1]\n"
        "from orchestrator.core.embedded import start_valkey\n"
        "server = start_valkey(persist=False)\n"
        "print(server._process.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        valkey = psutil.Process(int(parent.stdout.readline()))
        assert os.getpgid(valkey.pid) != os.getpgid(parent.pid)  # Ctrl-C does not reach it
        parent.kill()
        parent.wait(timeout=10)
        valkey.wait(timeout=10)  # gone with its parent, though that died by SIGKILL
    finally:
        if parent.poll() is None:
            parent.kill()
