"""The least-privilege policies built offline (account and region given): a DLQ encrypted
with a KMS key lets the worker's own moves encrypt to it."""

from __future__ import annotations

from worker.aws import AwsClient
from worker.ops.iam import iam_policies
from worker.ops.topology import Topology


async def test_a_kms_encrypted_dlq_grants_the_worker_its_data_keys() -> None:
    key = "arn:aws:kms:eu-west-1:123456789012:key/dlq"
    topology = Topology.model_validate(
        {
            "queues": {
                "jobs-dlq": {"encryption": {"kms_key_id": key}},
                "jobs": {"dead_letter": {"queue": "jobs-dlq", "max_receive_count": 3}},
            }
        }
    )
    policies = await iam_policies(
        AwsClient(None), AwsClient(None), topology, None, "123456789012", "eu-west-1"
    )
    statements = {s["Sid"]: s for s in policies["worker"]["Statement"]}
    assert statements["EncryptDeadLetters"]["Resource"] == [key]
    assert set(statements["EncryptDeadLetters"]["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey"}
    assert statements["MoveToDeadLetterQueues"]["Resource"] == ["arn:aws:sqs:eu-west-1:123456789012:jobs-dlq"]
    # The source queue is not KMS-encrypted: nothing to decrypt on receive.
    assert "DecryptMessages" not in statements


async def test_arns_built_offline_are_in_the_region_s_partition() -> None:
    topology = Topology.model_validate({"queues": {"jobs": {}}, "topics": {"events": {}}})
    policies = await iam_policies(
        AwsClient(None), AwsClient(None), topology, None, "123456789012", "cn-north-1"
    )
    statements = {s["Sid"]: s for s in policies["producer"]["Statement"]}
    assert statements["SendToQueues"]["Resource"] == ["arn:aws-cn:sqs:cn-north-1:123456789012:jobs"]
    assert statements["PublishToTopics"]["Resource"] == ["arn:aws-cn:sns:cn-north-1:123456789012:events"]
