"""Where a message's type comes from, and the envelopes around a payload.

A queue fed by something other than this project's producer carries its type somewhere
else, or nowhere. The sources, tried in the queue's order (``types.sources``; by default
all of them, in this order):

``attribute``
    the message attribute ``message_type_attribute`` (``type``): what our producer sets;
``cloudevents``
    a CloudEvent: binary mode (attributes ``ce-type``/``ce_type`` beside ``ce-specversion``,
    the body is the data) or structured mode (a JSON body with ``specversion``, ``type``,
    ``source`` and ``id``; the handler gets its ``data``);
``field``
    a field of a JSON object body, a dotted path (``types.field``, default ``type``);
``s3``
    an S3 event notification: ``s3:`` + its event name (``s3:ObjectCreated:Put``);
``eventbridge``
    an EventBridge event (``detail-type``, ``source``, ``detail``): its ``detail-type``;
    the handler gets the ``detail``.

A message none of them types goes to the queue's default handler (``types.default``, or a
router's ``@router.default()``), else it is rejected: "message has no type".

Envelopes are unwrapped as SNS's is: the handler's payload is the inner one, the
envelope's own fields are ``Message.metadata`` (``Message.envelope`` says which it was,
``Message.source`` is the event's source). Nothing here raises.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from worker.messages.s3types import s3_event_type
from worker.type_sources import TYPE_SOURCES as SOURCES
from worker.type_sources import TypeSource as Source

CLOUDEVENTS_PREFIXES = ("ce-", "ce_")
"""Binary-mode CloudEvents attribute prefixes (HTTP's ``ce-``, Kafka's ``ce_``)."""
_CE_REQUIRED = ("specversion", "type", "source", "id")
_EVENTBRIDGE_REQUIRED = ("version", "id", "detail-type", "source", "account", "time", "region", "detail")
"""Every field EventBridge puts in an event: a body with a few of them is someone's JSON."""


@dataclass(frozen=True, slots=True)
class TypeRules:
    """How one queue finds a message's type (``QueueSettings.types``)."""

    attribute: str = "type"
    sources: Sequence[Source] = SOURCES
    field: str = "type"
    """A dotted path into a JSON object body (``detail.kind``)."""

    def describe(self) -> list[str]:
        """The sources in order, as ``worker check`` lists them."""
        names = {
            "attribute": f"attribute {self.attribute!r}",
            "cloudevents": "CloudEvents type",
            "field": f"body field {self.field!r}",
            "s3": "S3 event name",
            "eventbridge": "EventBridge detail-type",
        }
        return [names[source] for source in self.sources]


DEFAULT_RULES = TypeRules()


@dataclass(frozen=True, slots=True)
class Typed:
    """What the sources found: the type, and the payload out of its envelope."""

    type: str | None
    body: str
    envelope: str | None = None
    source: str | None = None
    metadata: Mapping[str, Any] | None = None


def resolve(body: str, attributes: Mapping[str, str], rules: TypeRules = DEFAULT_RULES) -> Typed:
    """The message type of ``body`` with ``attributes`` by ``rules``, and the payload
    unwrapped from a CloudEvents or EventBridge envelope (never raises)."""
    data: Any = _UNREAD
    for source in rules.sources:
        if source == "attribute":
            value = attributes.get(rules.attribute)
            if value:
                return _unwrapped(value, body, attributes, rules, data)
        elif source == "cloudevents":
            binary = _ce_binary(attributes)
            if binary is not None:
                return Typed(binary["type"], body, "cloudevents", binary.get("source"), binary)
            data = _json(body) if data is _UNREAD else data
            if _is_cloudevent(data):
                return _cloudevent(data, body)
        elif source == "field":
            data = _json(body) if data is _UNREAD else data
            value = _dotted(data, rules.field)
            if isinstance(value, str) and value:
                return _unwrapped(value, body, attributes, rules, data)
        elif source == "s3":
            data = _json(body) if data is _UNREAD else data
            value = s3_event_type(data)
            if value:
                return Typed(value, body)
        elif source == "eventbridge":
            data = _json(body) if data is _UNREAD else data
            if _is_eventbridge(data):
                return _eventbridge(data, body)
    return _unwrapped(None, body, attributes, rules, data)


class _Unread:
    pass


_UNREAD: Any = _Unread()


def _unwrapped(
    message_type: str | None, body: str, attributes: Mapping[str, str], rules: TypeRules, data: Any
) -> Typed:
    """A type found elsewhere: the body is still unwrapped when it is an envelope of a source
    the queue reads (a CloudEvent typed by its attribute keeps the CloudEvent's data)."""
    if "cloudevents" in rules.sources:
        binary = _ce_binary(attributes)
        if binary is not None:
            return Typed(message_type or binary["type"], body, "cloudevents", binary.get("source"), binary)
    if '"specversion"' in body or '"detail-type"' in body:
        data = _json(body) if data is _UNREAD else data
        if "cloudevents" in rules.sources and _is_cloudevent(data):
            typed = _cloudevent(data, body)
            return Typed(message_type or typed.type, typed.body, typed.envelope, typed.source, typed.metadata)
        if "eventbridge" in rules.sources and _is_eventbridge(data):
            typed = _eventbridge(data, body)
            return Typed(message_type or typed.type, typed.body, typed.envelope, typed.source, typed.metadata)
    return Typed(message_type, body)


def _json(body: str) -> Any:
    if not body.lstrip().startswith("{"):
        return None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # deep nesting must not take the poller down
        return None


def _dotted(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


_CE_KEYS = tuple((prefix, prefix + "type", prefix + "specversion") for prefix in CLOUDEVENTS_PREFIXES)


def _ce_binary(attributes: Mapping[str, str]) -> dict[str, str] | None:
    if not attributes:
        return None
    for prefix, type_key, version_key in _CE_KEYS:
        if type_key in attributes and attributes.get(version_key) and attributes[type_key]:
            return {k[len(prefix) :]: v for k, v in attributes.items() if k.startswith(prefix)}
    return None


def _is_cloudevent(data: Any) -> bool:
    return isinstance(data, dict) and all(isinstance(data.get(k), str) and data[k] for k in _CE_REQUIRED)


def _cloudevent(data: dict[str, Any], body: str) -> Typed:
    metadata = {k: v for k, v in data.items() if k not in ("data", "data_base64")}
    if "data" in data:
        inner = data["data"]
        payload = (
            inner if isinstance(inner, str) else json.dumps(inner, separators=(",", ":"), ensure_ascii=False)
        )
    elif isinstance(data.get("data_base64"), str):
        import base64
        import binascii

        try:
            payload = base64.b64decode(data["data_base64"], validate=True).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            payload = data["data_base64"]
    else:
        payload = ""
    return Typed(data["type"], payload, "cloudevents", data["source"], metadata)


def _is_eventbridge(data: Any) -> bool:
    return (
        isinstance(data, dict)
        and all(k in data for k in _EVENTBRIDGE_REQUIRED)
        and isinstance(data["detail-type"], str)
        and bool(data["detail-type"])
    )


def _eventbridge(data: dict[str, Any], body: str) -> Typed:
    metadata = {k: v for k, v in data.items() if k != "detail"}
    payload = json.dumps(data["detail"], separators=(",", ":"), ensure_ascii=False)
    return Typed(data["detail-type"], payload, "eventbridge", str(data["source"]), metadata)
