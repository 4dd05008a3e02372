"""bench.api_batch at a tiny size: batches through gunicorn, every item accepted and stored
(sends, and with --kind the bulk customer and event endpoints)."""

from __future__ import annotations

import pytest

from tests.bench.test_benches import NUMBER, assert_figure, run_bench, scratch


def test_api_batch_prints_messages_per_second():
    lines = run_bench(
        *("api_batch", "--seconds", "1", "--clients", "2", "--batch", "50"),
        *("--customers", "100", "--database", scratch("api_batch")),
        timeout=180,
    )
    assert "plain DRF peer: none (it has no batch endpoint)" in lines
    assert_figure(
        lines,
        rf"API batch send: {NUMBER} messages/s accepted \(2 clients x 50-message batches, "
        rf"\d+ batches, p50 {NUMBER} ms, p99 {NUMBER} ms per batch, gunicorn -w 2\)",
    )


@pytest.mark.parametrize(
    ("kind", "figure"),
    [
        ("customers", "API bulk customers: {n} customers/s upserted \\(2 clients x 50-customer"),
        ("events", "API bulk events: {n} events/s recorded \\(2 clients x 50-event"),
    ],
)
def test_api_batch_prints_bulk_customers_and_events_per_second(kind, figure):
    lines = run_bench(
        *("api_batch", "--kind", kind, "--seconds", "1", "--clients", "2", "--batch", "50"),
        *("--customers", "100", "--database", scratch(f"api_batch_{kind}")),
        timeout=180,
    )
    assert_figure(
        lines,
        figure.format(n=NUMBER)
        + rf" batches, \d+ batches, p50 {NUMBER} ms, p99 {NUMBER} ms per batch, gunicorn -w 2\)",
    )
