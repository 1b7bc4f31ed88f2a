"""Typed configuration: one YAML file, every field overridable from the environment.

Precedence, highest first: environment variables (``WORKER_`` prefix, ``__`` between
nesting levels, e.g. ``WORKER_QUEUES__ORDERS__POLLERS=4``), then the YAML file, then the
defaults below. Everything is validated, cross-field rules included, before any AWS client
exists. Credentials are never part of the configuration: they come from the standard AWS
chain (environment, shared files, container/instance roles).

Every error is a ConfigError of one line naming the field, where its value came from (the
file or the environment variable) and what is wrong: ``invalid configuration
(WORKER_QUEUES__BILLING__POLLERS): queues.billing.pollers: Input should be ...``.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, Union, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from worker.aws_target import SERVICES, AwsTarget, check_endpoint_url, check_region
from worker.aws_target import shown as _shown
from worker.errors import ConfigError
from worker.type_sources import TYPE_SOURCES, TypeSource

__all__ = [
    "AUTO",
    "AwsSettings",
    "Bounds",
    "ConfigError",
    "PayloadSettings",
    "QueueSettings",
    "WorkerSettings",
    "check_endpoint_url",
    "check_region",
    "format_validation_error",
    "load_settings",
    "read_yaml_mapping",
    "topology_evidence",
    "worker_config_evidence",
]

ENV_PREFIX = "WORKER_"
Loc = tuple[str | int, ...]

_REGION_SHAPE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_LOCALSTACK_PATH = re.compile(r"^/queue/([a-z0-9-]+)/\d+/")


def url_region(url: str) -> str | None:
    """The region a queue URL names, if any: ``sqs.<region>.amazonaws.com`` (``.cn``,
    ``sqs-fips.``, dual-stack ``sqs.<region>.api.aws``, VPC endpoints
    ``vpce-….sqs.<region>.vpce.amazonaws.com``, LocalStack's
    ``sqs.<region>.localhost.localstack.cloud``), the legacy ``<region>.queue.amazonaws.com``
    and ``queue.amazonaws.com`` (us-east-1), or LocalStack's path-style ``/queue/<region>/``."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    if host == "queue.amazonaws.com":
        return "us-east-1"
    labels = host.split(".")
    for i, label in enumerate(labels[:-1]):
        following = labels[i + 1]
        if label in ("sqs", "sqs-fips") and _REGION_SHAPE.match(following):
            return following
        if following == "queue" and _REGION_SHAPE.match(label):
            return label
    found = _LOCALSTACK_PATH.match(parts.path)
    return found.group(1) if found else None


