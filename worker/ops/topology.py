"""The declarative topology file: queues, topics and subscriptions, by name.

Validated with pydantic before any AWS call: a redrive policy must name a queue of the
same file (FIFO for a FIFO source), a subscription a topic and a queue of the file. The
desired AWS attributes of every resource are derived here, so ``provision`` only compares
and applies.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from worker.settings import ConfigError, format_validation_error, read_yaml_mapping, worker_config_evidence

MANAGED_TAG = "managed-by"
MANAGED_VALUE = "sqs-worker"
TOPOLOGY_TAG = "sqs-worker-topology"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeadLetter(_Model):
    queue: str
    """Name of the dead-letter queue (a queue of this file)."""
    max_receive_count: int = Field(ge=1, le=1000)


class KmsEncryption(_Model):
    kms_key_id: str
    data_key_reuse_seconds: int = Field(default=300, ge=60, le=86_400)


class QueueSpec(_Model):
    visibility_timeout: int = Field(default=30, ge=0, le=43_200)
    message_retention: int = Field(default=345_600, ge=60, le=1_209_600)
    delay: int = Field(default=0, ge=0, le=900)
    receive_wait_time: int = Field(default=0, ge=0, le=20)
    max_message_size: int = Field(default=262_144, ge=1024, le=262_144)
    content_based_deduplication: bool = False
    encryption: Literal["sqs", "none"] | KmsEncryption = "sqs"
    dead_letter: DeadLetter | None = None
    redrive_allow: Literal["all", "deny"] | list[str] | None = None
    """For a DLQ: which source queues may use it ("all", "deny", or queue names)."""


class TopicSpec(_Model):
    display_name: str | None = None
    kms_key_id: str | None = None
    content_based_deduplication: bool = False
    delivery_policy: dict[str, Any] | None = None
    access_policy: dict[str, Any] | None = None


class SubscriptionSpec(_Model):
    topic: str
    queue: str
    raw: bool = False
    filter_policy: dict[str, Any] | None = None
    filter_policy_scope: Literal["MessageAttributes", "MessageBody"] = "MessageAttributes"


class Topology(_Model):
    name: str = Field(default="default", min_length=1, max_length=128)
    """The scope: tagged on what provision creates; --prune only touches resources of this
    name, and needs it set in the file (unset, every unnamed file shares "default")."""
    queues: dict[str, QueueSpec] = Field(default_factory=dict)
    topics: dict[str, TopicSpec] = Field(default_factory=dict)
    subscriptions: list[SubscriptionSpec] = Field(default_factory=list)

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
        seen: set[tuple[str, str]] = set()
        for i, s in enumerate(self.subscriptions):
            if s.topic not in self.topics:
                raise ValueError(f"subscriptions.{i}.topic: unknown topic {s.topic!r}")
            if s.queue not in self.queues:
                raise ValueError(f"subscriptions.{i}.queue: unknown queue {s.queue!r}")
            if (s.topic, s.queue) in seen:
                raise ValueError(f"subscriptions.{i}: {s.topic} -> {s.queue} is listed twice")
            if s.topic.endswith(".fifo") and not s.queue.endswith(".fifo"):
                raise ValueError(f"subscriptions.{i}: FIFO topic {s.topic!r} needs a FIFO queue")
            seen.add((s.topic, s.queue))
        return self

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


def queue_policy(queue_arn: str, topic_arns: list[str]) -> dict[str, Any] | None:
    """The policy that lets the subscribed topics send to the queue (the step people forget)."""
    if not topic_arns:
        return None
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AllowSnsTopics",
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": sorted(topic_arns)}},
            }
        ],
    }


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
    attrs = {"RawMessageDelivery": str(s.raw).lower()}
    if s.filter_policy is not None:
        attrs["FilterPolicy"] = canonical_json(s.filter_policy)
        attrs["FilterPolicyScope"] = s.filter_policy_scope
    return attrs


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
