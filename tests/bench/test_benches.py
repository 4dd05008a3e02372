"""Every benchmark runs at a tiny size, as a user runs it, and prints its figure line.

Benchmarks are run by hand once in a while, so a renamed column or a moved module
breaks them unnoticed. Here each runs as ``python -m bench.X`` in a subprocess on the
suite's PostgreSQL and broker, on scratch databases named after ``TEST_DB_SUFFIX`` so
that concurrent runs never share one; each takes seconds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[2]
SUFFIX = re.sub(r"\W", "_", os.environ.get("TEST_DB_SUFFIX") or "tests").lower()
NUMBER = r"[\d.,]+"


def scratch(name: str) -> str:
    return f"bench_{name}_{SUFFIX}"


def run_bench(module: str, *args: str, timeout: float = 120) -> list[str]:
    """The bench's stdout lines; fails with its output when it exits non-zero."""
    result = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *args],
        cwd=CHECKOUT,
        env=dict(os.environ),  # the suite's DATABASE_URL (if any) and CELERY_BROKER_URL
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = f"stdout:\n{result.stdout}\nstderr (tail):\n{result.stderr[-3000:]}"
    assert result.returncode == 0, output
    lines = result.stdout.strip().splitlines()
    assert lines, output
    return lines


def assert_figure(lines: list[str], pattern: str) -> None:
    assert re.fullmatch(pattern, lines[-1]), "\n".join(lines)


def test_dispatch_prints_messages_per_second():
    lines = run_bench(
        "dispatch", "--messages", "300", "--no-peers", "--database", scratch("dispatch")
    )
    assert_figure(lines, rf"dispatched 300 messages in {NUMBER} s: \d+ messages/s")
    assert any(line.startswith("sent=") and " lost=0 " in line for line in lines), lines


def test_dispatch_with_the_fatigue_policy_prints_decisions_per_second():
    lines = run_bench(
        *("dispatch", "--messages", "300", "--with-policy", "--no-peers"),
        *("--database", scratch("dispatch")),
    )
    assert_figure(lines, rf"decided 300 messages in {NUMBER} s: \d+ messages/s")
    assert any(re.match(rf"policy stage: {NUMBER} s of worker time", line) for line in lines)


def test_engine_prints_enrollments_per_second():
    lines = run_bench("engine", "--customers", "200", "--database", scratch("engine"))
    assert_figure(
        lines,
        rf"engine moved 200 enrollments through a send step into a wait in {NUMBER} s: "
        r"\d+ enrollments/s \(1 worker\(s\), batch 200\)",
    )


def test_sweep_prints_the_daily_sweep():
    lines = run_bench("sweep", "--customers", "300", "--database", scratch("sweep"))
    assert_figure(lines, rf"daily sweep for 300 customers: {NUMBER} s, peak \d+ MB python")


def test_segments_prints_the_live_count():
    lines = run_bench(
        "segments",
        *("--customers", "400", "--events", "2000", "--repeat", "1"),
        *("--database", scratch("segments")),
    )
    assert_figure(lines, r"segment count: \d+ customers in \d+ ms")


def test_analytics_prints_page_timings():
    lines = run_bench(
        "analytics",
        *("--messages", "2000", "--events", "300", "--repeat", "2"),
        *("--database", scratch("analytics")),
    )
    timing = rf" +{NUMBER} +{NUMBER} +{NUMBER}"
    assert any(re.fullmatch(r"journey analytics page, 30 days" + timing, ln) for ln in lines)
    assert_figure(lines, r"/metrics" + timing)


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(("--messages", "400"), id="personalized"),
        pytest.param(("--messages", "400", "--broadcast"), id="broadcast"),
    ],
)
def test_channels_print_messages_per_second(options):
    lines = run_bench("channels", *options)
    for channel in ("email", "sms", "whatsapp", "line"):
        assert any(re.match(rf" *{channel} +100 in ", line) for line in lines), lines
    assert_figure(lines, CHANNELS_FIGURE)


def test_channels_hold_a_shared_rate():
    # Five seconds at the rate whatever it is: the smallest run that shows the limit held.
    lines = run_bench("channels", "--rate", "20", "--processes", "2")
    assert sum("limit 20/s" in line for line in lines) == 4, lines
    assert_figure(lines, CHANNELS_FIGURE)


#: The channels bench's last line: the mixed figure against its target.
CHANNELS_FIGURE = (
    r"sent 400 messages through 4 adapters with 2 process\(es\) in "
    rf"{NUMBER} s: \d+ messages/s, {NUMBER}x the 2,500/s target "
    r"\(no peer bench exists for this path\)"
)


def test_ratelimit_prints_permits_per_second(broker_url):
    lines = run_bench("ratelimit", "--permits", "500", "--url", broker_url)
    assert_figure(
        lines, rf"RateLimiter: 500 permits in {NUMBER} s: \d+ permits/s \({NUMBER} us per permit\)"
    )


def test_realtime_prints_hand_off_latency(broker_url):
    lines = run_bench(
        "realtime",
        *("--events", "3", "--interval", "0.1", "--backlog", "300"),
        *("--warmup", "1", "--broker-url", broker_url, "--database", scratch("realtime")),
    )
    assert_figure(
        lines,
        r"event API call to provider hand-off over \d+ events with a \d+-message broadcast "
        r"backlog, 1 lane worker\(s\): p50 \d+ ms, p99 \d+ ms",
    )


API_FIGURE = (
    rf"API create path: \d+ requests/s, p50 {NUMBER} ms, p99 {NUMBER} ms "
    r"\(8 clients, gunicorn -w 2\)"
)


@pytest.fixture(scope="module")
def api_run() -> tuple[list[str], str | None]:
    """One run of the API bench (with the peer when it is set up) and why the peer is not."""
    from bench import api

    if not (api.PEERS_DIR / "api_load.py").exists():
        pytest.skip(f"no load generator at {api.PEERS_DIR} (the reference peers)")
    peer_missing = api.peer_available()
    lines = run_bench(
        "api",
        *("--seconds", "1.5", "--database", scratch("api")),
        *("--peer", "no" if peer_missing else "auto"),
    )
    return lines, peer_missing


def test_api_prints_requests_per_second(api_run):
    lines, _peer_missing = api_run
    assert re.match(API_FIGURE, lines[-1]), lines


def test_api_quotes_the_plain_drf_peer(api_run):
    lines, peer_missing = api_run
    if peer_missing:
        pytest.skip(peer_missing)
    assert_figure(
        lines,
        API_FIGURE + rf"; plain DRF peer \d+ requests/s, p50 {NUMBER} ms, p99 {NUMBER} ms: "
        rf"{NUMBER}x the peer",
    )


def test_broadcasts_prints_the_materialisation():
    lines = run_bench("broadcasts", "--customers", "300", "--database", scratch("broadcasts"))
    assert_figure(
        lines,
        rf"materialised \(audience frozen\) 300 recipients in {NUMBER} s: {NUMBER}x the 10 s "
        r"target \(no peer bench exists for this path\)",
    )
    assert "transactional message queued after the broadcast: sent in the first batch" in lines[-2]
    assert any(
        re.match(rf"expanded 300 copies into the outbox in {NUMBER} s .*: {NUMBER} copies/s", line)
        for line in lines
    ), lines
