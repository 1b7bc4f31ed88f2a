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

from worker.aws import MISSING_QUEUE, AwsClient, Regional, error_code, list_topics, next_page
from worker.errors import ConfigError, UnsafeError
from worker.ops.alarms import AlarmDefinition, alarm_view
from worker.ops.dlq import dead_letter_sources
from worker.ops.filters import list_subscriptions
from worker.ops.queue_stats import queue_counts
from worker.ops.tables import Table, apply_table, desired_view, read_table
from worker.ops.topology import (
    MANAGED_ID,
    MANAGED_TAG,
    MANAGED_VALUE,
    TOPOLOGY_TAG,
    SubscriptionSpec,
    Topology,
    bucket_encryption,
    bucket_lifecycle,
    bucket_notifications,
    canonical_json,
    queue_attributes,
    queue_policy,
    subscription_attributes,
    subscription_label,
    topic_attributes,
)

Kind = Literal["queue", "topic", "subscription", "bucket", "table", "alarm"]
Action = Literal["create", "update", "unchanged", "delete", "pending", "foreign"]
"""``foreign``: it exists and is tagged as another topology's (``Change.owner``): left as it
is, neither updated nor tagged as this file's."""
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
        "AlarmActions",
        "OKActions",
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
    region: str | None = None
    """Where it lives when that is not the session's region."""
    owner: str | None = None
    """A ``foreign`` queue or topic: the topology its ``sqs-worker-topology`` tag names."""
    managed: bool = True
    """False: it exists without the ``managed-by: sqs-worker`` tag (made outside provision)."""
    scope: str | None = None
    """The topology name of the file planned (for what the plan says of ``owner``)."""


@dataclass
class _Existing:
    queue_urls: dict[str, str] = field(default_factory=dict)
    queue_attrs: dict[str, dict[str, str]] = field(default_factory=dict)
    queue_tags: dict[str, dict[str, str]] = field(default_factory=dict)
    topic_arns: dict[str, str] = field(default_factory=dict)
    topic_attrs: dict[str, dict[str, str]] = field(default_factory=dict)
    topic_tags: dict[str, dict[str, str]] = field(default_factory=dict)
    # label ("topic -> queue", "topic -> https://...") -> (subscription arn, attributes);
    # the arn is "PendingConfirmation" (attributes empty) for an unconfirmed endpoint
    subscriptions: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)
    buckets: dict[str, _Bucket] = field(default_factory=dict)
    tables: dict[str, Table] = field(default_factory=dict)
    alarms: dict[str, dict[str, Any]] = field(default_factory=dict)


PENDING = "PendingConfirmation"


