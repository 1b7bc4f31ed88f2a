"""Configuration: file + environment, defaults, cross-field rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.settings import ConfigError, load_settings


def test_environment_overrides_nested_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "w.yaml"
    path.write_text("queues:\n  orders:\n    handlers: [handlers.billing]\n    pollers: 2\n")
    monkeypatch.setenv("WORKER_QUEUES__ORDERS__POLLERS", "5")
    monkeypatch.setenv("WORKER_SHUTDOWN_GRACE", "12.5")
    monkeypatch.setenv("WORKER_AWS__ENDPOINT_URL", "http://localhost:4566")
    settings = load_settings(path)
    assert settings.queues["orders"].pollers == 5
    assert settings.queues["orders"].handlers == ["handlers.billing"]  # the file's value is kept
    assert settings.shutdown_grace == 12.5
    assert settings.aws.resolved_endpoint() == "http://localhost:4566"


def test_defaults_and_derived_values() -> None:
    settings = load_settings(None, {"queues": {"jobs.fifo": {"handlers": ["m"]}}})
    q = settings.queues["jobs.fifo"]
    assert (q.pollers, q.max_in_flight, q.wait_time_seconds, q.batch_size) == (2, 20, 20, 10)
    assert q.extend_every == 10  # a third of the 30 s visibility timeout
    assert q.is_fifo("jobs.fifo")
    assert q.queue_name("jobs.fifo") == "jobs.fifo"
    # Every long poll holds a connection; there is room for deletes and extensions besides.
    assert settings.pool_size() > q.pollers + 2


def test_url_names_the_queue() -> None:
    settings = load_settings(
        None,
        {"queues": {"a": {"url": "https://sqs.eu-west-1.amazonaws.com/1/orders.fifo", "handlers": ["m"]}}},
    )
    assert settings.queues["a"].queue_name("a") == "orders.fifo"


@pytest.mark.parametrize(
    ("queue", "needle"),
    [
        ({"retry_backoff": [10, -1]}, "retry_backoff"),
        ({"retry_backoff": []}, "queues.q.retry_backoff"),
        ({"wait_time_seconds": 0}, "queues.q.wait_time_seconds"),
        ({"name": "a", "url": "http://x/1/a"}, "either name or url"),
        ({"visibility_timeout": 50_000}, "queues.q.visibility_timeout"),
    ],
)
def test_cross_field_and_range_rules(queue: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_settings(None, {"queues": {"q": {"handlers": ["m"], **queue}}})


def test_no_queues_is_an_error() -> None:
    with pytest.raises(ConfigError, match="queues"):
        load_settings(None, {"queues": {}})


@pytest.mark.parametrize(
    ("queue", "top", "message"),
    [
        ({"visibility_timeout": 10, "heartbeat_interval": 6}, {}, "at most half of visibility_timeout"),
        ({"max_in_flight": 2000}, {}, "more than the heartbeat keeps alive at 1 s per call (1600"),
        ({"wait_time_seconds": 20}, {"shutdown_grace": 5, "shutdown_flush": 5}, "must not exceed"),
    ],
)
def test_lease_rules_are_checked_at_start(
    queue: dict[str, object], top: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_settings(None, {"queues": {"q": {"handlers": ["m"], **queue}}, **top})


def test_heartbeat_capacity_follows_calls_interval_and_latency() -> None:
    q = load_settings(None, {"queues": {"q": {"handlers": ["m"]}}}).queues["q"]
    assert q.heartbeat_capacity(1.0) == 10 * 16 * 10
    assert q.heartbeat_capacity(0.3) == 5333
    bigger = load_settings(
        None, {"queues": {"q": {"handlers": ["m"], "max_in_flight": 2000, "heartbeat_calls": 32}}}
    )
    assert bigger.queues["q"].max_in_flight == 2000
