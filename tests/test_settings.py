"""Configuration: file + environment, defaults, cross-field rules."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from worker.settings import CREDENTIALS_REFUSED, AwsSettings, ConfigError, load_settings


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
    assert (q.pollers, q.max_in_flight, q.wait_time_seconds, q.batch_size) == ("auto", "auto", 20, 10)
    assert q.poller_bounds == (1, 16)  # adaptive: one poller when idle, up to 16
    assert q.in_flight_bounds == (10, 1000)  # from a batch up to 1,000 (within the heartbeat's 1,600)
    assert q.extend_every == 10  # a third of the 30 s visibility timeout
    assert q.queue_name("jobs.fifo") == "jobs.fifo"
    # Every long poll holds a connection; there is room for deletes and extensions besides.
    assert settings.pool_size() > q.poller_bounds.high + 2


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


@pytest.mark.parametrize(
    ("queue", "pollers", "in_flight"),
    [
        ({"pollers": 4, "max_in_flight": 200}, (4, 4), (200, 200)),  # a number alone is fixed
        ({"pollers": "auto", "max_in_flight": "AUTO"}, (1, 16), (10, 1000)),
        ({"min_pollers": 2, "pollers": 8, "min_in_flight": 20, "max_in_flight": 300}, (2, 8), (20, 300)),
        ({"min_pollers": 3, "min_in_flight": 50}, (3, 16), (50, 1000)),
        ({"batch_size": 4}, (1, 16), (4, 1000)),  # auto starts at one batch
        # auto stays within what the heartbeat keeps alive: 10 x 16 calls x 1 s here
        ({"visibility_timeout": 3, "heartbeat_interval": 1}, (1, 16), (10, 160)),
        ({"pollers": "6", "max_in_flight": " 50 "}, (6, 6), (50, 50)),  # from the environment
    ],
)
def test_concurrency_is_fixed_or_adaptive_between_bounds(
    queue: dict[str, object], pollers: tuple[int, int], in_flight: tuple[int, int]
) -> None:
    q = load_settings(None, {"queues": {"q": {"handlers": ["m"], **queue}}}).queues["q"]
    assert q.poller_bounds == pollers
    assert q.in_flight_bounds == in_flight
    assert q.poller_bounds.fixed == (pollers[0] == pollers[1])


@pytest.mark.parametrize(
    ("queue", "message"),
    [
        (
            {"pollers": "many"},
            "queues.q.pollers: expected a number (fixed) or 'auto' (adaptive) (got 'many')",
        ),
        ({"max_in_flight": 0}, "queues.q.max_in_flight: Input should be greater than or equal to 1 (got 0)"),
        ({"pollers": 65}, "queues.q.pollers: Input should be less than or equal to 64 (got 65)"),
        ({"max_in_flight": 20_000}, "queues.q.max_in_flight: Input should be less than or equal to 10000"),
        ({"max_in_flight": 5}, "queues.q: max_in_flight (5) must be at least batch_size (10)"),
        ({"min_in_flight": 5}, "queues.q: min_in_flight (5) must be at least batch_size (10)"),
        (
            {"min_in_flight": 300, "max_in_flight": 200},
            "min_in_flight (300) must be at most max_in_flight (200)",
        ),
        ({"min_in_flight": 1200}, "min_in_flight (1200) must be at most max_in_flight (auto: 1000)"),
        ({"min_pollers": 5, "pollers": 4}, "queues.q: min_pollers (5) must be at most pollers (4)"),
        ({"min_pollers": 17}, "min_pollers (17) must be at most pollers (auto: 16)"),
        ({"min_pollers": 0}, "queues.q.min_pollers: Input should be greater than or equal to 1"),
        (
            {"ack_calls": "many"},
            "queues.q.ack_calls: expected a number (fixed) or 'auto' (the most pollers, at least 8)",
        ),
        # YAML's yes/true is not 1, and null is not auto
        ({"ack_calls": True}, "queues.q.ack_calls: expected a number, not yes/no or true/false (got True)"),
        ({"pollers": False}, "queues.q.pollers: expected a number, not yes/no or true/false (got False)"),
        ({"max_in_flight": None}, "queues.q.max_in_flight: expected a number (fixed) or 'auto' (adaptive)"),
        ({"ack_calls": None}, "queues.q.ack_calls: expected a number (fixed) or 'auto' (the most pollers"),
        ({"batch_wait": True}, "queues.q.batch_wait: expected a number, not yes/no or true/false"),
        ({"min_pollers": True}, "queues.q.min_pollers: expected a number, not yes/no or true/false"),
        ({"ack_calls": 65}, "queues.q.ack_calls: Input should be less than or equal to 64 (got 65)"),
        ({"ack_calls": 0}, "queues.q.ack_calls: Input should be greater than or equal to 1 (got 0)"),
    ],
)
def test_concurrency_errors_are_one_line(queue: dict[str, object], message: str) -> None:
    error = error_of(None, {"queues": {"q": {"handlers": ["m"], **queue}}})
    assert message in error, error


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"thread_pool_size": True}, "thread_pool_size: expected a number, not yes/no or true/false"),
        ({"health": {"port": True}}, "health.port: expected a number, not yes/no or true/false"),
        ({"aws": {"connect_timeout": False}}, "aws.connect_timeout: expected a number, not yes/no"),
    ],
)
def test_a_yes_or_no_is_not_taken_for_a_number(data: dict[str, object], message: str) -> None:
    error = error_of(None, {"queues": {"q": {"handlers": ["m"]}}, **data})
    assert message in error, error


def test_a_yes_or_no_stays_a_flag_where_one_is_expected() -> None:
    settings = load_settings(None, {"queues": {"q": {"handlers": ["m"]}}, "health": {"enabled": True}})
    assert settings.health.enabled is True


def test_pool_covers_the_most_pollers() -> None:
    one = load_settings(None, {"queues": {"q": {"handlers": ["m"]}}})
    fixed = load_settings(None, {"queues": {"q": {"handlers": ["m"], "pollers": 30}}})
    assert one.pool_size() >= 16 + 16 + 16  # 16 pollers at most, extensions and settles
    assert fixed.pool_size() - one.pool_size() == 2 * (30 - 16)  # a settle call for each poller


@pytest.mark.parametrize(
    ("queue", "calls"),
    [
        ({}, 16),  # one delete call for each of auto's 16 pollers at most
        ({"pollers": 2}, 8),  # at least 8
        ({"pollers": 20}, 20),
        ({"min_pollers": 2, "pollers": 12}, 12),
        ({"pollers": 20, "ack_calls": 3}, 3),  # as configured
        ({"pollers": 20, "ack_calls": " AUTO "}, 20),  # from the environment, any case
    ],
)
def test_settle_calls_keep_up_with_the_pollers(queue: dict[str, object], calls: int) -> None:
    q = load_settings(None, {"queues": {"q": {"handlers": ["m"], **queue}}}).queues["q"]
    assert q.settle_calls == calls


# -- one error style: one line, naming the field and where its value came from -------------
WORKER_YAML = "queues:\n  billing:\n    handlers: [handlers.billing]\n    pollers: 2\n"


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A valid worker configuration file, with no WORKER_* or AWS endpoint variable set."""
    for name in list(os.environ):
        if name.upper().startswith(("WORKER_", "AWS_ENDPOINT_URL", "AWS_REGION")):
            monkeypatch.delenv(name)
    path = tmp_path / "worker.yaml"
    path.write_text(WORKER_YAML)
    return path


