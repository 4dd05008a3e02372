"""A small process supervisor for ``manage.py dev``: web, worker and beat as child processes.

Each child runs in its own session (process group) so that a terminal's Ctrl-C
reaches only the supervisor, which then stops the children in order: SIGTERM to
the whole group (a Celery worker's pool processes included), SIGKILL after a
timeout. On Linux each child also asks the kernel to send it SIGTERM when the
supervisor dies, so even a ``kill -9`` of the supervisor leaves no strays.
Output of each child is prefixed with its name, one line at a time.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Runs in the child between fork and exec: SIGTERM us when the supervisor goes away."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    argv: Sequence[str]
    process: subprocess.Popen | None = None
    reader: threading.Thread | None = field(default=None, repr=False)


class Supervisor:
    """Starts named children, watches them, and stops all of them when one dies or on a signal."""

    def __init__(
        self,
        *,
        env: dict[str, str],
        cwd: str,
        out: IO[str] | None = None,
        stop_timeout: float = 10.0,
    ) -> None:
        self.env = env
        self.cwd = cwd
        self.out = out or sys.stdout
        self.stop_timeout = stop_timeout
        self.children: list[Child] = []
        self._stop_requested: int | None = None
        self._write_lock = threading.Lock()
        self._width = 6  # wide enough for "worker"

    # --- output -------------------------------------------------------------------
    def say(self, line: str, *, name: str = "dev") -> None:
        with self._write_lock:
            self.out.write(f"{name:<{self._width}}| {line}\n")
            self.out.flush()

    def _pump(self, child: Child) -> None:
        assert child.process is not None and child.process.stdout is not None
        for raw in iter(child.process.stdout.readline, b""):
            self.say(raw.decode("utf-8", "replace").rstrip("\n"), name=child.name)

    # --- lifecycle ----------------------------------------------------------------
    def start(self, name: str, argv: Sequence[str]) -> Child:
        child = Child(name=name, argv=list(argv))
        child.process = subprocess.Popen(  # noqa: S603 - argv is built by us, never from input
            list(argv),
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        child.reader = threading.Thread(target=self._pump, args=(child,), daemon=True)
        child.reader.start()
        self.children.append(child)
        return child

    def request_stop(self, signum: int, _frame=None) -> None:
        """Signal handler: remember the signal; the watch loop does the stopping."""
        self._stop_requested = signum

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGTERM, self.request_stop)

    def watch(self, *, poll: float = 0.3, tick: Callable[[], None] | None = None) -> int:
        """Block until a stop signal (return 0) or a child exits on its own (return 1)."""
        while True:
            if self._stop_requested is not None:
                name = signal.Signals(self._stop_requested).name
                self.say(f"{name} received, stopping...")
                return 0
            for child in self.children:
                code = child.process.poll() if child.process else None
                if code is not None:
                    self.say(
                        f"{child.name} exited unexpectedly with code {code}; stopping everything."
                    )
                    return 1
            if tick is not None:
                tick()
            time.sleep(poll)

    def stop_all(self) -> None:
        """SIGTERM every child's process group, then SIGKILL whatever is left after the timeout."""
        # Stop in reverse start order: beat stops producing before the worker stops consuming.
        running = [c for c in reversed(self.children) if c.process and c.process.poll() is None]
        for child in running:
            self._signal_group(child, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for child in running:
            assert child.process is not None
            remaining = max(0.1, deadline - time.monotonic())
            try:
                child.process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                self.say(f"{child.name} did not stop in {self.stop_timeout:.0f} s; killing it.")
                self._signal_group(child, signal.SIGKILL)
                child.process.wait(timeout=5)
        # A group may outlive its leader (e.g. a worker's pool process): make sure it is gone.
        for child in self.children:
            self._signal_group(child, signal.SIGKILL)
        for child in self.children:
            if child.reader is not None:
                child.reader.join(timeout=2)

    @staticmethod
    def _signal_group(child: Child, signum: int) -> None:
        if child.process is None:
            return
        # The child is its own process-group leader (start_new_session), so pgid == pid.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.process.pid, signum)
