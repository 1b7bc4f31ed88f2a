"""Messages as AWS services deliver them to an SQS queue, in the shapes AWS documents for
its sample events (the SAM CLI's `sam local generate-event` and the Lambda runtimes' test
events): SQS records with plain bodies, SNS notifications (standard and FIFO), S3 event
notifications, EventBridge events, a CloudWatch alarm through SNS, CloudEvents. Written
here field by field, values made up."""

from __future__ import annotations

import json
import uuid
from typing import Any

REGION = "us-east-1"
ACCOUNT = "123456789012"


def receive_entry(
    body: str,
    attributes: dict[str, str] | None = None,
    *,
    group_id: str | None = None,
    dedup_id: str | None = None,
) -> dict[str, Any]:
    """One entry of a ReceiveMessage response."""
    system = {
        "ApproximateReceiveCount": "1",
        "SentTimestamp": "1767225600000",
        "SenderId": "AIDAIENQZJOLO23YVJ4VO",
        "ApproximateFirstReceiveTimestamp": "1767225600010",
    }
    if group_id is not None:
        system |= {"MessageGroupId": group_id, "SequenceNumber": "18849496460467696128"}
    if dedup_id is not None:
        system["MessageDeduplicationId"] = dedup_id
    return {
        "MessageId": str(uuid.uuid4()),
        "ReceiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...",
        "MD5OfBody": "7b270e59b47ff90a553787216d55d91d",
        "Body": body,
        "Attributes": system,
        "MessageAttributes": {
            name: {"StringValue": value, "DataType": "String"} for name, value in (attributes or {}).items()
        },
    }


def sns_notification(message: str, *, subject: str | None = None, fifo: bool = False, **attrs: str) -> str:
    """An SNS notification's JSON envelope as delivered to an SQS subscription (raw
    delivery off). FIFO topics add a SequenceNumber and sign nothing."""
    topic = f"arn:aws:sns:{REGION}:{ACCOUNT}:orders" + (".fifo" if fifo else "")
    envelope: dict[str, Any] = {
        "Type": "Notification",
        "MessageId": "95df01b4-ee98-5cb9-9903-4c221d41eb5e",
        "TopicArn": topic,
        "Message": message,
        "Timestamp": "2026-01-01T00:00:00.000Z",
        "UnsubscribeURL": f"https://sns.{REGION}.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={topic}:c9135db0",
    }
    if subject is not None:
        envelope["Subject"] = subject
    if fifo:
        envelope["SequenceNumber"] = "10000000000000003000"
    else:
        envelope |= {
            "SignatureVersion": "1",
            "Signature": "EXAMPLEpH+DcEwjAPg8O9mY8dReBSwksfg2S7WKQcikcNKWLQjwu6A4VbeS0QHVCkhRS7fUQvi2egU3N858fiTDN6bkkOxYDVrY0Ad8L10Hs3zH81mtnPk5uvvolIC1CXGu43obcgFxeL3khZl8IKvO61GWB6jI9b5+gLPoBc1Q=",
            "SigningCertURL": f"https://sns.{REGION}.amazonaws.com/SimpleNotificationService-0000000000000000000000.pem",
        }
    if attrs:
        envelope["MessageAttributes"] = {k: {"Type": "String", "Value": v} for k, v in attrs.items()}
    return json.dumps(envelope)


def s3_notification(
    event_name: str, key: str, *, size: int | None = 1024, extra: dict[str, Any] | None = None
) -> str:
    """An S3 event notification (version 2.1); ``key`` as S3 writes it: URL-encoded, a
    space as ``+``."""
    obj: dict[str, Any] = {"key": key, "sequencer": "0055AED6DCD90281E5"}
    if size is not None:
        obj |= {
            "size": size,
            "eTag": "d41d8cd98f00b204e9800998ecf8427e",
            "versionId": "096fKKXTRRtl3on89fVO.nfljtsv6qko",
        }
    record: dict[str, Any] = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": REGION,
        "eventTime": "2026-01-01T00:00:00.000Z",
        "eventName": event_name,
        "userIdentity": {"principalId": "AWS:AIDAINPONIXQXHT3IKHL2"},
        "requestParameters": {"sourceIPAddress": "205.255.255.255"},
        "responseElements": {
            "x-amz-request-id": "D82B88E5F771F645",
            "x-amz-id-2": "vlR7PnpV2Ce81l0PRw6jlUpck7Jo5ZsQjryTjKlc5aLWGVHPZLj5NeC6qMa0emYBDXOo6QBU0Wo=",
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "828aa6fc-f7b5-4305-8584-487c791949c1",
            "bucket": {
                "name": "lambda-artifacts-deafc19498e3f2df",
                "ownerIdentity": {"principalId": "A3I5XTEXAMAI3E"},
                "arn": "arn:aws:s3:::lambda-artifacts-deafc19498e3f2df",
            },
            "object": obj,
        },
    }
    record |= extra or {}
    return json.dumps({"Records": [record]})


def eventbridge_event(detail_type: str, source: str, detail: dict[str, Any]) -> str:
    """An EventBridge event as a rule's SQS target receives it."""
    return json.dumps(
        {
            "version": "0",
            "id": "7bf73129-1428-4cd3-a780-95db273d1602",
            "detail-type": detail_type,
            "source": source,
            "account": ACCOUNT,
            "time": "2026-01-01T00:00:00Z",
            "region": REGION,
            "resources": [f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-abcd1111"],
            "detail": detail,
        }
    )


def cloudwatch_alarm_message() -> str:
    """The Message a CloudWatch alarm publishes to its SNS topic."""
    return json.dumps(
        {
            "AlarmName": "orders-dlq-not-empty",
            "AlarmDescription": "Messages in the orders DLQ",
            "AWSAccountId": ACCOUNT,
            "AlarmConfigurationUpdatedTimestamp": "2026-01-01T00:00:00.000+0000",
            "NewStateValue": "ALARM",
            "NewStateReason": "Threshold Crossed: 1 datapoint [3.0] was greater than the threshold (0.0).",
            "StateChangeTime": "2026-01-01T00:05:00.000+0000",
            "Region": "US East (N. Virginia)",
            "AlarmArn": f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:orders-dlq-not-empty",
            "OldStateValue": "OK",
            "OKActions": [],
            "AlarmActions": [f"arn:aws:sns:{REGION}:{ACCOUNT}:ops-alerts"],
            "InsufficientDataActions": [],
            "Trigger": {
                "MetricName": "ApproximateNumberOfMessagesVisible",
                "Namespace": "AWS/SQS",
                "StatisticType": "Statistic",
                "Statistic": "MAXIMUM",
                "Unit": None,
                "Dimensions": [{"value": "orders-dlq", "name": "QueueName"}],
                "Period": 60,
                "EvaluationPeriods": 1,
                "ComparisonOperator": "GreaterThanThreshold",
                "Threshold": 0.0,
                "TreatMissingData": "missing",
            },
        }
    )


def cloudevent(event_type: str, data: Any, **extra: str) -> str:
    """A structured-mode CloudEvent (JSON event format, spec 1.0)."""
    return json.dumps(
        {
            "specversion": "1.0",
            "type": event_type,
            "source": "/shop/orders",
            "id": "A234-1234-1234",
            "time": "2026-01-01T00:00:00Z",
            "datacontenttype": "application/json",
            **extra,
            "data": data,
        }
    )
