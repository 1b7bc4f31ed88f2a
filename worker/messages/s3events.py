"""S3 event notifications as messages: their message type and typed payloads.

S3 delivers a bucket notification to a queue (directly, or through an SNS topic) as a JSON
body without a ``type``::

    {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                  "s3": {"bucket": {"name": ...}, "object": {"key": ..., "size": ...}}, ...}]}

Its message type is ``"s3:" + eventName``, the event type as a notification configuration
names it: ``s3:ObjectCreated:Put``, ``s3:ObjectRemoved:Delete``... A handler registers for
one, or for a family with a trailing ``*`` (``s3:ObjectCreated:*``, ``s3:*``), and takes the
record (``S3EventRecord``) or the whole notification (``S3Event``) as its payload.

When a notification is configured, S3 sends ``{"Service": "Amazon S3", "Event":
"s3:TestEvent", ...}`` once; its type is ``s3:TestEvent`` and the worker settles it without
running a handler unless one is registered for exactly that type.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict, Field, model_validator

from worker.messages.s3types import S3_PREFIX


class _S3Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True, defer_build=True)


class S3Bucket(_S3Model):
    name: str
    arn: str | None = None


class S3Object(_S3Model):
    key: str
    """The key as S3 sends it: URL-encoded (a space is ``+``). ``S3EventRecord.key`` decodes it."""
    size: int | None = None
    """Bytes; not sent for deletions."""
    e_tag: str | None = Field(default=None, alias="eTag")
    version_id: str | None = Field(default=None, alias="versionId")
    sequencer: str | None = None


class S3Entity(_S3Model):
    configuration_id: str | None = Field(default=None, alias="configurationId")
    """The notification configuration's Id (``worker provision`` writes ``sqs-worker-<queue>-<n>``)."""
    bucket: S3Bucket
    object: S3Object


class S3EventRecord(_S3Model):
    """One record of an S3 event notification. As a handler's payload it takes a
    notification of one record (S3 sends one per notification); ``S3Event`` takes any."""

    event_name: str = Field(alias="eventName")
    """E.g. ``ObjectCreated:Put`` (the message type is ``s3:ObjectCreated:Put``)."""
    event_source: str = Field(default="aws:s3", alias="eventSource")
    event_time: datetime | None = Field(default=None, alias="eventTime")
    aws_region: str | None = Field(default=None, alias="awsRegion")
    s3: S3Entity

    @model_validator(mode="before")
    @classmethod
    def _one_record(cls, data: Any) -> Any:
        if isinstance(data, dict) and "Records" in data and "s3" not in data:
            records = data["Records"]
            if not isinstance(records, list) or len(records) != 1:
                count = len(records) if isinstance(records, list) else "no list of"
                raise ValueError(f"an S3 notification with {count} records: take S3Event to handle several")
            return records[0]
        return data

    @property
    def type(self) -> str:
        """The message type: ``s3:`` + the event name."""
        return self.event_name if self.event_name.startswith(S3_PREFIX) else S3_PREFIX + self.event_name

    @property
    def bucket(self) -> str:
        return self.s3.bucket.name

    @property
    def key(self) -> str:
        """The object key, decoded (S3 URL-encodes it in notifications)."""
        return unquote_plus(self.s3.object.key)

    @property
    def size(self) -> int | None:
        return self.s3.object.size


class S3Event(_S3Model):
    """A whole S3 event notification: ``records`` (one, in practice)."""

    records: list[S3EventRecord] = Field(alias="Records", min_length=1)


class S3TestEvent(_S3Model):
    """What S3 sends once when a notification is configured (settled without a handler
    unless one is registered for ``s3:TestEvent``)."""

    service: str = Field(alias="Service")
    event: str = Field(alias="Event")
    bucket: str = Field(alias="Bucket")
    time: datetime | None = Field(default=None, alias="Time")
    request_id: str | None = Field(default=None, alias="RequestId")
