"""What the commands share when they run: the AWS connection of a command, and the one error
style (every failure becomes a ``WorkerError`` with a one-line message and its exit code).

The options and defaults the commands declare are ``worker.cli.options`` (light: Typer reads
them to build the app); this module imports aiobotocore and is imported by a command's body.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

from worker.aws import AwsClient, aws_client, error_code, is_transient, suggest_queue
from worker.aws_target import AwsTarget, check_endpoint_url, check_region
from worker.cli.options import DEFAULT_TIMEOUT
from worker.errors import (
    ConfigError,
    NotFoundError,
    RefusedError,
    UnreachableError,
    WorkerError,
)
from worker.observe.logs import configure_logging

if TYPE_CHECKING:
    from worker.settings import AwsSettings

T = TypeVar("T")


@dataclass(frozen=True)
class Connection:
    """Where the AWS calls of one command go, and how long they may take."""

    region: str | None = None
    endpoint_url: str | None = None
    timeout: float = DEFAULT_TIMEOUT

    def settings(self) -> AwsSettings:
        """The options as ``AwsSettings`` (what the S3 payload store takes), checked:
        ConfigError, one line, naming the option that was wrong."""
        from worker.settings import AwsSettings

        return AwsSettings.build(
            {"endpoint_url": "--endpoint-url", "region": "--region", "connect_timeout": "--timeout"},
            region=self.region,
            endpoint_url=self.endpoint_url,
            connect_timeout=self.timeout,
        )

    def target(self) -> AwsTarget:
        """Where the calls go, checked as ``settings()`` checks the options, without the
        settings models (pydantic, pydantic-settings: a command that only calls AWS need not
        import them). A value the checks refuse is reported by ``settings()``, whose message
        names the option."""
        try:
            region = None if self.region is None else check_region(self.region)
            endpoint = None if self.endpoint_url is None else check_endpoint_url(self.endpoint_url)
        except ValueError:
            return self.settings().target()  # raises the ConfigError naming the option
        if not self.timeout > 0:
            return self.settings().target()
        target = AwsTarget(region, endpoint, self.timeout)
        target.check()
        return target

    def endpoint(self, service: str = "sqs") -> tuple[str | None, str]:
        """``service``'s endpoint (None: AWS's own) and what set it (``--endpoint-url``,
        ``AWS_ENDPOINT_URL_<SERVICE>``, ``AWS_ENDPOINT_URL``)."""
        # Unchecked: this names where a call went even when the values are the problem.
        return AwsTarget(self.region, self.endpoint_url).endpoint_and_source(service, "--endpoint-url")

    def where(self, service: str = "sqs") -> str:
        """The service, region and endpoint a call went to, for an error message."""
        region = AwsTarget(self.region, self.endpoint_url).resolved_region() or "no region"
        endpoint, source = self.endpoint(service)
        name = service_name(service)
        return (
            f"{name}, region {region}, endpoint {endpoint} from {source}"
            if endpoint
            else f"{name}, region {region}"
        )

    @contextlib.asynccontextmanager
    async def client(self, service: str) -> AsyncIterator[AwsClient]:
        # A call that has not answered after --timeout is given up (plus two seconds for the
        # one-second long polls of `dlq` and the server's own time).
        async with aws_client(
            service,
            self.target(),
            read_timeout=self.timeout + 2,
            retry_for=self.timeout,
        ) as c:
            yield c


Clients = Callable[..., Awaitable[AwsClient]]
"""``await clients(service, region=None)``: the command's client for a service in a region
(None: the session's), opened on first use and closed with the command."""


@contextlib.asynccontextmanager
async def regional_clients(conn: Connection) -> AsyncIterator[Clients]:
    """Clients of any service in any region, for commands whose resources live in several."""
    async with contextlib.AsyncExitStack() as stack:
        opened: dict[tuple[str, str | None], AwsClient] = {}

        async def client(service: str, region: str | None = None) -> AwsClient:
            key = (service, region)
            if key not in opened:
                where = conn if region is None else dataclasses.replace(conn, region=region)
                if service == "s3":
                    from worker.messages.payload_store import s3_client

                    made = s3_client(where.settings(), read_timeout=conn.timeout + 2, retry_for=conn.timeout)
                else:
                    made = where.client(service)
                opened[key] = await stack.enter_async_context(made)
            return opened[key]

        yield client


# -- the one error style --------------------------------------------------------------------
NOT_FOUND_CODES = frozenset(
    {
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "NonExistentQueue",
        "NotFound",
        "NotFoundException",
        "ResourceNotFoundException",
        "NoSuchBucket",
        "NoSuchKey",
    }
)
CREDENTIAL_CODES = frozenset(
    {
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidAccessKeyId",
        "InvalidSecurity",
        "IncompleteSignature",
        "MissingAuthenticationToken",
    }
)


SERVICE_NAMES = {"sqs": "SQS", "sns": "SNS", "s3": "S3", "dynamodb": "DynamoDB", "cloudwatch": "CloudWatch"}


def service_name(service: str) -> str:
    return SERVICE_NAMES.get(service, service)


def _failed_call(exc: BaseException, conn: Connection | None, service: str) -> tuple[Connection | None, str]:
    """The connection and service of the call that raised ``exc``: an AwsClient marks what
    it raises with its service and region (``worker.aws.AwsClient.once``), so a command that
    calls several services, in several regions, names the one that failed."""
    failed = getattr(exc, "aws_service", None)
    region = getattr(exc, "aws_region", None)
    if conn is not None and region and region != conn.region:
        conn = dataclasses.replace(conn, region=region)
    return conn, (failed if isinstance(failed, str) and failed else service)


def _elsewhere(conn: Connection | None, service: str) -> str:
    """For a service that did not answer at a shared endpoint: how to send it elsewhere."""
    if conn is None or service == "sqs":
        return ""
    endpoint, source = conn.endpoint(service)
    if endpoint is None or source.startswith("AWS_ENDPOINT_URL_"):
        return ""
    return (
        f"; {source} is the endpoint of every service: if {service_name(service)} is served "
        f"elsewhere, set AWS_ENDPOINT_URL_{service.upper()}"
    )


def _first_line(text: str, limit: int = 240) -> str:
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _looks_like_html(text: str) -> bool:
    return bool(re.search(r"<\s*(!doctype|html|head|body)\b", text, re.IGNORECASE))


def explain(exc: BaseException, conn: Connection | None, service: str = "sqs") -> WorkerError | None:
    """The one-line WorkerError for ``exc``, with where the call went (the service, its
    region and endpoint); None: not ours to explain (a bug: let it raise with its
    traceback)."""
    conn, service = _failed_call(exc, conn, service)
    where = f" ({conn.where(service)})" if conn else ""
    name = service_name(service)
    if isinstance(exc, NotFoundError | RefusedError | UnreachableError):
        text = str(exc)
        return type(exc)(text if where.strip(" ()") in text else text + where)
    if isinstance(exc, WorkerError):
        return exc
    if isinstance(exc, NoRegionError):
        return ConfigError(
            "no AWS region: pass --region or set AWS_REGION (or aws.region in the worker config)"
        )
    if isinstance(exc, PartialCredentialsError | NoCredentialsError):
        empty = [v for v in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if os.environ.get(v) == ""]
        hint = f": {' and '.join(empty)} set but empty" if empty else ""
        return ConfigError(
            f"no usable AWS credentials{hint} (the standard chain: environment, "
            "~/.aws files, container or instance role)"
        )
    if isinstance(exc, ClientError):
        code = error_code(exc)
        meta = exc.response.get("ResponseMetadata", {})
        status = meta.get("HTTPStatusCode")
        message = str(exc.response.get("Error", {}).get("Message", "") or "")
        if _looks_like_html(message) or _looks_like_html(str(exc)) or (not code and status):
            return UnreachableError(
                f"the endpoint did not answer as {name} (HTTP {status}){where}{_elsewhere(conn, service)}"
            )
        if code in NOT_FOUND_CODES:
            return NotFoundError(f"{_first_line(message) or code}{where}")
        if code in CREDENTIAL_CODES:
            return RefusedError(f"AWS refused the credentials: {code}: {_first_line(message)}{where}")
        if is_transient(exc):
            return UnreachableError(
                f"{name} kept failing: {code}: {_first_line(message)}{where}{_elsewhere(conn, service)}"
            )
        return RefusedError(f"AWS refused: {code}: {_first_line(message)}{where}")
    if isinstance(exc, TimeoutError) or is_transient(exc):
        timeout = f" within {conn.timeout:g}s" if conn else ""
        detail = _first_line(str(exc)) or type(exc).__name__
        return UnreachableError(f"no answer from {name}{timeout}: {detail}{where}{_elsewhere(conn, service)}")
    if isinstance(exc, BotoCoreError):
        text = _first_line(str(exc))
        if _looks_like_html(str(exc)):
            return UnreachableError(
                f"the endpoint did not answer as {name}{where}{_elsewhere(conn, service)}"
            )
        return RefusedError(f"AWS: {text}{where}")
    return None


def jsonable(value: Any) -> Any:
    """Dataclass rows as dicts for --json."""
    if hasattr(value, "__dataclass_fields__"):
        return {k: jsonable(v) for k, v in vars(value).items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value


def run_async(
    make: Callable[[], Awaitable[T]],
    conn: Connection | None,
    *,
    service: str = "sqs",
    queue: str | None = None,
) -> T:
    """Run one command's coroutine; any failure comes out as a one-line WorkerError naming
    where the call went (and, for an unknown ``queue``, the queues with close names)."""

    async def go() -> T:
        try:
            return await make()
        except Exception as exc:
            explained = explain(exc, conn, service)
            if explained is None:
                raise
            if isinstance(explained, NotFoundError) and queue and conn and "/" not in queue:
                with contextlib.suppress(Exception):
                    async with conn.client("sqs") as sqs:
                        hint = await suggest_queue(sqs, queue)
                    if hint:
                        explained = type(explained)(f"{explained}{hint}")
            raise explained from None

    # The operator commands report failures themselves, in one line; the worker's structured
    # logs (retry warnings and the like) stay quiet unless something is an error.
    configure_logging("error", "console")
    return asyncio.run(go())


def report(exc: WorkerError) -> int:
    """Print ``worker: error: <one line>`` on stderr; the exit code of its kind."""
    import sys

    message = " ".join(str(exc).split("\n"))
    sys.stderr.write(f"worker: error: {message}\n")
    sys.stderr.flush()
    return exc.exit_code
