"""The request-cost arithmetic of ``worker stats --metrics-url``: rates between two reads
and since a worker's start, counter resets, sums over replicas, the monthly price."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from worker.errors import EXIT_UNREACHABLE, ConfigError
from worker.observe.metrics import Metrics
from worker.ops.request_cost import (
    FIFO_PRICE_PER_MILLION,
    PRICE_PER_MILLION,
    SECONDS_PER_MONTH,
    MetricsUnreachable,
    Scrape,
    metrics_url,
    monthly_cost,
    parse_scrape,
    queue_costs,
    request_rates,
)


def scrape(
    at: float, requests: dict[str, float], received: dict[str, float] | None = None, started: float = 0.0
) -> Scrape:
    return Scrape("http://w/metrics", at, started, requests, received or {})


def test_monthly_cost_is_a_30_day_month_at_the_rate_and_price() -> None:
    assert SECONDS_PER_MONTH == 2_592_000
    # One request a second for 30 days is 2.592 million requests.
    assert monthly_cost(1.0, 0.40) == pytest.approx(2.592 * 0.40)
    assert monthly_cost(1.0, 0.50) == pytest.approx(2.592 * 0.50)
    assert monthly_cost(10.0, 0.40) == pytest.approx(10.368)
    assert monthly_cost(0.0, 0.40) == 0
    assert (PRICE_PER_MILLION, FIFO_PRICE_PER_MILLION) == (0.40, 0.50)  # README's defaults


def test_rate_between_two_reads_since_start_and_over_a_restart() -> None:
    before = scrape(1000.0, {"a": 100.0, "b": 7.0}, started=900.0)
    after = scrape(1010.0, {"a": 150.0, "b": 7.0}, started=900.0)
    assert request_rates(before, after) == {"a": 5.0, "b": 0.0}
    # No earlier read: the counts over the worker's uptime (100 s here).
    assert request_rates(None, before) == pytest.approx({"a": 1.0, "b": 0.07})
    # The worker restarted between the reads: its counts start from 0 again, over the 5 s
    # since its start.
    restarted = scrape(1010.0, {"a": 20.0, "b": 1.0}, started=1005.0)
    assert request_rates(before, restarted) == {"a": 4.0, "b": 0.2}
    # Same start time but a count that went down (a reset all the same).
    assert request_rates(before, scrape(1010.0, {"a": 30.0, "b": 7.0}, started=900.0))["a"] == 3.0
    # A queue that appeared between the reads counts from 0.
    assert request_rates(before, scrape(1010.0, {"a": 100.0, "c": 10.0}, started=900.0)) == {
        "a": 0.0,
        "c": 1.0,
    }
    # No time to divide by: no rate, never an invented one.
    assert request_rates(before, before) == {}
    assert request_rates(None, Scrape("u", 1000.0, None, {"a": 1.0}, {})) == {}


def test_queue_costs_sum_the_replicas_and_price_fifo_queues_apart() -> None:
    one = {"http://1": scrape(100.0, {"q": 1000.0, "l.fifo": 10.0}, {"q": 400.0, "l.fifo": 0.0}, started=0.0)}
    two_before = {
        "http://1": scrape(100.0, {"q": 1000.0, "l.fifo": 10.0}, {"q": 400.0}, started=0.0),
        "http://2": scrape(100.0, {"q": 500.0}, {"q": 100.0}, started=50.0),
    }
    two_now = {
        "http://1": scrape(110.0, {"q": 1100.0, "l.fifo": 30.0}, {"q": 440.0}, started=0.0),
        "http://2": scrape(112.0, {"q": 560.0}, {"q": 130.0}, started=50.0),
    }

    def price_of(label: str) -> float:
        return 0.50 if label.endswith(".fifo") else 0.40

    costs, rates = queue_costs(two_before, two_now, price_of)
    assert (rates.basis, rates.seconds) == ("interval", 12.0)
    q = costs["q"]
    assert (q.requests, q.received) == (1660.0, 570.0)
    assert q.requests_per_message == pytest.approx(1660 / 570)
    assert q.requests_per_second == pytest.approx(100 / 10 + 60 / 12)  # each worker over its own interval
    assert q.monthly_cost == pytest.approx(15.0 * SECONDS_PER_MONTH * 0.40 / 1e6)
    assert q.price_per_million == 0.40
    fifo = costs["l.fifo"]
    assert fifo.requests_per_second == pytest.approx(2.0)
    assert fifo.monthly_cost == pytest.approx(2.0 * SECONDS_PER_MONTH * 0.50 / 1e6)
    assert fifo.requests_per_message is None  # no message received: not a ratio

    # Since start: each worker's counts over its own uptime.
    costs, rates = queue_costs(None, one, price_of)
    assert (rates.basis, rates.seconds) == ("since_start", None)
    assert costs["q"].requests_per_second == pytest.approx(10.0)
    assert costs["q"].requests_per_message == pytest.approx(2.5)


def test_a_price_given_changes_the_cost_in_proportion() -> None:
    now = {"u": scrape(100.0, {"q": 1000.0}, {"q": 10.0}, started=0.0)}
    standard, _ = queue_costs(None, now, lambda label: 0.40)
    dearer, _ = queue_costs(None, now, lambda label: 4.0)
    assert standard["q"].monthly_cost == pytest.approx(10.0 * 2.592 * 0.40)
    assert dearer["q"].monthly_cost == pytest.approx(10 * standard["q"].monthly_cost)  # type: ignore[operator]


def test_the_workers_own_exposition_parses_into_counts_per_queue() -> None:
    metrics = Metrics()
    metrics.init_queue("orders", ["placed"])
    metrics.init_queue("idle", ["placed"])
    record = metrics.queue_requests("orders")
    assert record is not None
    for operation in ("receive_message", "receive_message", "delete_message_batch", "send_message"):
        record(operation)
    metrics.received.labels("orders", "placed").inc(9)
    metrics.received.labels("orders", "unknown").inc(1)
    text = generate_latest(metrics.registry).decode()
    got = parse_scrape("http://w/metrics", text, 123.0)
    assert got.requests == {"orders": 4.0, "idle": 0.0}  # every operation, summed
    assert got.received == {"orders": 10.0, "idle": 0.0}  # every type, summed
    assert got.started is not None
    assert got.started > 1e9  # process_start_time_seconds (Linux)
    assert got.at == 123.0


def test_what_is_not_a_workers_metrics_is_refused_in_one_line() -> None:
    with pytest.raises(MetricsUnreachable, match="without any sqs_worker_"):
        parse_scrape("http://w/metrics", "process_start_time_seconds 1.0\n", 1.0)
    with pytest.raises(MetricsUnreachable, match="did not answer with Prometheus metrics"):
        parse_scrape("http://w/metrics", "<html><body>not metrics</body></html>\n", 1.0)
    assert MetricsUnreachable.exit_code == EXIT_UNREACHABLE


def test_metrics_urls_default_to_the_metrics_path_and_need_http() -> None:
    assert metrics_url("http://10.0.0.7:8080") == "http://10.0.0.7:8080/metrics"
    assert metrics_url("http://10.0.0.7:8080/") == "http://10.0.0.7:8080/metrics"
    assert metrics_url("https://w.example/custom/metrics") == "https://w.example/custom/metrics"
    for bad in ("10.0.0.7:8080", "ftp://w/metrics", "http://"):
        with pytest.raises(ConfigError, match="--metrics-url"):
            metrics_url(bad)
