"""Worker processes the fault tests start and kill."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def reaped(worker: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """Whatever the test does with ``worker``, it is gone afterwards: killed if still
    running (a failed assertion mid-test), waited for, and its pipes closed."""
    try:
        yield worker
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        for pipe in (worker.stdout, worker.stderr):
            if pipe is not None:
                pipe.close()