def _refuse_flag(cls: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    """A number field refuses YAML's yes/no/true/false (pydantic would read ``yes`` as 1)."""
    if isinstance(value, bool) and info.field_name is not None:
        members = _members(cls.model_fields[info.field_name].annotation)
        if bool not in members and any(m in (int, float) for m in members):
            raise PydanticCustomError("not_a_flag", "expected a number, not yes/no or true/false", {})
    return value


class _Section(BaseModel):
    """A section of the configuration file: unknown keys refused, frozen, and a number
    field refuses yes/no."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    _no_flags = field_validator("*", mode="before")(_refuse_flag)


class AwsSettings(_Section):
    """Where the AWS calls go (``aws:``). Credentials are never set here: they come from the
    standard AWS chain (environment, shared files, SSO, container and instance roles).

    A service's endpoint, the most specific first: a setting for that service alone
    (``idempotency.endpoint_url`` for DynamoDB), ``AWS_ENDPOINT_URL_<SERVICE>``, then
    ``endpoint_url`` (``aws.endpoint_url``, a command's ``--endpoint-url``: every service),
    then ``AWS_ENDPOINT_URL``, else AWS's own endpoint."""

    region: str | None = None
    """AWS region; falls back to AWS_REGION, then AWS_DEFAULT_REGION."""
    endpoint_url: str | None = None
    """Custom endpoint of every service (LocalStack, moto); AWS_ENDPOINT_URL_<SERVICE> overrides
    it for one service; falls back to AWS_ENDPOINT_URL."""
    connect_timeout: float = Field(default=5.0, gt=0)
    """Seconds to open a connection to an AWS endpoint."""
    startup_timeout: float = Field(default=30.0, ge=0)
    """How long start-up retries transient AWS errors before giving up."""
    _service_endpoints: dict[str, tuple[str, str]] = PrivateAttr(default_factory=dict)
    """service -> (endpoint, the setting it came from): a setting for one service alone."""

    @field_validator("region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        return None if value is None else check_region(value)

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return None if value is None else check_endpoint_url(value)

    def target(self) -> AwsTarget:
        """Where the calls go: what resolves the region and each service's endpoint
        (``worker.aws_target``, shared with the commands that build no settings)."""
        return AwsTarget(self.region, self.endpoint_url, self.connect_timeout, self._service_endpoints)

    def resolved_region(self) -> str | None:
        return self.target().resolved_region()

    def with_endpoint(self, service: str, endpoint: str, source: str) -> AwsSettings:
        """A copy whose ``service`` calls go to ``endpoint`` (named ``source`` in messages),
        whatever the other settings and variables say."""
        copy = self.model_copy()
        copy._service_endpoints = {**self._service_endpoints, service: (endpoint, source)}
        return copy

    def endpoint_and_source(
        self, service: str = "sqs", general: str = "aws.endpoint_url"
    ) -> tuple[str | None, str]:
        """``service``'s endpoint (None: AWS's own) and what set it: a setting for that
        service, ``AWS_ENDPOINT_URL_<SERVICE>``, ``general`` (what ``endpoint_url`` is called
        where it came from: ``aws.endpoint_url``, ``--endpoint-url``), ``AWS_ENDPOINT_URL``."""
        return self.target().endpoint_and_source(service, general)

    def resolved_endpoint(self, service: str = "sqs") -> str | None:
        """``service``'s endpoint, the most specific first (see the class); None: AWS's own."""
        return self.target().resolved_endpoint(service)

    def check(self, services: Iterable[str] = SERVICES) -> None:
        """Validate the standard AWS variables this configuration uses (the fields
        themselves are validated on construction): an ``AWS_ENDPOINT_URL_<SERVICE>`` (always
        used when set) and ``AWS_ENDPOINT_URL`` (without ``endpoint_url``) must be an absolute
        http(s) URL, ``AWS_REGION`` / ``AWS_DEFAULT_REGION`` a region name. ConfigError, one
        line, naming the variable."""
        self.target().check(services)

    @classmethod
    def build(cls, sources: Mapping[str, str] | None = None, **values: Any) -> AwsSettings:
        """An AwsSettings from command-line values (``None`` values are left out), checked
        with :meth:`check`; ConfigError, one line, naming the option that was wrong:
        ``sources`` maps a field to its option, e.g. ``{"endpoint_url": "--endpoint-url"}``."""
        given = {k: v for k, v in values.items() if v is not None}
        try:
            aws = cls(**given)
        except ValidationError as exc:
            names = dict(sources or {})
            raise ConfigError(
                format_validation_error(
                    exc,
                    "options",
                    model=cls,
                    source=lambda loc, _type, _msg: names.get(str(loc[0])) if loc else None,
                )
            ) from None
        aws.check()
        return aws


AUTO: Literal["auto"] = "auto"


class Bounds(NamedTuple):
    """The range an adaptive setting moves in; ``low == high`` is a fixed value."""

    low: int
    high: int

    @property
    def fixed(self) -> bool:
        return self.low == self.high


AUTO_POLLERS = Bounds(1, 16)
"""``pollers: auto``: one long poll on an idle queue, up to 16 with a backlog."""
AUTO_MAX_IN_FLIGHT = 1000
"""``max_in_flight: auto``'s upper bound (lowered to the heartbeat's capacity at 1 s per call)."""
MIN_ACK_CALLS = 8
"""The fewest settle calls in flight a queue allows by default (``QueueSettings.settle_calls``)."""


class TypeSettings(_Section):
    """Where a queue's messages carry their type, and what serves the ones without
    (docs/handlers.md, "The message type")."""

    sources: list[TypeSource] = Field(default_factory=lambda: list(TYPE_SOURCES), min_length=1)
    """Where to look, in order: ``attribute`` (``attribute``, default
    ``message_type_attribute``), ``cloudevents`` (a ``ce-type`` attribute or a structured
    CloudEvent body), ``field`` (a JSON body field), ``s3`` (an S3 event notification),
    ``eventbridge`` (an EventBridge event's ``detail-type``)."""
    attribute: str | None = Field(default=None, min_length=1)
    """The message attribute of the ``attribute`` source (default: ``message_type_attribute``)."""
    field: str = Field(default="type", pattern=r"^[^.]+(\.[^.]+)*$")
    """The JSON body field of the ``field`` source, a dotted path (``meta.kind``)."""
    default: str | None = Field(default=None, min_length=1)
    """The message type a message without one is handled as (its handler serves it). Without
    it, a router's ``@router.default()`` handler serves them, else they are rejected."""
    unknown: Literal["reject", "default"] = "reject"
    """A message whose type no handler serves: ``reject`` (to the DLQ) or ``default`` (the
    default handler serves it too)."""

    @field_validator("sources")
    @classmethod
    def _once_each(cls, value: list[str]) -> list[str]:
        repeated = sorted({s for s in value if value.count(s) > 1})
        if repeated:
            raise PydanticCustomError(
                "repeated", "each source at most once (repeated: {r})", {"r": ", ".join(repeated)}
            )
        return value


class RouteLimits(_Section):
    """One message type's limits on one queue (``queues.<key>.routes.<type>``): they replace
    the handler's own ``rate``/``burst``/``max_concurrency`` arguments."""

    rate: float | None = Field(default=None, gt=0)
    """Messages of this type started per second."""
    burst: float | None = Field(default=None, ge=1)
    """Messages that may start at once after a quiet spell (default: ``rate``)."""
    max_concurrency: int | None = Field(default=None, ge=1, le=10_000)
    """Runs of this type at once in a process."""


class QueueSettings(_Section):
    """One consumed queue. The key under ``queues:`` is its logical name."""

    @field_validator("region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        return None if value is None else check_region(value)

    def region_in(self, aws: AwsSettings) -> str | None:
        """The region this queue's client signs for: ``region``, else an AWS URL's
        (``https://sqs.eu-west-1.amazonaws.com/...``), else ``aws.region``'s chain."""
        if self.region is not None:
            return self.region
        return (url_region(self.url) if self.url else None) or aws.resolved_region()

    name: str | None = None
    """SQS queue name; defaults to the key. Ignored when ``url`` is given."""
    url: str | None = None
    """The queue's URL, instead of ``name`` (e.g. a queue of another account); its region is
    the URL's when ``region`` is not given."""
    region: str | None = None
    """The queue's region when it is not ``aws.region`` (one SQS client per region); with
    an AWS ``url`` and no region, the URL's region."""
    handlers: list[str] = Field(min_length=1)
    """Importable modules, each exposing ``router`` (a ``worker.Router``)."""
    types: TypeSettings = Field(default_factory=TypeSettings)
    """Where messages carry their type and what serves untyped ones (``types.sources``,
    ``types.field``, ``types.default``, ``types.unknown``)."""
    rate: float | None = Field(default=None, gt=0)
    """Messages of this queue started per second in a process (with ``burst``): it receives
    no more than it can start within about a second (docs/flow-control.md)."""
    burst: float | None = Field(default=None, ge=1)
    """Messages that may start at once after a quiet spell (default: ``rate``)."""
    max_per_group: int | None = Field(default=None, ge=1, le=10_000)
    """Runs of one message group at once in a process: a fair queue's tenant (a standard
    queue's MessageGroupId) cannot take every slot; the others' messages go first."""
    slow_mode_after: int = Field(default=0, ge=0, le=1000)
    """After this many consecutive failures of a message type, it runs one message at a time
    until one succeeds (0: never)."""
    routes: dict[str, RouteLimits] = Field(default_factory=dict)
    """Per message type limits (``rate``, ``burst``, ``max_concurrency``), over the handler's."""
    pollers: int | Literal["auto"] = AUTO
    """Concurrent long polls, 1 to 64. A number alone is fixed; ``auto`` adapts between
    ``min_pollers`` (default 1) and 16; a number with ``min_pollers`` is the upper bound of
    an adaptive count."""
    min_pollers: int | None = Field(default=None, ge=1, le=64)
    """The fewest pollers an adaptive count keeps (default 1): an idle queue has this many,
    each long-polling."""
    max_in_flight: int | Literal["auto"] = AUTO
    """Messages received whose lease has not ended, shared by the pollers, 1 to 10,000 and at
    least ``batch_size``. A number alone is fixed (at most the heartbeat's capacity at 1 s per
    call: 10 x ``heartbeat_calls`` x the heartbeat interval); ``auto`` adapts between ``min_in_flight`` (default ``batch_size``) and 1,000 (at
    most the heartbeat's capacity at 1 s per call); a number with ``min_in_flight`` is the
    upper bound of an adaptive limit."""
    min_in_flight: int | None = Field(default=None, ge=1, le=10_000)
    """The lowest an adaptive in-flight limit goes (default ``batch_size``; at least
    ``batch_size``)."""
    wait_time_seconds: int = Field(default=20, ge=1, le=20)
    """Seconds a ReceiveMessage long poll waits for messages; at most ``shutdown_grace +
    shutdown_flush`` (a poll in progress at a stop is let finish) and below
    ``health.ready_window``."""
    batch_size: int = Field(default=10, ge=1, le=10)
    """Most messages a receive asks for."""
    batch_wait: float = Field(default=0.05, ge=0, le=5)
    """Seconds a poller waits for ``batch_size`` free slots before it receives what fits."""
    visibility_timeout: int = Field(default=30, ge=2, le=43_200)
    """Seconds of visibility each receive and each extension grants."""
    heartbeat_interval: float | None = Field(default=None, gt=0)
    """Seconds between extensions of a leased message; default a third of visibility_timeout,
    at most half of it (the other half is the margin for a slow or failed extension call)."""
    heartbeat_calls: int = Field(default=16, ge=1, le=64)
    """ChangeMessageVisibilityBatch calls in flight at once for this queue (ten messages each)."""
    ack_calls: int | Literal["auto"] = AUTO
    """DeleteMessageBatch / ChangeMessageVisibilityBatch settle calls in flight at once, 1 to
    64; ``auto`` (the default): the queue's most pollers, 16 with ``pollers: auto``, and at
    least 8. A cap: the acker sends a batch when ten settles are waiting or
    ``delete_flush_interval`` passed."""
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
        flight = self.in_flight_bounds
        if isinstance(self.max_in_flight, int) and self.max_in_flight > capacity:
            raise ValueError(
                f"max_in_flight ({self.max_in_flight}) is more than the heartbeat keeps alive at 1 s per "
                f"call ({capacity} = 10 x heartbeat_calls {self.heartbeat_calls} x heartbeat interval "
                f"{self.extend_every:g}s); raise heartbeat_calls or visibility_timeout"
            )
        if flight.low > flight.high:
            upper = f"auto: {flight.high}" if self.max_in_flight == AUTO else str(flight.high)
            raise ValueError(f"min_in_flight ({flight.low}) must be at most max_in_flight ({upper})")
        if flight.low < self.batch_size:
            name = "max_in_flight" if self.min_in_flight is None else "min_in_flight"
            raise ValueError(f"{name} ({flight.low}) must be at least batch_size ({self.batch_size})")
        pollers = self.poller_bounds
        if pollers.low > pollers.high:
            upper = f"auto: {pollers.high}" if self.pollers == AUTO else str(pollers.high)
            raise ValueError(f"min_pollers ({pollers.low}) must be at most pollers ({upper})")
        if any(d < 0 or d > 43_200 for d in self.retry_backoff):
            raise ValueError("retry_backoff: every delay must be between 0 and 43200 seconds")
        return self

    @field_validator("pollers", "max_in_flight", "ack_calls", mode="before")
    @classmethod
    def _number_or_auto(cls, value: Any, info: ValidationInfo) -> Any:
        """``auto`` in any case; any other word, or nothing (YAML's null), is refused with one
        message naming both forms."""
        text = value.strip() if isinstance(value, str) else None
        if text is not None and text.lower() == AUTO:
            return AUTO
        if value is None or (text is not None and not re.fullmatch(r"[+-]?\d+", text)):
            auto = "the most pollers, at least 8" if info.field_name == "ack_calls" else "adaptive"
            raise PydanticCustomError(
                "number_or_auto", "expected a number (fixed) or 'auto' ({auto})", {"auto": auto}
            )
        return value

    @field_validator("pollers", "max_in_flight", "ack_calls")
    @classmethod
    def _in_range(cls, value: int | str, info: ValidationInfo) -> int | str:
        top = 10_000 if info.field_name == "max_in_flight" else 64
        if isinstance(value, int) and value < 1:
            raise PydanticCustomError(
                "greater_than_equal", "Input should be greater than or equal to {ge}", {"ge": 1}
            )
        if isinstance(value, int) and value > top:
            raise PydanticCustomError(
                "less_than_equal", "Input should be less than or equal to {le}", {"le": top}
            )
        return value

    @property
    def in_flight_bounds(self) -> Bounds:
        """The range the in-flight limit moves in (``low == high``: fixed)."""
        if isinstance(self.max_in_flight, int):
            fixed = self.max_in_flight
            return Bounds(fixed if self.min_in_flight is None else self.min_in_flight, fixed)
        high = min(AUTO_MAX_IN_FLIGHT, self.heartbeat_capacity(1.0))
        return Bounds(self.batch_size if self.min_in_flight is None else self.min_in_flight, high)

    @property
    def poller_bounds(self) -> Bounds:
        """The range the number of pollers moves in (``low == high``: fixed)."""
        if isinstance(self.pollers, int):
            return Bounds(self.pollers if self.min_pollers is None else self.min_pollers, self.pollers)
        return Bounds(AUTO_POLLERS.low if self.min_pollers is None else self.min_pollers, AUTO_POLLERS.high)

    @property
    def settle_calls(self) -> int:
        """Settle calls in flight at once: ``ack_calls``, by default one for each poller the
        queue may have (at least ``MIN_ACK_CALLS``). Every receive of ten needs a delete of
        ten; where a delete takes about as long as a receive (a loaded server), fewer delete
        calls than receives in flight let the deletes fall behind, and their leases hold the
        slots receiving needs (measured on LocalStack, 2026-11-24: 8 calls for 16 pollers
        gave 0.6-0.85x of the throughput of 16 calls, per repetition). On SQS, where a
        delete takes tens of milliseconds, it stays a cap."""
        if isinstance(self.ack_calls, int):
            return self.ack_calls
        return max(MIN_ACK_CALLS, self.poller_bounds.high)

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


class LogSettings(_Section):
    """The worker's log lines (``log:``): JSON lines or console, with the message's context."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    """The lowest level written, in any case (``DEBUG`` too); ``worker run --log-level``
    overrides it."""
    format: Literal["auto", "json", "console"] = "auto"
    """auto: console on a TTY, JSON lines otherwise."""
    summary_interval: float = Field(default=60.0, gt=0)
    """Seconds between per-queue ``queue_summary`` events."""

    @field_validator("level", "format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        """``DEBUG`` as well as ``debug`` (WORKER_LOG__LEVEL=DEBUG is what people write)."""
        return value.strip().lower() if isinstance(value, str) else value


class HealthSettings(_Section):
    """The HTTP endpoint: /healthz, /readyz, /metrics (on in the container image)."""

    enabled: bool = False
    """Serve the endpoint. Without it the worker records no metrics (nothing could read them)."""
    host: str = "0.0.0.0"
    """The address the endpoint listens on."""
    port: int = Field(default=8080, ge=0, le=65_535)
    """The port the endpoint listens on (0: any free port)."""
    ready_window: float = Field(default=60.0, gt=0)
    """/readyz fails when a queue had no successful receive for this long."""
    group_metrics: bool = False
    """Count handler outcomes per message group too (``sqs_worker_group_messages_total``,
    labels queue, group, outcome), for messages that carry a MessageGroupId (fair queues'
    tenants, FIFO groups). Off by default: one series per group and outcome, and tenants
    can be thousands."""


class PayloadSettings(_Section):
    """Bodies kept in S3 in the Amazon SQS/SNS Extended Client format (``payloads:``).

    Reading needs nothing set: a pointer names its bucket. ``bucket`` and ``prefix`` say
    where producers built from this configuration offload (``worker send/publish
    --s3-bucket/--s3-prefix`` read the same ``WORKER_PAYLOADS__*`` variables) and which
    objects ``worker iam-policy`` grants."""

    bucket: str | None = Field(default=None, min_length=3, max_length=63)
    """Bucket offloaded bodies are written to."""
    prefix: str = Field(default="", max_length=512)
    """Key prefix of offloaded bodies (e.g. ``payloads/``); the key is prefix + a UUID."""
    offload: Literal["auto", "always"] = "auto"
    """``auto``: bodies over ``threshold`` go to S3; ``always``: every body does."""
    threshold: int = Field(default=262_144, ge=0, le=1_048_576)
    """Bytes (body plus attributes) above which ``auto`` offloads; SNS messages are
    offloaded above 256 KiB whatever this says (SNS's limit)."""
    delete_after_success: bool = True
    """Delete a payload's object once its message was handled and deleted (like the
    reference clients). Never for messages that came in an SNS envelope: a topic fans one
    object out to several queues (leave those to the bucket's lifecycle rule)."""
    ignore_missing: bool = False
    """A pointer whose object is gone: false, the message is rejected (to the DLQ) with the
    reason; true, it is deleted without running a handler (``ignorePayloadNotFound``)."""
    path_style: bool | None = None
    """S3 path-style addressing; default: on when a custom endpoint is set (LocalStack, MinIO)."""


class BreakerSettings(_Section):
    """The circuit breaker of each dependency a handler declares (``dependencies=[...]``)
    or raises ``DependencyUnavailable`` for (docs/flow-control.md)."""

    failures: int = Field(default=5, ge=1, le=1000)
    """Consecutive failures of a dependency's routes that open its breaker."""
    failure_ratio: float = Field(default=0.5, gt=0, le=1)
    """A failure ratio over ``window`` that opens it (once ``min_calls`` ran in the window)."""
    window: float = Field(default=30.0, gt=0, le=3600)
    """Seconds of calls the failure ratio is taken over."""
    min_calls: int = Field(default=20, ge=1)
    """Calls in the window before the ratio counts."""
    open_for: float = Field(default=10.0, gt=0, le=3600)
    """Seconds an open breaker waits before one probe message runs (doubled after a failed
    probe, up to ``max_open_for``)."""
    max_open_for: float = Field(default=30.0, gt=0, le=3600)
    """The longest an open breaker waits between probes: after the dependency is back, full
    flow resumes within this many seconds (and a second)."""
    max_wait: float = Field(default=900.0, gt=0, le=43_200)
    """Seconds a received message waits, leased, for an open breaker (or an unreachable S3
    or idempotency store) before it is given back to the queue: visible at once, its next
    receive counts as an attempt. Keeps a long outage from holding messages forever."""

    @model_validator(mode="after")
    def _open_times(self) -> BreakerSettings:
        if self.max_open_for < self.open_for:
            raise ValueError(
                f"max_open_for ({self.max_open_for:g}) must be at least open_for ({self.open_for:g})"
            )
        return self


class IdempotencySettings(_Section):
    """Where idempotent handlers (``@router.handler(..., idempotent=True)``) record the
    messages they ran (``idempotency:``; see ``worker.runtime.idempotency``)."""

    store: Literal["none", "memory", "dynamodb"] = "none"
    """``dynamodb``: a table shared by every replica (``worker provision`` creates it from a
    ``tables:`` entry); ``memory``: this process only (tests, a single replica that never
    restarts); ``none``: an idempotent handler refuses to start."""
    table: str = Field(default="sqs-worker-idempotency", min_length=3, max_length=255)
    """The DynamoDB table (partition key ``id``, string; TTL on ``expiration``)."""
    expires_after: int = Field(default=86_400, ge=60, le=31_536_000)
    """Seconds a completed record keeps a redelivery from running again (1 day; at least
    as long as duplicates can arrive: SQS keeps a message up to its retention period)."""
    endpoint_url: str | None = None
    """DynamoDB endpoint when it is not ``aws.endpoint_url`` (e.g. DynamoDB Local next to
    LocalStack); ``AWS_ENDPOINT_URL_DYNAMODB`` does the same (this setting wins over it)."""

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return None if value is None else check_endpoint_url(value)


class WorkerSettings(BaseSettings):
    """The worker configuration: the top level of the YAML file."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )
    _no_flags = field_validator("*", mode="before")(_refuse_flag)

    aws: AwsSettings = Field(default_factory=AwsSettings)
    """Where the AWS calls go: region, endpoint, timeouts."""
    queues: dict[str, QueueSettings] = Field(min_length=1)
    """The queues to consume, by key (the key is the queue's name unless ``name`` or ``url``
    says otherwise, and the ``queue`` label of its metrics)."""
    message_type_attribute: str = Field(default="type", min_length=1)
    """Message attribute that carries the message type (the ``attribute`` source of every
    queue's ``types.sources``; ``types.attribute`` overrides it for one queue)."""
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
    """Log level, format and the per-queue summary."""
    health: HealthSettings = Field(default_factory=HealthSettings)
    """The HTTP endpoint: health, readiness and metrics."""
    payloads: PayloadSettings = Field(default_factory=PayloadSettings)
    """Large bodies kept in S3 (extended-client format)."""
    idempotency: IdempotencySettings = Field(default_factory=IdempotencySettings)
    """The store of idempotent handlers' runs."""
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    """Circuit breakers of handlers' dependencies (``failures``, ``failure_ratio``,
    ``window``, ``min_calls``, ``open_for``, ``max_open_for``, ``max_wait``)."""

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

    def store_aws(self) -> AwsSettings:
        """The AWS settings of the idempotency store (its own endpoint, if it has one: it
        wins over ``AWS_ENDPOINT_URL_DYNAMODB`` and ``aws.endpoint_url``)."""
        if self.idempotency.endpoint_url is None:
            return self.aws
        return self.aws.with_endpoint("dynamodb", self.idempotency.endpoint_url, "idempotency.endpoint_url")

    def pool_size(self, keys: Iterable[str] | None = None) -> int:
        """HTTP connections of the queues ``keys`` (default all): every long poll, extension
        and settle call in flight holds one."""
        queues = [self.queues[k] for k in keys] if keys is not None else list(self.queues.values())
        return sum(q.poller_bounds.high + q.heartbeat_calls + q.settle_calls + 2 for q in queues) + 2


# -- one error style -------------------------------------------------------------------------
# Every configuration error is one line: ``invalid configuration (SOURCE): FIELD: WHAT`` where
# SOURCE is the YAML file or the environment variable the value came from. Further errors are
# counted and named by their field only, on the same line.

_FROM_VALIDATOR = frozenset({"value_error", "assertion_error"})
_SHOWN_PATHS = 5


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _members(ann: Any) -> list[Any]:
    """The non-None members of a union (``[ann]`` when it is not one)."""
    if get_origin(ann) in (Union, types.UnionType):
        return [a for a in get_args(ann) if a is not type(None)]
    return [ann]


def _is_model(ann: Any) -> bool:
    return isinstance(ann, type) and issubclass(ann, BaseModel)


def _is_complex(ann: Any) -> bool:
    """Does pydantic-settings read this field from one variable as JSON (and fail on bad JSON)?"""
    members = _members(ann)
    if len(members) != 1:
        return False
    only = members[0]
    return _is_model(only) or only in (dict, list) or get_origin(only) in (dict, list)


def _is_tag(part: str | int, member: Any) -> bool:
    """Is ``part`` pydantic's name for this union member in an error location?"""
    if not isinstance(part, str):
        return False
    if get_origin(member) is Literal:
        return part.startswith("literal[")
    origin = get_origin(member)
    if origin is not None:
        return part.startswith(f"{getattr(origin, '__name__', '')}[")
    return part == getattr(member, "__name__", None)


def _walk(model: type[BaseModel] | None, loc: Sequence[str | int]) -> tuple[Loc, Any, bool]:
    """``loc`` without union-member tags and internal parts, the annotation it reaches (None
    when unknown) and whether a union tag was left out."""
    ann: Any = model
    out: list[str | int] = []
    tagged = False
    for part in loc:
        if isinstance(part, str) and part.startswith("function-"):
            continue
        members = _members(ann) if ann is not None else []
        if len(members) > 1:
            chosen = next((m for m in members if _is_tag(part, m)), None)
            if chosen is not None:
                ann, tagged = chosen, True
                continue
            ann = None
        elif members:
            ann = members[0]
        out.append(part)
        if _is_model(ann) and isinstance(part, str) and part in ann.model_fields:
            ann = ann.model_fields[part].annotation
        elif get_origin(ann) is dict and part != "[key]":
            ann = get_args(ann)[1] if get_args(ann) else None
        elif get_origin(ann) is list and isinstance(part, int):
            ann = get_args(ann)[0] if get_args(ann) else None
        else:
            ann = None
    return tuple(out), ann, tagged


_CREDENTIAL_KEYS = frozenset(
    {
        "access_key",
        "access_key_id",
        "secret_key",
        "secret_access_key",
        "session_token",
        "security_token",
        "credentials",
        "profile",
        "profile_name",
    }
)
CREDENTIALS_REFUSED = (
    "credentials are never read from the configuration: they come from the standard AWS chain "
    "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, or AWS_PROFILE with the "
    "~/.aws files or SSO, or a container or instance role); remove it"
)
"""What an unknown key that names a credential (``aws.secret_access_key``, ``profile``, …) gets
instead of "unknown field" (docs/security.md, "Credentials")."""


def is_credential_key(name: object) -> bool:
    """Does an unknown key name an AWS credential or profile (``aws_`` prefix, case and
    dashes aside)?"""
    if not isinstance(name, str):
        return False
    key = name.strip().lower().replace("-", "_")
    return key.removeprefix("aws_") in _CREDENTIAL_KEYS


def _close_field(loc: Loc, model: type[BaseModel] | None) -> str | None:
    """For an unknown key at ``loc``: the field of its mapping with the closest name, if any."""
    parent = _walk(model, loc[:-1])[1] if loc else None
    if isinstance(parent, type) and issubclass(parent, BaseModel) and isinstance(loc[-1], str):
        close = difflib.get_close_matches(loc[-1], list(parent.model_fields), n=1)
        return close[0] if close else None
    return None


def _describe(err: Mapping[str, Any], loc: Loc, model: type[BaseModel] | None) -> str:
    path = ".".join(str(p) for p in loc)
    kind = err.get("type")
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if kind == "extra_forbidden" and loc and is_credential_key(loc[-1]):
        msg = CREDENTIALS_REFUSED
    elif kind == "extra_forbidden":
        msg = "unknown field"
        close = _close_field(loc, model)
        msg += f" (did you mean {close!r}?)" if close else ""
    elif kind == "missing":
        msg = "required"
    value = err.get("input")
    # Never echo what sits under an unknown key: it may be a misplaced secret. A validator's
    # own message says what it needs to (a URL with its credentials hidden).
    hidden = (
        kind == "extra_forbidden"
        or kind in _FROM_VALIDATOR
        or isinstance(value, dict | list)
        or value is None
    )
    shown = "" if hidden else f" (got {_shown(value)})"
    return f"{path}: {msg}{shown}" if path else f"{msg}{shown}"


def format_validation_error(
    exc: ValidationError,
    where: str,
    what: str = "invalid configuration",
    *,
    model: type[BaseModel] | None = None,
    source: Callable[[Loc, str, str], str | None] | None = None,
) -> str:
    """One line: ``WHAT (SOURCE): FIELD: PROBLEM``, then ``; and N more: FIELD, ...``.

    ``where`` names where the values came from (a file); ``source(loc, type, message)``, when
    given, may name a better one per error (an environment variable). ``model`` (the validated
    class) lets union-member tags be left out of field paths and unknown fields get a "did
    you mean"."""
    errors = [(dict(e), *_walk(model, e["loc"])) for e in exc.errors()]
    # Of the errors one union value gave (one per member), keep those of the member it was
    # meant for: a mapping or list failing a literal is not worth reporting.
    deeper = [loc for _, loc, _, tagged in errors if tagged]
    kept: dict[Loc, dict[str, Any]] = {}
    for err, loc, _, tagged in errors:
        superseded = any(len(other) > len(loc) and other[: len(loc)] == loc for other in deeper)
        if not (tagged and isinstance(err.get("input"), dict | list) and superseded):
            kept.setdefault(loc, err)
    # A misspelt required field is one mistake, not two: its "unknown field (did you mean
    # ...)" is reported and the "required" of the field it meant is dropped. A credential in
    # the file comes first, then such typos, then the rest in pydantic's order.
    typos: set[Loc] = set()
    for loc, err in list(kept.items()):
        if err.get("type") == "extra_forbidden" and not is_credential_key(loc[-1] if loc else None):
            close = _close_field(loc, model)
            meant = (*loc[:-1], close) if close else None
            if meant in kept and kept[meant].get("type") == "missing":
                typos.add(loc)
                del kept[meant]

    def rank(item: tuple[Loc, dict[str, Any]]) -> int:
        loc, err = item
        if err.get("type") == "extra_forbidden" and loc and is_credential_key(loc[-1]):
            return 0
        return 1 if loc in typos else 2

    (loc, first), *rest = sorted(kept.items(), key=rank)
    origin = (source(loc, str(first.get("type")), str(first.get("msg", ""))) if source else None) or where
    line = f"{what} ({origin}): {_describe(first, loc, model)}"
    if rest:
        paths = [".".join(str(p) for p in other) or "(top level)" for other, _ in rest]
        more = ", ".join(paths[:_SHOWN_PATHS]) + (", …" if len(paths) > _SHOWN_PATHS else "")
        line += f"; and {len(rest)} more: {more}"
    return _one_line(line)


# -- where a value came from ----------------------------------------------------------------
def _lookup(data: Any, path: Sequence[str | int]) -> bool:
    for part in path:
        found = (isinstance(data, dict) and part in data) or (
            isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        )
        if not found:
            return False
        data = data[part]
    return True


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


@dataclass
class _Origins:
    """Names the source of each invalid value: an environment variable, the overrides or
    the file (pydantic-settings merges them before validating, so it cannot say)."""

    path: str | None
    data: dict[str, Any]
    overrides: dict[str, Any]
    overrides_source: str
    env: list[tuple[str, tuple[str, ...], str]] = field(default_factory=list)

    @classmethod
    def read(
        cls, path: str | None, data: dict[str, Any], overrides: dict[str, Any], overrides_source: str
    ) -> _Origins:
        origins = cls(path, data, overrides, overrides_source)
        prefix = ENV_PREFIX.lower()
        for name, value in os.environ.items():
            low = name.lower()  # pydantic-settings matches names case-insensitively
            if low.startswith(prefix):
                parts = tuple(low[len(prefix) :].split("__"))
                if parts[0] in WorkerSettings.model_fields:
                    origins.env.append((name, parts, value))
        return origins

    def check_json(self) -> None:
        """A variable holding a mapping or list must be JSON: say which one is not (else
        pydantic-settings raises SettingsError with a traceback and no variable name)."""
        for name, parts, value in self.env:
            _, ann, _ = _walk(WorkerSettings, parts)
            if not _is_complex(ann) or (len(parts) > 1 and not value):
                continue
            try:
                json.loads(value)
            except ValueError as exc:
                kind = "a JSON array" if get_origin(_members(ann)[0]) is list else "a JSON object"
                problem = (
                    f"expected {kind}, got an empty value"
                    if not value.strip()
                    else f"not valid JSON ({getattr(exc, 'msg', exc)} at column {getattr(exc, 'colno', '?')}); "
                    f"expected {kind}"
                )
                raise ConfigError(f"invalid configuration ({name}): {'.'.join(parts)}: {problem}") from None

    def of(self, loc: Loc, kind: str, msg: str) -> str | None:
        if kind == "missing" and len(loc) == 1:
            return self.path  # a required top-level field: the file should have it
        # A missing field is missing from the mapping that holds it.
        target = loc[:-1] if kind == "missing" else loc
        if "[key]" in target:
            target = target[: target.index("[key]")]
        text = [str(p) for p in target]
        below: list[str] = []
        holders: list[tuple[int, str]] = []
        for name, parts, value in self.env:
            n = len(parts)
            if list(parts) == text[:n]:
                # The variable holds this value, or a JSON document that contains it.
                if n == len(text) or _lookup(_json(value), target[n:]):
                    holders.append((n, name))
            elif list(parts[: len(text)]) == text:
                # A variable below: part of the value a cross-field rule rejected (when the
                # rule's message names it) or what made the mapping exist.
                rest = ".".join(parts[len(text) :])
                if kind not in _FROM_VALIDATOR or rest in msg.lower():
                    below.append(name)
        if holders:
            return max(holders)[1]  # the deepest variable wins pydantic-settings' merge
        found: list[str] = []
        if not target:
            found += [self.path] if self.path else []
            found += [self.overrides_source] if self.overrides else []
        elif target[0] in self.overrides:
            found += [self.overrides_source] if _lookup(self.overrides, target) else []
        elif self.path and _lookup(self.data, target):
            found.append(self.path)
        found += below
        return ", ".join(found) if found else None


# -- files --------------------------------------------------------------------------------------
def read_yaml_mapping(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """The mapping a YAML file holds ({} when empty). ConfigError, one line, naming the file,
    and its line and column for a syntax error: ``x.yaml:3:5: not valid YAML: ...``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        before = exc.object[: exc.start]
        line, column = before.count(b"\n") + 1, exc.start - (before.rfind(b"\n") + 1) + 1
        raise ConfigError(
            f"{path}:{line}:{column}: not UTF-8 text (byte {exc.object[exc.start]:#04x})"
        ) from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "syntax error"
        if exc.problem and exc.context:
            started = exc.context_mark
            problem += f" ({exc.context}" + (
                f" started at {started.line + 1}:{started.column + 1})" if started else ")"
            )
        raise ConfigError(_one_line(f"{path}{at}: not valid YAML: {problem}")) from None
    except yaml.YAMLError as exc:
        raise ConfigError(_one_line(f"{path}: not valid YAML: {exc}")) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, not {type(loaded).__name__}")
    bad = next((k for k in loaded if not isinstance(k, str)), None)
    if bad is not None:
        raise ConfigError(f"{path}: top-level key {_shown(bad)} is not a field name")
    return loaded


_TOPOLOGY_TOP = ("topics", "subscriptions", "buckets")
_TOPOLOGY_QUEUE = (
    "dead_letter",
    "redrive_allow",
    "message_retention",
    "receive_wait_time",
    "encryption",
    "content_based_deduplication",
    "max_message_size",
    "delay",
)
_WORKER_ONLY = tuple(k for k in WorkerSettings.model_fields if k != "queues")


def _queues(data: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    queues = data.get("queues")
    if not isinstance(queues, dict):
        return []
    return [(str(k), v) for k, v in queues.items() if isinstance(v, dict)]


def worker_config_evidence(data: Mapping[str, Any]) -> str | None:
    """The key that shows ``data`` is a worker configuration (None: it does not look like one)."""
    handlers = next((f"queues.{k}.handlers" for k, q in _queues(data) if "handlers" in q), None)
    if handlers:
        return handlers
    if any(k in data for k in _TOPOLOGY_TOP):
        return None
    return next((k for k in _WORKER_ONLY if k in data), None)


def topology_evidence(data: Mapping[str, Any]) -> str | None:
    """The key that shows ``data`` is a topology file (None: it does not look like one)."""
    queues = _queues(data)
    if any("handlers" in q for _, q in queues):
        return None
    top = next((k for k in _TOPOLOGY_TOP if k in data), None)
    if top:
        return top
    return next((f"queues.{k}.{key}" for k, q in queues for key in _TOPOLOGY_QUEUE if key in q), None)


def load_settings(
    path: str | Path | None,
    overrides: dict[str, Any] | None = None,
    *,
    overrides_source: str = "overrides",
) -> WorkerSettings:
    """Read the file, merge with the environment and ``overrides`` (top-level keys replace the
    file's; ``overrides_source`` names them in errors, e.g. ``"--endpoint-url"``) and validate,
    the AWS variables it falls back to included (:meth:`AwsSettings.check`).

    Raises ConfigError with one line naming the field and where its value came from: the
    file, or the environment variable (``WORKER_QUEUES__BILLING__POLLERS``)."""
    data = read_yaml_mapping(path) if path is not None else {}
    where = str(path) if path is not None else "environment, no config file"
    origins = _Origins.read(
        str(path) if path is not None else None, data, dict(overrides or {}), overrides_source
    )
    origins.check_json()
    try:
        settings = WorkerSettings(**{**data, **(overrides or {})})
    except ValidationError as exc:
        evidence = topology_evidence(data) if path is not None else None
        if evidence:
            raise ConfigError(
                f"{path}: this is a topology file (it has {evidence!r}), not a worker configuration; "
                "pass the worker configuration (config/worker.yaml)"
            ) from None
        raise ConfigError(
            format_validation_error(exc, where, model=WorkerSettings, source=origins.of)
        ) from None
    except SettingsError as exc:  # a case check_json did not foresee: still one line
        found = re.search(r'field "(\w+)"', str(exc))
        name = f"{ENV_PREFIX}{found.group(1).upper()}" if found else f"{ENV_PREFIX}*"
        raise ConfigError(
            _one_line(f"invalid configuration ({name} or a variable under it): {exc.__cause__ or exc}")
        ) from None
    settings.aws.check()
    return settings
