"""Least-privilege IAM policies for the worker and for producers, on exactly the ARNs of a
topology (and the queues a worker configuration consumes)."""

from __future__ import annotations

from typing import Any

from worker.aws import AwsClient, Regional, list_topics
from worker.errors import NotFoundError
from worker.ops.topology import KmsEncryption, Topology
from worker.settings import WorkerSettings, url_region


def partition(region: str | None) -> str:
    """The ARN partition of a region: ``aws-cn`` (China), ``aws-us-gov`` (GovCloud), ``aws``."""
    if region and region.startswith("cn-"):
        return "aws-cn"
    if region and region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


async def _queue_arn(sqs: AwsClient, name: str) -> str:
    url = (await sqs.call("get_queue_url", QueueName=name))["QueueUrl"]
    a = await sqs.call("get_queue_attributes", QueueUrl=url, AttributeNames=["QueueArn"])
    return str(a["Attributes"]["QueueArn"])


async def iam_policies(
    sqs: AwsClient,
    sns: AwsClient,
    topology: Topology,
    worker: WorkerSettings | None,
    account_id: str | None = None,
    region: str | None = None,
    regional: Regional | None = None,
) -> dict[str, Any]:
    """The worker's and the producer's least-privilege policies, on exactly these ARNs.

    ARNs are resolved from AWS (resources of another region through ``regional``), or
    built from ``account_id`` and ``region`` (or the resource's own region) when given (no
    AWS call then)."""
    queue_regions = {n: topology.region_of("queue", n) for n in topology.queues}
    if worker is not None:
        for k, q in worker.queues.items():
            # Its own region, its URL's, or the worker configuration's (not the environment's:
            # --region says where the policy is for).
            where = q.region or (url_region(q.url) if q.url else None) or worker.aws.region
            if where is not None:
                queue_regions[q.queue_name(k)] = where
    listed: dict[str | None, dict[str, str]] = {}

    async def client(default: AwsClient, service: str, where: str | None) -> AwsClient:
        if where is None or where == region or regional is None:
            return default
        return await regional(service, where)

    async def queue_arn(name: str) -> str:
        where = queue_regions.get(name)
        if account_id and region:
            return f"arn:{partition(where or region)}:sqs:{where or region}:{account_id}:{name}"
        return await _queue_arn(await client(sqs, "sqs", where), name)

    async def topic_arn(name: str) -> str:
        where = topology.region_of("topic", name)
        if account_id and region:
            return f"arn:{partition(where or region)}:sns:{where or region}:{account_id}:{name}"
        if where not in listed:
            listed[where] = await list_topics(await client(sns, "sns", where))
        if name not in listed[where]:
            raise NotFoundError(f"topic {name!r} does not exist")
        return listed[where][name]

    consumed = (
        [q.queue_name(k) for k, q in worker.queues.items()]
        if worker is not None
        else [n for n in topology.queues if n not in topology.dead_letter_queues()]
    )
    produced = [n for n in topology.queues if n not in topology.dead_letter_queues()]
    consumed_arns = sorted({await queue_arn(n) for n in consumed})
    dead_letter = sorted(
        {
            spec.dead_letter.queue
            for n, spec in topology.queues.items()
            if n in consumed and spec.dead_letter is not None
        }
    )
    dead_letter_arns = sorted({await queue_arn(n) for n in dead_letter})
    produced_arns = sorted({await queue_arn(n) for n in produced})
    topic_arns = sorted({await topic_arn(n) for n in topology.topics})
    kms_consumed = sorted(
        {
            spec.encryption.kms_key_id
            for n, spec in topology.queues.items()
            if n in consumed and isinstance(spec.encryption, KmsEncryption)
        }
    )
    kms_produced = sorted(
        {
            spec.encryption.kms_key_id
            for spec in topology.queues.values()
            if isinstance(spec.encryption, KmsEncryption)
        }
        | {t.kms_key_id for t in topology.topics.values() if t.kms_key_id}
    )
    worker_statements: list[dict[str, Any]] = [
        {
            "Sid": "ConsumeQueues",
            "Effect": "Allow",
            "Action": [
                "sqs:ChangeMessageVisibility",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                "sqs:GetQueueUrl",
                "sqs:ReceiveMessage",
            ],
            "Resource": consumed_arns,
        }
    ]
    if dead_letter_arns:
        # The worker moves rejected messages (and FIFO messages out of attempts) itself.
        worker_statements.append(
            {
                "Sid": "MoveToDeadLetterQueues",
                "Effect": "Allow",
                "Action": ["sqs:GetQueueUrl", "sqs:SendMessage"],
                "Resource": dead_letter_arns,
            }
        )
    if kms_consumed:
        worker_statements.append(
            {"Sid": "DecryptMessages", "Effect": "Allow", "Action": ["kms:Decrypt"], "Resource": kms_consumed}
        )
    # The worker's own moves to a DLQ encrypted with a KMS key send to it: that needs the
    # key's data keys (SQS's rule for SendMessage to an SSE-KMS queue).
    kms_dead_letter = sorted(
        {
            spec.encryption.kms_key_id
            for n, spec in topology.queues.items()
            if n in dead_letter and isinstance(spec.encryption, KmsEncryption)
        }
    )
    if kms_dead_letter:
        worker_statements.append(
            {
                "Sid": "EncryptDeadLetters",
                "Effect": "Allow",
                "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                "Resource": kms_dead_letter,
            }
        )
    producer_statements: list[dict[str, Any]] = []
    if produced_arns:
        producer_statements.append(
            {
                "Sid": "SendToQueues",
                "Effect": "Allow",
                "Action": ["sqs:GetQueueUrl", "sqs:SendMessage"],
                "Resource": produced_arns,
            }
        )
    if topic_arns:
        producer_statements.append(
            {"Sid": "PublishToTopics", "Effect": "Allow", "Action": ["sns:Publish"], "Resource": topic_arns}
        )
        producer_statements.append(
            {"Sid": "FindTopicsByName", "Effect": "Allow", "Action": ["sns:ListTopics"], "Resource": "*"}
        )
    if kms_produced:
        producer_statements.append(
            {
                "Sid": "EncryptMessages",
                "Effect": "Allow",
                "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                "Resource": kms_produced,
            }
        )
    payloads = worker.payloads if worker is not None else None
    if payloads is not None and payloads.bucket:
        # Offloaded bodies (extended-client format): the worker reads and, after success,
        # deletes them; producers write them (and delete those of messages not sent).
        where = worker.aws.region if worker is not None else None
        objects = f"arn:{partition(where or region)}:s3:::{payloads.bucket}/{payloads.prefix}*"
        read = ["s3:GetObject", "s3:DeleteObject"] if payloads.delete_after_success else ["s3:GetObject"]
        worker_statements.append(
            {"Sid": "ReadOffloadedPayloads", "Effect": "Allow", "Action": read, "Resource": objects}
        )
        producer_statements.append(
            {
                "Sid": "OffloadPayloads",
                "Effect": "Allow",
                "Action": ["s3:PutObject", "s3:DeleteObject"],
                "Resource": objects,
            }
        )
    # The table is in the worker's region and account (the account of its queues).
    account = account_id or next((a.split(":")[4] for a in consumed_arns if a.count(":") >= 5), None)
    idempotency = worker.idempotency if worker is not None else None
    table_region = (worker.aws.region if worker is not None else None) or region
    if idempotency is not None and idempotency.store == "dynamodb":
        # Idempotent handlers: conditional writes to their records (one table).
        worker_statements.append(
            {
                "Sid": "IdempotencyRecords",
                "Effect": "Allow",
                "Action": [
                    "dynamodb:PutItem",
                    "dynamodb:UpdateItem",
                    "dynamodb:DeleteItem",
                    "dynamodb:GetItem",
                ],
                "Resource": (
                    f"arn:{partition(table_region)}:dynamodb:{table_region or '*'}:{account or '*'}"
                    f":table/{idempotency.table}"
                ),
            }
        )
    return {
        "worker": {"Version": "2012-10-17", "Statement": worker_statements},
        "producer": {"Version": "2012-10-17", "Statement": producer_statements},
    }