def error_of(path: Path | None, overrides: dict[str, Any] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(path, overrides)
    message = str(info.value)
    assert "\n" not in message, message
    assert info.value.__cause__ is None or isinstance(info.value.__cause__, OSError)
    return message


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("WORKER_QUEUES", "{bad", "invalid configuration (WORKER_QUEUES): queues: not valid JSON ("),
        ("WORKER_AWS", "x", "invalid configuration (WORKER_AWS): aws: not valid JSON ("),
        (
            "WORKER_AWS",
            "",
            "invalid configuration (WORKER_AWS): aws: expected a JSON object, got an empty value",
        ),
        (
            "WORKER_QUEUES__BILLING__RETRY_BACKOFF",
            "[1,",
            "invalid configuration (WORKER_QUEUES__BILLING__RETRY_BACKOFF): queues.billing.retry_backoff: "
            "not valid JSON (",
        ),
        (
            "WORKER_QUEUES__BILLING",
            "x",
            "invalid configuration (WORKER_QUEUES__BILLING): queues.billing: not valid",
        ),
    ],
)
def test_environment_value_that_is_not_json_names_the_variable(
    config: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    # pydantic-settings raises SettingsError (a 40-line traceback naming no variable).
    monkeypatch.setenv(name, value)
    assert error_of(config).startswith(expected)


@pytest.mark.parametrize(
    ("env", "source", "field"),
    [
        (
            {"WORKER_QUEUES__BILLING__POLLERS": "0"},
            "WORKER_QUEUES__BILLING__POLLERS",
            "queues.billing.pollers",
        ),
        # pydantic-settings matches names case-insensitively; the message spells it as set.
        (
            {"worker_queues__billing__pollers": "0"},
            "worker_queues__billing__pollers",
            "queues.billing.pollers",
        ),
        ({"WORKER_QUEUES": '{"billing": {"pollers": 0}}'}, "WORKER_QUEUES", "queues.billing.pollers"),
        (
            {"WORKER_QUEUES": '{"billing": {"pollers": 0}}', "WORKER_QUEUES__BILLING__POLLERS": "-1"},
            "WORKER_QUEUES__BILLING__POLLERS",  # the deeper variable wins the merge
            "queues.billing.pollers",
        ),
        (
            {"WORKER_QUEUES__BILLING__RETRY_BACKOFF": '[1, "x"]'},
            "WORKER_QUEUES__BILLING__RETRY_BACKOFF",
            "queues.billing.retry_backoff.1",
        ),
        ({"WORKER_QUEUES__OTHER__POLLERS": "3"}, "WORKER_QUEUES__OTHER__POLLERS", "queues.other.handlers"),
        ({"WORKER_LOG__LEVEL": "loud"}, "WORKER_LOG__LEVEL", "log.level"),
    ],
)
def test_bad_value_from_the_environment_names_the_variable_not_the_file(
    config: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], source: str, field: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    message = error_of(config)
    assert message.startswith(f"invalid configuration ({source}): {field}"), message
    assert str(config) not in message


def test_bad_value_from_the_file_names_the_file(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config.write_text(WORKER_YAML.replace("pollers: 2", "pollers: 0"))
    monkeypatch.setenv("WORKER_QUEUES__BILLING__BATCH_SIZE", "5")  # valid, and elsewhere
    assert error_of(config) == (
        f"invalid configuration ({config}): queues.billing.pollers: "
        "Input should be greater than or equal to 1 (got 0)"
    )


def test_cross_field_rule_names_the_file_and_the_variables_it_mentions(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKER_SHUTDOWN_GRACE", "1")
    monkeypatch.setenv("WORKER_SHUTDOWN_FLUSH", "1")
    monkeypatch.setenv("WORKER_LOG__FORMAT", "json")  # not part of the rule: not named
    message = error_of(config)
    assert message.startswith(
        f"invalid configuration ({config}, WORKER_SHUTDOWN_GRACE, WORKER_SHUTDOWN_FLUSH): "
        "queues.billing.wait_time_seconds (20) must not exceed shutdown_grace + shutdown_flush (2)"
    ), message


@pytest.mark.parametrize(
    ("where", "name", "value", "source"),
    [
        ("file", "endpoint_url", "localhost:4566", "{config}"),
        ("env", "WORKER_AWS__ENDPOINT_URL", "localhost:4566", "WORKER_AWS__ENDPOINT_URL"),
        ("env", "AWS_ENDPOINT_URL", "localhost:4566", "AWS_ENDPOINT_URL"),
        ("env", "AWS_ENDPOINT_URL_SQS", "localhost:4566", "AWS_ENDPOINT_URL_SQS"),
        ("env", "AWS_ENDPOINT_URL_SNS", "localhost:4566", "AWS_ENDPOINT_URL_SNS"),
        ("env", "AWS_ENDPOINT_URL_S3", "localhost:4566", "AWS_ENDPOINT_URL_S3"),
    ],
)
def test_endpoint_without_scheme_is_a_config_error(
    config: Path, monkeypatch: pytest.MonkeyPatch, where: str, name: str, value: str, source: str
) -> None:
    # It used to pass `worker check` and crash `worker run` with a traceback.
    if where == "file":
        config.write_text(f"aws:\n  {name}: {value}\n{WORKER_YAML}")
    else:
        monkeypatch.setenv(name, value)
    assert error_of(config) == (
        f"invalid configuration ({source.format(config=config)}): aws.endpoint_url: "
        "'localhost:4566' is not an absolute http(s) URL with a host; write http://localhost:4566"
    )


@pytest.mark.parametrize(
    "url", ["ftp://host", "http://", "http:///x", "http://host:99999", "localhost", "x y"]
)
def test_endpoint_must_be_an_absolute_http_url(url: str) -> None:
    with pytest.raises(ConfigError, match="is not an absolute http"):
        AwsSettings.build(endpoint_url=url)


def test_endpoint_credentials_are_not_echoed(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "ftp://user:hunter2@host")
    message = error_of(config)
    assert "hunter2" not in message
    assert "(AWS_ENDPOINT_URL)" in message


def test_a_good_endpoint_in_the_file_wins_over_a_bad_variable(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # AWS_ENDPOINT_URL is not used when the file sets one, so it is not checked either.
    config.write_text(f"aws:\n  endpoint_url: http://localhost:4566\n{WORKER_YAML}")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "localhost:4566")
    assert load_settings(config).aws.resolved_endpoint() == "http://localhost:4566"


@pytest.mark.parametrize(
    ("where", "value", "source", "problem"),
    [
        ("file", '""', "{config}", "empty; leave it unset"),
        ("WORKER_AWS__REGION", "", "WORKER_AWS__REGION", "empty; leave it unset"),
        ("AWS_REGION", "us east 1", "AWS_REGION", "'us east 1' is not a region name"),
        ("AWS_DEFAULT_REGION", "eu_west!", "AWS_DEFAULT_REGION", "'eu_west!' is not a region name"),
    ],
)
def test_empty_or_malformed_region_is_refused(
    config: Path, monkeypatch: pytest.MonkeyPatch, where: str, value: str, source: str, problem: str
) -> None:
    if where == "file":
        config.write_text(f"aws:\n  region: {value}\n{WORKER_YAML}")
    else:
        monkeypatch.setenv(where, value)
    message = error_of(config)
    assert message.startswith(
        f"invalid configuration ({source.format(config=config)}): aws.region: {problem}"
    )


def test_an_empty_aws_region_variable_counts_as_unset(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert load_settings(config).aws.resolved_region() == "eu-west-1"


def test_aws_settings_build_names_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    options = {"endpoint_url": "--endpoint-url", "region": "--region", "connect_timeout": "--timeout"}
    with pytest.raises(ConfigError) as info:
        AwsSettings.build(options, endpoint_url="localhost:4566", region=None)
    assert str(info.value).startswith(
        "invalid configuration (--endpoint-url): endpoint_url: 'localhost:4566'"
    )
    with pytest.raises(ConfigError, match=r"^invalid configuration \(--timeout\): connect_timeout: "):
        AwsSettings.build(options, connect_timeout=0)
    monkeypatch.delenv("AWS_ENDPOINT_URL_SQS", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "127.0.0.1:4566")
    with pytest.raises(
        ConfigError, match=r"^invalid configuration \(AWS_ENDPOINT_URL\): aws\.endpoint_url: "
    ):
        AwsSettings.build(options)  # no --endpoint-url: the variable is what would be used
    aws = AwsSettings.build(options, endpoint_url=" http://localhost:4566 ", region="eu-west-1")
    assert (aws.endpoint_url, aws.region) == ("http://localhost:4566", "eu-west-1")


@pytest.mark.parametrize("source", ["file", "env"])
def test_log_level_and_format_are_case_insensitive(
    config: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    if source == "file":
        config.write_text(f"log:\n  level: DEBUG\n  format: JSON\n{WORKER_YAML}")
    else:
        monkeypatch.setenv("WORKER_LOG__LEVEL", "DEBUG")
        monkeypatch.setenv("WORKER_LOG__FORMAT", "Console")
    log = load_settings(config).log
    assert log.level == "debug"
    assert log.format == ("json" if source == "file" else "console")


def test_invalid_yaml_names_the_file_line_and_column(config: Path) -> None:
    config.write_text("queues:\n  billing:\n    handlers: [handlers.billing\n    pollers: 2\n")
    assert error_of(config) == (
        f"{config}:4:12: not valid YAML: expected ',' or ']', but got ':' "
        "(while parsing a flow sequence started at 3:15)"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", "the top level must be a mapping, not list"),
        ("1: x\n", "top-level key 1 is not a field name"),
    ],
)
def test_file_that_is_not_a_mapping(config: Path, text: str, message: str) -> None:
    config.write_text(text)
    assert error_of(config) == f"{config}: {message}"


def test_file_that_is_not_utf8(config: Path) -> None:
    config.write_bytes(b"queues:\n  \xff: {}\n")
    assert error_of(config) == f"{config}:2:3: not UTF-8 text (byte 0xff)"


def test_topology_file_given_as_worker_configuration() -> None:
    topology = Path(__file__).resolve().parents[1] / "config" / "topology.yaml"
    assert error_of(topology) == (
        f"{topology}: this is a topology file (it has 'topics'), not a worker configuration; "
        "pass the worker configuration (config/worker.yaml)"
    )


def test_unknown_keys_are_named_never_echoed(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config.write_text(
        "aws:\n  aws_secret_access_key: hunter2\n"
        + WORKER_YAML
        + "    visiblity_timeout: 10\n    colour: red\n    pollers: 0\n"
    )
    message = error_of(config)
    assert message.startswith(
        f"invalid configuration ({config}): aws.aws_secret_access_key: credentials are never read"
    )
    assert message.endswith(
        "; and 3 more: queues.billing.pollers, queues.billing.visiblity_timeout, queues.billing.colour"
    )
    assert "hunter2" not in message


def test_misspelt_required_top_level_field_is_one_error_with_a_suggestion(config: Path) -> None:
    """Was: "queues: required; and 1 more: queue", no did-you-mean."""
    config.write_text(WORKER_YAML.replace("queues:", "queue:", 1))
    assert (
        error_of(config) == f"invalid configuration ({config}): queue: unknown field (did you mean 'queues'?)"
    )
    config.write_text(WORKER_YAML.replace("handlers:", "handler:", 1))
    assert error_of(config) == (
        f"invalid configuration ({config}): queues.billing.handler: unknown field (did you mean 'handlers'?)"
    )
    config.write_text(WORKER_YAML + "shutdown_grase: 5\n")
    assert error_of(config) == (
        f"invalid configuration ({config}): shutdown_grase: unknown field (did you mean 'shutdown_grace'?)"
    )


@pytest.mark.parametrize(
    "key", ["access_key_id", "secret_access_key", "session_token", "profile", "aws_access_key_id", "Profile"]
)
def test_credentials_in_the_file_get_the_credentials_message(config: Path, key: str) -> None:
    """Was: "aws.access_key_id: unknown field", where the docs promise the credentials chain."""
    config.write_text(f"aws:\n  {key}: hunter2\n" + WORKER_YAML + "    colour: red\n")
    message = error_of(config)
    assert message == (
        f"invalid configuration ({config}): aws.{key}: {CREDENTIALS_REFUSED}; and 1 more: queues.billing.colour"
    )
    assert "AWS_ACCESS_KEY_ID" in message
    assert "AWS_PROFILE" in message
    assert "hunter2" not in message


def test_unknown_key_suggests_the_field(config: Path) -> None:
    config.write_text(WORKER_YAML + "    visiblity_timeout: 10\n")
    assert error_of(config) == (
        f"invalid configuration ({config}): queues.billing.visiblity_timeout: "
        "unknown field (did you mean 'visibility_timeout'?)"
    )


def test_secrets_in_the_environment_are_never_echoed(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_AWS__SECRET_ACCESS_KEY", "hunter2")
    message = error_of(config)
    assert message == (
        "invalid configuration (WORKER_AWS__SECRET_ACCESS_KEY): aws.secret_access_key: " + CREDENTIALS_REFUSED
    )
    monkeypatch.setenv("WORKER_AWS", '{"session_token": "hunter3"}')
    message = error_of(config)
    assert message.startswith("invalid configuration (WORKER_AWS): aws.session_token: credentials are never")
    assert "hunter" not in message
    monkeypatch.setenv("WORKER_AWS", '{"session_token": "hunter3"')  # not JSON: not echoed either
    message = error_of(config)
    assert message.startswith("invalid configuration (WORKER_AWS): aws: not valid JSON")
    assert "hunter" not in message


def test_many_errors_stay_on_one_line(config: Path) -> None:
    queue = "handlers: [m], pollers: 0, batch_size: 99, wait_time_seconds: 0, retry_jitter: 5, ack_calls: 0, x: 1, y: 2"
    config.write_text(f"queues:\n  a: {{{queue}}}\n")
    message = error_of(config)
    assert message.startswith(f"invalid configuration ({config}): queues.a.pollers: ")
    assert message.endswith(
        "; and 6 more: queues.a.wait_time_seconds, queues.a.batch_size, "
        "queues.a.ack_calls, queues.a.retry_jitter, queues.a.x, …"  # and y
    )


def test_no_file_and_nothing_in_the_environment(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_SHUTDOWN_GRACE", "5")
    assert error_of(None) == "invalid configuration (environment, no config file): queues: required"


def test_payload_settings(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config.write_text(f"{WORKER_YAML}payloads:\n  bucket: big-bodies\n")
    monkeypatch.setenv("WORKER_PAYLOADS__PREFIX", "p/")
    payloads = load_settings(config).payloads
    assert (payloads.bucket, payloads.prefix, payloads.offload, payloads.threshold) == (
        "big-bodies",
        "p/",
        "auto",
        262_144,
    )
    assert (payloads.delete_after_success, payloads.ignore_missing, payloads.path_style) == (
        True,
        False,
        None,
    )
    monkeypatch.setenv("WORKER_PAYLOADS__THRESHOLD", "2000000")
    assert error_of(config) == (
        "invalid configuration (WORKER_PAYLOADS__THRESHOLD): payloads.threshold: "
        "Input should be less than or equal to 1048576 (got '2000000')"
    )


def test_an_endpoint_is_every_services_and_a_service_variable_overrides_it(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The most specific first: a setting for the one service (idempotency.endpoint_url),
    AWS_ENDPOINT_URL_<SERVICE>, aws.endpoint_url / --endpoint-url, AWS_ENDPOINT_URL."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://general:1")
    aws = AwsSettings()
    assert {s: aws.resolved_endpoint(s) for s in ("sqs", "dynamodb")} == {
        "sqs": "http://general:1",
        "dynamodb": "http://general:1",
    }
    config.write_text("aws:\n  endpoint_url: http://localstack:4566\n" + WORKER_YAML)
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://dynamodb-local:8000")
    settings = load_settings(config)
    assert settings.aws.endpoint_and_source("sqs") == ("http://localstack:4566", "aws.endpoint_url")
    assert settings.aws.endpoint_and_source("s3") == ("http://localstack:4566", "aws.endpoint_url")
    assert settings.aws.endpoint_and_source("dynamodb") == (
        "http://dynamodb-local:8000",
        "AWS_ENDPOINT_URL_DYNAMODB",
    )
    assert settings.store_aws().resolved_endpoint("dynamodb") == "http://dynamodb-local:8000"
    config.write_text(
        "aws:\n  endpoint_url: http://localstack:4566\nidempotency:\n  endpoint_url: http://ddb:9\n"
        + WORKER_YAML
    )
    store = load_settings(config).store_aws()
    assert store.endpoint_and_source("dynamodb") == ("http://ddb:9", "idempotency.endpoint_url")
    assert store.model_copy(update={"region": "eu-west-1"}).resolved_endpoint("dynamodb") == "http://ddb:9"
    assert store.resolved_endpoint("sqs") == "http://localstack:4566"
    # The command line's --endpoint-url is the general one too.
    cli = AwsSettings.build(endpoint_url="http://127.0.0.1:4566")
    assert cli.endpoint_and_source("dynamodb", "--endpoint-url")[1] == "AWS_ENDPOINT_URL_DYNAMODB"
    assert cli.endpoint_and_source("sns", "--endpoint-url") == ("http://127.0.0.1:4566", "--endpoint-url")
    # A service variable is used even with aws.endpoint_url set: it is checked too.
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", "dynamodb-local:8000")
    assert error_of(config).startswith("invalid configuration (AWS_ENDPOINT_URL_DYNAMODB): aws.endpoint_url:")
