"""``worker provision``: make AWS match the topology file.

``plan()`` reads what exists and compares it with the file, attribute by attribute;
``apply()`` creates and updates in dependency order (topics, then dead-letter queues before
the queues that use them, then subscriptions, then buckets and their notifications), filling
in ARNs as resources come into being. Of a bucket, provision manages its default encryption,
the lifecycle rules and the queue notifications whose ids start with ``sqs-worker-`` (others
are kept as they are); it never deletes a bucket. Nothing is deleted unless pruning is asked for, and then only resources this tool
tagged for the same topology name (the *scope*: the file's ``name:``, which ``--prune``
requires).

Pruning is careful with queues: ``plan_prune()`` reports each queue's message count and the
queues that use it as their DLQ; ``apply_prune()`` refuses (UnsafeError) to delete a queue
that holds messages unless forced, and removes the RedrivePolicy of every remaining queue
that points at a queue it deletes, before deleting it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from botocore.exceptions import ClientError

from worker.aws import MISSING_QUEUE, AwsClient, error_code, list_topics, next_page
from worker.errors import ConfigError, UnsafeError
from worker.ops.dlq import dead_letter_sources
from worker.ops.filters import list_subscriptions
from worker.ops.queue_stats import queue_counts
from worker.ops.tables import Table, apply_table, desired_view, read_table
from worker.ops.topology import (
    MANAGED_ID,
    Topology,
    bucket_encryption,
    bucket_lifecycle,
    bucket_notifications,
    canonical_json,
    queue_attributes,
    queue_policy,
    subscription_attributes,
    topic_attributes,
)

Kind = Literal["queue", "topic", "subscription", "bucket", "table"]
Action = Literal["create", "update", "unchanged", "delete"]
JSON_ATTRIBUTES = frozenset(
    {
        "RedrivePolicy",
        "RedriveAllowPolicy",
        "Policy",
        "DeliveryPolicy",
        "FilterPolicy",
        "Encryption",
        "Lifecycle",
        "Notifications",
    }
)
MISSING_BUCKET = frozenset({"404", "NoSuchBucket", "NotFound"})
NO_CONFIGURATION = frozenset(
    {"ServerSideEncryptionConfigurationNotFoundError", "NoSuchLifecycleConfiguration", "NoSuchConfiguration"}
)


@dataclass
class Change:
    kind: Kind
    name: str
    action: Action
    diff: dict[str, tuple[str | None, str]] = field(default_factory=dict)
    ref: str | None = None  # url or arn of what exists
    messages: int | None = None
    """A queue to delete: the messages it holds (visible + in flight + delayed)."""
    dead_letter_of: list[str] = field(default_factory=list)
    """A queue to delete: the queues whose RedrivePolicy points at it (names)."""


@dataclass
class _Existing:
    queue_urls: dict[str, str] = field(default_factory=dict)
    queue_attrs: dict[str, dict[str, str]] = field(default_factory=dict)
    topic_arns: dict[str, str] = field(default_factory=dict)
    topic_attrs: dict[str, dict[str, str]] = field(default_factory=dict)
    # (topic, queue) -> (subscription arn, attributes)
    subscriptions: dict[tuple[str, str], tuple[str, dict[str, str]]] = field(default_factory=dict)
    buckets: dict[str, _Bucket] = field(default_factory=dict)
    tables: dict[str, Table] = field(default_factory=dict)


@dataclass
class _Bucket:
    """What an existing bucket has: its encryption, lifecycle rules and notifications."""

    encryption: dict[str, Any]
    lifecycle: list[dict[str, Any]]
    notifications: dict[str, Any]

    def view(self) -> dict[str, str]:
        """The managed parts, in the form ``bucket_view`` gives the desired ones."""
        managed = [c for c in self.notifications.get("QueueConfigurations", []) if _managed(c.get("Id"))]
        return {
            "Encryption": canonical_json(_encryption_view(self.encryption)),
            "Lifecycle": canonical_json([_rule_view(r) for r in self.lifecycle if _managed(r.get("ID"))]),
            "Notifications": canonical_json([_notification_view(c) for c in managed]),
        }


def _managed(identifier: Any) -> bool:
    return isinstance(identifier, str) and identifier.startswith(MANAGED_ID)


def _encryption_view(config: dict[str, Any]) -> dict[str, Any]:
    rules = config.get("Rules") or [{}]
    default = rules[0].get("ApplyServerSideEncryptionByDefault") or {}
    algorithm = default.get("SSEAlgorithm", "AES256")
    view: dict[str, Any] = {"SSEAlgorithm": algorithm}
    if algorithm != "AES256":
        view["KMSMasterKeyID"] = default.get("KMSMasterKeyID")
        view["BucketKeyEnabled"] = bool(rules[0].get("BucketKeyEnabled", False))
    return view


def _rule_view(rule: dict[str, Any]) -> dict[str, Any]:
    prefix = (rule.get("Filter") or {}).get("Prefix", rule.get("Prefix", ""))
    return {
        "ID": rule.get("ID"),
        "Prefix": prefix,
        "Status": rule.get("Status"),
        "ExpireDays": (rule.get("Expiration") or {}).get("Days"),
    }


def _notification_view(config: dict[str, Any]) -> dict[str, Any]:
    rules = ((config.get("Filter") or {}).get("Key") or {}).get("FilterRules") or []
    return {
        "Id": config.get("Id"),
        "QueueArn": config.get("QueueArn"),
        "Events": sorted(config.get("Events") or []),
        "Filter": sorted((str(r.get("Name", "")).lower(), r.get("Value")) for r in rules),
    }


def bucket_view(topology: Topology, name: str, queue_arns: dict[str, str]) -> dict[str, str]:
    """The managed parts a bucket should have, as canonical JSON by part."""
    spec = topology.buckets[name]
    return {
        "Encryption": canonical_json(_encryption_view(bucket_encryption(spec))),
        "Lifecycle": canonical_json([_rule_view(r) for r in bucket_lifecycle(spec)]),
        "Notifications": canonical_json(
            [_notification_view(c) for c in bucket_notifications(spec, queue_arns)]
        ),
    }


def _normalise(name: str, value: str | None) -> Any:
    if value is None:
        return None
    if name in JSON_ATTRIBUTES:
        try:
            data = json.loads(value) if value else None
        except ValueError:
            return value
        if name == "RedrivePolicy" and isinstance(data, dict) and "maxReceiveCount" in data:
            data["maxReceiveCount"] = int(data["maxReceiveCount"])
        return _unlist(data)
    return value


def _unlist(value: Any) -> Any:
    """Policies come back with one-element lists turned into scalars; compare them alike."""
    if isinstance(value, list):
        items = [_unlist(v) for v in value]
        return items[0] if len(items) == 1 else sorted(items, key=json.dumps)
    if isinstance(value, dict):
        return {k: _unlist(v) for k, v in value.items()}
    return value


def diff_attributes(current: dict[str, str], desired: dict[str, str]) -> dict[str, tuple[str | None, str]]:
    return {
        name: (current.get(name), value)
        for name, value in desired.items()
        if _normalise(name, current.get(name)) != _normalise(name, value)
    }


class Provisioner:
    """``plan()`` then ``apply(changes)``; with pruning, ``plan_prune()`` (after ``plan()``)
    then ``apply_prune(changes, force)``. ``render_plan()`` shows either."""

    def __init__(
        self,
        topology: Topology,
        sqs: AwsClient,
        sns: AwsClient,
        s3: AwsClient | None = None,
        dynamodb: AwsClient | None = None,
    ) -> None:
        """``s3`` is needed when the topology declares buckets, ``dynamodb`` for tables."""
        if topology.buckets and s3 is None:
            raise ConfigError("the topology declares buckets: provision needs an S3 client")
        if topology.tables and dynamodb is None:
            raise ConfigError("the topology declares tables: provision needs a DynamoDB client")
        self.dynamodb = dynamodb
        self.topology = topology
        self.sqs = sqs
        self.sns = sns
        self.s3 = s3
        self.existing = _Existing()
        self._read_done = False

    @property
    def scope(self) -> str:
        """The topology name that is tagged on what provision creates and that limits what
        ``--prune`` may delete ("default" when the file has no ``name:``)."""
        return self.topology.name

    @property
    def named(self) -> bool:
        """Whether the file sets ``name:`` (pruning needs it)."""
        return "name" in self.topology.model_fields_set

    # -- reading what exists -------------------------------------------------------------
    async def _read(self) -> None:
        ex = self.existing = _Existing()
        self._read_done = True
        for name in self.topology.queues:
            try:
                url = (await self.sqs.call("get_queue_url", QueueName=name))["QueueUrl"]
            except ClientError as exc:
                if error_code(exc) in MISSING_QUEUE:
                    continue
                raise
            ex.queue_urls[name] = url
            attrs = await self.sqs.call("get_queue_attributes", QueueUrl=url, AttributeNames=["All"])
            ex.queue_attrs[name] = attrs.get("Attributes", {})
        all_topics = await list_topics(self.sns)
        for name in self.topology.topics:
            if name in all_topics:
                arn = all_topics[name]
                ex.topic_arns[name] = arn
                ex.topic_attrs[name] = (await self.sns.call("get_topic_attributes", TopicArn=arn)).get(
                    "Attributes", {}
                )
        queue_by_arn = {attrs.get("QueueArn"): name for name, attrs in ex.queue_attrs.items()}
        for topic, arn in ex.topic_arns.items():
            for sub in await self._list_subscriptions(arn):
                queue = queue_by_arn.get(sub.get("Endpoint"))
                if (
                    sub.get("Protocol") != "sqs"
                    or queue is None
                    or "PendingConfirmation" in sub["SubscriptionArn"]
                ):
                    continue
                attrs = (
                    await self.sns.call("get_subscription_attributes", SubscriptionArn=sub["SubscriptionArn"])
                ).get("Attributes", {})
                ex.subscriptions[(topic, queue)] = (sub["SubscriptionArn"], attrs)
        for name in self.topology.buckets:
            bucket = await self._read_bucket(name)
            if bucket is not None:
                ex.buckets[name] = bucket
        for name in self.topology.tables:
            assert self.dynamodb is not None
            table = await read_table(self.dynamodb, name)
            if table is not None:
                ex.tables[name] = table

    async def _read_bucket(self, name: str) -> _Bucket | None:
        assert self.s3 is not None
        try:
            await self.s3.call("head_bucket", Bucket=name)
        except ClientError as exc:
            if error_code(exc) in MISSING_BUCKET:
                return None
            raise

        async def read(operation: str, key: str | None, empty: Any) -> Any:
            assert self.s3 is not None
            try:
                found = await self.s3.call(operation, Bucket=name)
            except ClientError as exc:
                if error_code(exc) in NO_CONFIGURATION:
                    return empty
                raise
            found.pop("ResponseMetadata", None)
            return found.get(key, empty) if key else found

        return _Bucket(
            encryption=await read("get_bucket_encryption", "ServerSideEncryptionConfiguration", {}),
            lifecycle=await read("get_bucket_lifecycle_configuration", "Rules", []),
            notifications=await read("get_bucket_notification_configuration", None, {}),
        )

    async def _list_subscriptions(self, topic_arn: str) -> list[dict[str, str]]:
        return await list_subscriptions(self.sns, topic_arn)

    # -- desired state -------------------------------------------------------------------
    def _queue_arn(self, name: str) -> str:
        return self.existing.queue_attrs.get(name, {}).get("QueueArn") or f"<arn of queue {name}>"

    def _topic_arn(self, name: str) -> str:
        return self.existing.topic_arns.get(name) or f"<arn of topic {name}>"

    def desired_queue(self, name: str) -> dict[str, str]:
        arns = {n: self._queue_arn(n) for n in self.topology.queues}
        topics = [self._topic_arn(s.topic) for s in self.topology.subscriptions if s.queue == name]
        policy = queue_policy(arns[name], topics, self.topology.notified_by(name))
        return queue_attributes(self.topology, name, arns, policy)

    def desired_bucket(self, name: str) -> dict[str, str]:
        return bucket_view(self.topology, name, {n: self._queue_arn(n) for n in self.topology.queues})

    # -- plan and apply ------------------------------------------------------------------
    async def plan(self) -> list[Change]:
        await self._read()
        ex = self.existing
        changes: list[Change] = []
        for name in self.topology.topics:
            desired = topic_attributes(self.topology, name)
            if name not in ex.topic_arns:
                changes.append(Change("topic", name, "create", {k: (None, v) for k, v in desired.items()}))
            else:
                d = diff_attributes(ex.topic_attrs[name], desired)
                changes.append(Change("topic", name, "update" if d else "unchanged", d, ex.topic_arns[name]))
        for name in self.topology.queue_order():
            desired = self.desired_queue(name)
            if name not in ex.queue_urls:
                changes.append(Change("queue", name, "create", {k: (None, v) for k, v in desired.items()}))
            else:
                d = diff_attributes(ex.queue_attrs[name], desired)
                if "FifoQueue" in d:
                    raise ConfigError(f"queues.{name}: FifoQueue cannot be changed on an existing queue")
                changes.append(Change("queue", name, "update" if d else "unchanged", d, ex.queue_urls[name]))
        for sub in self.topology.subscriptions:
            label = f"{sub.topic} -> {sub.queue}"
            desired = subscription_attributes(sub)
            found = ex.subscriptions.get((sub.topic, sub.queue))
            if found is None:
                changes.append(
                    Change("subscription", label, "create", {k: (None, v) for k, v in desired.items()})
                )
            else:
                d = diff_attributes(found[1], desired)
                changes.append(Change("subscription", label, "update" if d else "unchanged", d, found[0]))
        for name in self.topology.buckets:
            desired = self.desired_bucket(name)
            bucket = ex.buckets.get(name)
            if bucket is None:
                shown: dict[str, tuple[str | None, str]] = {
                    k: (None, v) for k, v in desired.items() if v != "[]"
                }
                changes.append(Change("bucket", name, "create", shown))
            else:
                d = diff_attributes(bucket.view(), desired)
                changes.append(Change("bucket", name, "update" if d else "unchanged", d, name))
        for name in self.topology.tables:
            wanted = desired_view()
            table = ex.tables.get(name)
            if table is None:
                changes.append(Change("table", name, "create", {k: (None, v) for k, v in wanted.items()}))
            else:
                d = diff_attributes(table.view(), wanted)
                changes.append(Change("table", name, "update" if d else "unchanged", d, name))
        return changes

    async def apply(self, changes: list[Change]) -> None:
        ex = self.existing
        tags = self.topology.tags()
        for c in (c for c in changes if c.kind == "topic"):
            desired = topic_attributes(self.topology, c.name)
            if c.action == "create":
                arn = (
                    await self.sns.call(
                        "create_topic",
                        Name=c.name,
                        Attributes=desired,
                        Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
                    )
                )["TopicArn"]
                ex.topic_arns[c.name] = arn
            elif c.action == "update":
                for attr, (_, value) in c.diff.items():
                    await self.sns.call(
                        "set_topic_attributes", TopicArn=c.ref, AttributeName=attr, AttributeValue=value
                    )
        for c in (c for c in changes if c.kind == "queue"):
            if c.action == "create":
                # ARNs of queues not created yet (a DLQ's redrive-allow list, the queue's
                # own ARN in its policy) are filled in by the pass below.
                desired = {k: v for k, v in self.desired_queue(c.name).items() if "<arn of" not in v}
                url = (await self.sqs.call("create_queue", QueueName=c.name, Attributes=desired, tags=tags))[
                    "QueueUrl"
                ]
                ex.queue_urls[c.name] = url
                await self._refresh_queue(c.name)
        for c in (c for c in changes if c.kind == "queue" and c.action != "delete"):
            url = ex.queue_urls[c.name]
            missing = diff_attributes(ex.queue_attrs[c.name], self.desired_queue(c.name))
            if missing:
                await self.sqs.call(
                    "set_queue_attributes", QueueUrl=url, Attributes={k: v for k, (_, v) in missing.items()}
                )
                await self._refresh_queue(c.name)
            if c.action == "update":
                await self.sqs.call("tag_queue", QueueUrl=url, Tags=tags)
        subs = {f"{s.topic} -> {s.queue}": s for s in self.topology.subscriptions}
        for c in (c for c in changes if c.kind == "subscription"):
            sub = subs[c.name]
            desired = subscription_attributes(sub)
            if c.action == "create":
                await self.sns.call(
                    "subscribe",
                    TopicArn=ex.topic_arns[sub.topic],
                    Protocol="sqs",
                    Endpoint=self._queue_arn(sub.queue),
                    Attributes=desired,
                    ReturnSubscriptionArn=True,
                )
            elif c.action == "update":
                for attr, (_, value) in c.diff.items():
                    await self.sns.call(
                        "set_subscription_attributes",
                        SubscriptionArn=c.ref,
                        AttributeName=attr,
                        AttributeValue=value,
                    )
        for c in (c for c in changes if c.kind == "bucket" and c.action in ("create", "update")):
            await self._apply_bucket(c)
        for c in (c for c in changes if c.kind == "table"):
            if c.action in ("create", "update"):
                assert self.dynamodb is not None
                await apply_table(self.dynamodb, c.name, ex.tables.get(c.name), tags, c.action)

    async def _apply_bucket(self, c: Change) -> None:
        """Create the bucket if needed, then set what differs: encryption, the managed
        lifecycle rules (others kept), the managed queue notifications (others kept)."""
        assert self.s3 is not None
        s3, name, spec = self.s3, c.name, self.topology.buckets[c.name]
        current = self.existing.buckets.get(name)
        if current is None:
            params: dict[str, Any] = {"Bucket": name}
            region = getattr(getattr(s3.client, "meta", None), "region_name", None)
            if region and region != "us-east-1":
                params["CreateBucketConfiguration"] = {"LocationConstraint": region}
            try:
                await s3.call("create_bucket", **params)
            except ClientError as exc:
                if error_code(exc) != "BucketAlreadyOwnedByYou":
                    raise
            current = await self._read_bucket(name) or _Bucket({}, [], {})
            self.existing.buckets[name] = current
        desired = self.desired_bucket(name)
        diff = diff_attributes(current.view(), desired)
        if "Encryption" in diff:
            await s3.call(
                "put_bucket_encryption",
                Bucket=name,
                ServerSideEncryptionConfiguration=bucket_encryption(spec),
            )
        if "Lifecycle" in diff:
            rules = [r for r in current.lifecycle if not _managed(r.get("ID"))] + bucket_lifecycle(spec)
            if rules:
                await s3.call(
                    "put_bucket_lifecycle_configuration", Bucket=name, LifecycleConfiguration={"Rules": rules}
                )
            else:
                await s3.call("delete_bucket_lifecycle", Bucket=name)
        if "Notifications" in diff:
            config = {k: v for k, v in current.notifications.items() if k != "QueueConfigurations"}
            queues = [
                c for c in current.notifications.get("QueueConfigurations", []) if not _managed(c.get("Id"))
            ]
            queues += bucket_notifications(spec, {n: self._queue_arn(n) for n in self.topology.queues})
            if queues:
                config["QueueConfigurations"] = queues
            await s3.call(
                "put_bucket_notification_configuration", Bucket=name, NotificationConfiguration=config
            )

    async def _refresh_queue(self, name: str) -> None:
        url = self.existing.queue_urls[name]
        attrs = await self.sqs.call("get_queue_attributes", QueueUrl=url, AttributeNames=["All"])
        self.existing.queue_attrs[name] = attrs.get("Attributes", {})

    # -- pruning -------------------------------------------------------------------------
    async def plan_prune(self) -> list[Change]:
        """Managed resources of this scope (tagged by this tool with the file's ``name:``)
        that the file no longer lists, as "delete" changes: queues (each with ``messages``
        and ``dead_letter_of``), topics, and subscriptions. Raises ConfigError when the file
        has no ``name:``: the scope would be "default", shared by every unnamed file."""
        if not self.named:
            raise ConfigError(
                "--prune needs `name:` in the topology file: it deletes only what provision "
                "tagged with that name (the prune scope)"
            )
        if not self._read_done:
            await self._read()
        changes: list[Change] = []
        token: str | None = None
        while True:
            page = await self.sqs.call("list_queues", MaxResults=1000, **next_page(token))
            for url in page.get("QueueUrls", []):
                name = _queue_name(url)
                if name in self.topology.queues:
                    continue
                try:
                    qtags = (await self.sqs.call("list_queue_tags", QueueUrl=url)).get("Tags", {})
                except ClientError as exc:
                    if error_code(exc) in MISSING_QUEUE:
                        continue  # deleted since it was listed
                    raise
                if self._ours(qtags):
                    change = Change("queue", name, "delete", ref=url)
                    await self._describe_queue(change)
                    changes.append(change)
            token = page.get("NextToken")
            if not token:
                break
        for name, arn in (await list_topics(self.sns)).items():
            if name in self.topology.topics:
                continue
            ttags = (await self.sns.call("list_tags_for_resource", ResourceArn=arn)).get("Tags", [])
            if self._ours({t["Key"]: t["Value"] for t in ttags}):
                changes.append(Change("topic", name, "delete", ref=arn))
        wanted = {(s.topic, s.queue) for s in self.topology.subscriptions}
        for (topic, queue), (sub_arn, _) in self.existing.subscriptions.items():
            if (topic, queue) not in wanted:
                changes.append(Change("subscription", f"{topic} -> {queue}", "delete", ref=sub_arn))
        # Subscriptions of managed topics to queues outside the file.
        known_queue_arns = {a.get("QueueArn") for a in self.existing.queue_attrs.values()}
        for topic, arn in self.existing.topic_arns.items():
            for sub in await self._list_subscriptions(arn):
                if sub.get("Protocol") == "sqs" and sub.get("Endpoint") not in known_queue_arns:
                    changes.append(
                        Change(
                            "subscription",
                            f"{topic} -> {sub.get('Endpoint')}",
                            "delete",
                            ref=sub["SubscriptionArn"],
                        )
                    )
        return changes

    async def _describe_queue(self, change: Change) -> bool:
        """Fill in a queue deletion's message count and DLQ sources; False when it is gone."""
        assert change.ref is not None
        try:
            change.messages = sum(await queue_counts(self.sqs, change.ref))
            sources = await dead_letter_sources(self.sqs, change.ref)
        except ClientError as exc:
            if error_code(exc) in MISSING_QUEUE:
                return False
            raise
        change.dead_letter_of = sorted(_queue_name(u) for u in sources)
        return True

    def _ours(self, tags: dict[str, str]) -> bool:
        wanted = self.topology.tags()
        return all(tags.get(k) == v for k, v in wanted.items())

    async def apply_prune(self, changes: list[Change], force: bool = False) -> list[str]:
        """Delete what ``plan_prune()`` found: subscriptions, then queues, then topics.

        First, before anything is deleted, every queue's message count is read again; if any
        queue to delete holds messages and ``force`` is false, UnsafeError names them with
        their counts (any non-empty queue is refused, a DLQ or not: deleting it loses its
        messages). Before a queue is deleted, the RedrivePolicy of every queue that points
        at it and stays (managed or not) is removed, so no queue is left with a DLQ that
        does not exist. Returns the names of the queues whose RedrivePolicy was removed.
        """
        queues = [c for c in changes if c.kind == "queue" and c.action == "delete"]
        present = [c for c in queues if await self._describe_queue(c)]
        full = [c for c in present if c.messages]
        if full and not force:
            listed = ", ".join(_describe(c) for c in full)
            raise UnsafeError(
                f"refusing to delete {len(full)} queue(s) that hold messages: {listed}; "
                "nothing was deleted; pass --force to delete them with their messages"
            )
        for c in changes:
            if c.kind == "subscription" and c.action == "delete":
                await self.sns.call("unsubscribe", SubscriptionArn=c.ref)
        deleting = {c.name for c in present}
        detached: list[str] = []
        for c in present:
            assert c.ref is not None
            for source in await dead_letter_sources(self.sqs, c.ref):
                if _queue_name(source) in deleting:
                    continue
                await self.sqs.call("set_queue_attributes", QueueUrl=source, Attributes={"RedrivePolicy": ""})
                detached.append(_queue_name(source))
            try:
                await self.sqs.call("delete_queue", QueueUrl=c.ref)
            except ClientError as exc:
                if error_code(exc) not in MISSING_QUEUE:
                    raise
        for c in changes:
            if c.kind == "topic" and c.action == "delete":
                await self.sns.call("delete_topic", TopicArn=c.ref)
        return detached


def _queue_name(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def _describe(c: Change) -> str:
    text = f"{c.name} ({c.messages} message(s)"
    if c.dead_letter_of:
        text += f", dead-letter queue of {', '.join(c.dead_letter_of)}"
    return text + ")"


def pretty_value(attribute: str, value: str | None) -> str:
    """An attribute's value in full: policies (JSON attributes) as indented JSON with
    sorted keys, other values as they are; ``(unset)`` for none, ``""`` for empty."""
    if value is None:
        return "(unset)"
    if value == "":
        return '""'
    if attribute in JSON_ATTRIBUTES:
        try:
            return json.dumps(json.loads(value), indent=2, sort_keys=True)
        except ValueError:
            return value
    return value


def render_plan(changes: list[Change]) -> str:
    """The plan as text: one line per resource; for an update every changed attribute with
    its old and new value in full (policies as JSON, ``-`` old / ``+`` new lines); for a
    queue to delete its message count and the queues using it as their DLQ."""
    symbols = {"create": "+", "update": "~", "unchanged": "=", "delete": "-"}
    lines: list[str] = []
    for c in changes:
        lines.append(f"{symbols[c.action]} {c.kind:<12} {c.name:<40} {c.action}")
        if c.action == "update":
            for attr, (old, new) in c.diff.items():
                lines += _render_change(attr, old, new)
        elif c.action == "delete" and c.kind == "queue":
            if c.messages is not None:
                lines.append(f"      holds {c.messages} message(s)")
            if c.dead_letter_of:
                lines.append(
                    f"      dead-letter queue of {', '.join(c.dead_letter_of)} "
                    "(their RedrivePolicy is removed first)"
                )
    counts = {a: sum(1 for c in changes if c.action == a) for a in symbols}
    lines.append(
        f"Plan: {counts['create']} to create, {counts['update']} to update, "
        f"{counts['delete']} to delete, {counts['unchanged']} unchanged."
    )
    doomed = sum(c.messages or 0 for c in changes if c.action == "delete")
    if doomed:
        lines.append(f"The queues to delete hold {doomed} message(s).")
    return "\n".join(lines)


def _render_change(attr: str, old: str | None, new: str | None) -> list[str]:
    before, after = pretty_value(attr, old), pretty_value(attr, new)
    if "\n" not in before and "\n" not in after:
        return [f"      {attr}: {before} -> {after}"]
    lines = [f"      {attr}:"]
    lines += [f"        - {line}" for line in before.splitlines()]
    lines += [f"        + {line}" for line in after.splitlines()]
    return lines
