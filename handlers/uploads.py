"""Uploads: files dropped into a bucket, processed from its S3 event notifications.

S3 sends one message per new object to the queue (``config/uploads-topology.yaml`` declares
the bucket, the notification and the queue policy). Its message type is the event type,
``s3:ObjectCreated:Put`` and the like, so one handler serves every kind of creation; the
payload is the typed record (bucket, decoded key, size). The handler reads the object with
an S3 client a start-up hook opened (credentials and endpoint from the standard AWS chain:
``AWS_ENDPOINT_URL`` for LocalStack). S3's ``s3:TestEvent`` needs no handler: the worker
deletes it.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from worker import PermanentFailure, Resources, Router, S3EventRecord

router = Router()
log = structlog.get_logger("handlers.uploads")
MAX_BYTES = 50 * 1_048_576


class UploadedFiles:
    """Reads uploaded objects (an aiobotocore S3 client, one per process)."""

    def __init__(self) -> None:
        self._stack = contextlib.AsyncExitStack()
        self._s3: Any = None

    async def open(self) -> None:
        # LocalStack and MinIO want path-style addressing; AWS does not care.
        custom = bool(os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))
        config = AioConfig(s3={"addressing_style": "path" if custom else "auto"})
        self._s3 = await self._stack.enter_async_context(get_session().create_client("s3", config=config))

    async def read(self, bucket: str, key: str) -> bytes:
        response = await self._s3.get_object(Bucket=bucket, Key=key)
        async with response["Body"] as stream:
            data: bytes = await stream.read()
        return data

    async def close(self) -> None:
        await self._stack.aclose()


@router.on_startup
async def open_files(resources: Resources) -> None:
    files = UploadedFiles()
    await files.open()
    resources.add(files)


@router.on_shutdown
async def close_files(resources: Resources) -> None:
    await resources.get(UploadedFiles).close()


@router.handler("s3:ObjectCreated:*")
async def file_uploaded(upload: S3EventRecord, files: UploadedFiles) -> None:
    if upload.size is not None and upload.size > MAX_BYTES:
        raise PermanentFailure(f"{upload.key}: {upload.size} bytes is more than this example reads")
    data = await files.read(upload.bucket, upload.key)
    lines = data.decode("utf-8", "replace").splitlines()
    log.info("upload_processed", bucket=upload.bucket, key=upload.key, bytes=len(data), lines=len(lines))
