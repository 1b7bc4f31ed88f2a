"""SNS filter policies: would a message without a type reach any subscription?

A message published without a type goes nowhere when every subscription of the topic has a
filter policy that requires the type attribute (scope MessageAttributes) or the body's
top-level ``type`` key, where the worker also looks for a type (scope MessageBody): SNS
accepts the publish and drops the message. ``untyped_goes_nowhere`` tells, so ``publish`` can warn before sending.

A filter policy requires a key when a message without it cannot match: its conditions are
ANDed, so one condition on the key that an absent key fails is enough. An absent key
matches only ``{"exists": false}``; every other condition (values, prefixes,
``anything-but``, numeric, ``exists: true``) needs the key. ``$or`` needs it only when every
alternative does.
"""

from __future__ import annotations

import json
from typing import Any

from worker.aws import AwsClient, list_topics, next_page
from worker.errors import NotFoundError


async def list_subscriptions(sns: AwsClient, topic_arn: str) -> list[dict[str, str]]:
    """Every subscription of the topic (all protocols, pending ones included)."""
    subs: list[dict[str, str]] = []
    token: str | None = None
    while True:
        page = await sns.call("list_subscriptions_by_topic", TopicArn=topic_arn, **next_page(token))
        subs += page.get("Subscriptions", [])
        token = page.get("NextToken")
        if not token:
            return subs


def _absent_matches(conditions: Any) -> bool:
    """Whether a message without the key satisfies the key's list of conditions."""
    if not isinstance(conditions, list):
        conditions = [conditions]
    return any(isinstance(c, dict) and c.get("exists") is False for c in conditions)


def requires_key(policy: Any, key: str) -> bool:
    """Whether ``policy`` (a filter policy, parsed) rejects every message without ``key``
    at its top level."""
    if not isinstance(policy, dict):
        return False
    for name, value in policy.items():
        if name == "$or":
            alternatives = value if isinstance(value, list) else [value]
            if alternatives and all(requires_key(a, key) for a in alternatives):
                return True
        elif name == key and not _absent_matches(value):
            return True
    return False


BODY_TYPE_KEY = "type"
"""The body key the worker reads a type from when the attribute is missing."""


def subscription_requires(attributes: dict[str, str], type_attribute: str = "type") -> bool:
    """Whether a subscription (its SNS attributes) drops every message without a type: a
    FilterPolicy that requires ``type_attribute`` (scope MessageAttributes, the default) or
    the top-level body key ``type`` (scope MessageBody)."""
    text = attributes.get("FilterPolicy")
    if not text:
        return False
    try:
        policy = json.loads(text)
    except ValueError:
        return False
    if attributes.get("FilterPolicyScope") == "MessageBody":
        return requires_key(policy, BODY_TYPE_KEY)
    return requires_key(policy, type_attribute)


async def untyped_goes_nowhere(sns: AwsClient, topic: str, type_attribute: str = "type") -> bool:
    """True when the topic has subscriptions and every one of them filters out a message
    without ``type_attribute``: a publish without a type would reach nothing. False when a
    subscription takes such a message, or the topic has no subscription at all (then no
    message goes anywhere, typed or not). ``topic``: a name or an ARN; NotFoundError when
    no topic has that name."""
    if topic.startswith("arn:"):
        arn = topic
    else:
        topics = await list_topics(sns)
        if topic not in topics:
            raise NotFoundError(f"topic {topic!r} does not exist")
        arn = topics[topic]
    subs = await list_subscriptions(sns, arn)
    if not subs:
        return False
    for sub in subs:
        sub_arn = sub.get("SubscriptionArn", "")
        if not sub_arn.startswith("arn:"):
            return False  # pending confirmation: its filter cannot be read; assume it takes all
        attrs = (await sns.call("get_subscription_attributes", SubscriptionArn=sub_arn)).get("Attributes", {})
        if not subscription_requires(attrs, type_attribute):
            return False
    return True
