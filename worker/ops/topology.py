"""The declarative topology file: queues, topics, subscriptions and buckets, by name.

Validated with pydantic before any AWS call: a redrive policy must name a queue of the
same file (FIFO for a FIFO source), a subscription a topic and a queue of the file, a
bucket notification a standard queue of the file. The desired AWS attributes of every
resource are derived here, so ``provision`` only compares and applies.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from worker.ops.alarms import Alarm, AlarmDefinition, AlarmSettings, QueueAlarms, TopicAlarms, resolve
from worker.settings import ConfigError, format_validation_error, read_yaml_mapping, worker_config_evidence

MANAGED_TAG = "managed-by"
MANAGED_VALUE = "sqs-worker"
TOPOLOGY_TAG = "sqs-worker-topology"
MANAGED_ID = "sqs-worker-"
"""Prefix of the notification and lifecycle rule ids provision writes: only those are
compared and replaced, a bucket's other configurations are left as they are."""
MAX_MESSAGE_SIZE = 1_048_576
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_TABLE_NAME = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
Protocol = Literal["sqs", "http", "https", "email", "email-json", "sms", "lambda", "firehose", "application"]
_ENDPOINTS: dict[str, tuple[re.Pattern[str], str]] = {
    "http": (re.compile(r"^http://[^\s/]+"), "an http:// URL"),
    "https": (re.compile(r"^https://[^\s/]+"), "an https:// URL"),
    "email": (re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$"), "an email address"),
    "email-json": (re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$"), "an email address"),
    "sms": (re.compile(r"^\+[1-9]\d{6,14}$"), "a phone number in E.164 form (+15555550100)"),
    "lambda": (
        re.compile(r"^arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:function:[A-Za-z0-9_-]+(:[A-Za-z0-9_$-]+)?$"),
        "a Lambda function ARN (arn:aws:lambda:<region>:<account>:function:<name>)",
    ),
    "firehose": (
        re.compile(r"^arn:aws[a-z-]*:firehose:[a-z0-9-]+:\d{12}:deliverystream/[A-Za-z0-9_.-]+$"),
        "a Firehose delivery stream ARN (arn:aws:firehose:<region>:<account>:deliverystream/<name>)",
    ),
    "application": (
        re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:endpoint/.+$"),
        "a platform application endpoint ARN (arn:aws:sns:<region>:<account>:endpoint/...)",
    ),
}
RAW_PROTOCOLS = frozenset({"sqs", "http", "https", "firehose"})
"""Protocols SNS can deliver raw (without its JSON envelope) to."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeadLetter(_Model):
    """The queue's redrive policy: where SQS moves a message it delivered too often."""

    queue: str
    """Name of the dead-letter queue (a queue of this file)."""
    max_receive_count: int = Field(ge=1, le=1000)
    """Deliveries after which SQS moves a message to the dead-letter queue (``maxReceiveCount``)."""


class KmsEncryption(_Model):
    """SSE-KMS for a queue: ``encryption: {kms_key_id: ...}``."""

    kms_key_id: str
    """The KMS key: an id, ARN or alias (``alias/...``; ``alias/aws/sqs`` for AWS's own)."""
    data_key_reuse_seconds: int = Field(default=300, ge=60, le=86_400)
    """Seconds SQS reuses a data key before asking KMS again."""


class QueueSpec(_Model):
    """A queue, by its name (a name ending in ``.fifo`` is a FIFO queue)."""

    visibility_timeout: int = Field(default=30, ge=0, le=43_200)
    """The queue's default visibility timeout in seconds (the worker asks for its own,
    ``visibility_timeout`` of its configuration, on every receive)."""
    message_retention: int = Field(default=345_600, ge=60, le=1_209_600)
    """Seconds SQS keeps a message (4 days; 60 s to 14 days)."""
    delay: int = Field(default=0, ge=0, le=900)
    """Seconds every new message stays invisible (delivery delay)."""
    receive_wait_time: int = Field(default=0, ge=0, le=20)
    """The queue's default long-poll wait in seconds (the worker gives its own)."""
    max_message_size: int = Field(default=MAX_MESSAGE_SIZE, ge=1024, le=MAX_MESSAGE_SIZE)
    """Bytes, body plus attributes: 1 KiB to 1 MiB (SQS's default and most)."""
    content_based_deduplication: bool = False
    """FIFO queues only: the body's SHA-256 is the deduplication id when a message has none."""
    encryption: Literal["sqs", "none"] | KmsEncryption = "sqs"
    """``sqs`` (SSE-SQS, keys managed by SQS), ``none``, or ``{kms_key_id: ...}`` (SSE-KMS)."""
    dead_letter: DeadLetter | None = None
    """The redrive policy: the dead-letter queue and after how many deliveries."""
    redrive_allow: Literal["all", "deny"] | list[str] | None = None
    """For a DLQ: which source queues may use it ("all", "deny", or queue names)."""
    region: str | None = None
    """The queue's region; default the file's ``region:``, else the session's."""
    alarms: QueueAlarms = Field(default_factory=QueueAlarms)
    """CloudWatch alarms on the queue."""


class TopicSpec(_Model):
    """An SNS topic, by its name (a name ending in ``.fifo`` is a FIFO topic)."""

    display_name: str | None = None
    """The topic's display name (the sender name of SMS and email deliveries)."""
    kms_key_id: str | None = None
    """SSE-KMS: the KMS key (id, ARN or alias) that encrypts the topic's messages."""
    content_based_deduplication: bool = False
    """FIFO topics only: the body's SHA-256 is the deduplication id when a message has none."""
    delivery_policy: dict[str, Any] | None = None
    """SNS's delivery policy of the topic (JSON, as SNS's ``DeliveryPolicy``): retries of
    its http/https deliveries."""
    access_policy: dict[str, Any] | None = None
    """The topic's access policy (JSON, as SNS's ``Policy``); unset: SNS's default, which
    lets the owner account publish and subscribe."""
    region: str | None = None
    """The topic's region; default the file's ``region:``, else the session's."""
    alarms: TopicAlarms = Field(default_factory=TopicAlarms)
    """CloudWatch alarms on the topic."""


class SubscriptionSpec(_Model):
    """A subscription of a topic of the file: to a queue of the file, or to an endpoint of
    another protocol."""

    topic: str
    """The topic (a topic of this file)."""
    queue: str | None = None
    """A queue of this file (protocol ``sqs``, the default when ``queue`` is given)."""
    protocol: Protocol | None = None
    """sqs, http, https, email, email-json, sms, lambda, firehose or application."""
    endpoint: str | None = None
    """Where a non-SQS subscription delivers: a URL, an address, a number or an ARN."""
    raw: bool = False
    """Raw message delivery (sqs, http/https, firehose): the body as published, without SNS's
    JSON envelope (the worker reads both)."""
    filter_policy: dict[str, Any] | None = None
    """SNS filter policy (JSON): only matching messages are delivered."""
    filter_policy_scope: Literal["MessageAttributes", "MessageBody"] = "MessageAttributes"
    """What ``filter_policy`` matches: the message attributes or the JSON body."""
    delivery_policy: dict[str, Any] | None = None
    """http/https only: SNS's retry policy for this endpoint (``healthyRetryPolicy``...)."""
    subscription_role_arn: str | None = None
    """firehose only (needed): the IAM role SNS assumes to write to the stream."""

    @property
    def kind(self) -> str:
        return self.protocol or "sqs"

    @property
    def label(self) -> str:
        """How plans and errors name it: ``topic -> queue`` or ``topic -> protocol:endpoint``."""
        return subscription_label(self.topic, self.kind, self.queue or self.endpoint or "")


def subscription_label(topic: str, protocol: str, target: str) -> str:
    """``orders -> billing`` (a queue of the file), ``orders -> https://host/hook``,
    ``orders -> email:ops@example.com``, ``orders -> sqs:arn:...`` (a queue outside the file)."""
    if (protocol == "sqs" and not target.startswith("arn:")) or protocol in ("http", "https"):
        return f"{topic} -> {target}"
    return f"{topic} -> {protocol}:{target}"


class BucketNotification(_Model):
    """S3 events of a bucket delivered to a queue of this file."""

    queue: str
    """The queue (a standard queue of this file, in the bucket's region)."""
    events: list[str] = Field(default_factory=lambda: ["s3:ObjectCreated:*"], min_length=1)
    """S3 event types, e.g. ``s3:ObjectCreated:*``, ``s3:ObjectRemoved:Delete``."""
    prefix: str | None = None
    """Only keys starting with this."""
    suffix: str | None = None
    """Only keys ending with this (e.g. ``.csv``)."""


class LifecycleRule(_Model):
    """Expire objects under a prefix (e.g. offloaded payloads nobody deleted)."""

    prefix: str = Field(min_length=1)
    """The key prefix whose objects expire (e.g. ``payloads/``)."""
    expire_days: int = Field(ge=1, le=36_500)
    """Days after its creation an object is deleted."""


class KmsBucketEncryption(_Model):
    """SSE-KMS for a bucket: ``encryption: {kms_key_id: ...}``."""

    kms_key_id: str
    """The KMS key (id, ARN or alias) of the bucket's default encryption."""
    bucket_key: bool = True
    """Use an S3 Bucket Key (fewer KMS requests)."""


class BucketSpec(_Model):
    """An S3 bucket, by its name."""

    encryption: Literal["s3"] | KmsBucketEncryption = "s3"
    """Default encryption: ``s3`` (SSE-S3, AES256) or ``{kms_key_id: ...}`` (SSE-KMS)."""
    lifecycle: list[LifecycleRule] = Field(default_factory=list)
    """Expiration rules (provision manages only the rules it wrote)."""
    notifications: list[BucketNotification] = Field(default_factory=list)
    """S3 event notifications to queues of the file (provision manages only its own)."""
    region: str | None = None
    """The bucket's region; default the file's ``region:``, else the session's. Its
    notifications go to queues of the same region."""


class TableSpec(_Model):
    """A DynamoDB table, by its name."""

    kind: Literal["idempotency"] = "idempotency"
    """What the table is for; ``idempotency``: the store of idempotent handlers (key ``id``,
    on-demand billing, time to live on ``expiration``)."""


class Topology(_Model):
    """The topology file: the top level."""

    name: str = Field(default="default", min_length=1, max_length=128)
    """The scope: tagged on what provision creates; --prune only touches resources of this
    name, and needs it set in the file (unset, every unnamed file shares "default")."""
    queues: dict[str, QueueSpec] = Field(default_factory=dict)
    """SQS queues by name."""
    topics: dict[str, TopicSpec] = Field(default_factory=dict)
    """SNS topics by name."""
    subscriptions: list[SubscriptionSpec] = Field(default_factory=list)
    """Subscriptions of the file's topics (each topic and target once)."""
    buckets: dict[str, BucketSpec] = Field(default_factory=dict)
    """S3 buckets by name: encryption, lifecycle rules, notifications to queues of the file.
    Provision creates and configures them; it never deletes one (not even with --prune)."""
    tables: dict[str, TableSpec] = Field(default_factory=dict)
    """DynamoDB tables by name (the idempotency store's). Provision creates them and turns
    their time to live on; it never deletes one."""
    region: str | None = None
    """The region of every resource that names none; default the session's (--region,
    AWS_REGION)."""
    alarms: AlarmSettings = Field(default_factory=AlarmSettings)
    """CloudWatch alarms: who they notify, whether the defaults are generated."""

    @model_validator(mode="after")
    def _references(self) -> Topology:
        for name, q in self.queues.items():
            _check_name(name, "queues")
            if q.content_based_deduplication and not name.endswith(".fifo"):
                raise ValueError(f"queues.{name}.content_based_deduplication needs a FIFO queue (.fifo)")
            if q.dead_letter is not None:
                dlq = q.dead_letter.queue
                if dlq not in self.queues:
                    raise ValueError(f"queues.{name}.dead_letter.queue: unknown queue {dlq!r}")
                if dlq == name:
                    raise ValueError(f"queues.{name}.dead_letter.queue: a queue cannot be its own DLQ")
                if name.endswith(".fifo") != dlq.endswith(".fifo"):
                    raise ValueError(
                        f"queues.{name}.dead_letter.queue: {dlq!r} must be FIFO exactly when {name!r} is"
                    )
            if isinstance(q.redrive_allow, list):
                for source in q.redrive_allow:
                    if source not in self.queues:
                        raise ValueError(f"queues.{name}.redrive_allow: unknown queue {source!r}")
        for name, t in self.topics.items():
            _check_name(name, "topics")
            if t.content_based_deduplication and not name.endswith(".fifo"):
                raise ValueError(f"topics.{name}.content_based_deduplication needs a FIFO topic (.fifo)")
        seen: set[str] = set()
        for i, s in enumerate(self.subscriptions):
            _check_subscription(self, i, s)
            if s.label in seen:
                raise ValueError(f"subscriptions.{i}: {s.label} is listed twice")
            seen.add(s.label)
        for name in self.tables:
            if not _TABLE_NAME.match(name):
                raise ValueError(f"tables.{name}: table names are 3-255 letters, digits, '_', '-' or '.'")
        for name, b in self.buckets.items():
            if not _BUCKET_NAME.match(name) or ".." in name:
                raise ValueError(
                    f"buckets.{name}: bucket names are 3-63 lowercase letters, digits, '.' or '-', "
                    "starting and ending with a letter or digit"
                )
            for i, n in enumerate(b.notifications):
                where = f"buckets.{name}.notifications.{i}"
                if n.queue not in self.queues:
                    raise ValueError(f"{where}.queue: unknown queue {n.queue!r}")
                if n.queue.endswith(".fifo"):
                    raise ValueError(f"{where}.queue: S3 cannot notify a FIFO queue ({n.queue!r})")
                for event in n.events:
                    if not event.startswith("s3:"):
                        raise ValueError(
                            f"{where}.events: {event!r} is not an S3 event type (s3:ObjectCreated:*)"
                        )
            prefixes = [r.prefix for r in b.lifecycle]
            if len(set(prefixes)) != len(prefixes):
                raise ValueError(f"buckets.{name}.lifecycle: a prefix is listed twice")
        self._check_regions()
        self.alarm_definitions()
        return self

    def _check_regions(self) -> None:
        for where, specs in (("queues", self.queues), ("topics", self.topics), ("buckets", self.buckets)):
            for name, spec in specs.items():
                region = getattr(spec, "region", None)
                if region is not None and not _REGION.match(region):
                    raise ValueError(f"{where}.{name}.region: {region!r} is not a region name (eu-west-1)")
        if self.region is not None and not _REGION.match(self.region):
            raise ValueError(f"region: {self.region!r} is not a region name (eu-west-1)")
        for name, q in self.queues.items():
            if q.dead_letter is not None and self.region_of("queue", name) != self.region_of(
                "queue", q.dead_letter.queue
            ):
                raise ValueError(
                    f"queues.{name}.dead_letter.queue: {q.dead_letter.queue!r} is in another region; "
                    "SQS needs a DLQ in the source queue's region"
                )
        for name, b in self.buckets.items():
            for i, n in enumerate(b.notifications):
                if self.region_of("bucket", name) != self.region_of("queue", n.queue):
                    raise ValueError(
                        f"buckets.{name}.notifications.{i}.queue: {n.queue!r} is in another region; "
                        "S3 notifies queues of the bucket's region only"
                    )

    def region_of(self, kind: Literal["queue", "topic", "bucket", "table"], name: str) -> str | None:
        """The region ``name`` lives in; None: the session's."""
        specs: dict[str, dict[str, Any]] = {
            "queue": self.queues,
            "topic": self.topics,
            "bucket": self.buckets,
            "table": self.tables,
        }
        return getattr(specs[kind][name], "region", None) or self.region

    def regions(self) -> list[str | None]:
        """Every region the file's resources live in (None: the session's)."""
        found: set[str | None] = {self.region}
        for kind, names in (("queue", self.queues), ("topic", self.topics), ("bucket", self.buckets)):
            found |= {self.region_of(kind, n) for n in names}  # type: ignore[arg-type]
        return sorted(found, key=lambda r: r or "")

    def alarm_definitions(self) -> list[AlarmDefinition]:
        """Every alarm the file declares or the defaults generate, validated: a threshold
        where the kind needs one, notify topics of the file in the alarm's region."""
        defaults = self.alarms.defaults
        dlqs = self.dead_letter_queues()
        found: list[AlarmDefinition] = []

        def add(kind: str, spec: Any, resource: str, rkind: Literal["queue", "topic"], **extra: Any) -> None:
            where = f"{rkind}s.{resource}.alarms.{kind}"
            region = self.region_of(rkind, resource)
            notify = list(spec.notify if spec.notify is not None else self.alarms.notify)
            for target in notify:
                if target.startswith("arn:"):
                    continue
                if target not in self.topics:
                    raise ValueError(
                        f"{where}.notify: unknown topic {target!r} (a topic of this file or an ARN)"
                    )
                if self.region_of("topic", target) != region:
                    raise ValueError(
                        f"{where}.notify: topic {target!r} is in another region; "
                        "CloudWatch notifies topics of the alarm's region only"
                    )
            try:
                found.append(
                    resolve(
                        kind,
                        spec,
                        name=f"{self.name}-{resource}-{kind.replace('_', '-')}",
                        resource=resource,
                        region=region,
                        dimension=("QueueName" if rkind == "queue" else "TopicName", resource),
                        notify=notify,
                        ok_actions=self.alarms.ok_actions,
                        **extra,
                    )
                )
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None

        for name, q in self.queues.items():
            set_fields = q.alarms.model_fields_set
            for kind in ("depth", "oldest_message", "not_empty", "sent_per_day"):
                spec = getattr(q.alarms, kind)
                default_above: float | None = None
                if kind == "oldest_message" and q.dead_letter is not None:
                    default_above = float(
                        max(900, 2 * q.visibility_timeout * q.dead_letter.max_receive_count)
                    )
                if spec is None and kind not in set_fields and defaults:
                    wanted = name in dlqs if kind == "not_empty" else q.dead_letter is not None
                    if kind in ("not_empty", "oldest_message") and wanted:
                        spec = Alarm()
                if spec is not None:
                    add(kind, spec, name, "queue", default_above=default_above)
        for name, t in self.topics.items():
            set_fields = t.alarms.model_fields_set
            for kind in ("failed_deliveries", "published_per_day"):
                spec = getattr(t.alarms, kind)
                if spec is None and kind == "failed_deliveries" and kind not in set_fields and defaults:
                    spec = Alarm()
                if spec is not None:
                    add(kind, spec, name, "topic", default_above=0.0 if kind == "failed_deliveries" else None)
        return found

    def notified_by(self, queue: str) -> list[str]:
        """The buckets that send S3 events to ``queue``."""
        return sorted(
            b for b, spec in self.buckets.items() if any(n.queue == queue for n in spec.notifications)
        )

    def queue_order(self) -> list[str]:
        """Queues in creation order: dead-letter queues before the queues that use them."""
        ordered: list[str] = []

        def visit(name: str) -> None:
            if name in ordered:
                return
            dl = self.queues[name].dead_letter
            if dl is not None:
                visit(dl.queue)
            ordered.append(name)

        for name in self.queues:
            visit(name)
        return ordered

    def tags(self) -> dict[str, str]:
        return {MANAGED_TAG: MANAGED_VALUE, TOPOLOGY_TAG: self.name}

    def dead_letter_queues(self) -> set[str]:
        return {q.dead_letter.queue for q in self.queues.values() if q.dead_letter}

    def source_of(self, dlq: str) -> list[str]:
        return [n for n, q in self.queues.items() if q.dead_letter and q.dead_letter.queue == dlq]


def _check_subscription(topology: Topology, i: int, s: SubscriptionSpec) -> None:
    where = f"subscriptions.{i}"
    if s.topic not in topology.topics:
        raise ValueError(f"{where}.topic: unknown topic {s.topic!r}")
    kind = s.kind
    if kind == "sqs":
        if s.queue is None:
            raise ValueError(f"{where}.queue: an sqs subscription names a queue of this file")
        if s.endpoint is not None:
            raise ValueError(f"{where}.endpoint: an sqs subscription names its queue with `queue:`")
        if s.queue not in topology.queues:
            raise ValueError(f"{where}.queue: unknown queue {s.queue!r}")
        if s.topic.endswith(".fifo") and not s.queue.endswith(".fifo"):
            raise ValueError(f"{where}: FIFO topic {s.topic!r} needs a FIFO queue")
    else:
        if s.queue is not None:
            raise ValueError(f"{where}.queue: only sqs subscriptions name a queue (protocol is {kind!r})")
        pattern, text = _ENDPOINTS[kind]
        if s.endpoint is None:
            raise ValueError(f"{where}.endpoint: a {kind} subscription needs an endpoint ({text})")
        if not pattern.match(s.endpoint):
            raise ValueError(f"{where}.endpoint: {s.endpoint!r} is not {text}")
        if s.topic.endswith(".fifo"):
            raise ValueError(f"{where}: FIFO topic {s.topic!r} delivers to SQS queues only")
    if s.raw and kind not in RAW_PROTOCOLS:
        raise ValueError(f"{where}.raw: raw delivery is for sqs, http, https and firehose, not {kind}")
    if s.delivery_policy is not None and kind not in ("http", "https"):
        raise ValueError(f"{where}.delivery_policy: delivery policies are for http and https endpoints")
    if kind == "firehose" and not s.subscription_role_arn:
        raise ValueError(f"{where}.subscription_role_arn: a firehose subscription needs the role SNS assumes")
    if s.subscription_role_arn is not None and kind != "firehose":
        raise ValueError(f"{where}.subscription_role_arn: only firehose subscriptions take a role")


def _check_name(name: str, where: str) -> None:
    stem = name.removesuffix(".fifo")
    if not stem or len(name) > 80 or not all(c.isalnum() or c in "-_" for c in stem):
        raise ValueError(f"{where}.{name}: names are 1-80 letters, digits, '-' or '_' (+ '.fifo')")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def queue_attributes(
    topology: Topology, name: str, arns: dict[str, str], policy: dict[str, Any] | None
) -> dict[str, str]:
    """The SQS attributes ``name`` should have (``arns``: queue name -> ARN)."""
    q = topology.queues[name]
    fifo = name.endswith(".fifo")
    attrs: dict[str, str] = {
        "VisibilityTimeout": str(q.visibility_timeout),
        "MessageRetentionPeriod": str(q.message_retention),
        "DelaySeconds": str(q.delay),
        "ReceiveMessageWaitTimeSeconds": str(q.receive_wait_time),
        "MaximumMessageSize": str(q.max_message_size),
    }
    if fifo:
        attrs["FifoQueue"] = "true"
        attrs["ContentBasedDeduplication"] = str(q.content_based_deduplication).lower()
    if q.encryption == "sqs":
        attrs["SqsManagedSseEnabled"] = "true"
    elif q.encryption == "none":
        attrs["SqsManagedSseEnabled"] = "false"
    else:
        attrs["KmsMasterKeyId"] = q.encryption.kms_key_id
        attrs["KmsDataKeyReusePeriodSeconds"] = str(q.encryption.data_key_reuse_seconds)
    if q.dead_letter is not None:
        attrs["RedrivePolicy"] = canonical_json(
            {
                "deadLetterTargetArn": arns[q.dead_letter.queue],
                "maxReceiveCount": q.dead_letter.max_receive_count,
            }
        )
    if q.redrive_allow is not None:
        if q.redrive_allow == "all":
            allow: dict[str, Any] = {"redrivePermission": "allowAll"}
        elif q.redrive_allow == "deny":
            allow = {"redrivePermission": "denyAll"}
        else:
            allow = {"redrivePermission": "byQueue", "sourceQueueArns": [arns[s] for s in q.redrive_allow]}
        attrs["RedriveAllowPolicy"] = canonical_json(allow)
    if policy is not None:
        attrs["Policy"] = canonical_json(policy)
    return attrs


def queue_policy(
    queue_arn: str, topic_arns: list[str], buckets: list[str] | None = None
) -> dict[str, Any] | None:
    """The policy that lets the subscribed topics, and the buckets that notify the queue,
    send to it (the step people forget)."""
    statements: list[dict[str, Any]] = []
    if topic_arns:
        statements.append(
            {
                "Sid": "AllowSnsTopics",
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": sorted(topic_arns)}},
            }
        )
    if buckets:
        parts = queue_arn.split(":")
        partition = parts[1] if len(parts) > 5 and parts[1] else "aws"
        condition: dict[str, Any] = {
            "ArnLike": {"aws:SourceArn": [f"arn:{partition}:s3:*:*:{b}" for b in sorted(buckets)]}
        }
        if len(parts) > 5 and parts[4].isdigit():
            condition["StringEquals"] = {"aws:SourceAccount": parts[4]}
        statements.append(
            {
                "Sid": "AllowS3Notifications",
                "Effect": "Allow",
                "Principal": {"Service": "s3.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": condition,
            }
        )
    if not statements:
        return None
    return {"Version": "2012-10-17", "Statement": statements}


def topic_attributes(topology: Topology, name: str) -> dict[str, str]:
    t = topology.topics[name]
    attrs: dict[str, str] = {}
    if t.display_name is not None:
        attrs["DisplayName"] = t.display_name
    if t.kms_key_id is not None:
        attrs["KmsMasterKeyId"] = t.kms_key_id
    if name.endswith(".fifo"):
        attrs["FifoTopic"] = "true"
        attrs["ContentBasedDeduplication"] = str(t.content_based_deduplication).lower()
    if t.delivery_policy is not None:
        attrs["DeliveryPolicy"] = canonical_json(t.delivery_policy)
    if t.access_policy is not None:
        attrs["Policy"] = canonical_json(t.access_policy)
    return attrs


def subscription_attributes(s: SubscriptionSpec) -> dict[str, str]:
    attrs: dict[str, str] = {}
    if s.kind in RAW_PROTOCOLS:
        attrs["RawMessageDelivery"] = str(s.raw).lower()
    if s.filter_policy is not None:
        attrs["FilterPolicy"] = canonical_json(s.filter_policy)
        attrs["FilterPolicyScope"] = s.filter_policy_scope
    if s.delivery_policy is not None:
        attrs["DeliveryPolicy"] = canonical_json(s.delivery_policy)
    if s.subscription_role_arn is not None:
        attrs["SubscriptionRoleArn"] = s.subscription_role_arn
    return attrs


def bucket_encryption(spec: BucketSpec) -> dict[str, Any]:
    """The bucket's ServerSideEncryptionConfiguration."""
    if isinstance(spec.encryption, KmsBucketEncryption):
        default: dict[str, Any] = {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": spec.encryption.kms_key_id}
        return {
            "Rules": [
                {
                    "ApplyServerSideEncryptionByDefault": default,
                    "BucketKeyEnabled": spec.encryption.bucket_key,
                }
            ]
        }
    return {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}


def bucket_lifecycle(spec: BucketSpec) -> list[dict[str, Any]]:
    """The lifecycle rules provision manages (ids ``sqs-worker-expire-<n>``). Each also
    clears the parts of multipart uploads left incomplete for a day (an offloaded body's
    upload cancelled midway: a stopped producer)."""
    return [
        {
            "ID": f"{MANAGED_ID}expire-{i}",
            "Filter": {"Prefix": rule.prefix},
            "Status": "Enabled",
            "Expiration": {"Days": rule.expire_days},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
        }
        for i, rule in enumerate(spec.lifecycle)
    ]


def bucket_notifications(spec: BucketSpec, queue_arns: dict[str, str]) -> list[dict[str, Any]]:
    """The QueueConfigurations provision manages (ids ``sqs-worker-<queue>-<n>``)."""
    configs: list[dict[str, Any]] = []
    for i, n in enumerate(spec.notifications):
        config: dict[str, Any] = {
            "Id": f"{MANAGED_ID}{n.queue}-{i}",
            "QueueArn": queue_arns[n.queue],
            "Events": sorted(n.events),
        }
        rules = [{"Name": k, "Value": v} for k, v in (("prefix", n.prefix), ("suffix", n.suffix)) if v]
        if rules:
            config["Filter"] = {"Key": {"FilterRules": rules}}
        configs.append(config)
    return configs


def load_topology(path: str | Path) -> Topology:
    """Read and validate a topology file. ConfigError, one line, naming the file, the field
    and what was wrong, in the style of the worker configuration's errors."""
    data = read_yaml_mapping(path, "topology file")
    evidence = worker_config_evidence(data)
    if evidence:
        raise ConfigError(
            f"{path}: this is a worker configuration (it has {evidence!r}), not a topology file; "
            "pass the topology file (config/topology.yaml)"
        )
    try:
        return Topology(**data)
    except ValidationError as exc:
        raise ConfigError(
            format_validation_error(exc, str(path), "invalid topology", model=Topology)
        ) from None
