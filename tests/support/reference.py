"""The reference clients, ``amazon-sqs-extended-client`` and ``amazon-sns-extended-client``
(PyPI, boto3), for the interoperability tests, pointed at the test server.

Importing either package replaces ``boto3.Session`` process-wide; here they are imported with
boto3 put back as it was afterwards, so nothing else in the test session is affected. Their
S3 client is made without an endpoint, so it is replaced by one for the test server. They are
synchronous: call them in a thread.
"""

from __future__ import annotations

import importlib
from typing import Any


def _imported(module: str, attribute: str) -> Any:
    boto3: Any = importlib.import_module("boto3")
    session_module: Any = importlib.import_module("boto3.session")
    saved = (boto3.Session, session_module.Session, boto3.DEFAULT_SESSION)
    try:
        return getattr(importlib.import_module(module), attribute)
    finally:
        boto3.Session, session_module.Session, boto3.DEFAULT_SESSION = saved


def _s3(endpoint: str) -> Any:
    boto3: Any = importlib.import_module("boto3")
    config: Any = importlib.import_module("botocore.config")
    return boto3.session.Session(region_name="us-east-1").client(
        "s3", endpoint_url=endpoint, config=config.Config(s3={"addressing_style": "path"})
    )


def sqs_extended_client(
    endpoint: str,
    bucket: str,
    *,
    always: bool = False,
    legacy: bool = False,
    delete_payload: bool = True,
) -> Any:
    """An SQS client of ``amazon-sqs-extended-client`` offloading to ``bucket`` (its
    threshold is fixed at 256 KiB)."""
    session_class = _imported("sqs_extended_client.client", "SQSExtendedClientSession")
    sqs = session_class(region_name="us-east-1").client("sqs", endpoint_url=endpoint)
    sqs.s3_client = _s3(endpoint)
    sqs.large_payload_support = bucket
    sqs.always_through_s3 = always
    sqs.use_legacy_attribute = legacy
    sqs.delete_payload_from_s3 = delete_payload
    return sqs


def sns_extended_client(
    endpoint: str, bucket: str, *, always: bool = False, threshold: int | None = None
) -> Any:
    """An SNS client of ``amazon-sns-extended-client`` offloading to ``bucket``."""
    session_class = _imported("sns_extended_client.session", "SNSExtendedClientSession")
    sns = session_class(region_name="us-east-1").client("sns", endpoint_url=endpoint)
    sns.s3_client = _s3(endpoint)
    sns.large_payload_support = bucket
    sns.always_through_s3 = always
    if threshold is not None:
        sns.message_size_threshold = threshold
    return sns


def s3_object_exists(endpoint: str, bucket: str, key: str) -> bool:
    exceptions: Any = importlib.import_module("botocore.exceptions")
    try:
        _s3(endpoint).head_object(Bucket=bucket, Key=key)
    except exceptions.ClientError:
        return False
    return True
