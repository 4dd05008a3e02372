"""Per-sender send rates: GCRA on the test suite's real Valkey, shared by threads and processes."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import socket
import threading
import time
import uuid
from urllib.parse import urlsplit

import pytest
import redis
from django.core.exceptions import ImproperlyConfigured

from channels.adapters import OutboundMessage, get_adapter, locmem
from channels.adapters import ratelimit as rl
from channels.adapters.base import RATE_LIMIT_OPTIONS
from channels.adapters.locmem import LocmemAdapter
from channels.adapters.ratelimit import (
    KEY_PREFIX,
    LocalRateLimiter,
    RateLimiter,
    RateLimitExceeded,
)


@pytest.fixture
def key() -> str:
    return f"test:{uuid.uuid4().hex}"


@pytest.fixture
def store(broker_url):
    client = redis.Redis.from_url(broker_url)
    yield client
    client.close()


def _batch(n: int) -> list[OutboundMessage]:
    return [
        OutboundMessage(message_id=i, channel="sms", to=f"+1415555{i:04d}", body="Hi")
        for i in range(1, n + 1)
    ]


def _assert_rate_respected(stamps: list[float], rate: float, burst: int) -> None:
    """GCRA's promise: no window of w seconds holds more than burst + w * rate permits.

    Two permits of slack absorb the scheduling delay (on a busy machine) between a
    permit's slot and the moment its thread wakes up and records it; without a limit
    all the permits would come within a few milliseconds.
    """
    stamps = sorted(stamps)
    for i in range(len(stamps)):
        for j in range(i + 1, len(stamps)):
            permits = j - i + 1
            assert permits <= burst + (stamps[j] - stamps[i]) * rate + 2 + 1e-9, (i, j, stamps)


# --- the shared limiter ----------------------------------------------------------------


def _child_acquires(limiter: RateLimiter, count: int, queue) -> None:
    stamps = []
    for _ in range(count):
        limiter.acquire()
        stamps.append(time.time())
    pids = {cache_key[0] for cache_key in rl._clients}
    queue.put((stamps, pids))


def test_threads_and_processes_sharing_a_key_respect_the_rate(broker_url, key):
    rate = 50.0
    limiter = RateLimiter(key, rate, url=broker_url)
    limiter.acquire(max_wait=1)  # the parent now holds a connection the children must not use
    time.sleep(1 / rate)  # and the key is idle again

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    children = [ctx.Process(target=_child_acquires, args=(limiter, 4, queue)) for _ in range(2)]
    stamps: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def thread_acquires() -> None:
        barrier.wait()
        for _ in range(3):
            limiter.acquire()
            with lock:
                stamps.append(time.time())

    threads = [threading.Thread(target=thread_acquires) for _ in range(4)]
    started = time.time()
    for child in children:
        child.start()
    for thread in threads:
        thread.start()
    results = [queue.get(timeout=10) for _ in children]
    for thread in threads:
        thread.join()
    for child in children:
        child.join(timeout=10)
        assert child.exitcode == 0

    for child_stamps, pids in results:
        stamps.extend(child_stamps)
        # Each child talks to the store over connections of its own.
        assert pids and all(pid != multiprocessing.current_process().pid for pid in pids)
    assert len(stamps) == 20
    stamps.sort()
    # 0.38 s at least: the first permit is free, each of the 19 others 1/rate later.
    assert 19 / rate - 0.002 <= stamps[-1] - started < 3
    _assert_rate_respected(stamps, rate, burst=1)


def test_burst_allows_an_initial_burst_then_the_rate(broker_url, key):
    limiter = RateLimiter(key, 20, burst=5, url=broker_url)
    assert [limiter.acquire() for _ in range(5)] == [0.0] * 5
    waited = limiter.acquire()
    assert 0 < waited <= 0.05


def test_separate_keys_do_not_interfere(broker_url, key):
    a = RateLimiter(f"{key}:a", 10, url=broker_url)
    b = RateLimiter(f"{key}:b", 10, url=broker_url)
    assert a.acquire() == 0.0
    assert b.acquire() == 0.0
    with pytest.raises(RateLimitExceeded):
        a.acquire(max_wait=0)
    assert RateLimiter(f"{key}:c", 10, url=broker_url).acquire(max_wait=0) == 0.0


def test_max_wait_raises_and_reserves_nothing(broker_url, key, store):
    limiter = RateLimiter(key, 1, url=broker_url)
    assert limiter.acquire(max_wait=0) == 0.0
    with pytest.raises(RateLimitExceeded, match=r"more than max_wait=0\.5 s") as first:
        limiter.acquire(max_wait=0.5)
    assert 0.9 < first.value.wait <= 1.0
    assert first.value.key == f"{KEY_PREFIX}{key}"
    with pytest.raises(RateLimitExceeded) as second:
        limiter.acquire(max_wait=0.5)
    assert second.value.wait <= first.value.wait  # the refusal took no slot
    # The key is namespaced and expires once idle.
    assert 0 < store.pttl(f"{KEY_PREFIX}{key}") <= 2000


def test_acquiring_several_permits_at_once_waits_for_them(broker_url, key):
    limiter = RateLimiter(key, 20, url=broker_url)
    assert limiter.acquire(3) == pytest.approx(0.1, abs=0.002)
    with pytest.raises(RateLimitExceeded):
        limiter.acquire(max_wait=0)


def test_bad_arguments_are_refused(broker_url):
    with pytest.raises(ValueError, match="rate_per_second"):
        RateLimiter("k", 0, url=broker_url)
    with pytest.raises(ValueError, match="burst"):
        RateLimiter("k", 1, burst=0, url=broker_url)
    with pytest.raises(ValueError, match="url"):
        RateLimiter("k", 1, url="amqp://guest:secret@localhost//")
    with pytest.raises(ValueError, match="n must be"):
        RateLimiter("k", 1, url=broker_url).acquire(0)
    with pytest.raises(ValueError, match="max_wait"):
        LocalRateLimiter(1).acquire(max_wait=-1)


# --- the store going away and coming back ------------------------------------------------


class _Proxy:
    """A TCP forwarder to the test Valkey on a port of its own, to cut and restore."""

    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 6379)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._stop = threading.Event()

    def start(self) -> None:
        self._stop.clear()
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        listener.settimeout(0.02)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            upstream = socket.create_connection(self.target)
            self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def proxy(broker_url):
    proxy = _Proxy(broker_url)
    proxy.start()
    yield proxy
    proxy.stop()


def test_store_down_falls_back_to_a_local_limit_then_recovers(proxy, key, store, caplog):
    rate = 50.0
    limiter = RateLimiter(key, rate, url=proxy.url, retry_interval=0.2)
    assert limiter.acquire() == 0.0
    assert store.exists(f"{KEY_PREFIX}{key}")

    proxy.stop()
    caplog.set_level(logging.INFO, logger="channels.adapters.ratelimit")
    started = time.monotonic()
    stamps = []
    for _ in range(5):
        limiter.acquire()
        stamps.append(time.monotonic())
    assert limiter.degraded
    # Sending went on, at the same rate, limited in this process.
    assert stamps[-1] - started >= 3.5 / rate
    _assert_rate_respected(stamps, rate, burst=1)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # one warning per outage, not one per call
    assert "falls back to a per-process limit" in warnings[0].getMessage()
    assert f"127.0.0.1:{proxy.port}" in warnings[0].getMessage()

    proxy.start()
    store.delete(f"{KEY_PREFIX}{key}")
    limiter.acquire()  # before retry_interval: still local, the store is not asked
    assert limiter.degraded and not store.exists(f"{KEY_PREFIX}{key}")
    time.sleep(0.2)
    limiter.acquire()
    assert not limiter.degraded
    assert store.exists(f"{KEY_PREFIX}{key}")
    assert "reachable again" in caplog.records[-1].getMessage()


def test_unreachable_store_from_the_start_still_sends(key, caplog):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    limiter = RateLimiter(key, 1000, url=f"redis://:s3cret@127.0.0.1:{port}/0")
    with caplog.at_level(logging.WARNING, logger="channels.adapters.ratelimit"):
        limiter.acquire()
    assert limiter.degraded
    assert "s3cret" not in caplog.text and "***" in caplog.text


# --- the process-local limiter -----------------------------------------------------------


def test_local_limiter_arithmetic():
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = LocalRateLimiter(10, burst=3, clock=lambda: now[0], sleep=sleep)
    assert [limiter.acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire() == pytest.approx(0.1)
    with pytest.raises(RateLimitExceeded):
        limiter.acquire(max_wait=0.05)
    now[0] += 10  # idle: the burst is back
    assert [limiter.acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert slept == [pytest.approx(0.1)]


def test_local_limiter_is_thread_safe():
    rate = 200.0
    limiter = LocalRateLimiter(rate)
    stamps: list[float] = []
    lock = threading.Lock()

    def run() -> None:
        for _ in range(5):
            limiter.acquire()
            with lock:
                stamps.append(time.monotonic())

    threads = [threading.Thread(target=run) for _ in range(4)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stamps.sort()
    assert stamps[-1] - started >= 19 / rate - 0.001
    _assert_rate_respected(stamps, rate, burst=1)


# --- adapters ---------------------------------------------------------------------------


def test_an_adapter_with_a_rate_is_throttled_across_the_store(key):
    locmem.clear()
    rate = 50.0
    adapter = LocmemAdapter(alias="sms", rate_per_second=rate, rate_key=key)
    started = time.monotonic()
    results = adapter.send(_batch(10))
    elapsed = time.monotonic() - started
    assert all(r.accepted for r in results)
    assert elapsed >= 9 / rate - 0.001
    limiter = adapter.rate_limiter()
    assert isinstance(limiter, RateLimiter) and not limiter.degraded
    assert limiter.key == f"{KEY_PREFIX}{key}"
    locmem.clear()


def test_aliases_sharing_a_rate_key_share_one_budget(key):
    a = LocmemAdapter(alias="sms", rate_per_second=1, rate_key=key)
    b = LocmemAdapter(alias="sms_marketing", rate_per_second=1, rate_key=key)
    a.throttle()
    with pytest.raises(RateLimitExceeded):
        b.rate_limiter().acquire(max_wait=0)


def test_adapter_rate_options_and_their_defaults(settings, broker_url):
    assert LocmemAdapter(alias="sms").rate_limiter() is None
    LocmemAdapter(alias="sms").throttle()  # no rate: returns at once

    adapter = LocmemAdapter(alias="sms", rate_per_second=2)
    assert (adapter.rate_key, adapter.rate_burst, adapter.rate_limit_url) == (
        "locmem:sms",
        1,
        broker_url,
    )

    settings.RATE_LIMIT_URL = "valkey://127.0.0.1:1/3"
    assert LocmemAdapter(alias="sms", rate_per_second=2).rate_limit_url == settings.RATE_LIMIT_URL
    option = LocmemAdapter(alias="sms", rate_per_second=2, rate_limit_url="redis://h:1/2")
    assert option.rate_limit_url == "redis://h:1/2"

    settings.RATE_LIMIT_URL = ""  # per process only
    local = LocmemAdapter(alias="sms", rate_per_second=2, rate_burst=3)
    assert isinstance(local.rate_limiter(), LocalRateLimiter)
    assert local.rate_limiter().burst == 3

    del settings.RATE_LIMIT_URL
    settings.CELERY_BROKER_URL = "amqp://guest@localhost//"
    assert isinstance(
        LocmemAdapter(alias="sms", rate_per_second=2).rate_limiter(), LocalRateLimiter
    )


def test_adapters_from_settings_take_the_rate_options(settings, key):
    settings.CHANNEL_ADAPTERS = {
        "sms": {
            "BACKEND": "channels.adapters.locmem.LocmemAdapter",
            "OPTIONS": {"rate_per_second": 5, "rate_burst": 2, "rate_key": key},
        }
    }
    adapter = get_adapter("sms")
    assert (adapter.rate_per_second, adapter.rate_burst, adapter.rate_key) == (5.0, 2, key)
    assert {"rate_per_second", "rate_burst", "rate_key", "rate_limit_url"} == RATE_LIMIT_OPTIONS


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"rate_per_second": 0}, "rate_per_second"),
        ({"rate_per_second": -1}, "rate_per_second"),
        ({"rate_per_second": "5"}, "rate_per_second"),
        ({"rate_per_second": True}, "rate_per_second"),
        ({"rate_per_second": float("inf")}, "rate_per_second"),
        ({"rate_per_second": 1, "rate_burst": 0}, "rate_burst"),
        ({"rate_per_second": 1, "rate_burst": 1.5}, "rate_burst"),
        ({"rate_per_second": 1, "rate_key": ""}, "rate_key"),
        ({"rate_per_second": 1, "rate_key": 7}, "rate_key"),
        ({"rate_per_second": 1, "rate_limit_url": "http://localhost:6379"}, "rate_limit_url"),
        ({"rate_burst": 5}, "rate_burst"),
        ({"rate_key": "twilio:+15017122661"}, "rate_key"),
    ],
)
def test_bad_rate_options_are_refused_at_construction(options, named):
    with pytest.raises(ImproperlyConfigured, match=named) as refused:
        LocmemAdapter(alias="sms_marketing", **options)
    assert "'sms_marketing'" in str(refused.value)


def test_a_bad_rate_limit_url_setting_is_refused(settings):
    settings.RATE_LIMIT_URL = "amqp://guest:secret@localhost//"
    with pytest.raises(ImproperlyConfigured, match="RATE_LIMIT_URL") as refused:
        LocmemAdapter(alias="sms", rate_per_second=1)
    assert "secret" not in str(refused.value)


def test_sendgrid_and_twilio_throttle_before_each_request():
    from channels.adapters.sendgrid import SendGridAdapter
    from channels.adapters.twilio_sms import TwilioSmsAdapter

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"

    for cls, options, to in (
        (SendGridAdapter, {"api_key": "SG.x", "from_email": "a@example.com"}, "b@example.com"),
        (
            TwilioSmsAdapter,
            {"account_sid": "AC1", "auth_token": "t", "from_number": "+15005550006"},
            "+14155550100",
        ),
    ):

        class Counting(cls):  # type: ignore[misc, valid-type]
            calls: list[int]

            def throttle(self, n: int = 1) -> None:
                self.calls.append(n)

        adapter = Counting(alias="x", base_url=closed, timeout=1, concurrency=2, **options)
        adapter.calls = []
        batch = [
            OutboundMessage(message_id=i, channel="x", to=to, body="Hi", subject="S")
            for i in (1, 2, 3)
        ]
        results = adapter.send(batch)
        assert not any(r.accepted for r in results)  # nothing listens: never sent
        assert adapter.calls == [1, 1, 1], cls.__name__
