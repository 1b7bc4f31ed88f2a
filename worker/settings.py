"""Typed configuration: one YAML file, every field overridable from the environment.

Precedence, highest first: environment variables (``WORKER_`` prefix, ``__`` between
nesting levels, e.g. ``WORKER_QUEUES__ORDERS__POLLERS=4``), then the YAML file, then the
defaults below. Everything is validated, cross-field rules included, before any AWS client
exists. Credentials are never part of the configuration: they come from the standard AWS
chain (environment, shared files, container/instance roles).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from worker.errors import ConfigError

__all__ = ["AwsSettings", "ConfigError", "QueueSettings", "WorkerSettings", "load_settings"]

ENV_PREFIX = "WORKER_"


class AwsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    region: str | None = None
    """AWS region; falls back to AWS_REGION, then AWS_DEFAULT_REGION."""
    endpoint_url: str | None = None
    """Custom endpoint (LocalStack, moto); falls back to AWS_ENDPOINT_URL_SQS / AWS_ENDPOINT_URL."""
    connect_timeout: float = Field(default=5.0, gt=0)
    startup_timeout: float = Field(default=30.0, ge=0)
    """How long start-up retries transient AWS errors before giving up."""

    def resolved_region(self) -> str | None:
        return self.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")

    def resolved_endpoint(self, service: str = "sqs") -> str | None:
        return (
            self.endpoint_url
            or os.environ.get(f"AWS_ENDPOINT_URL_{service.upper()}")
            or os.environ.get("AWS_ENDPOINT_URL")
        )


class QueueSettings(BaseModel):
    """One consumed queue. The key under ``queues:`` is its logical name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    """SQS queue name; defaults to the key. Ignored when ``url`` is given."""
    url: str | None = None
    handlers: list[str] = Field(min_length=1)
    """Importable modules, each exposing ``router`` (a ``worker.Router``)."""
    pollers: int = Field(default=2, ge=1, le=64)
    max_in_flight: int = Field(default=20, ge=1, le=10_000)
    wait_time_seconds: int = Field(default=20, ge=1, le=20)
    batch_size: int = Field(default=10, ge=1, le=10)
    batch_wait: float = Field(default=0.05, ge=0, le=5)
    """Seconds a poller waits for ``batch_size`` free slots before it receives what fits."""
    visibility_timeout: int = Field(default=30, ge=2, le=43_200)
    """Seconds of visibility each receive and each extension grants."""
    heartbeat_interval: float | None = Field(default=None, gt=0)
    """Seconds between extensions of a leased message; default a third of visibility_timeout,
    at most half of it (the other half is the margin for a slow or failed extension call)."""
    heartbeat_calls: int = Field(default=16, ge=1, le=64)
    """ChangeMessageVisibilityBatch calls in flight at once for this queue (ten messages each)."""
    ack_calls: int = Field(default=8, ge=1, le=64)
    """DeleteMessageBatch / ChangeMessageVisibilityBatch settle calls in flight at once."""
    max_processing_time: float = Field(default=900.0, gt=0, le=43_200)
    """A handler running longer is cancelled and its message left for retry."""
    retry_backoff: list[float] = Field(default_factory=lambda: [10.0, 60.0, 300.0], min_length=1)
    """Visibility after the 1st, 2nd, ... failed receive; the last value repeats."""
    retry_jitter: float = Field(default=0.1, ge=0, le=1)
    """Fraction of random spread added to each backoff delay."""

    @model_validator(mode="after")
    def _check(self) -> QueueSettings:
        if self.heartbeat_interval is not None and self.heartbeat_interval > self.visibility_timeout / 2:
            raise ValueError(
                f"heartbeat_interval ({self.heartbeat_interval}) must be at most half of "
                f"visibility_timeout ({self.visibility_timeout}): the rest is the margin for a late extension"
            )
        capacity = self.heartbeat_capacity(1.0)
        if self.max_in_flight > capacity:
            raise ValueError(
                f"max_in_flight ({self.max_in_flight}) is more than the heartbeat keeps alive at 1 s per "
                f"call ({capacity} = 10 x heartbeat_calls {self.heartbeat_calls} x heartbeat interval "
                f"{self.extend_every:g}s); raise heartbeat_calls or visibility_timeout"
            )
        if any(d < 0 or d > 43_200 for d in self.retry_backoff):
            raise ValueError("retry_backoff: every delay must be between 0 and 43200 seconds")
        if self.max_in_flight < self.batch_size:
            raise ValueError(
                f"max_in_flight ({self.max_in_flight}) must be at least batch_size ({self.batch_size})"
            )
        return self

    @property
    def extend_every(self) -> float:
        return self.heartbeat_interval or max(1.0, self.visibility_timeout / 3)

    def heartbeat_capacity(self, seconds_per_call: float) -> int:
        """Messages in flight the heartbeat keeps extended when each call takes this long."""
        return int(10 * self.heartbeat_calls * self.extend_every / seconds_per_call)

    def queue_name(self, key: str) -> str:
        if self.url:
            return self.url.rstrip("/").rsplit("/", 1)[-1]
        return self.name or key

    def is_fifo(self, key: str) -> bool:
        return self.queue_name(key).endswith(".fifo")


class LogSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"
    """auto: console on a TTY, JSON lines otherwise."""
    summary_interval: float = Field(default=60.0, gt=0)
    """Seconds between per-queue ``queue_summary`` events."""


class HealthSettings(BaseModel):
    """The HTTP endpoint: /healthz, /readyz, /metrics (on in the container image)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65_535)
    ready_window: float = Field(default=60.0, gt=0)
    """/readyz fails when a queue had no successful receive for this long."""


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    aws: AwsSettings = Field(default_factory=AwsSettings)
    queues: dict[str, QueueSettings] = Field(min_length=1)
    message_type_attribute: str = Field(default="type", min_length=1)
    """Message attribute that carries the message type; the JSON body's ``type`` is the fallback."""
    shutdown_grace: float = Field(default=30.0, ge=0)
    """Seconds running handlers get to finish after SIGTERM before they are cancelled."""
    shutdown_flush: float = Field(default=10.0, ge=0, le=300)
    """Seconds after the grace for the last deletes and releases to be confirmed (and for
    plain-function handlers still running to finish). The whole stop takes at most
    ``shutdown_grace + shutdown_flush``; set the orchestrator's termination grace above it."""
    delete_flush_interval: float = Field(default=0.05, gt=0, le=10)
    """Longest time a finished message waits to be deleted in a batch of up to ten."""
    thread_pool_size: int = Field(default=32, ge=1, le=1024)
    """Threads for plain (non-async) handlers."""
    log: LogSettings = Field(default_factory=LogSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file (passed as init kwargs).
        return env_settings, init_settings

    @model_validator(mode="after")
    def _check(self) -> WorkerSettings:
        for key, q in self.queues.items():
            if q.url and q.name:
                raise ValueError(f"queues.{key}: give either name or url, not both")
            if q.wait_time_seconds > self.shutdown_grace + self.shutdown_flush:
                raise ValueError(
                    f"queues.{key}.wait_time_seconds ({q.wait_time_seconds}) must not exceed "
                    f"shutdown_grace + shutdown_flush ({self.shutdown_grace + self.shutdown_flush:g}): a long "
                    "poll in progress at a stop must be able to return"
                )
            if self.health.ready_window <= q.wait_time_seconds:
                raise ValueError(
                    f"health.ready_window ({self.health.ready_window}) must be longer than "
                    f"queues.{key}.wait_time_seconds ({q.wait_time_seconds})"
                )
        return self

    def pool_size(self) -> int:
        """HTTP connections: every long poll, extension and settle call in flight holds one."""
        return sum(q.pollers + q.heartbeat_calls + q.ack_calls + 2 for q in self.queues.values()) + 2


def _describe(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("function-after",))
    msg = str(err.get("msg", "invalid"))
    msg = msg.removeprefix("Value error, ")
    value = err.get("input")
    # Never echo what sits under an unknown key: it may be a misplaced secret.
    hidden = err.get("type") == "extra_forbidden" or isinstance(value, dict | list) or value is None
    shown = "" if hidden else f" (got {str(value)[:60]!r})"
    return f"{loc}: {msg}{shown}" if loc else msg


def load_settings(path: str | Path | None, overrides: dict[str, Any] | None = None) -> WorkerSettings:
    """Read, merge with the environment and validate; raise ConfigError naming the field."""
    data: dict[str, Any] = {}
    where = str(path) if path else "environment"
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        data = loaded or {}
    if overrides:
        data = {**data, **overrides}
    try:
        return WorkerSettings(**data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where)) from None


def format_validation_error(exc: ValidationError, where: str, what: str = "invalid configuration") -> str:
    """One message naming the field (and any further ones on following lines)."""
    lines = [_describe(dict(e)) for e in exc.errors()]
    head = f"{what} ({where}): {lines[0]}"
    return head + "".join(f"\n  also: {line}" for line in lines[1:])
