"""The SQS client and the one place AWS calls are retried (tenacity, never handlers).

botocore's own retries are switched off so that there is exactly one retry policy:
exponential backoff with full jitter on throttling, 5xx and connection errors. Everything
else (queue does not exist, access denied, invalid receipt handle) surfaces at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import difflib
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from worker.errors import NotFoundError, RefusedError, UnreachableError, WorkerError
from worker.observe.logs import get_logger

if TYPE_CHECKING:
    from tenacity import RetryCallState

    from worker.aws_target import AwsTarget
    from worker.settings import AwsSettings

TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
        "RequestTimeout",
        "RequestTimeoutException",
        "AWS.SimpleQueueService.ServiceUnavailable",
        "KMS.ThrottlingException",
    }
)

# The queue named does not exist (where it was looked for).
MISSING_QUEUE = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})

# A receipt handle that no longer works: the message expired back to the queue, or was
# received again elsewhere and deleted there. SQS's query protocol calls some of these
# InvalidParameterValue, its JSON protocol (and LocalStack, for a message deleted through
# another receipt) InvalidParameterValueException.
STALE_RECEIPT_CODES = frozenset(
    {
        "ReceiptHandleIsInvalid",
        "InvalidParameterValue",
        "InvalidParameterValueException",
        "MessageNotInflight",
        "AWS.SimpleQueueService.MessageNotInflight",
    }
)

log = get_logger()


class AwsError(WorkerError):
    """A non-retryable AWS error, with a message fit for an operator."""


class AwsNotFound(AwsError, NotFoundError):
    """A queue (or its DLQ) does not exist."""


class AwsRefused(AwsError, RefusedError):
    """AWS refused a request (access denied, invalid parameters)."""


class AwsUnreachable(AwsError, UnreachableError):
    """No answer within the time allowed."""


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return type(exc).__name__


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        return error_code(exc) in TRANSIENT_CODES or status >= 500
    return isinstance(
        exc,
        EndpointConnectionError
        | ConnectionClosedError
        | ConnectTimeoutError
        | ReadTimeoutError
        | aiohttp.ClientError
        | ConnectionError
        | TimeoutError,
    ) or (isinstance(exc, BotoCoreError) and "connect" in str(exc).lower())


class AwsClient:
    """An aiobotocore client (SQS or SNS) whose calls retry transient errors; counts calls."""

    def __init__(
        self,
        client: Any,
        on_call: Callable[[str, str], None] | None = None,
        retry_for: float | None = 120.0,
    ) -> None:
        self.client = client
        self.calls: Counter[str] = Counter()
        self.on_call = on_call
        self.retry_for = retry_for
        """How long ``call`` retries transient errors unless told otherwise (None: forever);
        the operator commands set it to their ``--timeout``."""
        self.on_request: Callable[[str], None] | None = None
        """Told the operation of every request made through this client (each attempt,
        when it starts); set on the views ``counting`` returns."""

    def counting(self, on_request: Callable[[str], None] | None) -> AwsClient:
        """This client, with ``on_request(operation)`` called for every request made
        through the copy returned (the worker's per-queue request counts). The copy shares
        the connection, ``calls``, ``on_call`` and ``retry_for``; None: this client as it is."""
        if on_request is None:
            return self
        view = copy.copy(self)
        view.on_request = on_request
        return view

    async def once(self, operation: str, limit: float | None, **params: Any) -> dict[str, Any]:
        """One attempt of ``operation`` that gives up after ``limit`` seconds (raises
        TimeoutError; None: no limit). For callers that retry with fresh arguments
        themselves (the lease's heartbeat and acker, whose entries change between
        attempts) and for each attempt of ``call``."""
        method: Callable[..., Awaitable[dict[str, Any]]] = getattr(self.client, operation)
        self.calls[operation] += 1
        if self.on_request is not None:
            self.on_request(operation)
        try:
            async with asyncio.timeout(limit):
                result = await method(**params)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self.on_call:
                self.on_call(operation, error_code(exc) or "error")
            self._mark(exc)
            raise
        if self.on_call:
            self.on_call(operation, "ok")
        return result

    def _mark(self, exc: Exception) -> None:
        """Tell whoever explains ``exc`` which service and region it came from
        (``aws_service``, ``aws_region``): a command calls several."""
        meta = getattr(self.client, "meta", None)
        if meta is None or hasattr(exc, "aws_service"):
            return
        with contextlib.suppress(Exception):
            exc.aws_service = meta.service_model.service_name  # type: ignore[attr-defined]
            exc.aws_region = meta.region_name  # type: ignore[attr-defined]

    async def call(
        self,
        operation: str,
        *,
        retry_for: float | Literal["client"] | None = "client",
        **params: Any,
    ) -> dict[str, Any]:
        """Call ``operation`` (e.g. ``"receive_message"``), retrying transient errors with
        backoff and jitter for up to ``retry_for`` seconds (``None``: until cancelled;
        default: the client's ``retry_for``)."""
        limit = self.retry_for if retry_for == "client" else retry_for
        started = time.monotonic()
        try:
            return await self.once(operation, None, **params)
        except Exception as exc:
            if not is_transient(exc):
                raise
            failure = exc
        # Only now, after a transient failure, is the retry machinery built; it takes the
        # failed first attempt as its own first, and the time it took out of ``limit``.
        return await self._retry(operation, limit, time.monotonic() - started, failure, params)

    async def _retry(
        self,
        operation: str,
        limit: float | None,
        spent: float,
        failure: BaseException,
        params: dict[str, Any],
    ) -> dict[str, Any]:
        from tenacity import (
            AsyncRetrying,
            retry_if_exception,
            stop_before_delay,
            stop_never,
            wait_random_exponential,
        )

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "aws_call_retry",
                operation=operation,
                attempt=state.attempt_number,
                error=error_code(exc) if exc else None,
                detail=str(exc)[:200] if exc else None,
                sleep=round(state.upcoming_sleep, 2),
            )

        retrying = AsyncRetrying(
            retry=retry_if_exception(is_transient),
            wait=wait_random_exponential(multiplier=0.2, max=10),
            stop=stop_never if limit is None else stop_before_delay(limit - spent),
            before_sleep=before_sleep,
            reraise=True,
        )
        first: list[BaseException] = [failure]
        async for attempt in retrying:
            with attempt:
                if first:
                    raise first.pop()  # attempt 1, made by ``call``
                return await self.once(operation, None, **params)
        raise AssertionError("unreachable")  # pragma: no cover


@contextlib.asynccontextmanager
async def aws_client(
    service: str,
    aws: AwsSettings | AwsTarget,
    pool_size: int = 16,
    on_call: Callable[[str, str], None] | None = None,
    *,
    read_timeout: float = 40.0,
    retry_for: float | None = 120.0,
    validate: bool = True,
) -> AsyncIterator[AwsClient]:
    """An SQS, SNS (or other) client for ``aws`` (credentials from the standard chain).

    ``read_timeout`` must be above the longest long poll made with it (20 s by default);
    ``retry_for`` bounds how long its calls retry transient errors (see ``AwsClient.call``).
    ``validate=False`` skips botocore's client-side parameter validation (for the worker's
    own calls, whose parameters it builds itself: about a tenth of a request's CPU).

    The User-Agent is botocore's fixed one plus ``sqs-worker``, given as
    ``Config(user_agent=...)``: botocore otherwise rebuilds its full User-Agent string
    twice per request (about another tenth).
    """
    session = get_session()
    config = AioConfig(
        max_pool_connections=pool_size,
        connect_timeout=aws.connect_timeout,
        read_timeout=read_timeout,
        retries={"total_max_attempts": 1, "mode": "standard"},
        parameter_validation=validate,
        user_agent=f"{session.user_agent()} sqs-worker",
    )
    async with session.create_client(
        service,
        region_name=aws.resolved_region(),
        endpoint_url=aws.resolved_endpoint(service),
        config=config,
    ) as client:
        yield AwsClient(client, on_call, retry_for)


def sqs_client(
    aws: AwsSettings, pool_size: int = 16, on_call: Callable[[str, str], None] | None = None
) -> contextlib.AbstractAsyncContextManager[AwsClient]:
    """The worker's own SQS client (its calls' parameters are built by the worker: not
    validated again by botocore)."""
    return aws_client("sqs", aws, pool_size, on_call, validate=False)


Regional = Callable[[str, str], Awaitable["AwsClient"]]
"""(service, region) -> a client of that region: how operator code reaches resources that
live outside the session's region (the CLI's ``regional_clients`` makes them)."""


def next_page(token: str | None) -> dict[str, Any]:
    return {"NextToken": token} if token else {}


async def list_topics(sns: AwsClient) -> dict[str, str]:
    """Every SNS topic of the account and region: name -> ARN."""
    topics: dict[str, str] = {}
    token: str | None = None
    while True:
        page = await sns.call("list_topics", **next_page(token))
        for t in page.get("Topics", []):
            topics[t["TopicArn"].rsplit(":", 1)[-1]] = t["TopicArn"]
        token = page.get("NextToken")
        if not token:
            return topics


async def suggest_queue(sqs: AwsClient, name: str) -> str:
    """`` (did you mean 'orders'?)`` when a queue with a close name exists, else ''."""
    # Typos rarely hit the first two letters; the prefix keeps the listing to one page in
    # accounts with thousands of queues.
    try:
        page = await sqs.call("list_queues", retry_for=0, QueueNamePrefix=name[:2], MaxResults=1000)
    except Exception:
        return ""
    urls = page.get("QueueUrls", [])
    names = [u.rstrip("/").rsplit("/", 1)[-1] for u in urls]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
