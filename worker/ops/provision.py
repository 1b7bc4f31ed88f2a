"""``worker provision``: make AWS match the topology file.

``plan()`` reads what exists and compares it with the file, attribute by attribute;
``apply()`` creates and updates in dependency order (topics, then dead-letter queues before
the queues that use them, then subscriptions), filling in ARNs as resources come into
being. Nothing is deleted unless pruning is asked for, and then only resources this tool
tagged for the same topology name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from botocore.exceptions import ClientError

from worker.aws import AwsClient, error_code, list_topics, next_page
from worker.ops.topology import (
    Topology,
    queue_attributes,
    queue_policy,
    subscription_attributes,
    topic_attributes,
)

Kind = Literal["queue", "topic", "subscription"]
Action = Literal["create", "update", "unchanged", "delete"]
JSON_ATTRIBUTES = frozenset(
    {"RedrivePolicy", "RedriveAllowPolicy", "Policy", "DeliveryPolicy", "FilterPolicy"}
)
MISSING_QUEUE = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})


@dataclass
class Change:
    kind: Kind
    name: str
    action: Action
    diff: dict[str, tuple[str | None, str]] = field(default_factory=dict)
    ref: str | None = None  # url or arn of what exists


@dataclass
class _Existing:
    queue_urls: dict[str, str] = field(default_factory=dict)
    queue_attrs: dict[str, dict[str, str]] = field(default_factory=dict)
    topic_arns: dict[str, str] = field(default_factory=dict)
    topic_attrs: dict[str, dict[str, str]] = field(default_factory=dict)
    # (topic, queue) -> (subscription arn, attributes)
    subscriptions: dict[tuple[str, str], tuple[str, dict[str, str]]] = field(default_factory=dict)


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
    def __init__(self, topology: Topology, sqs: AwsClient, sns: AwsClient) -> None:
        self.topology = topology
        self.sqs = sqs
        self.sns = sns
        self.existing = _Existing()

    # -- reading what exists -------------------------------------------------------------
    async def _read(self) -> None:
        ex = self.existing = _Existing()
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

    async def _list_subscriptions(self, topic_arn: str) -> list[dict[str, str]]:
        subs: list[dict[str, str]] = []
        token: str | None = None
        while True:
            params: dict[str, Any] = {"TopicArn": topic_arn}
            if token:
                params["NextToken"] = token
            page = await self.sns.call("list_subscriptions_by_topic", **params)
            subs += page.get("Subscriptions", [])
            token = page.get("NextToken")
            if not token:
                return subs

    # -- desired state -------------------------------------------------------------------
    def _queue_arn(self, name: str) -> str:
        return self.existing.queue_attrs.get(name, {}).get("QueueArn") or f"<arn of queue {name}>"

    def _topic_arn(self, name: str) -> str:
        return self.existing.topic_arns.get(name) or f"<arn of topic {name}>"

    def desired_queue(self, name: str) -> dict[str, str]:
        arns = {n: self._queue_arn(n) for n in self.topology.queues}
        topics = [self._topic_arn(s.topic) for s in self.topology.subscriptions if s.queue == name]
        return queue_attributes(self.topology, name, arns, queue_policy(arns[name], topics))

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
                    raise ValueError(f"queues.{name}: FifoQueue cannot be changed on an existing queue")
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

    async def _refresh_queue(self, name: str) -> None:
        url = self.existing.queue_urls[name]
        attrs = await self.sqs.call("get_queue_attributes", QueueUrl=url, AttributeNames=["All"])
        self.existing.queue_attrs[name] = attrs.get("Attributes", {})

    # -- pruning -------------------------------------------------------------------------
    async def plan_prune(self) -> list[Change]:
        """Managed resources (tagged by this tool) that the file no longer lists."""
        changes: list[Change] = []
        token: str | None = None
        while True:
            page = await self.sqs.call("list_queues", MaxResults=1000, **next_page(token))
            for url in page.get("QueueUrls", []):
                name = url.rstrip("/").rsplit("/", 1)[-1]
                if name in self.topology.queues:
                    continue
                qtags = (await self.sqs.call("list_queue_tags", QueueUrl=url)).get("Tags", {})
                if self._ours(qtags):
                    changes.append(Change("queue", name, "delete", ref=url))
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

    def _ours(self, tags: dict[str, str]) -> bool:
        wanted = self.topology.tags()
        return all(tags.get(k) == v for k, v in wanted.items())

    async def apply_prune(self, changes: list[Change]) -> None:
        for c in changes:
            if c.kind == "subscription":
                await self.sns.call("unsubscribe", SubscriptionArn=c.ref)
        for c in changes:
            if c.kind == "queue":
                await self.sqs.call("delete_queue", QueueUrl=c.ref)
            elif c.kind == "topic":
                await self.sns.call("delete_topic", TopicArn=c.ref)


def render_plan(changes: list[Change]) -> str:
    symbols = {"create": "+", "update": "~", "unchanged": "=", "delete": "-"}
    lines: list[str] = []
    for c in changes:
        lines.append(f"{symbols[c.action]} {c.kind:<12} {c.name:<40} {c.action}")
        if c.action == "update":
            for attr, (old, new) in c.diff.items():
                lines.append(f"      {attr}: {_short(old)} -> {_short(new)}")
    counts = {a: sum(1 for c in changes if c.action == a) for a in symbols}
    lines.append(
        f"Plan: {counts['create']} to create, {counts['update']} to update, "
        f"{counts['delete']} to delete, {counts['unchanged']} unchanged."
    )
    return "\n".join(lines)


def _short(value: str | None, width: int = 70) -> str:
    if value is None:
        return "(unset)"
    return value if len(value) <= width else value[: width - 3] + "..."