def is_pending(arn: str, attrs: dict[str, str]) -> bool:
    """An http/https/email endpoint that has not confirmed its subscription yet."""
    return arn == PENDING or attrs.get("PendingConfirmation") == "true"


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
        cloudwatch: AwsClient | None = None,
        *,
        regional: Regional | None = None,
    ) -> None:
        """The clients of the session's region: ``s3`` is needed when the topology declares
        buckets, ``dynamodb`` for tables, ``cloudwatch`` for alarms. ``regional`` opens a
        client for a resource that names another region."""
        if topology.buckets and s3 is None:
            raise ConfigError("the topology declares buckets: provision needs an S3 client")
        if topology.tables and dynamodb is None:
            raise ConfigError("the topology declares tables: provision needs a DynamoDB client")
        self.alarms = topology.alarm_definitions()
        if self.alarms and cloudwatch is None:
            raise ConfigError("the topology declares alarms: provision needs a CloudWatch client")
        self.dynamodb = dynamodb
        self.topology = topology
        self.sqs = sqs
        self.sns = sns
        self.s3 = s3
        self.cloudwatch = cloudwatch
        self.regional = regional
        self._defaults = {"sqs": sqs, "sns": sns, "s3": s3, "dynamodb": dynamodb, "cloudwatch": cloudwatch}
        self._session_region = getattr(getattr(sqs.client, "meta", None), "region_name", None)
        self.existing = _Existing()
        self._read_done = False

    async def client(self, service: str, region: str | None) -> AwsClient:
        """The client for ``service`` in ``region`` (None: the session's)."""
        if region is None or region == self._session_region:
            found = self._defaults.get(service)
            if found is None:
                raise ConfigError(f"provision has no {service} client")
            return found
        if self.regional is None:
            raise ConfigError(
                f"the topology names region {region!r}: provision needs clients for other regions"
            )
        return await self.regional(service, region)

    def _region(self, kind: Literal["queue", "topic", "bucket", "table"], name: str) -> str | None:
        region = self.topology.region_of(kind, name)
        return None if region == self._session_region else region

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
            sqs = await self.client("sqs", self._region("queue", name))
            try:
                url = (await sqs.call("get_queue_url", QueueName=name))["QueueUrl"]
            except ClientError as exc:
                if error_code(exc) in MISSING_QUEUE:
                    continue
                raise
            ex.queue_urls[name] = url
            attrs = await sqs.call("get_queue_attributes", QueueUrl=url, AttributeNames=["All"])
            ex.queue_attrs[name] = attrs.get("Attributes", {})
            ex.queue_tags[name] = (await sqs.call("list_queue_tags", QueueUrl=url)).get("Tags") or {}
        listed: dict[str | None, dict[str, str]] = {}
        for name in self.topology.topics:
            region = self._region("topic", name)
            sns = await self.client("sns", region)
            if region not in listed:
                listed[region] = await list_topics(sns)
            if name in listed[region]:
                arn = listed[region][name]
                ex.topic_arns[name] = arn
                ex.topic_attrs[name] = (await sns.call("get_topic_attributes", TopicArn=arn)).get(
                    "Attributes", {}
                )
                found = (await sns.call("list_tags_for_resource", ResourceArn=arn)).get("Tags") or []
                ex.topic_tags[name] = {t["Key"]: t["Value"] for t in found}
        queue_by_arn = {attrs.get("QueueArn"): name for name, attrs in ex.queue_attrs.items()}
        for topic, arn in ex.topic_arns.items():
            sns = await self.client("sns", self._region("topic", topic))
            for sub in await self._list_subscriptions(sns, arn):
                protocol, endpoint = sub.get("Protocol", ""), sub.get("Endpoint", "")
                queue = queue_by_arn.get(endpoint) if protocol == "sqs" else None
                label = subscription_label(topic, protocol, queue or endpoint)
                sub_arn = sub["SubscriptionArn"]
                sub_attrs: dict[str, str] = {}
                if sub_arn != PENDING:
                    sub_attrs = (await sns.call("get_subscription_attributes", SubscriptionArn=sub_arn)).get(
                        "Attributes", {}
                    )
                ex.subscriptions[label] = (sub_arn, sub_attrs)
        await self._read_alarms()
        for name in self.topology.buckets:
            bucket = await self._read_bucket(name)
            if bucket is not None:
                ex.buckets[name] = bucket
        for name in self.topology.tables:
            table = await read_table(await self.client("dynamodb", self._region("table", name)), name)
            if table is not None:
                ex.tables[name] = table

    async def _read_bucket(self, name: str) -> _Bucket | None:
        s3 = await self.client("s3", self._region("bucket", name))
        try:
            await s3.call("head_bucket", Bucket=name)
        except ClientError as exc:
            if error_code(exc) in MISSING_BUCKET:
                return None
            raise

        async def read(operation: str, key: str | None, empty: Any) -> Any:
            try:
                found = await s3.call(operation, Bucket=name)
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

    async def _list_subscriptions(self, sns: AwsClient, topic_arn: str) -> list[dict[str, str]]:
        return await list_subscriptions(sns, topic_arn)

    async def _read_alarms(self) -> None:
        """The file's alarms that exist, by name; one of another topology's (tagged with its
        name: a name both files produce) is refused rather than taken over."""
        by_region: dict[str | None, list[str]] = {}
        for a in self.alarms:
            by_region.setdefault(self._alarm_region(a), []).append(a.name)
        for region, names in by_region.items():
            cloudwatch = await self.client("cloudwatch", region)
            for start in range(0, len(names), 100):
                token: str | None = None
                while True:
                    found = await cloudwatch.call(
                        "describe_alarms",
                        AlarmNames=names[start : start + 100],
                        AlarmTypes=["MetricAlarm"],
                        MaxRecords=100,
                        **next_page(token),
                    )
                    for alarm in found.get("MetricAlarms", []):
                        await self._check_owner(cloudwatch, alarm)
                        self.existing.alarms[alarm["AlarmName"]] = alarm
                    token = found.get("NextToken")
                    if not token:
                        break

    async def _check_owner(self, cloudwatch: AwsClient, alarm: dict[str, Any]) -> None:
        found = await cloudwatch.call("list_tags_for_resource", ResourceARN=alarm["AlarmArn"])
        tags = {t["Key"]: t["Value"] for t in found.get("Tags", [])}
        owner = tags.get(TOPOLOGY_TAG)
        if owner is not None and owner != self.scope:
            raise ConfigError(
                f"alarm {alarm['AlarmName']!r} exists and belongs to topology {owner!r}: this file "
                f"({self.scope!r}) would overwrite it; give one of the files another name"
            )

    def _alarm_region(self, alarm: AlarmDefinition) -> str | None:
        return None if alarm.region == self._session_region else alarm.region

    def desired_alarm(self, alarm: AlarmDefinition) -> dict[str, Any]:
        """PutMetricAlarm's parameters, with the notify topics' ARNs."""
        actions = [t if t.startswith("arn:") else self._topic_arn(t) for t in alarm.notify]
        return alarm.parameters(actions)

    # -- desired state -------------------------------------------------------------------
    def _queue_arn(self, name: str) -> str:
        return self.existing.queue_attrs.get(name, {}).get("QueueArn") or f"<arn of queue {name}>"

    def _topic_arn(self, name: str) -> str:
        return self.existing.topic_arns.get(name) or f"<arn of topic {name}>"

    def desired_queue(self, name: str) -> dict[str, str]:
        arns = {n: self._queue_arn(n) for n in self.topology.queues}
        topics = [
            self._topic_arn(s.topic)
            for s in self.topology.subscriptions
            if s.kind == "sqs" and s.queue == name
        ]
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
            region = self._region("topic", name)
            if name not in ex.topic_arns:
                changes.append(
                    Change("topic", name, "create", {k: (None, v) for k, v in desired.items()}, region=region)
                )
            else:
                d = diff_attributes(ex.topic_attrs[name], desired)
                changes.append(
                    self._owned(
                        Change(
                            "topic",
                            name,
                            "update" if d else "unchanged",
                            d,
                            ex.topic_arns[name],
                            region=region,
                        ),
                        ex.topic_tags.get(name, {}),
                    )
                )
        for name in self.topology.queue_order():
            desired = self.desired_queue(name)
            region = self._region("queue", name)
            if name not in ex.queue_urls:
                changes.append(
                    Change("queue", name, "create", {k: (None, v) for k, v in desired.items()}, region=region)
                )
            else:
                d = diff_attributes(ex.queue_attrs[name], desired)
                if "FifoQueue" in d:
                    raise ConfigError(f"queues.{name}: FifoQueue cannot be changed on an existing queue")
                changes.append(
                    self._owned(
                        Change(
                            "queue",
                            name,
                            "update" if d else "unchanged",
                            d,
                            ex.queue_urls[name],
                            region=region,
                        ),
                        ex.queue_tags.get(name, {}),
                    )
                )
        for sub in self.topology.subscriptions:
            label = sub.label
            desired = subscription_attributes(sub)
            found = ex.subscriptions.get(label)
            region = self._region("topic", sub.topic)
            if found is None:
                changes.append(
                    Change(
                        "subscription",
                        label,
                        "create",
                        {k: (None, v) for k, v in desired.items()},
                        region=region,
                    )
                )
            elif is_pending(*found):
                # SNS shows no attributes until the endpoint confirms; nothing to do but wait.
                changes.append(Change("subscription", label, "pending", ref=found[0], region=region))
            else:
                d = diff_attributes(found[1], desired)
                changes.append(
                    Change("subscription", label, "update" if d else "unchanged", d, found[0], region=region)
                )
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
        for alarm in self.alarms:
            wanted = alarm_view(self.desired_alarm(alarm))
            current = ex.alarms.get(alarm.name)
            region = self._alarm_region(alarm)
            if current is None:
                changes.append(
                    Change(
                        "alarm",
                        alarm.name,
                        "create",
                        {k: (None, v) for k, v in wanted.items()},
                        region=region,
                    )
                )
            else:
                d = diff_attributes(alarm_view(current), wanted)
                changes.append(
                    Change(
                        "alarm",
                        alarm.name,
                        "update" if d else "unchanged",
                        d,
                        current["AlarmArn"],
                        region=region,
                    )
                )
        return changes

    def _owned(self, change: Change, tags: dict[str, str]) -> Change:
        """``change`` of an existing queue or topic, with who owns it: another topology's
        (tagged by provision for another ``name:``) becomes ``foreign``, left as it is; one
        without the managed-by tag is marked not managed (an update tags it as this file's)."""
        change.scope = self.scope
        if tags.get(MANAGED_TAG) != MANAGED_VALUE:
            change.managed = False
            return change
        owner = tags.get(TOPOLOGY_TAG)
        if owner is not None and owner != self.scope:
            change.owner, change.action = owner, "foreign"
        return change

    async def apply(self, changes: list[Change]) -> None:
        """Create and update what ``changes`` says; ``foreign`` ones (another topology's)
        are not touched."""
        ex = self.existing
        tags = self.topology.tags()
        for c in (c for c in changes if c.kind == "topic"):
            desired = topic_attributes(self.topology, c.name)
            sns = await self.client("sns", self._region("topic", c.name))
            if c.action == "create":
                arn = (
                    await sns.call(
                        "create_topic",
                        Name=c.name,
                        Attributes=desired,
                        Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
                    )
                )["TopicArn"]
                ex.topic_arns[c.name] = arn
            elif c.action == "update":
                for attr, (_, value) in c.diff.items():
                    await sns.call(
                        "set_topic_attributes", TopicArn=c.ref, AttributeName=attr, AttributeValue=value
                    )
        for c in (c for c in changes if c.kind == "queue"):
            if c.action == "create":
                # ARNs of queues not created yet (a DLQ's redrive-allow list, the queue's
                # own ARN in its policy) are filled in by the pass below.
                desired = {k: v for k, v in self.desired_queue(c.name).items() if "<arn of" not in v}
                sqs = await self.client("sqs", self._region("queue", c.name))
                url = (await sqs.call("create_queue", QueueName=c.name, Attributes=desired, tags=tags))[
                    "QueueUrl"
                ]
                ex.queue_urls[c.name] = url
                await self._refresh_queue(c.name)
        for c in (c for c in changes if c.kind == "queue" and c.action not in ("delete", "foreign")):
            url = ex.queue_urls[c.name]
            sqs = await self.client("sqs", self._region("queue", c.name))
            missing = diff_attributes(ex.queue_attrs[c.name], self.desired_queue(c.name))
            if missing:
                await sqs.call(
                    "set_queue_attributes", QueueUrl=url, Attributes={k: v for k, (_, v) in missing.items()}
                )
                await self._refresh_queue(c.name)
            if c.action == "update":
                await sqs.call("tag_queue", QueueUrl=url, Tags=tags)
        subs = {s.label: s for s in self.topology.subscriptions}
        for c in (c for c in changes if c.kind == "subscription" and c.action in ("create", "update")):
            sub = subs[c.name]
            sns = await self.client("sns", self._region("topic", sub.topic))
            if c.action == "create":
                await sns.call(
                    "subscribe",
                    TopicArn=ex.topic_arns[sub.topic],
                    Protocol=sub.kind,
                    Endpoint=self._endpoint(sub),
                    Attributes=subscription_attributes(sub),
                    ReturnSubscriptionArn=True,
                )
            else:
                for attr, (_, value) in c.diff.items():
                    await sns.call(
                        "set_subscription_attributes",
                        SubscriptionArn=c.ref,
                        AttributeName=attr,
                        AttributeValue=value,
                    )
        for c in (c for c in changes if c.kind == "bucket" and c.action in ("create", "update")):
            await self._apply_bucket(c)
        for c in (c for c in changes if c.kind == "table"):
            if c.action in ("create", "update"):
                dynamodb = await self.client("dynamodb", self._region("table", c.name))
                await apply_table(dynamodb, c.name, ex.tables.get(c.name), tags, c.action)
        by_name = {a.name: a for a in self.alarms}
        for c in (c for c in changes if c.kind == "alarm" and c.action in ("create", "update")):
            alarm = by_name[c.name]
            cloudwatch = await self.client("cloudwatch", self._alarm_region(alarm))
            params = self.desired_alarm(alarm)
            tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
            await cloudwatch.call("put_metric_alarm", **params, Tags=tag_list)
            arn = c.ref
            if arn is None:
                found = await cloudwatch.call(
                    "describe_alarms", AlarmNames=[c.name], AlarmTypes=["MetricAlarm"]
                )
                arn = found["MetricAlarms"][0]["AlarmArn"]
            # PutMetricAlarm ignores Tags when it updates an alarm (and some servers ignore
            # them always): the tags that scope --prune are set on their own.
            await cloudwatch.call("tag_resource", ResourceARN=arn, Tags=tag_list)

    def _endpoint(self, sub: SubscriptionSpec) -> str:
        if sub.kind == "sqs":
            assert sub.queue is not None
            return self._queue_arn(sub.queue)
        assert sub.endpoint is not None
        return sub.endpoint

    async def _apply_bucket(self, c: Change) -> None:
        """Create the bucket if needed, then set what differs: encryption, the managed
        lifecycle rules (others kept), the managed queue notifications (others kept)."""
        s3, name, spec = (
            await self.client("s3", self._region("bucket", c.name)),
            c.name,
            self.topology.buckets[c.name],
        )
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
        sqs = await self.client("sqs", self._region("queue", name))
        attrs = await sqs.call("get_queue_attributes", QueueUrl=url, AttributeNames=["All"])
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
        regions = [None if r == self._session_region else r for r in self.topology.regions()]
        for region in dict.fromkeys(regions):
            changes += await self._prune_queues(region)
            sns = await self.client("sns", region)
            for name, arn in (await list_topics(sns)).items():
                if name in self.topology.topics:
                    continue
                ttags = (await sns.call("list_tags_for_resource", ResourceArn=arn)).get("Tags", [])
                if self._ours({t["Key"]: t["Value"] for t in ttags}):
                    changes.append(Change("topic", name, "delete", ref=arn, region=region))
            if self.alarms or self.cloudwatch is not None:
                changes += await self._prune_alarms(region)
        # Subscriptions of the file's topics that the file does not list (any protocol; an
        # unconfirmed one has no ARN to unsubscribe and expires by itself after three days).
        wanted = {s.label for s in self.topology.subscriptions}
        topic_of = {label: label.split(" -> ", 1)[0] for label in self.existing.subscriptions}
        for label, (sub_arn, _) in self.existing.subscriptions.items():
            if label not in wanted and sub_arn != PENDING:
                region = self._region("topic", topic_of[label])
                changes.append(Change("subscription", label, "delete", ref=sub_arn, region=region))
        return changes

    async def _prune_queues(self, region: str | None) -> list[Change]:
        sqs = await self.client("sqs", region)
        changes: list[Change] = []
        token: str | None = None
        while True:
            page = await sqs.call("list_queues", MaxResults=1000, **next_page(token))
            for url in page.get("QueueUrls", []):
                name = _queue_name(url)
                if name in self.topology.queues:
                    continue
                try:
                    qtags = (await sqs.call("list_queue_tags", QueueUrl=url)).get("Tags", {})
                except ClientError as exc:
                    if error_code(exc) in MISSING_QUEUE:
                        continue  # deleted since it was listed
                    raise
                if self._ours(qtags):
                    change = Change("queue", name, "delete", ref=url, region=region)
                    await self._describe_queue(change)
                    changes.append(change)
            token = page.get("NextToken")
            if not token:
                return changes

    async def _prune_alarms(self, region: str | None) -> list[Change]:
        """Alarms named with this scope's prefix, tagged by this tool for this scope, that
        the file no longer declares."""
        cloudwatch = await self.client("cloudwatch", region)
        wanted = {a.name for a in self.alarms}
        changes: list[Change] = []
        token: str | None = None
        while True:
            page = await cloudwatch.call(
                "describe_alarms",
                AlarmNamePrefix=f"{self.scope}-",
                AlarmTypes=["MetricAlarm"],
                **next_page(token),
            )
            for alarm in page.get("MetricAlarms", []):
                if alarm["AlarmName"] in wanted:
                    continue
                found = await cloudwatch.call("list_tags_for_resource", ResourceARN=alarm["AlarmArn"])
                if self._ours({t["Key"]: t["Value"] for t in found.get("Tags", [])}):
                    changes.append(
                        Change("alarm", alarm["AlarmName"], "delete", ref=alarm["AlarmArn"], region=region)
                    )
            token = page.get("NextToken")
            if not token:
                return changes

    async def _describe_queue(self, change: Change) -> bool:
        """Fill in a queue deletion's message count and DLQ sources; False when it is gone."""
        assert change.ref is not None
        sqs = await self.client("sqs", change.region)
        try:
            change.messages = sum(await queue_counts(sqs, change.ref))
            sources = await dead_letter_sources(sqs, change.ref)
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
            if c.kind == "alarm" and c.action == "delete":
                cloudwatch = await self.client("cloudwatch", c.region)
                await cloudwatch.call("delete_alarms", AlarmNames=[c.name])
        for c in changes:
            if c.kind == "subscription" and c.action == "delete":
                sns = await self.client("sns", c.region)
                await sns.call("unsubscribe", SubscriptionArn=c.ref)
        deleting = {c.name for c in present}
        detached: list[str] = []
        for c in present:
            assert c.ref is not None
            sqs = await self.client("sqs", c.region)
            for source in await dead_letter_sources(sqs, c.ref):
                if _queue_name(source) in deleting:
                    continue
                await sqs.call("set_queue_attributes", QueueUrl=source, Attributes={"RedrivePolicy": ""})
                detached.append(_queue_name(source))
            try:
                await sqs.call("delete_queue", QueueUrl=c.ref)
            except ClientError as exc:
                if error_code(exc) not in MISSING_QUEUE:
                    raise
        for c in changes:
            if c.kind == "topic" and c.action == "delete":
                sns = await self.client("sns", c.region)
                await sns.call("delete_topic", TopicArn=c.ref)
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


def _label(c: Change) -> str:
    """What the plan says will happen to ``c`` (its action column)."""
    if c.action == "pending":
        return "pending confirmation"
    if c.action == "foreign":
        return f"owned by topology {c.owner!r}"
    return c.action if c.managed else f"{c.action}, not managed"


def render_plan(changes: list[Change]) -> str:
    """The plan as text: one line per resource (mark, kind, action, then the name, last, so
    that a long name never pushes the columns out of line); for an update every changed
    attribute with its old and new value in full (policies as JSON, ``-`` old / ``+`` new
    lines); for a queue to delete its message count and the queues using it as their DLQ;
    for a resource of another topology, or one provision did not make, who owns it."""
    symbols = {"create": "+", "update": "~", "unchanged": "=", "delete": "-", "pending": "?", "foreign": "!"}
    width = max((len(_label(c)) for c in changes), default=0)
    lines: list[str] = []
    for c in changes:
        name = f"{c.name} ({c.region})" if c.region else c.name
        symbol = symbols[c.action] if c.managed else "!"
        lines.append(f"{symbol} {c.kind:<12} {_label(c):<{width}}  {name}")
        if c.action == "foreign":
            scope = f", not this file's {c.scope!r}" if c.scope else ""
            differs = f"; {len(c.diff)} attribute(s) differ from this file" if c.diff else ""
            lines.append(f"      left as it is: its {TOPOLOGY_TAG} tag names {c.owner!r}{scope}{differs}")
        elif not c.managed:
            takes = (
                f"; the update tags it as topology {c.scope!r}" if c.action == "update" and c.scope else ""
            )
            lines.append(f"      not made by provision (no {MANAGED_TAG}: {MANAGED_VALUE} tag){takes}")
        if c.action in ("update", "foreign"):
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
    pending = f", {counts['pending']} pending confirmation" if counts["pending"] else ""
    foreign = f", {counts['foreign']} of another topology (left as they are)" if counts["foreign"] else ""
    unmanaged = sum(1 for c in changes if not c.managed)
    not_managed = f", {unmanaged} not managed by provision" if unmanaged else ""
    lines.append(
        f"Plan: {counts['create']} to create, {counts['update']} to update, "
        f"{counts['delete']} to delete, {counts['unchanged']} unchanged{pending}{foreign}{not_managed}."
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
